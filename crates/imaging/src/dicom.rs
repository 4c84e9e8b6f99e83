//! DICOM through dicom-rs: modality LUT, then the VOI LUT table or window (or min-max), MONOCHROME1
//! inverted, first frame. Identifying attributes are read but only a salted hash of PatientID
//! ever leaves this module's callers.

use crate::{min_max, DecodeError, DecodeOptions, Image};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, VoiLutOption};

/// The DICOM attributes simcase keeps. `patient_id` is the raw value: callers hash it
/// before storing and never print it.
#[derive(Clone, Debug, Default)]
pub struct DicomMeta {
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_uid: Option<String>,
    pub transfer_syntax: String,
    pub patient_id: Option<String>,
    pub frames: u32,
}

/// A CT window: named presets or explicit centre/width in HU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPreset {
    pub center: f64,
    pub width: f64,
}

impl std::str::FromStr for WindowPreset {
    type Err = String;
    /// `lung`, `mediastinum`, `abdomen`, `bone`, `brain`, or `C,W`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (center, width) = match s.to_ascii_lowercase().as_str() {
            "lung" => (-600.0, 1500.0),
            "mediastinum" => (50.0, 350.0),
            "abdomen" => (40.0, 400.0),
            "bone" => (400.0, 1800.0),
            "brain" => (40.0, 80.0),
            other => {
                let (c, w) = other
                    .split_once(',')
                    .ok_or_else(|| format!("unknown window {s:?}: use a preset or C,W"))?;
                let c = c
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad window centre {c:?}"))?;
                let w: f64 = w
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad window width {w:?}"))?;
                if w < 1.0 {
                    return Err(format!("window width must be >= 1, got {w}"));
                }
                (c, w)
            }
        };
        Ok(WindowPreset { center, width })
    }
}

fn text(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let v = obj.element_opt(tag).ok()??.to_str().ok()?;
    let v = v.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!v.is_empty()).then(|| v.to_string())
}

fn dicom_err(e: impl std::fmt::Display) -> DecodeError {
    // dicom-rs errors can span lines (snafu backtraces); keep the first.
    let s = e.to_string();
    DecodeError::Dicom(s.lines().next().unwrap_or("unknown error").to_string())
}

/// DICOM PS3.3 C.11.2.1.2.1 linear window, to `[0, 1]`.
fn window_linear(x: f32, center: f64, width: f64) -> f32 {
    let (c, w) = (center - 0.5, (width - 1.0).max(1.0));
    let x = x as f64;
    if x <= c - w / 2.0 {
        0.0
    } else if x > c + w / 2.0 {
        1.0
    } else {
        (((x - c) / w) + 0.5) as f32
    }
}

pub(crate) fn decode(
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<(Image, DicomMeta), DecodeError> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(&bytes[128..])
        .map_err(dicom_err)?;
    let meta = DicomMeta {
        modality: text(&obj, tags::MODALITY),
        body_part: text(&obj, tags::BODY_PART_EXAMINED),
        study_uid: text(&obj, tags::STUDY_INSTANCE_UID),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        sop_uid: text(&obj, tags::SOP_INSTANCE_UID),
        transfer_syntax: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        patient_id: text(&obj, tags::PATIENT_ID),
        frames: text(&obj, tags::NUMBER_OF_FRAMES)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    };
    let rows: u64 = text(&obj, tags::ROWS)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let cols: u64 = text(&obj, tags::COLUMNS)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(DecodeError::Dicom(
            "no pixel data (not an image object)".into(),
        ));
    }
    let limit = opts.pixel_limit();
    if rows * cols * u64::from(meta.frames.max(1)) > limit {
        return Err(DecodeError::TooLarge {
            width: cols,
            height: rows,
            limit,
        });
    }
    let pixels = obj.decode_pixel_data().map_err(|e| {
        DecodeError::Dicom(format!(
            "transfer syntax {}: {}",
            meta.transfer_syntax,
            e.to_string().lines().next().unwrap_or("")
        ))
    })?;
    let (w, h) = (pixels.columns() as usize, pixels.rows() as usize);
    if w == 0 || h == 0 {
        return Err(DecodeError::Dicom("zero rows or columns".into()));
    }
    let pi = pixels.photometric_interpretation().clone();
    let image = if pi.is_monochrome() {
        // Modality LUT only; the window is applied here so an override can replace it.
        let raw: Vec<f32> = pixels
            .to_vec_frame_with_options(
                0,
                &ConvertOptions::new()
                    .with_modality_lut(ModalityLutOption::Default)
                    .with_voi_lut(VoiLutOption::Identity),
            )
            .map_err(dicom_err)?;
        if raw.len() < w * h {
            return Err(DecodeError::Dicom(
                "pixel data shorter than rows x columns".into(),
            ));
        }
        let raw = &raw[..w * h];
        let window = opts.window.or_else(|| {
            pixels
                .window()
                .ok()
                .flatten()
                .and_then(|ws| ws.first().copied())
                .filter(|wl| wl.width >= 1.0)
                .map(|wl| WindowPreset {
                    center: wl.center,
                    width: wl.width,
                })
        });
        // A VOI LUT table, when present, takes precedence over the window (as in dicom-rs),
        // unless the caller chose a window.
        let voi_lut = match opts.window {
            Some(_) => None,
            None => pixels
                .voi_lut_sequence()
                .ok()
                .flatten()
                .and_then(|l| l.first())
                .filter(|l| !l.data.is_empty()),
        };
        let mut v: Vec<f32> = match (voi_lut, window) {
            (Some(l), _) => {
                let top = ((1u32 << l.bits_stored.clamp(1, 16)) - 1) as f32;
                let last = l.data.len() as i64 - 1;
                raw.iter()
                    .map(|&x| {
                        let i = (x.round() as i64 - i64::from(l.min_pixel_value)).clamp(0, last);
                        (f32::from(l.data[i as usize]) / top).clamp(0.0, 1.0)
                    })
                    .collect()
            }
            (None, Some(wp)) => raw
                .iter()
                .map(|&x| window_linear(x, wp.center, wp.width))
                .collect(),
            (None, None) => min_max(raw.to_vec()),
        };
        if pi.as_str() == "MONOCHROME1" {
            v.iter_mut().for_each(|x| *x = 1.0 - *x);
        }
        Image::from_gray(w, h, &v)
    } else {
        // RGB, YBR_* and PALETTE COLOR: dicom-rs converts them to RGB.
        let img = pixels
            .to_dynamic_image_with_options(0, &ConvertOptions::new())
            .map_err(dicom_err)?;
        match img {
            image::DynamicImage::ImageRgb16(_) | image::DynamicImage::ImageLuma16(_) => {
                let rgb = img.to_rgb16();
                let v: Vec<f32> = rgb.as_raw().iter().map(|&p| p as f32).collect();
                Image::from_interleaved_rgb(w, h, &min_max(v), 1.0)
            }
            other => {
                let rgb = other.to_rgb8();
                Image::from_interleaved_rgb(w, h, rgb.as_raw(), 255.0)
            }
        }
    };
    Ok((image, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_the_dicom_linear_function() {
        // C=40, W=400: [-160.5 .. 239.5] maps onto [0, 1].
        assert_eq!(window_linear(-1000.0, 40.0, 400.0), 0.0);
        assert_eq!(window_linear(1000.0, 40.0, 400.0), 1.0);
        assert!((window_linear(39.5, 40.0, 400.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn presets_and_explicit_windows_parse() {
        let lung: WindowPreset = "Lung".parse().unwrap();
        assert_eq!((lung.center, lung.width), (-600.0, 1500.0));
        let c: WindowPreset = "40, 400".parse().unwrap();
        assert_eq!((c.center, c.width), (40.0, 400.0));
        assert!("liver".parse::<WindowPreset>().is_err());
        assert!("40,0".parse::<WindowPreset>().is_err());
    }
}

#[cfg(test)]
mod file_tests {
    use crate::{decode_bytes, DecodeOptions, Format};
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    /// A 2×2 16-bit signed CT slice: stored [-1000, 0, 1000, 2000] with slope 1, intercept
    /// -1024 (so HU -2024..976) and the given photometric interpretation and window.
    fn ct(photometric: &str, window: Option<(&str, &str)>) -> Vec<u8> {
        let mut o = InMemDicomObject::new_empty();
        let s = |v: &str| PrimitiveValue::from(v);
        o.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            s(uids::CT_IMAGE_STORAGE),
        ));
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            s("1.2.3.4.5"),
        ));
        o.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            s("1.2.3"),
        ));
        o.put(DataElement::new(tags::MODALITY, VR::CS, s("CT")));
        o.put(DataElement::new(tags::PATIENT_ID, VR::LO, s("PAT-0042")));
        o.put(DataElement::new(tags::PATIENT_NAME, VR::PN, s("Doe^Jane")));
        o.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        o.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            s(photometric),
        ));
        o.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(2u16),
        ));
        o.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(2u16),
        ));
        o.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(16u16),
        ));
        o.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(16u16),
        ));
        o.put(DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(15u16),
        ));
        o.put(DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        o.put(DataElement::new(tags::RESCALE_SLOPE, VR::DS, s("1")));
        o.put(DataElement::new(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            s("-1024"),
        ));
        if let Some((c, w)) = window {
            o.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, s(c)));
            o.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, s(w)));
        }
        let px: Vec<u8> = [-1000i16, 0, 1000, 2000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(px),
        ));
        let file = o
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE),
            )
            .unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        out
    }

    fn gray(bytes: &[u8], opts: &DecodeOptions) -> Vec<f32> {
        let d = decode_bytes(bytes, opts).unwrap();
        assert_eq!(d.format, Format::Dicom);
        assert_eq!(d.image.data[..4], d.image.data[4..8], "gray replicated");
        d.image.data[..4].to_vec()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
    }

    #[test]
    fn no_window_means_min_max_after_rescale() {
        let v = gray(&ct("MONOCHROME2", None), &DecodeOptions::default());
        assert!(close(&v, &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]), "{v:?}");
    }

    #[test]
    fn the_objects_window_applies_to_rescaled_values() {
        // C=0, W=2001 spans HU (-1000.5, 999.5]: -2024 and -1024 fall below it.
        let v = gray(
            &ct("MONOCHROME2", Some(("0", "2001"))),
            &DecodeOptions::default(),
        );
        let f = |x: f32| (x + 0.5) / 2000.0 + 0.5;
        assert!(close(&v, &[0.0, 0.0, f(-24.0), f(976.0)]), "{v:?}");
    }

    #[test]
    fn multiple_window_values_use_the_first_and_presets_override() {
        let bytes = ct("MONOCHROME2", Some(("0\\40", "2001\\400")));
        let v = gray(&bytes, &DecodeOptions::default());
        let f = |x: f32| (x + 0.5) / 2000.0 + 0.5;
        assert!(close(&v, &[0.0, 0.0, f(-24.0), f(976.0)]), "{v:?}");
        let lung = DecodeOptions {
            window: Some("lung".parse().unwrap()),
            ..Default::default()
        };
        let v = gray(&bytes, &lung);
        // lung: C=-600, W=1500 -> (x + 600.5) / 1499 + 0.5, clamped.
        let f = |x: f32| ((x + 600.5) / 1499.0 + 0.5).clamp(0.0, 1.0);
        assert!(
            close(&v, &[f(-2024.0), f(-1024.0), f(-24.0), f(976.0)]),
            "{v:?}"
        );
    }

    #[test]
    fn monochrome1_is_inverted() {
        let v = gray(&ct("MONOCHROME1", None), &DecodeOptions::default());
        assert!(close(&v, &[1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0]), "{v:?}");
    }

    #[test]
    fn attributes_are_read_and_truncation_is_a_clean_error() {
        let bytes = ct("MONOCHROME2", None);
        let d = decode_bytes(&bytes, &DecodeOptions::default()).unwrap();
        let m = d.dicom.unwrap();
        assert_eq!(m.modality.as_deref(), Some("CT"));
        assert_eq!(m.study_uid.as_deref(), Some("1.2.3"));
        assert_eq!(m.patient_id.as_deref(), Some("PAT-0042"));
        assert!(
            !format!("{m:?}").contains("Doe"),
            "PatientName is never read"
        );
        for cut in [140, bytes.len() / 2, bytes.len() - 3] {
            let err = decode_bytes(&bytes[..cut], &DecodeOptions::default()).unwrap_err();
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}
