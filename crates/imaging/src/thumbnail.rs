//! Thumbnails: a file's first image decoded (DICOM windowed as for embedding), fitted into a
//! square keeping its aspect ratio, encoded as PNG. One implementation for the server's
//! `/api/items/{id}/thumbnail` and the report's retrieval examples.

use crate::{decode_input_with, resize_bilinear, DecodeError, DecodeOptions, Input};
use image::ImageEncoder;

/// The first image of `input` fitted into `size`×`size` (never enlarged), as PNG bytes;
/// `Ok(None)` when the file holds no image. The resize happens inside the decode, while the
/// decode budget's bytes are held.
pub fn thumbnail_png(
    input: Input<'_>,
    size: usize,
    opts: &DecodeOptions,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let Some((rgb, tw, th)) = decode_input_with(input, opts, |items| {
        let d = items.into_iter().next()?;
        let (w, h) = (d.image.width, d.image.height);
        let scale = (size as f64 / w.max(h) as f64).min(1.0);
        let (tw, th) = (
            ((w as f64 * scale).round() as usize).max(1),
            ((h as f64 * scale).round() as usize).max(1),
        );
        let small = resize_bilinear(&d.image, tw, th);
        let n = tw * th;
        let mut rgb = vec![0u8; n * 3];
        for c in 0..3 {
            for i in 0..n {
                rgb[i * 3 + c] = (small.data[c * n + i].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        Some((rgb, tw, th))
    })?
    else {
        return Ok(None);
    };
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&rgb, tw as u32, th as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| DecodeError::Corrupt {
            format: "png",
            reason: format!("encoding the thumbnail: {e}"),
        })?;
    Ok(Some(out))
}
