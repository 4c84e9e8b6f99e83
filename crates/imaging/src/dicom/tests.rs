//! Whole DICOM objects built in memory through `decode_bytes`: rescale and windows,
//! presets, MONOCHROME1, the attributes kept, and truncation as a clean error.

use crate::{decode_bytes, DecodeOptions, Format};
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// How an encapsulated test object stores its single-channel CT frames.
pub(super) struct Stored {
    /// Transfer syntax UID.
    pub syntax: &'static str,
    /// Rows and columns of every frame.
    pub size: (usize, usize),
    /// NumberOfFrames (fragments may split a frame).
    pub frames: usize,
    /// BitsStored (BitsAllocated is 16, HighBit one less).
    pub bits_stored: u16,
    /// PixelRepresentation 1.
    pub signed: bool,
}

/// The image pixel module of a single-channel 16-bit object: samples, size, bits allocated,
/// stored and high bit, pixel representation (the test builders' one copy).
fn pixel_module(o: &mut InMemDicomObject, size: (usize, usize), bits_stored: u16, signed: bool) {
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, size.0 as u16),
        (tags::COLUMNS, size.1 as u16),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, bits_stored),
        (tags::HIGH_BIT, bits_stored - 1),
        (tags::PIXEL_REPRESENTATION, u16::from(signed)),
    ] {
        o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
}

/// `o` as a CT Part 10 file in transfer syntax `ts`.
fn file_bytes(o: InMemDicomObject, ts: &str) -> Vec<u8> {
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE),
        )
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

/// A MONOCHROME2 CT object whose Pixel Data is these fragments, stored as `s` says: the
/// codec tests' one builder of encapsulated files.
pub(super) fn encapsulated_ct(s: &Stored, fragments: Vec<Vec<u8>>) -> Vec<u8> {
    use dicom_core::value::{PixelFragmentSequence, Value};
    let mut o = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: PrimitiveValue| o.put(DataElement::new(tag, vr, v));
    put(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE.into());
    put(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.6".into());
    put(tags::MODALITY, VR::CS, "CT".into());
    put(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(tags::NUMBER_OF_FRAMES, VR::IS, s.frames.to_string().into());
    pixel_module(&mut o, s.size, s.bits_stored, s.signed);
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), fragments)),
    ));
    file_bytes(o, s.syntax)
}

/// A 2×2 16-bit signed CT slice: stored [-1000, 0, 1000, 2000] with slope 1, intercept
/// -1024 (so HU -2024..976) and the given photometric interpretation and window.
fn ct(photometric: &str, window: Option<(&str, &str)>) -> Vec<u8> {
    let mut o = InMemDicomObject::new_empty();
    let mut text = |tag, vr, v: &str| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5");
    text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
    text(tags::MODALITY, VR::CS, "CT");
    text(tags::PATIENT_ID, VR::LO, "PAT-0042");
    text(tags::PATIENT_NAME, VR::PN, "Doe^Jane");
    text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric);
    text(tags::RESCALE_SLOPE, VR::DS, "1");
    text(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    if let Some((c, w)) = window {
        text(tags::WINDOW_CENTER, VR::DS, c);
        text(tags::WINDOW_WIDTH, VR::DS, w);
    }
    pixel_module(&mut o, (2, 2), 16, true);
    let px: Vec<u8> = [-1000i16, 0, 1000, 2000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(px),
    ));
    file_bytes(o, uids::EXPLICIT_VR_LITTLE_ENDIAN)
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

/// A 2×2 8-bit three-sample object (explicit VR little endian) under `photometric`.
fn colour(photometric: &str) -> Vec<u8> {
    let mut o = InMemDicomObject::new_empty();
    o.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
    ));
    o.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from(photometric),
    ));
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 3u16),
        (tags::ROWS, 2),
        (tags::COLUMNS, 2),
        (tags::BITS_ALLOCATED, 8),
        (tags::BITS_STORED, 8),
        (tags::HIGH_BIT, 7),
        (tags::PIXEL_REPRESENTATION, 0),
        (tags::PLANAR_CONFIGURATION, 0),
    ] {
        o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
    let px: Vec<u8> = (0..12).map(|i| i * 20).collect();
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(px),
    ));
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
        )
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

#[test]
fn failures_are_typed_with_their_values() {
    use crate::{Declared, DecodeError, DicomError};
    use dicom_pixeldata::PhotometricInterpretation as Pi;
    let dicom = |bytes: &[u8], opts: &DecodeOptions| match decode_bytes(bytes, opts) {
        Err(DecodeError::Dicom(e)) => e,
        other => panic!("expected a DICOM error, got {other:?}"),
    };
    let bytes = ct("MONOCHROME2", None);
    // The last 3 of the 8 pixel data bytes cut off: refused from the header's length.
    let e = dicom(&bytes[..bytes.len() - 3], &DecodeOptions::default());
    assert!(
        matches!(
            e,
            DicomError::LengthBeyondData {
                of: Declared::PixelData,
                claimed: 8,
                left: 5
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "pixel data claims 8 bytes, 5 left");
    let third = DecodeOptions {
        part: Some(3),
        ..Default::default()
    };
    let e = dicom(&bytes, &third);
    assert!(
        matches!(e, DicomError::FrameOutOfRange { frame: 3, count: 1 }),
        "{e:?}"
    );
    // Colour: RGB decodes, a colour model outside the standard's list is named.
    let rgb = decode_bytes(&colour("RGB"), &DecodeOptions::default()).unwrap();
    assert_eq!(
        rgb.image.data[..4],
        [0.0, 60.0 / 255.0, 120.0 / 255.0, 180.0 / 255.0]
    );
    let e = dicom(&colour("HSV"), &DecodeOptions::default());
    assert!(
        matches!(&e, DicomError::UnsupportedPhotometric(Pi::Other(s)) if s == "HSV"),
        "{e:?}"
    );
    assert_eq!(
        DecodeError::from(e).to_string(),
        "DICOM: unsupported photometric interpretation HSV"
    );
}

/// The 2×2 CT slice of [`ct`] with a window, in either byte order; with `un`, every attribute
/// simcase or dicom-pixeldata reads is stored as UN (its bytes as the syntax encodes them),
/// as anonymisers write tags their dictionary lacks (pydicom's `explicit_VR-UN.dcm`).
fn ct_un(big: bool, un: bool) -> Vec<u8> {
    let mut o = InMemDicomObject::new_empty();
    let mut text = |tag, vr, v: &str| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5");
    text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
    text(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4");
    text(tags::STUDY_DATE, VR::DA, "20151124");
    text(tags::MODALITY, VR::CS, "CT");
    text(tags::BODY_PART_EXAMINED, VR::CS, "PANCREAS");
    text(tags::INSTANCE_NUMBER, VR::IS, "122");
    text(tags::SLICE_LOCATION, VR::DS, "-121.5");
    text(tags::PATIENT_ID, VR::LO, "PAT-0042");
    text(tags::PATIENT_NAME, VR::PN, "Müller^Jane");
    text(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
    text(tags::NUMBER_OF_FRAMES, VR::IS, "1");
    text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    text(tags::PIXEL_SPACING, VR::DS, "0.859375\\0.859375");
    text(tags::RESCALE_SLOPE, VR::DS, "2");
    text(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    text(tags::WINDOW_CENTER, VR::DS, "0\\40");
    text(tags::WINDOW_WIDTH, VR::DS, "2001\\400");
    pixel_module(&mut o, (2, 2), 16, true);
    let px: Vec<u16> = [-500i16, 0, 500, 1000].iter().map(|&v| v as u16).collect();
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(px.into()),
    ));
    if un {
        let tags: Vec<_> = o
            .iter()
            .map(|e| e.tag())
            .filter(|t| *t != tags::PIXEL_DATA)
            .collect();
        for tag in tags {
            let el = o.take(tag).unwrap();
            let vr = el.vr();
            let bytes: Vec<u8> = match el.value().primitive().unwrap() {
                PrimitiveValue::U16(v) => v
                    .iter()
                    .flat_map(|w| {
                        if big {
                            w.to_be_bytes()
                        } else {
                            w.to_le_bytes()
                        }
                    })
                    .collect(),
                p => {
                    let s = p.to_str();
                    // The writer's encoding: ISO 8859-1 text, padded to even length.
                    let mut b: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
                    if b.len() % 2 == 1 {
                        b.push(if vr == VR::UI { 0 } else { b' ' });
                    }
                    b
                }
            };
            o.put(DataElement::new(tag, VR::UN, PrimitiveValue::from(bytes)));
        }
    }
    let ts = if big {
        super::attrs::EXPLICIT_VR_BIG_ENDIAN
    } else {
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    };
    file_bytes(o, ts)
}

#[test]
fn un_values_read_as_their_dictionary_vr_in_either_byte_order() {
    let phi = DecodeOptions {
        keep_phi: true,
        ..Default::default()
    };
    let lung = DecodeOptions {
        window: Some("lung".parse().unwrap()),
        ..Default::default()
    };
    for big in [false, true] {
        let (plain, un) = (ct_un(big, false), ct_un(big, true));
        assert!(
            un.windows(2).any(|w| w == b"UN"),
            "the test object stores UN"
        );
        let d = decode_bytes(&un, &phi).unwrap();
        let m = d.dicom.unwrap();
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        assert_eq!(text(&m.modality), "CT", "big={big}");
        assert_eq!(text(&m.body_part), "PANCREAS");
        assert_eq!(text(&m.study_uid), "1.2.3");
        assert_eq!(text(&m.series_uid), "1.2.3.4");
        assert_eq!(text(&m.sop_uid), "1.2.3.4.5");
        assert_eq!(text(&m.instance_number), "122");
        assert_eq!(text(&m.slice_location), "-121.5");
        assert_eq!(text(&m.study_date), "20151124");
        assert_eq!(text(&m.patient_id), "PAT-0042");
        let phi_read = m.phi.unwrap();
        assert_eq!(text(&phi_read.patient_name), "Müller^Jane");
        assert_eq!(text(&phi_read.birth_date), "19700101");
        assert_eq!(m.frames, 1);
        // Rescale (slope 2, intercept -1024: HU -2024, -1024, -24, 976) and the object's
        // first window (C=0, W=2001), or a preset over the rescaled values: the same pixels
        // as the object stored with its real VRs.
        let f = |x: f32| (x + 0.5) / 2000.0 + 0.5;
        let want = [0.0, 0.0, f(-24.0), f(976.0)];
        for (opts, want) in [(&DecodeOptions::default(), Some(want)), (&lung, None)] {
            let v = gray(&un, opts);
            assert_eq!(v, gray(&plain, opts), "big={big}");
            if let Some(want) = want {
                assert!(close(&v, &want), "big={big}: {v:?}");
            }
        }
    }
}

/// Bits Stored outside 1..=32 is refused by name (dicom-pixeldata asserts it: that was a panic
/// on the file's data), and a multi-frame object over the pixel limit says how many frames it
/// claims.
#[test]
fn impossible_bit_depths_and_frame_counts_are_refused_by_name() {
    let object = |bits_stored: u16, high_bit: u16, frames: &str| {
        let mut o = InMemDicomObject::new_empty();
        let mut text = |tag, vr, v: &str| o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        text(tags::NUMBER_OF_FRAMES, VR::IS, frames);
        pixel_module(&mut o, (2, 2), 16, false);
        for (tag, v) in [(tags::BITS_STORED, bits_stored), (tags::HIGH_BIT, high_bit)] {
            o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![0u8; 8]),
        ));
        file_bytes(o, uids::EXPLICIT_VR_LITTLE_ENDIAN)
    };
    let err = |b: &[u8]| {
        decode_bytes(b, &DecodeOptions::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&object(40, 39, "1")),
        "DICOM: BitsStored 40 (1 to 32 expected)"
    );
    assert_eq!(
        err(&object(0, 0, "1")),
        "DICOM: BitsStored 0 (1 to 32 expected)"
    );
    assert!(decode_bytes(&object(12, 11, "1"), &DecodeOptions::default()).is_ok());
    assert_eq!(
        err(&object(16, 15, "2147483647")),
        "image too large: 2147483647 frames of 2x2 exceed the 400000000-pixel limit"
    );
}

/// A deflated object is inflated under the decode budget: 96 MiB of data set from a 100 KB
/// file is refused past a 32 MiB budget, holding no more than it (the whole was inflated,
/// twice, outside the budget: eight 1 MB uploads held 7.8 GB under a 256 MiB one).
#[test]
fn a_deflated_object_inflates_under_the_decode_budget() {
    use std::io::Write;
    let element = |tag: (u16, u16), vr: &[u8; 2], value: &[u8]| {
        let mut e = Vec::new();
        e.extend(tag.0.to_le_bytes());
        e.extend(tag.1.to_le_bytes());
        e.extend(vr);
        if matches!(vr, b"OB" | b"UN") {
            e.extend([0, 0]);
            e.extend((value.len() as u32).to_le_bytes());
        } else {
            e.extend((value.len() as u16).to_le_bytes());
        }
        e.extend(value);
        e
    };
    let mut meta = Vec::new();
    meta.extend(element((2, 1), b"OB", &[0, 1]));
    meta.extend(element((2, 2), b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"));
    meta.extend(element((2, 3), b"UI", b"1.2.3.4\0"));
    meta.extend(element((2, 0x10), b"UI", b"1.2.840.10008.1.2.1.99\0"));
    let mut file = vec![0u8; 128];
    file.extend(b"DICM");
    file.extend(element((2, 0), b"UL", &(meta.len() as u32).to_le_bytes()));
    file.extend(meta);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&element((0x0011, 0x1010), b"OB", &vec![0u8; 96 << 20]))
        .unwrap();
    file.extend(z.finish().unwrap());
    assert!(file.len() < 200 << 10, "{} bytes", file.len());
    let budget = crate::DecodeBudget::new(32 << 20, std::time::Duration::ZERO);
    let opts = DecodeOptions {
        budget: Some(budget.clone()),
        ..Default::default()
    };
    let e = crate::decode_items(&file, &opts).unwrap_err();
    assert!(matches!(e, crate::DecodeError::OverBudget { .. }), "{e}");
    assert!(budget.peak() <= 32 << 20, "{}", budget.peak());
    assert_eq!(budget.in_use(), 0);
}
