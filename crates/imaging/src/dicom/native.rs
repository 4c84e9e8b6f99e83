//! Integer pixels dicom-pixeldata 0.10 refuses, read here: 32-bit (dose grids, some CT and
//! secondary captures; native or RLE) and 1-bit native (segmentation masks), then rescale and
//! the window or min-max like every other monochrome frame; and the samples of any frame
//! dicom-pixeldata decoded, through the modality LUT.

use super::attrs::{select_frames, text, DicomMeta, PixelAttrs, NATIVE, RLE};
use super::encapsulated::rle32;
use super::error::{samples_err, DicomError};
use crate::window::window_linear;
use crate::{min_max, DecodeOptions, Image};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, VoiLutOption};

/// Whether [`direct`] reads these pixels: what dicom-pixeldata 0.10 refuses.
pub(super) fn is_direct(bits: u16, ts: &str) -> bool {
    (bits == 32 && (NATIVE.contains(&ts) || ts == RLE)) || (bits == 1 && NATIVE.contains(&ts))
}

/// Integer pixels that dicom-pixeldata refuses, read here: 32-bit native or RLE (dose grids,
/// some CT and secondary captures) and 1-bit native (segmentation masks). Rescale
/// slope/intercept, then the window or min-max; RGB min-max.
pub(super) fn direct(
    obj: &DefaultDicomObject,
    meta: &DicomMeta,
    px: &PixelAttrs,
    opts: &DecodeOptions,
) -> Result<Vec<(u32, Image)>, DicomError> {
    let (bits, rows, cols) = (px.bits, px.rows, px.cols);
    let num = |tag| text(obj, tag).and_then(|s| s.parse::<f64>().ok());
    let spp = usize::from(px.samples_per_pixel);
    if !(spp == 1 || (spp == 3 && bits == 32)) {
        return Err(DicomError::BadAttribute {
            name: "SamplesPerPixel",
            value: spp.to_string(),
            expected: if bits == 32 {
                "1 or 3 at 32 bits"
            } else {
                "1 at 1 bit"
            },
        });
    }
    if rows == 0 || cols == 0 {
        return Err(DicomError::ZeroSize);
    }
    let signed = num(tags::PIXEL_REPRESENTATION) == Some(1.0) && bits == 32;
    let (slope, intercept) = (
        num(tags::RESCALE_SLOPE).unwrap_or(1.0),
        num(tags::RESCALE_INTERCEPT).unwrap_or(0.0),
    );
    let per = rows * cols * spp;
    let frames = meta.frames.max(1);
    let (words, planar) = if meta.transfer_syntax == RLE {
        let wanted = select_frames(opts, frames)?;
        (rle32(obj, frames, &wanted, per, spp)?, false)
    } else {
        let el = obj
            .element(tags::PIXEL_DATA)
            .map_err(|_| DicomError::NoPixelData)?;
        let big = meta.transfer_syntax == super::attrs::EXPLICIT_VR_BIG_ENDIAN;
        let words = match bits {
            1 => native1(el.value().primitive(), big, per * frames as usize)?,
            _ => native32(el.value().primitive(), big)?,
        };
        (words, num(tags::PLANAR_CONFIGURATION) == Some(1.0))
    };
    let n = (words.len() / per) as u32;
    if n == 0 {
        return Err(DicomError::TruncatedPixelData {
            expected: per,
            found: words.len(),
        });
    }
    let selected = select_frames(opts, n.min(frames))?;
    selected
        .into_iter()
        .map(|f| {
            let part = &words[f as usize * per..(f as usize + 1) * per];
            let vals: Vec<f32> = part
                .iter()
                .map(|&x| {
                    let x = if signed {
                        f64::from(x as i32)
                    } else {
                        f64::from(x)
                    };
                    (x * slope + intercept) as f32
                })
                .collect();
            let img = if spp == 1 {
                let v = match opts.window {
                    Some(wp) => vals
                        .iter()
                        .map(|&x| window_linear(x, wp.center, wp.width))
                        .collect(),
                    None => min_max(vals),
                };
                Image::gray(cols, rows, v)
            } else if planar {
                Image::new(cols, rows, min_max(vals))
            } else {
                Image::from_interleaved_rgb(cols, rows, &min_max(vals), 1.0)
            };
            Ok((f, img))
        })
        .collect()
}

/// 32-bit words of native pixel data. dicom-rs holds OW as u16 values in host order and OB
/// as bytes in file order.
pub(super) fn native32(
    value: Option<&dicom_core::PrimitiveValue>,
    big: bool,
) -> Result<Vec<u32>, DicomError> {
    Ok(match value {
        Some(dicom_core::PrimitiveValue::U16(v)) => v
            .chunks_exact(2)
            .map(|p| {
                if big {
                    (u32::from(p[0]) << 16) | u32::from(p[1])
                } else {
                    (u32::from(p[1]) << 16) | u32::from(p[0])
                }
            })
            .collect(),
        Some(p) => p
            .to_bytes()
            .chunks_exact(4)
            .map(|b| {
                let b = [b[0], b[1], b[2], b[3]];
                if big {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            })
            .collect(),
        None => return Err(DicomError::Encapsulated { bits: 32 }),
    })
}

/// `count` 1-bit pixels, packed least significant bit first and not padded between frames.
pub(super) fn native1(
    value: Option<&dicom_core::PrimitiveValue>,
    big: bool,
    count: usize,
) -> Result<Vec<u32>, DicomError> {
    let bytes: Vec<u8> = match value {
        // OW words back to the file's byte order; the bit order inside each byte is fixed.
        Some(dicom_core::PrimitiveValue::U16(v)) => v
            .iter()
            .flat_map(|w| {
                if big {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                }
            })
            .collect(),
        Some(p) => p.to_bytes().into_owned(),
        None => return Err(DicomError::Encapsulated { bits: 1 }),
    };
    let count = count.min(bytes.len() * 8);
    Ok((0..count)
        .map(|i| u32::from((bytes[i / 8] >> (i % 8)) & 1))
        .collect())
}

/// The first `n` samples of one frame, through the modality LUT choice, no VOI.
pub(super) fn samples(
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    modality: ModalityLutOption,
    n: usize,
) -> Result<Vec<f32>, DicomError> {
    let mut v: Vec<f32> = pixels
        .to_vec_frame_with_options(
            frame,
            &ConvertOptions::new()
                .with_modality_lut(modality)
                .with_voi_lut(VoiLutOption::Identity),
        )
        .map_err(samples_err)?;
    if v.len() < n {
        return Err(DicomError::TruncatedPixelData {
            expected: n,
            found: v.len(),
        });
    }
    v.truncate(n);
    Ok(v)
}
