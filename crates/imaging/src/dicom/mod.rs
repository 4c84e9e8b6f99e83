//! DICOM through dicom-rs, in the order a file goes: `open` (lengths checked before dicom-rs
//! reads them, then `un`: values stored as UN read by their dictionary VR), `attrs` (what is
//! kept; only a salted hash of PatientID ever leaves this module's callers), then the pixels:
//! simcase's own codecs for encapsulated data (`jpeg`: libjpeg-turbo, `jpegls`: CharLS,
//! `encapsulated`: fragments and 32-bit RLE) and readers for what dicom-pixeldata refuses
//! (`native`, `colour`), else dicom-pixeldata; then per frame the modality LUT, the VOI LUT
//! table or window (or min-max), MONOCHROME1 inverted.

mod attrs;
mod colour;
mod encapsulated;
mod error;
mod jpeg;
mod jpegls;
mod native;
mod open;
#[cfg(test)]
mod tests;
mod un;

pub use attrs::{DicomMeta, FrameSelect, Phi};
pub use error::{Declared, DicomCodec, DicomError};
pub(crate) use open::looks_like_bare_dataset;
pub use open::transfer_syntax;

use crate::window::{window_linear, WindowPreset};
use crate::{min_max, DecodeError, DecodeOptions, Image};
use attrs::{select_frames, text, PixelAttrs, NATIVE};
use dicom_dictionary_std::{tags, uids};
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{
    ConvertOptions, ModalityLutOption, PhotometricInterpretation as Pi, PixelDecoder,
};
use error::{first_line, samples_err};
use native::samples;

/// Decode the selected frames of a DICOM object: `(frame index, image)` and the attributes.
pub(crate) fn decode(
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<(Vec<(u32, Image)>, DicomMeta), DecodeError> {
    let obj = open::open(bytes, opts.pixel_limit())?;
    let meta = DicomMeta {
        modality: text(&obj, tags::MODALITY),
        body_part: text(&obj, tags::BODY_PART_EXAMINED),
        study_uid: text(&obj, tags::STUDY_INSTANCE_UID),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        sop_uid: text(&obj, tags::SOP_INSTANCE_UID),
        sop_class_uid: text(&obj, tags::SOP_CLASS_UID),
        instance_number: text(&obj, tags::INSTANCE_NUMBER),
        slice_location: text(&obj, tags::SLICE_LOCATION),
        study_date: text(&obj, tags::STUDY_DATE),
        transfer_syntax: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        patient_id: text(&obj, tags::PATIENT_ID),
        phi: opts.keep_phi.then(|| Phi {
            patient_name: text(&obj, tags::PATIENT_NAME),
            birth_date: text(&obj, tags::PATIENT_BIRTH_DATE),
        }),
        frames: text(&obj, tags::NUMBER_OF_FRAMES)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    };
    let px = PixelAttrs::read(&obj, meta.frames);
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(DicomError::NoPixelData.into());
    }
    px.check_bits()?;
    let limit = opts.pixel_limit();
    let (rows, cols) = (px.rows as u64, px.cols as u64);
    if rows * cols > limit {
        return Err(DecodeError::TooLarge {
            width: cols,
            height: rows,
            limit,
        });
    }
    if rows * cols * u64::from(meta.frames.max(1)) > limit {
        return Err(DecodeError::FramesTooLarge {
            width: cols,
            height: rows,
            frames: meta.frames,
            limit,
        });
    }
    crate::budget::reserve(peak_bytes(bytes.len(), &px, &meta, opts))?;
    if native::is_direct(px.bits, &meta.transfer_syntax) {
        let frames = native::direct(&obj, &meta, &px, opts)?;
        return Ok((frames, meta));
    }
    if px.is(&Pi::YbrFull422) && px.bits == 8 && NATIVE.contains(&meta.transfer_syntax.as_str()) {
        let frames = colour::ybr_422_native(&obj, &meta, &px, opts)?;
        return Ok((frames, meta));
    }
    // JPEG Baseline / Extended (libjpeg-turbo) and JPEG-LS (CharLS): the chosen frames
    // decoded by simcase, then read as native pixels. Should that fail, dicom-rs's decoder
    // gets its turn, and simcase's error is reported only if dicom-rs fails too.
    let ts = meta.transfer_syntax.as_str();
    let to_native = match ts {
        uids::JPEG_BASELINE8_BIT | uids::JPEG_EXTENDED12_BIT => Some(jpeg::to_native as ToNative),
        uids::JPEGLS_LOSSLESS | uids::JPEGLS_NEAR_LOSSLESS => Some(jpegls::to_native as ToNative),
        _ => None,
    };
    let mut codec_error = None;
    let (obj, frame_numbers) = match to_native {
        Some(to_native) => {
            let selected = select_frames(opts, meta.frames.max(1))?;
            match to_native(&obj, &px, &selected) {
                Ok(native) => (native, Some(selected)),
                Err(e) => {
                    codec_error = Some(e);
                    (obj, None)
                }
            }
        }
        None => (obj, None),
    };
    let pixels = obj
        .decode_pixel_data()
        .map_err(|e| codec_error.unwrap_or_else(|| pixel_decode_err(&meta.transfer_syntax, e)))?;
    let (w, h) = (pixels.columns() as usize, pixels.rows() as usize);
    if w == 0 || h == 0 {
        return Err(DicomError::ZeroSize.into());
    }
    let n = pixels.number_of_frames().max(1);
    // Frames decoded by simcase (JPEG) are native pixels now.
    let native = frame_numbers.is_some() || NATIVE.contains(&meta.transfer_syntax.as_str());
    // (frame number in the file, frame index in `pixels`)
    let selected: Vec<(u32, u32)> = match frame_numbers {
        Some(numbers) => numbers.into_iter().zip(0..).collect(),
        None => select_frames(opts, n)?
            .into_iter()
            .map(|f| (f, f))
            .collect(),
    };
    let frames = selected
        .into_iter()
        .map(|(f, i)| Ok((f, frame_image(&obj, &pixels, i, w, h, native, opts)?)))
        .collect::<Result<Vec<_>, DicomError>>()?;
    Ok((frames, meta))
}

/// Peak bytes of decoding the selected frames (see the budget module's memory model): the
/// parsed object, every frame's decoded samples (twice: a codec's native copy, then
/// dicom-rs's), and per selected frame its `f32` planes plus one frame's intermediates.
fn peak_bytes(file: usize, attrs: &PixelAttrs, meta: &DicomMeta, opts: &DecodeOptions) -> u64 {
    let spp = u64::from(attrs.samples_per_pixel.clamp(1, 4));
    let frames = u64::from(meta.frames.max(1));
    let sample = u64::from(attrs.bits.clamp(8, 64)).div_ceil(8);
    let selected = select_frames(opts, meta.frames.max(1)).map_or(frames, |f| f.len() as u64);
    let px = attrs.rows as u64 * attrs.cols as u64;
    file as u64 + 2 * px * frames * spp * sample + selected * px * 12 + px * (24 + 12 * spp)
}

/// Why dicom-pixeldata could not decode the pixel data of transfer syntax `uid`: a syntax it
/// does not know or has no decoder for, else its own message.
fn pixel_decode_err(uid: &str, e: dicom_pixeldata::Error) -> DicomError {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    let uid = uid.to_string();
    match dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&uid) {
        None => DicomError::UnknownTransferSyntax { uid },
        Some(ts) if !ts.can_decode_all() => DicomError::UnsupportedTransferSyntax { uid },
        Some(_) => DicomError::PixelDecode {
            uid,
            reason: first_line(e),
        },
    }
}

/// A codec decoding the chosen frames of an object (its image attributes `px`) into a
/// native copy.
type ToNative =
    fn(&DefaultDicomObject, &PixelAttrs, &[u32]) -> Result<DefaultDicomObject, DicomError>;

/// Monochrome (modality LUT, then window / VOI LUT / min-max, MONOCHROME1 inverted) or colour
/// (dicom-rs converts RGB, YBR_FULL and YBR_FULL_422 to RGB; PALETTE COLOR and native 8-bit
/// YBR_FULL are converted here) for one frame.
pub(super) fn frame_image(
    obj: &DefaultDicomObject,
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    w: usize,
    h: usize,
    native: bool,
    opts: &DecodeOptions,
) -> Result<Image, DicomError> {
    let pi = pixels.photometric_interpretation();
    match pi {
        Pi::PaletteColor => return colour::palette(obj, pixels, frame, w, h),
        Pi::YbrFull if native && pixels.bits_allocated() == 8 => {
            return colour::ybr_full(pixels, frame, w, h)
        }
        Pi::Monochrome1 | Pi::Monochrome2 | Pi::Rgb | Pi::YbrFull | Pi::YbrFull422 => {}
        // Three samples in a colour model dicom-rs does not convert to RGB (it refuses them).
        _ if pixels.samples_per_pixel() == 3 => {
            return Err(DicomError::UnsupportedPhotometric(pi.clone()))
        }
        // A single sample under a name outside the standard's list: dicom-rs reads it as grey.
        _ => {}
    }
    Ok(if pi.is_monochrome() {
        // Modality LUT only; the window is applied here so an override can replace it.
        let raw = samples(pixels, frame, ModalityLutOption::Default, w * h)?;
        let raw = &raw[..];
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
        if *pi == Pi::Monochrome1 {
            v.iter_mut().for_each(|x| *x = 1.0 - *x);
        }
        Image::gray(w, h, v)
    } else {
        let img = pixels
            .to_dynamic_image_with_options(frame, &ConvertOptions::new())
            .map_err(samples_err)?;
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
    })
}
