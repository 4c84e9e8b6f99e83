//! 12-bit JPEG (DICOM "JPEG Extended", 1.2.840.10008.1.2.4.51), the syntax of many older CT
//! exports. Neither jpeg-decoder nor zune-jpeg has a 12-bit path, so these frames go through
//! libjpeg-turbo 3 (vendored by `turbojpeg-sys`, built by cmake, linked statically) and are
//! re-stored as native 16-bit pixels; everything after that (modality LUT, VOI, MONOCHROME1)
//! is the same code as for uncompressed data.

use crate::DecodeError;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use std::ffi::{c_int, CStr};
use turbojpeg_sys as tj;

pub(crate) const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

/// A TurboJPEG decompressor, destroyed on drop.
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> Result<Self, DecodeError> {
        // SAFETY: tj3Init has no preconditions; a null handle is checked.
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if h.is_null() {
            return Err(DecodeError::Dicom("libjpeg-turbo failed to start".into()));
        }
        Ok(Self(h))
    }

    fn error(&self) -> DecodeError {
        // SAFETY: the handle is live; TurboJPEG returns a NUL-terminated static or per-handle
        // string, copied here before the handle can change it.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        DecodeError::Dicom(format!("12-bit JPEG: {}", msg.to_string_lossy()))
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is live; unknown parameters return -1.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    /// Parse the headers of `jpeg`: (width, height, components, precision).
    fn header(&self, jpeg: &[u8]) -> Result<(usize, usize, usize, i32), DecodeError> {
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
            return Err(DecodeError::Dicom(
                "12-bit JPEG: zero width or height".into(),
            ));
        }
        Ok((
            w as usize,
            h as usize,
            comps,
            self.get(tj::TJPARAM_TJPARAM_PRECISION),
        ))
    }

    /// Decode a 12-bit frame of `w`×`h` with `comps` samples per pixel (interleaved RGB for 3).
    fn decode12(
        &self,
        jpeg: &[u8],
        w: usize,
        h: usize,
        comps: usize,
    ) -> Result<Vec<u16>, DecodeError> {
        let format = if comps == 1 {
            tj::TJPF_TJPF_GRAY
        } else {
            tj::TJPF_TJPF_RGB
        };
        let mut out = vec![0i16; w * h * comps];
        // SAFETY: `out` holds exactly width × height × samples values as TurboJPEG writes
        // them for this pixel format with pitch 0 (= width × samples), checked by the header
        // parse of this same buffer just before.
        let rc = unsafe {
            tj::tj3Decompress12(
                self.0,
                jpeg.as_ptr(),
                jpeg.len() as _,
                out.as_mut_ptr(),
                0,
                format as c_int,
            )
        };
        if rc != 0 {
            return Err(self.error());
        }
        Ok(out.into_iter().map(|v| v as u16 & 0x0fff).collect())
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// The encapsulated JPEG stream of each frame: one fragment per frame, all fragments for a
/// single frame, else split where a fragment starts a new JPEG (SOI marker).
fn frame_streams(obj: &DefaultDicomObject, frames: u32) -> Result<Vec<Vec<u8>>, DecodeError> {
    let el = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| DecodeError::Dicom(e.to_string()))?;
    let fragments = el
        .value()
        .fragments()
        .ok_or_else(|| DecodeError::Dicom("JPEG Extended pixel data is not encapsulated".into()))?;
    let frames = frames.max(1) as usize;
    let streams: Vec<Vec<u8>> = if frames == 1 {
        vec![fragments.concat()]
    } else if fragments.len() == frames {
        fragments.to_vec()
    } else {
        let mut v: Vec<Vec<u8>> = Vec::new();
        for f in fragments {
            match v.last_mut() {
                Some(last) if !f.starts_with(&[0xFF, 0xD8]) => last.extend_from_slice(f),
                _ => v.push(f.clone()),
            }
        }
        v
    };
    if streams.is_empty() {
        return Err(DecodeError::Dicom("no JPEG fragments".into()));
    }
    Ok(streams)
}

/// Whether `obj`'s first frame is a 12-bit JPEG (8-bit JPEG Extended stays with dicom-rs).
pub(crate) fn is_12bit(obj: &DefaultDicomObject) -> bool {
    let Ok(streams) = frame_streams(obj, 1) else {
        return false;
    };
    let Ok(d) = Decompressor::new() else {
        return false;
    };
    d.header(&streams[0])
        .is_ok_and(|(_, _, _, precision)| precision == 12)
}

/// A copy of `obj` whose pixel data is the `selected` frames, decoded and stored natively
/// (explicit VR little endian, 16 bits allocated), in that order.
pub(crate) fn to_native(
    obj: DefaultDicomObject,
    frames: u32,
    selected: &[u32],
    rows: usize,
    cols: usize,
) -> Result<DefaultDicomObject, DecodeError> {
    let streams = frame_streams(&obj, frames)?;
    let d = Decompressor::new()?;
    let mut pixels: Vec<u16> = Vec::new();
    let mut comps = 0;
    for &f in selected {
        let jpeg = streams
            .get(f as usize)
            .ok_or_else(|| DecodeError::Dicom(format!("no JPEG stream for frame {f}")))?;
        let (w, h, c, precision) = d.header(jpeg)?;
        if precision != 12 {
            return Err(DecodeError::Dicom(format!(
                "frame {f}: {precision}-bit JPEG in a 12-bit series"
            )));
        }
        if (w, h) != (cols, rows) {
            return Err(DecodeError::Dicom(format!(
                "frame {f}: JPEG is {w}x{h}, the header says {cols}x{rows}"
            )));
        }
        if comps != 0 && c != comps {
            return Err(DecodeError::Dicom(format!(
                "frame {f}: {c} colour components, frame 0 had {comps}"
            )));
        }
        comps = c;
        pixels.extend(d.decode12(jpeg, w, h, c)?);
    }
    let mut native = obj;
    native.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    let us = |v: u16| PrimitiveValue::from(v);
    native.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(16)));
    native.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        us(comps as u16),
    ));
    native.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from(selected.len().to_string()),
    ));
    if comps == 3 {
        // TurboJPEG already converted YCbCr to RGB, interleaved.
        native.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("RGB"),
        ));
        native.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, us(0)));
    }
    native.update_meta(|m| {
        m.set_transfer_syntax(&dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN)
    });
    Ok(native)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_items, DecodeOptions, FrameSelect, WindowPreset};
    use dicom_core::value::{PixelFragmentSequence, Value};
    use dicom_dictionary_std::uids;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

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
        let mut o = InMemDicomObject::new_empty();
        let mut put = |tag, vr, v: PrimitiveValue| o.put(DataElement::new(tag, vr, v));
        put(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.12".into());
        put(tags::MODALITY, VR::CS, "CT".into());
        put(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".into(),
        );
        put(tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string().into());
        for (tag, v) in [
            (tags::SAMPLES_PER_PIXEL, 1u16),
            (tags::ROWS, H as u16),
            (tags::COLUMNS, W as u16),
            (tags::BITS_ALLOCATED, 16),
            (tags::BITS_STORED, 12),
            (tags::HIGH_BIT, 11),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            put(tag, VR::US, v.into());
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), fragments)),
        ));
        let file = o
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(JPEG_EXTENDED)
                    .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE),
            )
            .unwrap();
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).unwrap();
        bytes
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
        // Only the chosen frame is decoded, and it keeps its number.
        let middle = DecodeOptions {
            frames: FrameSelect::Middle,
            ..opts
        };
        let items = decode_items(&bytes, &middle).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].part.unwrap().index, 1);
        let row: Vec<f32> = (0..H).map(|y| items[0].image.data[y * W]).collect();
        assert!(
            row.windows(2).all(|p| p[1] >= p[0]),
            "frame 1 is the vertical ramp"
        );
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
        assert!(err.contains("12-bit JPEG"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
