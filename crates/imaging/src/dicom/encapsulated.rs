//! Encapsulated pixel data: fragments mapped to frames (shared by the JPEG, JPEG-LS and RLE
//! readers) and the 32-bit RLE Lossless frames dicom-rs refuses, with PackBits.

use super::error::{DicomCodec, DicomError};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use std::borrow::Cow;

/// 32-bit RLE Lossless frames as interleaved words: per frame one fragment holding 4 byte
/// segments per sample, most significant first (DICOM PS3.5 annex G).
/// Only the `wanted` frames are decoded; the others stay zero.
pub(super) fn rle32(
    obj: &DefaultDicomObject,
    frames: u32,
    wanted: &[u32],
    per: usize,
    spp: usize,
) -> Result<Vec<u32>, DicomError> {
    // PS3.5 annex G: one fragment per frame, so no frame boundary to look for.
    let streams = encapsulated_frames(obj, frames, DicomCodec::Rle, None)?;
    let pixels = per / spp;
    let mut words = vec![0u32; per * frames as usize];
    for (f, stream) in streams.iter().enumerate() {
        if !wanted.contains(&(f as u32)) {
            continue;
        }
        let head = |i: usize| -> Option<usize> {
            let b = stream.get(4 * i..4 * i + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let nseg = head(0).unwrap_or(0);
        let frame_err = |reason: String| DicomError::Frame {
            codec: DicomCodec::Rle,
            frame: f as u32,
            reason,
        };
        if nseg != 4 * spp {
            return Err(frame_err(format!(
                "{nseg} segments, expected {} for 32-bit",
                4 * spp
            )));
        }
        let out = &mut words[f * per..(f + 1) * per];
        for seg in 0..nseg {
            let start = head(1 + seg).unwrap_or(usize::MAX);
            let end = if seg + 1 < nseg {
                head(2 + seg).unwrap_or(usize::MAX)
            } else {
                stream.len()
            };
            let data = stream
                .get(start..end.min(stream.len()))
                .ok_or_else(|| frame_err(format!("bad offset of segment {seg}")))?;
            let bytes = packbits(data, pixels);
            if bytes.len() < pixels {
                return Err(frame_err(format!(
                    "segment {seg} holds {} of {pixels} bytes",
                    bytes.len()
                )));
            }
            let (sample, shift) = (seg / 4, 8 * (3 - seg % 4));
            for (i, &b) in bytes.iter().take(pixels).enumerate() {
                out[i * spp + sample] |= u32::from(b) << shift;
            }
        }
    }
    Ok(words)
}

/// The encapsulated stream of each of `frames` frames: all fragments for a single frame, one
/// fragment per frame, else, where `starts_frame` can tell, a new frame at each fragment that
/// opens one. `codec` names the syntax in errors.
pub(crate) fn encapsulated_frames<'a>(
    obj: &'a DefaultDicomObject,
    frames: u32,
    codec: DicomCodec,
    starts_frame: Option<fn(&[u8]) -> bool>,
) -> Result<Vec<Cow<'a, [u8]>>, DicomError> {
    let el = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| DicomError::NoPixelData)?;
    let fragments = el
        .value()
        .fragments()
        .ok_or(DicomError::NotEncapsulated { codec })?;
    let frames = frames.max(1) as usize;
    let streams: Vec<Cow<'a, [u8]>> = if frames == 1 {
        vec![Cow::Owned(fragments.concat())]
    } else if fragments.len() == frames {
        fragments.iter().map(|f| Cow::Borrowed(&f[..])).collect()
    } else if let Some(starts_frame) = starts_frame {
        let mut v: Vec<Cow<'a, [u8]>> = Vec::new();
        for f in fragments {
            match v.last_mut() {
                Some(last) if !starts_frame(f) => last.to_mut().extend_from_slice(f),
                _ => v.push(Cow::Borrowed(&f[..])),
            }
        }
        v
    } else {
        return Err(DicomError::Fragments {
            codec,
            fragments: fragments.len(),
            frames,
        });
    };
    if streams.is_empty() {
        return Err(DicomError::Fragments {
            codec,
            fragments: 0,
            frames,
        });
    }
    Ok(streams)
}

/// PackBits, stopping at `want` bytes.
pub(super) fn packbits(data: &[u8], want: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(want);
    let mut i = 0;
    while i < data.len() && out.len() < want {
        let n = data[i] as i8;
        i += 1;
        if n >= 0 {
            let end = (i + n as usize + 1).min(data.len());
            out.extend_from_slice(&data[i..end]);
            i = end;
        } else if n != -128 {
            if let Some(&b) = data.get(i) {
                out.extend(std::iter::repeat_n(b, (1 - n as isize) as usize));
            }
            i += 1;
        }
    }
    out
}

/// A copy of `obj` holding `pixels` (the decoded frames, in order) as native Pixel Data of
/// `vr`, `frames` frames long, in explicit VR little endian: what every codec here hands back
/// so that LUTs, windows and colour take the usual path. Codec-specific attributes (bits,
/// components, photometric interpretation) are the caller's to set.
pub(crate) fn native_copy(
    obj: &DefaultDicomObject,
    pixels: PrimitiveValue,
    vr: VR,
    frames: usize,
) -> DefaultDicomObject {
    let mut native = obj.clone();
    native.put(DataElement::new(tags::PIXEL_DATA, vr, pixels));
    native.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from(frames.to_string()),
    ));
    native.update_meta(|m| {
        m.set_transfer_syntax(&dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN)
    });
    native
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literals_runs_and_no_ops() {
        // 3 literals, a run of 3, the -128 no-op, 1 literal; then stop at `want`.
        let data = [0x02, 1, 2, 3, 0xFE, 9, 0x80, 0x00, 7];
        assert_eq!(packbits(&data, 100), [1, 2, 3, 9, 9, 9, 7]);
        assert_eq!(packbits(&data, 4), [1, 2, 3, 9, 9, 9]);
        // Truncated input yields what is there, never a panic.
        assert_eq!(packbits(&[0x05, 1, 2], 100), [1, 2]);
        assert_eq!(packbits(&[0xFB], 100), Vec::<u8>::new());
    }
}
