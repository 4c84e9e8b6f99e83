//! DICOM JPEG-LS (1.2.840.10008.1.2.4.80 / .81) through CharLS, called here rather than
//! through dicom-pixeldata's adapter.
//!
//! Why: some encoders leave zero bytes between the end of the entropy-coded data and the EOI
//! marker (NEMA WG04's 16-bit signed `MR1_JLSL` ends `.. 2B 00 FF D9`). CharLS 2.3 and later
//! refuse such a stream ("the leading start byte (0xFF) for a JPEG marker was not found"),
//! and dicom-pixeldata's adapter passes that on as "Could not decode pixel data"; DCMTK, with
//! its older CharLS, decodes it. simcase decodes each frame as it is and, only when CharLS
//! refuses it, again with one, then two (up to four) of those zero bytes dropped, logged once
//! per file. CharLS requires the entropy-coded data to end exactly at the marker, so a retry
//! that dropped a data byte fails instead of decoding. The chosen frames are re-stored as
//! native pixels, which the uncompressed code path then reads (modality LUT, VOI, signed
//! samples, MONOCHROME1, colour).

use super::attrs::PixelAttrs;
use super::error::{DicomCodec, DicomError};
use charls::CharLS;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// Where `jpeg`'s final EOI marker is, and how many zero bytes stand right before it (some
/// of them may be data: CharLS's own streams can end in a zero byte).
fn zeros_before_eoi(jpeg: &[u8]) -> Option<(usize, usize)> {
    let eoi = jpeg.windows(2).rposition(|w| w == [0xFF, 0xD9])?;
    let zeros = jpeg[..eoi].iter().rev().take_while(|&&b| b == 0).count();
    // A zero right after 0xFF is bit stuffing, part of the data.
    let stuffed = usize::from(zeros > 0 && eoi > zeros && jpeg[eoi - zeros - 1] == 0xFF);
    Some((eoi, zeros - stuffed))
}

/// `jpeg` without `k` of the zero bytes before its EOI marker at `eoi` (anything after EOI,
/// such as DICOM's even-length padding, is kept).
fn dropping_zeros(jpeg: &[u8], eoi: usize, k: usize) -> Vec<u8> {
    [&jpeg[..eoi - k], &jpeg[eoi..]].concat()
}

/// At most this many zero bytes before EOI are tried away (WG04 has one).
const MAX_PADDING: usize = 4;

/// Interleave mode of the first scan (0 none, 1 line, 2 sample), from its SOS header.
fn interleave_mode(jpeg: &[u8]) -> Option<u8> {
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA])?;
    let ns = usize::from(*jpeg.get(sos + 4)?);
    // FF DA, Ls (2), Ns, (Ci, Tmi) × Ns, NEAR, ILV
    jpeg.get(sos + 5 + 2 * ns + 1).copied()
}

/// One frame: its samples (one byte each for up to 8 bits, else two, native endian), the
/// frame header and whether the padding retry was needed.
fn decode_frame(jpeg: &[u8]) -> Result<(Vec<u8>, charls::FrameInfo, bool), DicomError> {
    let once = |j: &[u8]| -> Result<(Vec<u8>, charls::FrameInfo), charls::Error> {
        // A fresh decoder per stream: CharLS's decoder is a one-shot state machine.
        let info = CharLS::default().get_frame_info(j)?;
        Ok((CharLS::default().decode(j)?, info))
    };
    let first = match once(jpeg) {
        Ok((v, info)) => return Ok((v, info, false)),
        Err(e) => e,
    };
    // Refused: once more for each count of zero bytes dropped before EOI, fewest first.
    if let Some((eoi, zeros)) = zeros_before_eoi(jpeg) {
        for k in 1..=zeros.min(MAX_PADDING) {
            if let Ok((v, info)) = once(&dropping_zeros(jpeg, eoi, k)) {
                return Ok((v, info, true));
            }
        }
    }
    Err(DicomError::Codec {
        codec: DicomCodec::JpegLs,
        reason: first.to_string(),
    })
}

/// A copy of `obj` whose pixel data is the `selected` frames, decoded and stored natively
/// (explicit VR little endian, at the object's BitsAllocated), in that order.
pub(super) fn to_native(
    obj: &DefaultDicomObject,
    px: &PixelAttrs,
    selected: &[u32],
) -> Result<DefaultDicomObject, DicomError> {
    let streams = super::encapsulated::encapsulated_frames(
        obj,
        px.frames,
        DicomCodec::JpegLs,
        Some(|f| f.starts_with(&[0xFF, 0xD8])),
    )?;
    let (rows, cols, bits, spp) = (px.rows, px.cols, px.bits, px.samples_per_pixel);
    if bits != 8 && bits != 16 {
        return Err(DicomError::BadAttribute {
            name: "BitsAllocated",
            value: bits.to_string(),
            expected: "8 or 16 for JPEG-LS",
        });
    }
    let frame_err = |frame: u32, reason: String| DicomError::Frame {
        codec: DicomCodec::JpegLs,
        frame,
        reason,
    };
    let mut bytes8: Vec<u8> = Vec::new();
    let mut words: Vec<u16> = Vec::new();
    let (mut retried, mut planar) = (0usize, None);
    for &f in selected {
        let jpeg = streams.get(f as usize).ok_or(DicomError::FrameOutOfRange {
            frame: f,
            count: streams.len() as u32,
        })?;
        let (samples, info, retry) = decode_frame(jpeg)?;
        retried += usize::from(retry);
        let (w, h, c) = (
            info.width as usize,
            info.height as usize,
            info.component_count,
        );
        if (w, h) != (cols, rows) {
            return Err(DicomError::FrameSize {
                codec: DicomCodec::JpegLs,
                frame: f,
                width: w,
                height: h,
                columns: cols,
                rows,
            });
        }
        if c != i32::from(spp) {
            return Err(DicomError::FrameComponents {
                codec: DicomCodec::JpegLs,
                frame: f,
                found: usize::try_from(c).unwrap_or(0),
                expected: usize::from(spp),
            });
        }
        let wide = info.bits_per_sample > 8;
        if wide && bits == 8 {
            return Err(frame_err(
                f,
                format!("{}-bit samples, 8 bits allocated", info.bits_per_sample),
            ));
        }
        let n = w * h * spp as usize;
        if samples.len() != n * if wide { 2 } else { 1 } {
            return Err(frame_err(
                f,
                format!("gave {} bytes for {n} samples", samples.len()),
            ));
        }
        // Interleave mode none is stored plane by plane (PS3.5 8.2.3): planar configuration 1.
        let p = u16::from(spp > 1 && interleave_mode(jpeg) == Some(0));
        if *planar.get_or_insert(p) != p {
            return Err(frame_err(
                f,
                "interleave differs from the first frame's".into(),
            ));
        }
        match (bits, wide) {
            (8, _) => bytes8.extend_from_slice(&samples),
            (_, true) => words.extend(
                samples
                    .chunks_exact(2)
                    .map(|b| u16::from_ne_bytes([b[0], b[1]])),
            ),
            // Up to 8-bit samples in 16 bits allocated: CharLS hands out one byte each.
            (_, false) => words.extend(samples.iter().map(|&b| u16::from(b))),
        }
    }
    if retried > 0 {
        // No file name or attribute values here: the caller's log line names the file.
        tracing::debug!(
            "JPEG-LS: {retried} of {} frames decoded without the zero bytes before EOI, \
             which CharLS refuses (as DCMTK reads them)",
            selected.len()
        );
    }
    let (value, vr) = if bits == 8 {
        (PrimitiveValue::U8(bytes8.into()), VR::OB)
    } else {
        (PrimitiveValue::U16(words.into()), VR::OW)
    };
    let mut native = super::encapsulated::native_copy(obj, value, vr, selected.len());
    if spp > 1 {
        native.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(planar.unwrap_or(0)),
        ));
    }
    Ok(native)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_items, DecodeOptions, FrameSelect};
    use dicom_dictionary_std::uids;

    const W: usize = 40;
    const H: usize = 24;

    /// Signed 16-bit samples spanning the whole range, both signs and both extremes.
    fn signed(f: usize) -> Vec<i16> {
        (0..W * H)
            .map(|i| {
                let t = (i * 2654435761 + f * 977) % 65536;
                (t as i64 - 32768) as i16
            })
            .collect()
    }

    fn encode(px: &[i16]) -> Vec<u8> {
        let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let info = charls::FrameInfo {
            width: W as u32,
            height: H as u32,
            bits_per_sample: 16,
            component_count: 1,
        };
        CharLS::default().encode(info, 0, &bytes).unwrap()
    }

    /// `jpeg` with one zero byte before EOI (and DICOM's even-length pad after it), as in
    /// NEMA's MR1_JLSL.
    fn padded(jpeg: &[u8]) -> Vec<u8> {
        let eoi = jpeg.len() - 2;
        assert_eq!(&jpeg[eoi..], [0xFF, 0xD9]);
        let mut v = [&jpeg[..eoi], &[0][..], &jpeg[eoi..]].concat();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        v
    }

    /// A signed 16-bit JPEG-LS lossless CT object with one fragment per frame.
    fn object(fragments: Vec<Vec<u8>>) -> Vec<u8> {
        let stored = crate::dicom::tests::Stored {
            syntax: uids::JPEGLS_LOSSLESS,
            size: (H, W),
            frames: fragments.len(),
            bits_stored: 16,
            signed: true,
        };
        crate::dicom::tests::encapsulated_ct(&stored, fragments)
    }

    /// What simcase makes of `px` with a window that maps -32768..32767 linearly onto 0..1.
    fn expected(px: &[i16]) -> Vec<f32> {
        px.iter()
            .map(|&v| crate::window::window_linear(f32::from(v), 0.0, 65536.0))
            .collect()
    }

    fn full_range() -> DecodeOptions {
        DecodeOptions {
            window: Some(crate::WindowPreset {
                center: 0.0,
                width: 65536.0,
            }),
            frames: FrameSelect::All,
            ..Default::default()
        }
    }

    #[test]
    fn zero_bytes_before_eoi_are_dropped_only_after_charls_refuses_them() {
        let frames = [signed(0), signed(1)];
        let jpeg = encode(&frames[1]);
        let pad = padded(&jpeg);
        // CharLS itself refuses the padded stream: the case being fixed.
        assert!(CharLS::default().decode(&pad).is_err());
        let (eoi, zeros) = zeros_before_eoi(&pad).unwrap();
        assert!(zeros >= 1);
        assert_eq!(dropping_zeros(&pad, eoi, 1)[..jpeg.len()], jpeg[..]);
        // Frame 0 as written, frame 1 padded: both decode to every sample, in order.
        let bytes = object(vec![encode(&frames[0]), pad]);
        let items = decode_items(&bytes, &full_range()).unwrap();
        assert_eq!(items.len(), 2);
        for (f, (item, px)) in items.iter().zip(&frames).enumerate() {
            assert_eq!(item.part.unwrap().index, f as u32);
            assert_eq!(&item.image.data[..W * H], &expected(px)[..], "frame {f}");
        }
    }

    #[test]
    fn a_damaged_stream_still_fails_in_one_line() {
        let mut jpeg = padded(&encode(&signed(0)));
        let mid = jpeg.len() / 2;
        jpeg.truncate(mid);
        jpeg.extend_from_slice(&[0, 0xFF, 0xD9]);
        let err = decode_items(&object(vec![jpeg]), &DecodeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("JPEG-LS"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
