//! DICOM JPEG Baseline and Extended (1.2.840.10008.1.2.4.50 / .51) through libjpeg-turbo 3
//! (`vendor/turbojpeg-sys`, its portable C paths built by the `cc` crate, linked statically).
//!
//! Why not dicom-rs's decoder (jpeg-decoder): it has no 12-bit path, the syntax of many older
//! CT exports, and it ignores the Adobe marker that says a 3-component JPEG is stored as RGB
//! (pydicom's SC_rgb_jpeg.dcm came out magenta). libjpeg-turbo is the decoder pydicom (via
//! Pillow) and most viewers use, with the same colour handling and IDCT. The chosen frames
//! are decoded and re-stored as native pixels; everything after that (modality LUT, VOI,
//! MONOCHROME1) is the code path of uncompressed data.
//!
//! Scan headers: some encoders (NEMA WG04's `*_JPLY` set, pydicom's NM1_JPLY copy) write
//! sequential scans with Se = 0 instead of 63. IJG libjpeg and DCMTK warn and decode them as
//! sequential, as the standard's sequential process ignores those fields; libjpeg-turbo's
//! TurboJPEG reports the same warning as a failure. simcase writes the standard values into a
//! copy of such a scan header first (logged once per file), so every other libjpeg warning
//! (premature end of data, corrupt entropy data) still fails the frame.

use super::attrs::PixelAttrs;
use super::error::{DicomCodec, DicomError};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PhotometricInterpretation as Pi;
use std::ffi::{c_int, CStr};
use turbojpeg_sys as tj;

/// libjpeg-turbo's refusal, or another failure of the JPEG codec, as `JPEG: {reason}`.
fn codec_err(reason: String) -> DicomError {
    DicomError::Codec {
        codec: DicomCodec::Jpeg,
        reason,
    }
}

/// A TurboJPEG decompressor, destroyed on drop.
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> Result<Self, DicomError> {
        // SAFETY: tj3Init has no preconditions; a null handle is checked.
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if h.is_null() {
            return Err(codec_err("libjpeg-turbo failed to start".into()));
        }
        Ok(Self(h))
    }

    fn error(&self) -> DicomError {
        // SAFETY: the handle is live; TurboJPEG returns a NUL-terminated static or per-handle
        // string, copied here before the handle can change it.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        codec_err(msg.to_string_lossy().into_owned())
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is live; unknown parameters return -1.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    /// Parse the headers of `jpeg`: (width, height, components, precision).
    fn header(&self, jpeg: &[u8]) -> Result<(usize, usize, usize, i32), DicomError> {
        // SAFETY: the pointer and length describe `jpeg`, which outlives the call.
        let rc = unsafe { tj::tj3DecompressHeader(self.0, jpeg.as_ptr(), jpeg.len() as _) };
        if rc != 0 {
            return Err(self.error());
        }
        let w = self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
        let h = self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
        let comps = match self.get(tj::TJPARAM_TJPARAM_COLORSPACE) {
            cs if cs == tj::TJCS_TJCS_GRAY as c_int => 1,
            _ => 3,
        };
        if w <= 0 || h <= 0 {
            return Err(codec_err("zero width or height".into()));
        }
        Ok((
            w as usize,
            h as usize,
            comps,
            self.get(tj::TJPARAM_TJPARAM_PRECISION),
        ))
    }

    /// Decode one frame of `w`×`h` with `comps` samples per pixel (interleaved RGB for 3,
    /// converted from YCbCr as the JPEG's own markers say) at its precision.
    fn decode(
        &self,
        jpeg: &[u8],
        (w, h, comps, precision): (usize, usize, usize, i32),
        out: &mut Samples,
    ) -> Result<(), DicomError> {
        let format = if comps == 1 {
            tj::TJPF_TJPF_GRAY
        } else {
            tj::TJPF_TJPF_RGB
        } as c_int;
        let n = w * h * comps;
        // SAFETY (both arms): the destination holds exactly width × height × samples values,
        // which TurboJPEG writes for this pixel format with pitch 0 (= width × samples), as
        // the header parse of this same buffer just said.
        let rc = match (precision, out) {
            (8, Samples::Eight(v)) => {
                let at = v.len();
                v.resize(at + n, 0);
                // SAFETY: `v[at..]` was just resized to n = w × h × comps bytes, exactly what
                // TurboJPEG writes for `format` at pitch 0 (gray for 1 component, RGB for 3) as
                // the header parse said; the source pointer and length describe `jpeg`, which
                // outlives the call, and the handle is live.
                unsafe {
                    tj::tj3Decompress8(
                        self.0,
                        jpeg.as_ptr(),
                        jpeg.len() as _,
                        v[at..].as_mut_ptr(),
                        0,
                        format,
                    )
                }
            }
            (12, Samples::Twelve(v)) => {
                let mut buf = vec![0i16; n];
                // SAFETY: `buf` holds n = w × h × comps 12-bit samples, exactly what TurboJPEG
                // writes for `format` at pitch 0 as the header parse said; the source pointer
                // and length describe `jpeg`, which outlives the call, and the handle is live.
                let rc = unsafe {
                    tj::tj3Decompress12(
                        self.0,
                        jpeg.as_ptr(),
                        jpeg.len() as _,
                        buf.as_mut_ptr(),
                        0,
                        format,
                    )
                };
                v.extend(buf.into_iter().map(|x| x as u16 & 0x0fff));
                rc
            }
            (p, _) => {
                return Err(codec_err(format!(
                    "{p}-bit precision (8 or 12 expected, and one for all frames)"
                )))
            }
        };
        if rc != 0 {
            return Err(self.error());
        }
        Ok(())
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Start-of-scan fields that a sequential scan ignores (Ss, Se, Ah/Al), as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ScanFields {
    ss: u8,
    se: u8,
    ah_al: u8,
}

/// A copy of `jpeg` whose sequential scans carry Ss = 0, Se = 63, Ah = Al = 0, with the first
/// differing fields found; `None` when every scan already does (or the frame is not a
/// sequential DCT one: progressive and lossless scans use those fields).
fn with_sequential_scan_fields(jpeg: &[u8]) -> Option<(Vec<u8>, ScanFields)> {
    let mut sequential = false;
    let mut patched: Option<(Vec<u8>, ScanFields)> = None;
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return patched; // not a marker where one must be: leave it to libjpeg
        }
        let marker = jpeg[i + 1];
        match marker {
            0xFF => {
                i += 1; // fill byte
                continue;
            }
            0xD9 => break,
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let end = i + 2 + len;
        if len < 2 || end > jpeg.len() {
            return patched;
        }
        match marker {
            // Baseline, extended (Huffman) and extended arithmetic sequential DCT.
            0xC0 | 0xC1 | 0xC9 => sequential = true,
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xCA | 0xCB | 0xCD..=0xCF => sequential = false,
            0xDA if sequential && len >= 6 => {
                let ns = usize::from(jpeg[i + 4]);
                let at = i + 5 + 2 * ns; // Ss, Se, Ah/Al
                if at + 3 <= end {
                    let found = ScanFields {
                        ss: jpeg[at],
                        se: jpeg[at + 1],
                        ah_al: jpeg[at + 2],
                    };
                    if (found.ss, found.se, found.ah_al) != (0, 63, 0) {
                        let (copy, _) = patched.get_or_insert_with(|| (jpeg.to_vec(), found));
                        copy[at..at + 3].copy_from_slice(&[0, 63, 0]);
                    }
                }
            }
            _ => {}
        }
        i = end;
        if marker == 0xDA {
            // Entropy-coded data up to the next marker that is neither stuffing nor RSTn.
            while i + 1 < jpeg.len()
                && (jpeg[i] != 0xFF || matches!(jpeg[i + 1], 0x00 | 0xFF | 0xD0..=0xD7))
            {
                i += 1;
            }
        }
    }
    patched
}

/// Decoded samples of all chosen frames, at the precision of the first.
enum Samples {
    Eight(Vec<u8>),
    Twelve(Vec<u16>),
}

/// `jpeg` with its JFIF and Adobe markers replaced by an Adobe marker that says "no colour
/// transform", so that libjpeg hands out the three components as they were stored.
fn without_colour_transform(jpeg: &[u8]) -> Vec<u8> {
    const ADOBE_RAW: [u8; 16] = [
        0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return jpeg.to_vec();
    }
    let mut out = Vec::with_capacity(jpeg.len() + ADOBE_RAW.len());
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&ADOBE_RAW);
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            out.push(0xFF); // fill byte
            i += 1;
            continue;
        }
        if marker == 0xDA || (0xD0..=0xD9).contains(&marker) {
            break; // the scan: copied whole below
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let end = (i + 2 + len).min(jpeg.len());
        if marker != 0xE0 && marker != 0xEE {
            out.extend_from_slice(&jpeg[i..end]);
        }
        i = end;
    }
    out.extend_from_slice(&jpeg[i.min(jpeg.len())..]);
    out
}

/// A copy of `obj` whose pixel data is the `selected` frames, decoded and stored natively
/// (explicit VR little endian; 8 bits allocated for 8-bit JPEG, 16 for 12-bit), in that order.
pub(super) fn to_native(
    obj: &DefaultDicomObject,
    px: &PixelAttrs,
    selected: &[u32],
) -> Result<DefaultDicomObject, DicomError> {
    let (rows, cols) = (px.rows, px.cols);
    // Encoders may split a frame over fragments; each frame's JPEG opens with SOI.
    let streams = super::encapsulated::encapsulated_frames(
        obj,
        px.frames,
        DicomCodec::Jpeg,
        Some(|f| f.starts_with(&[0xFF, 0xD8])),
    )?;
    let d = Decompressor::new()?;
    // DICOM, not the JPEG's markers, says what three components are (PS3.5 8.2.1), as pydicom
    // reads it: RGB stays RGB, YBR_FULL(_422) is converted after upsampling.
    let ybr = matches!(px.photometric, Some(Pi::YbrFull | Pi::YbrFull422));
    let raw = ybr || px.is(&Pi::Rgb);
    let mut samples = None;
    let mut comps = 0;
    // Frames whose scan headers were fixed, and the first fields found, for one log line.
    let mut fixed_scans = (0usize, None);
    for &f in selected {
        let stream = streams.get(f as usize).ok_or(DicomError::FrameOutOfRange {
            frame: f,
            count: streams.len() as u32,
        })?;
        let fixed = with_sequential_scan_fields(stream);
        let jpeg: &[u8] = match &fixed {
            Some((copy, found)) => {
                fixed_scans.0 += 1;
                fixed_scans.1.get_or_insert(*found);
                &copy[..]
            }
            None => &stream[..],
        };
        let header = d.header(jpeg)?;
        let (w, h, c, precision) = header;
        if (w, h) != (cols, rows) {
            return Err(DicomError::FrameSize {
                codec: DicomCodec::Jpeg,
                frame: f,
                width: w,
                height: h,
                columns: cols,
                rows,
            });
        }
        if comps != 0 && c != comps {
            return Err(DicomError::FrameComponents {
                codec: DicomCodec::Jpeg,
                frame: f,
                found: c,
                expected: comps,
            });
        }
        comps = c;
        let out = samples.get_or_insert_with(|| match precision {
            12 => Samples::Twelve(Vec::new()),
            _ => Samples::Eight(Vec::new()),
        });
        if c == 3 && raw {
            d.decode(&without_colour_transform(jpeg), header, out)?;
        } else {
            d.decode(jpeg, header, out)?;
        }
    }
    if let (n, Some(found)) = fixed_scans {
        // No file name or attribute values here: the caller's log line names the file.
        tracing::debug!(
            "JPEG: Invalid SOS parameters for sequential JPEG (Ss {}, Se {}, Ah/Al {:#04x}) in \
             {n} of {} frames; decoded as sequential (Ss 0, Se 63), as libjpeg and DCMTK do",
            found.ss,
            found.se,
            found.ah_al,
            selected.len()
        );
    }
    let us = |v: u16| PrimitiveValue::from(v);
    let (value, vr, bits) = match samples {
        Some(Samples::Eight(v)) => (PrimitiveValue::U8(v.into()), VR::OB, 8),
        Some(Samples::Twelve(v)) => (PrimitiveValue::U16(v.into()), VR::OW, 16),
        None => return Err(codec_err("no frame chosen".into())),
    };
    let mut native = super::encapsulated::native_copy(obj, value, vr, selected.len());
    native.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(bits)));
    if bits == 8 {
        native.put(DataElement::new(tags::BITS_STORED, VR::US, us(8)));
        native.put(DataElement::new(tags::HIGH_BIT, VR::US, us(7)));
    }
    native.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        us(comps as u16),
    ));
    let mono = px.photometric.as_ref().is_some_and(Pi::is_monochrome);
    let pi = match comps {
        // Raw components, upsampled: the caller converts YBR_FULL.
        3 if ybr => Some(Pi::YbrFull),
        3 => Some(Pi::Rgb),
        _ if !mono => Some(Pi::Monochrome2),
        _ => None,
    };
    if let Some(pi) = pi {
        native.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(pi.as_str()),
        ));
    }
    if comps == 3 {
        native.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, us(0)));
    }
    Ok(native)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_items, DecodeOptions, FrameSelect, WindowPreset};
    use dicom_dictionary_std::uids;

    const W: usize = 48;
    const H: usize = 32;

    /// A 12-bit JPEG of `px` (W×H grey), from libjpeg-turbo's own encoder at quality 100.
    fn encode12(px: &[i16]) -> Vec<u8> {
        // SAFETY: the handle is checked; the source buffer holds W×H samples (pitch 0); the
        // output buffer TurboJPEG allocates is copied, then released with tj3Free.
        unsafe {
            let h = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as c_int);
            assert!(!h.is_null());
            tj::tj3Set(h, tj::TJPARAM_TJPARAM_QUALITY as c_int, 100);
            tj::tj3Set(
                h,
                tj::TJPARAM_TJPARAM_SUBSAMP as c_int,
                tj::TJSAMP_TJSAMP_GRAY as c_int,
            );
            let mut buf: *mut u8 = std::ptr::null_mut();
            let mut len = 0;
            let rc = tj::tj3Compress12(
                h,
                px.as_ptr(),
                W as c_int,
                0,
                H as c_int,
                tj::TJPF_TJPF_GRAY as c_int,
                &mut buf,
                &mut len,
            );
            assert_eq!(rc, 0, "tj3Compress12");
            let out = std::slice::from_raw_parts(buf, len as usize).to_vec();
            tj::tj3Free(buf.cast());
            tj::tj3Destroy(h);
            out
        }
    }

    /// A horizontal (frame 0) or vertical (frame 1) 12-bit ramp.
    fn ramp(f: usize) -> Vec<i16> {
        (0..H * W)
            .map(|i| {
                let (y, x) = (i / W, i % W);
                let t = if f == 0 {
                    x * 4095 / (W - 1)
                } else {
                    y * 4095 / (H - 1)
                };
                t as i16
            })
            .collect()
    }

    /// A JPEG Extended CT object of W×H 12-bit frames stored as these fragments.
    fn object(frames: usize, fragments: Vec<Vec<u8>>) -> Vec<u8> {
        let stored = crate::dicom::tests::Stored {
            syntax: uids::JPEG_EXTENDED12_BIT,
            size: (H, W),
            frames,
            bits_stored: 12,
            signed: false,
        };
        crate::dicom::tests::encapsulated_ct(&stored, fragments)
    }

    /// Two frames, the second split over two fragments (as some encoders do), and what each
    /// should decode to.
    fn two_frames() -> (Vec<u8>, [Vec<f32>; 2]) {
        let frames = [ramp(0), ramp(1)];
        let j1 = encode12(&frames[1]);
        let cut = (j1.len() / 2) & !1;
        let fragments = vec![encode12(&frames[0]), j1[..cut].to_vec(), j1[cut..].to_vec()];
        let expect = frames.map(|f| f.iter().map(|&v| f32::from(v) / 4095.0).collect());
        (object(2, fragments), expect)
    }

    #[test]
    fn twelve_bit_frames_decode_in_order_with_full_depth() {
        let (bytes, expect) = two_frames();
        let opts = DecodeOptions {
            frames: FrameSelect::All,
            // The DICOM linear window mapping 0..4095 onto 0..1.
            window: Some(WindowPreset {
                center: 2048.0,
                width: 4096.0,
            }),
            ..Default::default()
        };
        let items = decode_items(&bytes, &opts).unwrap();
        assert_eq!(items.len(), 2);
        for (f, (item, want)) in items.iter().zip(&expect).enumerate() {
            assert_eq!(item.part.unwrap().index, f as u32);
            assert_eq!((item.image.width, item.image.height), (W, H));
            let got = &item.image.data[..W * H];
            let worst = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Quality-100 DCT on 12 bits: a few levels of 4095, far below one 8-bit grey level.
            assert!(worst < 2.0 / 255.0, "frame {f}: worst error {worst}");
        }
        // Only the chosen frame is decoded, and it keeps its number: the middle of two is
        // frame 1, the vertical ramp, which is far from frame 0 (the horizontal one).
        let middle = DecodeOptions {
            frames: FrameSelect::Middle,
            ..opts
        };
        let items = decode_items(&bytes, &middle).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].part.unwrap().index, 1);
        let got = &items[0].image.data[..W * H];
        let err = |want: &[f32]| {
            got.iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            err(&expect[1]) < 2.0 / 255.0,
            "frame 1: {}",
            err(&expect[1])
        );
        assert!(err(&expect[0]) > 0.5, "the middle item is frame 0's pixels");
    }

    /// Frame 0 of `two_frames` with its scan header's Se set to 0, as in NEMA's NM1_JPLY.
    fn with_se_zero(jpeg: &[u8]) -> Vec<u8> {
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let ns = usize::from(jpeg[sos + 4]);
        let mut bad = jpeg.to_vec();
        assert_eq!(bad[sos + 5 + 2 * ns + 1], 63);
        bad[sos + 5 + 2 * ns + 1] = 0;
        bad
    }

    #[test]
    fn sequential_scans_with_a_zero_se_decode_like_the_standard_header() {
        let good = encode12(&ramp(0));
        let bad = with_se_zero(&good);
        // libjpeg-turbo alone refuses it (its warning), which is the case being fixed.
        let d = Decompressor::new().unwrap();
        let header = d.header(&bad).unwrap();
        let mut out = Samples::Twelve(Vec::new());
        let err = d.decode(&bad, header, &mut out).unwrap_err().to_string();
        assert!(err.contains("Invalid SOS parameters"), "{err}");
        let (fixed, found) = with_sequential_scan_fields(&bad).unwrap();
        assert_eq!((found.ss, found.se, found.ah_al), (0, 0, 0));
        assert_eq!(fixed, good);
        assert!(with_sequential_scan_fields(&good).is_none());
        let decode = |j: Vec<u8>| {
            decode_items(&object(1, vec![j]), &DecodeOptions::default())
                .unwrap()
                .remove(0)
                .image
                .data
        };
        assert_eq!(decode(bad.clone()), decode(good));
        // Still strict about everything else: the same header on a truncated scan fails.
        let mut cut = bad;
        cut.truncate((cut.len() * 2 / 3) & !1);
        cut.extend_from_slice(&[0xFF, 0xD9]);
        let err = decode_items(&object(1, vec![cut]), &DecodeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("JPEG: "), "{err}");
    }

    #[test]
    fn a_truncated_stream_is_a_clean_error() {
        // Headers whole, entropy-coded data cut short: libjpeg-turbo's warning is an error.
        let mut j = encode12(&ramp(0));
        j.truncate((j.len() * 2 / 3) & !1);
        j.extend_from_slice(&[0xFF, 0xD9]);
        let err = decode_items(&object(1, vec![j]), &DecodeOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("JPEG: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
