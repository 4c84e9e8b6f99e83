//! Colour that simcase converts itself: uncompressed YBR_FULL and YBR_FULL_422 (dicom-pixeldata
//! 0.10 gets saturated colours wrong and mis-sizes 4:2:2 frames) and PALETTE COLOR through
//! plain or segmented tables, with the rounding pydicom uses.

use super::attrs::{select_frames, DicomMeta, PixelAttrs};
use super::error::{samples_err, DicomError};
use super::native::samples;
use crate::{DecodeOptions, Image};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::ModalityLutOption;

/// Uncompressed YBR_FULL_422 (`Y1 Y2 Cb Cr` per pixel pair), which dicom-pixeldata sizes as
/// if it were full-resolution; chroma is shared by each horizontal pair.
pub(super) fn ybr_422_native(
    obj: &DefaultDicomObject,
    meta: &DicomMeta,
    px: &PixelAttrs,
    opts: &DecodeOptions,
) -> Result<Vec<(u32, Image)>, DicomError> {
    let (rows, cols) = (px.rows, px.cols);
    let el = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| DicomError::NoPixelData)?;
    let bytes = el.value().to_bytes().map_err(samples_err)?;
    let per = rows * cols * 2;
    if rows == 0 || cols == 0 {
        return Err(DicomError::ZeroSize);
    }
    if cols % 2 == 1 {
        return Err(DicomError::BadAttribute {
            name: "Columns",
            value: cols.to_string(),
            expected: "an even number for YBR_FULL_422",
        });
    }
    let n = ((bytes.len() / per) as u32).min(meta.frames.max(1));
    if n == 0 {
        return Err(DicomError::TruncatedPixelData {
            expected: per,
            found: bytes.len(),
        });
    }
    let selected = select_frames(opts, n)?;
    Ok(selected
        .into_iter()
        .map(|f| {
            let part = &bytes[f as usize * per..(f as usize + 1) * per];
            let npx = rows * cols;
            let mut out = vec![0f32; 3 * npx];
            for (k, q) in part.chunks_exact(4).enumerate() {
                for (j, y) in [q[0], q[1]].into_iter().enumerate() {
                    let rgb = ycbcr(y, q[2], q[3]);
                    for c in 0..3 {
                        out[c * npx + 2 * k + j] = rgb[c];
                    }
                }
            }
            (f, Image::new(cols, rows, out))
        })
        .collect())
}

/// ITU-R BT.601 full-range YCbCr to RGB in [0, 1] (PS3.3 C.7.6.3.1.2, as pydicom).
pub(super) fn ycbcr(y: u8, cb: u8, cr: u8) -> [f32; 3] {
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
    [
        y + 1.402 * cr,
        y - 0.344_136 * cb - 0.714_136 * cr,
        y + 1.772 * cb,
    ]
    .map(|v| v.round().clamp(0.0, 255.0) / 255.0)
}

/// Uncompressed 8-bit YBR_FULL, converted here (dicom-pixeldata 0.10 gets saturated blues
/// wrong): ITU-R BT.601 full range, as PS3.3 C.7.6.3.1.2 and pydicom define it.
pub(super) fn ybr_full(
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    w: usize,
    h: usize,
) -> Result<Image, DicomError> {
    let n = w * h;
    let data = pixels.data();
    let part = data
        .get(frame as usize * 3 * n..(frame as usize + 1) * 3 * n)
        .ok_or(DicomError::TruncatedPixelData {
            expected: 3 * n,
            found: data.len().saturating_sub(frame as usize * 3 * n),
        })?;
    let planar = matches!(
        pixels.planar_configuration(),
        dicom_pixeldata::PlanarConfiguration::PixelFirst
    );
    let mut out = vec![0f32; 3 * n];
    for i in 0..n {
        let (y, cb, cr) = if planar {
            (part[i], part[n + i], part[2 * n + i])
        } else {
            (part[3 * i], part[3 * i + 1], part[3 * i + 2])
        };
        for (c, v) in ycbcr(y, cb, cr).into_iter().enumerate() {
            out[c * n + i] = v;
        }
    }
    Ok(Image::new(w, h, out))
}

/// PALETTE COLOR: stored indices through the red, green and blue lookup tables, each entry
/// scaled by its descriptor's bit depth.
pub(super) fn palette(
    obj: &DefaultDicomObject,
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    w: usize,
    h: usize,
) -> Result<Image, DicomError> {
    let idx = samples(pixels, frame, ModalityLutOption::None, w * h)?;
    let luts = [
        (
            "red",
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            "green",
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            "blue",
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ]
    .map(|(channel, d, v, seg)| (channel, palette_lut(obj, d, v, seg)));
    let mut out = vec![0f32; 3 * w * h];
    for (c, (channel, lut)) in luts.iter().enumerate() {
        let (table, first, top) = lut.as_ref().ok_or(DicomError::PaletteTable { channel })?;
        let last = table.len() as i64 - 1;
        for (o, &i) in out[c * w * h..(c + 1) * w * h].iter_mut().zip(&idx) {
            let k = (i as i64 - first).clamp(0, last) as usize;
            *o = f32::from(table[k]) / top;
        }
    }
    Ok(Image::new(w, h, out))
}

/// One palette table, from its plain `data` or else its `segmented` data: entries, first
/// mapped value, full-scale value.
pub(super) fn palette_lut(
    obj: &DefaultDicomObject,
    desc: dicom_object::Tag,
    data: dicom_object::Tag,
    segmented: dicom_object::Tag,
) -> Option<(Vec<u16>, i64, f32)> {
    let d = obj.element_opt(desc).ok()??.to_multi_int::<i64>().ok()?;
    let (n, first, bits) = (*d.first()?, *d.get(1)?, *d.get(2)?);
    let n = if n <= 0 { 65536 } else { n as usize };
    let bits = bits.clamp(1, 16) as u32;
    let top = ((1u32 << bits) - 1) as f32;
    let Some(el) = obj.element_opt(data).ok()? else {
        return segmented_lut(obj, segmented, n).map(|table| (table, first, top));
    };
    let table: Vec<u16> = match el.value().primitive()? {
        dicom_core::PrimitiveValue::U16(v) if v.len() >= n => v[..n].to_vec(),
        // 8-bit entries packed two to a word.
        p => p.to_bytes().iter().take(n).map(|&b| u16::from(b)).collect(),
    };
    (table.len() == n).then_some((table, first, top))
}

/// A segmented palette table (PS3.3 C.7.9.2) of 16-bit words expanded to its `n` entries.
pub(super) fn segmented_lut(
    obj: &DefaultDicomObject,
    tag: dicom_object::Tag,
    n: usize,
) -> Option<Vec<u16>> {
    let el = obj.element_opt(tag).ok()??;
    let words: Vec<u16> = match el.value().primitive()? {
        dicom_core::PrimitiveValue::U16(v) => v.to_vec(),
        p => p
            .to_bytes()
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect(),
    };
    let mut lut = Vec::with_capacity(n);
    expand_segments(&words, None, &mut lut, n, 0);
    (lut.len() >= n).then(|| {
        lut.truncate(n);
        lut
    })
}

/// Append the segments of `data` (at most `count` of them) to `lut`, up to `n` entries.
/// Linear segments round like NumPy (`around` of a `linspace`), as pydicom does; indirect
/// segments re-read earlier segments, with the depth bounded against self-reference.
pub(super) fn expand_segments(
    data: &[u16],
    count: Option<usize>,
    lut: &mut Vec<u16>,
    n: usize,
    depth: u8,
) {
    let mut at = 0;
    let mut read = 0;
    while at + 1 < data.len() && lut.len() < n && count.is_none_or(|c| read < c) {
        let (op, len) = (data[at], usize::from(data[at + 1]));
        at += 2;
        match op {
            0 => {
                let end = (at + len).min(data.len());
                lut.extend_from_slice(&data[at..end]);
                at = end;
            }
            1 => {
                let (Some(&y0), Some(&y1)) = (lut.last(), data.get(at)) else {
                    return;
                };
                at += 1;
                let (y0, y1) = (f64::from(y0), f64::from(y1));
                let step = (y1 - y0) / len.max(1) as f64;
                lut.extend((1..=len).map(|i| {
                    let v = if i == len { y1 } else { y0 + step * i as f64 };
                    v.round_ties_even().clamp(0.0, 65535.0) as u16
                }));
            }
            2 => {
                let (Some(&lo), Some(&hi)) = (data.get(at), data.get(at + 1)) else {
                    return;
                };
                at += 2;
                let offset = (usize::from(hi) << 16) | usize::from(lo);
                if depth >= 4 || lut.is_empty() || offset >= data.len() {
                    return;
                }
                expand_segments(&data[offset..], Some(len), lut, n, depth + 1);
            }
            _ => return,
        }
        read += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_palettes_expand_and_self_reference_ends() {
        let mut lut = Vec::new();
        // Discrete [10, 20, 30], linear to 50 in 2 steps, indirect: segment 0 again.
        let data = [0, 3, 10, 20, 30, 1, 2, 50, 2, 1, 0, 0];
        expand_segments(&data, None, &mut lut, 100, 0);
        assert_eq!(lut, [10, 20, 30, 40, 50, 10, 20, 30]);
        // An indirect segment that points at itself stops at the depth bound.
        let mut lut = Vec::new();
        expand_segments(&[0, 1, 5, 2, 5, 3, 0], None, &mut lut, 100, 0);
        assert_eq!(lut, [5]);
        // No segment is read once the descriptor's length is reached (the caller truncates).
        let mut lut = Vec::new();
        expand_segments(&[0, 1, 0, 1, 200, 65535, 0, 1, 7], None, &mut lut, 10, 0);
        assert_eq!((lut.len(), lut[200]), (201, 65535));
    }
}
