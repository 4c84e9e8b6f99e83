//! Values stored with VR UN (unknown), read by the VR the standard's data dictionary gives
//! their tag, as pydicom and DCMTK read them.
//!
//! Anonymisers and converters that met a tag their own dictionary lacked write it in explicit
//! VR as UN: pydicom's `explicit_VR-UN.dcm` holds Modality, the UIDs, Pixel Spacing and the
//! rescale as UN. dicom-rs keeps a UN value as bytes, so it read back as byte numbers
//! (`67\84` for `CT`), modality filters and study grouping missed such files, and
//! dicom-pixeldata took a rescale of `"1 "` for 49. Every read of a DICOM object (simcase's
//! own attributes and dicom-pixeldata's) goes through the object [`reinterpret`] has
//! rewritten once, right after parsing: each UN element whose tag the dictionary knows is
//! parsed again, by dicom-rs, as an element of the dictionary's VR (texts decoded in the
//! data set's character set and trimmed, multiple values split on `\`, numbers in the file's
//! byte order; a sequence as implicit VR little endian, as PS3.5 6.2.2 says UN sequences
//! are). What cannot be read that way (private tags, values that do not parse) stays UN.

use super::open::check_lengths;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::header::Header;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, uids, StandardDataDictionary};
use dicom_encoding::text::SpecificCharacterSet;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

/// Sequences deeper than this are left as they are (the parser's own limit is lower).
const MAX_DEPTH: usize = 64;

/// Rewrite every UN element of `obj`, and of the items of its sequences, whose tag the
/// standard dictionary knows, as an element of the dictionary's VR. `big_endian`: the data
/// set's byte order (Explicit VR Big Endian), which its UN values keep.
pub(super) fn reinterpret(obj: &mut InMemDicomObject, big_endian: bool) {
    let cs = charset(obj);
    walk(obj, big_endian, &cs, 0);
}

/// The data set's Specific Character Set (0008,0005), itself possibly UN; the default
/// repertoire when absent or unknown to dicom-rs.
fn charset(obj: &InMemDicomObject) -> SpecificCharacterSet {
    let Some(el) = obj.get(tags::SPECIFIC_CHARACTER_SET) else {
        return SpecificCharacterSet::default();
    };
    let raw = match el.value().primitive() {
        Some(v) if el.vr() == VR::UN => String::from_utf8_lossy(&v.to_bytes()).into_owned(),
        Some(v) => v.to_str().into_owned(),
        None => return SpecificCharacterSet::default(),
    };
    raw.split('\\')
        .map(|c| c.trim_matches(|c: char| c == ' ' || c == '\0'))
        .find_map(SpecificCharacterSet::from_code)
        .unwrap_or_default()
}

/// [`reinterpret`] on one data set, in tag order (so Pixel Representation and Bits Allocated
/// are already read when a value that depends on them comes).
fn walk(obj: &mut InMemDicomObject, big: bool, cs: &SpecificCharacterSet, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let un: Vec<Tag> = obj
        .iter()
        .filter(|e| e.vr() == VR::UN || e.vr() == VR::SQ)
        .map(|e| e.tag())
        .collect();
    for tag in un {
        let Some(mut el) = obj.take(tag) else {
            continue;
        };
        if el.vr() == VR::UN {
            if let Some(read) =
                dictionary_vr(obj, tag).and_then(|vr| reparse(&el, vr, big, cs.clone()))
            {
                el = read;
            }
        }
        if let Some(items) = el.items_mut() {
            for item in items.iter_mut() {
                walk(item, big, cs, depth + 1);
            }
        }
        obj.put(el);
    }
}

/// The VR the standard dictionary gives `tag`, the context-dependent ones resolved as
/// pydicom resolves them: US or SS by Pixel Representation, OB or OW by Bits Allocated.
fn dictionary_vr(obj: &InMemDicomObject, tag: Tag) -> Option<VR> {
    let int = |t| obj.get(t).and_then(|e| e.to_int::<u16>().ok());
    let vr = match StandardDataDictionary.by_tag(tag)?.vr() {
        VirtualVr::Exact(vr) => vr,
        VirtualVr::Xs if int(tags::PIXEL_REPRESENTATION) == Some(1) => VR::SS,
        VirtualVr::Xs => VR::US,
        VirtualVr::Px if int(tags::BITS_ALLOCATED).is_some_and(|b| b <= 8) => VR::OB,
        VirtualVr::Px | VirtualVr::Ox | VirtualVr::Lt => VR::OW,
        _ => return None,
    };
    (vr != VR::UN).then_some(vr)
}

/// `el`'s bytes parsed by dicom-rs as an element of `vr`: encoded as a one-element data set
/// (explicit VR in the file's byte order; a sequence as implicit VR little endian) and read
/// back. `None` when the value is not bytes or does not parse as `vr`.
fn reparse(el: &InMemElement, vr: VR, big: bool, cs: SpecificCharacterSet) -> Option<InMemElement> {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    let bytes = el.value().primitive()?.to_bytes();
    let tag = el.tag();
    let len = u32::try_from(bytes.len()).ok()?;
    let mut buf = Vec::with_capacity(bytes.len() + 12);
    let ts = if vr == VR::SQ {
        buf.extend(tag.group().to_le_bytes());
        buf.extend(tag.element().to_le_bytes());
        buf.extend(len.to_le_bytes());
        buf.extend_from_slice(&bytes);
        // dicom-rs reserves what item lengths claim: check them against the bytes first.
        check_lengths(&buf, 0, buf.len(), false, false, 1, true).ok()?;
        uids::IMPLICIT_VR_LITTLE_ENDIAN
    } else {
        let u16b = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        buf.extend(u16b(tag.group()));
        buf.extend(u16b(tag.element()));
        buf.extend(vr.to_bytes());
        if short_length(vr) {
            buf.extend(u16b(u16::try_from(len).ok()?));
        } else {
            buf.extend([0, 0]);
            buf.extend(u32b(len));
        }
        buf.extend_from_slice(&bytes);
        if big {
            super::attrs::EXPLICIT_VR_BIG_ENDIAN
        } else {
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        }
    };
    let syntax = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts)?;
    let mut ds = InMemDicomObject::read_dataset_with_ts_cs(&buf[..], syntax, cs).ok()?;
    ds.take(tag).filter(|e| e.vr() == vr)
}

/// Whether explicit VR encodes `vr`'s length in 2 bytes (PS3.5 7.1.2).
fn short_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        AE | AS
            | AT
            | CS
            | DA
            | DS
            | DT
            | FL
            | FD
            | IS
            | LO
            | LT
            | PN
            | SH
            | SL
            | SS
            | ST
            | TM
            | UI
            | UL
            | US
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue};

    /// An object holding `(tag, raw bytes)` as UN elements.
    fn with_un(elements: &[(Tag, &[u8])]) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        for (tag, bytes) in elements {
            o.put(DataElement::new(
                *tag,
                VR::UN,
                PrimitiveValue::from(bytes.to_vec()),
            ));
        }
        o
    }

    #[test]
    fn texts_are_trimmed_and_split_and_numbers_keep_the_byte_order() {
        for big in [false, true] {
            let cols: &[u8] = if big { &[0x02, 0x00] } else { &[0x00, 0x02] };
            let mut o = with_un(&[
                (tags::MODALITY, b"CT"),
                (tags::SOP_INSTANCE_UID, b"1.2.840.10008.5.1.4.1.1.2\0"),
                (tags::PIXEL_SPACING, b"0.859375\\0.5 "),
                (tags::RESCALE_SLOPE, b"1 "),
                (tags::COLUMNS, cols),
                (tags::PATIENT_NAME, b"Doe^Jane "),
                (Tag(0x0013, 0x1010), b"Pancreas-CT "),
            ]);
            reinterpret(&mut o, big);
            let el = |t| o.get(t).unwrap();
            assert_eq!(el(tags::MODALITY).vr(), VR::CS);
            assert_eq!(el(tags::MODALITY).to_str().unwrap(), "CT");
            assert_eq!(
                el(tags::SOP_INSTANCE_UID).to_str().unwrap(),
                "1.2.840.10008.5.1.4.1.1.2"
            );
            assert_eq!(
                el(tags::PIXEL_SPACING).to_multi_float64().unwrap(),
                [0.859375, 0.5]
            );
            assert_eq!(el(tags::RESCALE_SLOPE).to_float64().unwrap(), 1.0);
            assert_eq!(el(tags::COLUMNS).vr(), VR::US);
            assert_eq!(el(tags::COLUMNS).to_int::<u16>().unwrap(), 512, "big={big}");
            assert_eq!(el(tags::PATIENT_NAME).to_str().unwrap(), "Doe^Jane");
            // A private tag has no dictionary VR: left as bytes.
            assert_eq!(el(Tag(0x0013, 0x1010)).vr(), VR::UN);
        }
    }

    #[test]
    fn the_character_set_and_pixel_representation_apply() {
        // "Müller" in ISO 8859-1; Smallest Image Pixel Value -5 as SS once PR is 1.
        let mut o = with_un(&[
            (tags::SPECIFIC_CHARACTER_SET, b"ISO_IR 100"),
            (tags::PATIENT_NAME, b"M\xfcller"),
            (tags::PIXEL_REPRESENTATION, &[1, 0]),
            (tags::SMALLEST_IMAGE_PIXEL_VALUE, &(-5i16).to_le_bytes()),
        ]);
        reinterpret(&mut o, false);
        let el = |t| o.get(t).unwrap();
        assert_eq!(el(tags::PATIENT_NAME).to_str().unwrap(), "Müller");
        assert_eq!(el(tags::SMALLEST_IMAGE_PIXEL_VALUE).vr(), VR::SS);
        assert_eq!(
            el(tags::SMALLEST_IMAGE_PIXEL_VALUE)
                .to_int::<i32>()
                .unwrap(),
            -5
        );
    }

    #[test]
    fn a_un_sequence_is_read_as_implicit_little_endian_and_a_lying_item_is_left_alone() {
        // One item holding Window Center "40" (implicit VR LE: tag, 4-byte length, value).
        let item = [&[0x28, 0x00, 0x50, 0x10, 2, 0, 0, 0][..], b"40"].concat();
        let seq = [
            &[0xFE, 0xFF, 0x00, 0xE0][..],
            &(item.len() as u32).to_le_bytes(),
            &item,
        ]
        .concat();
        let mut o = with_un(&[(tags::VOILUT_SEQUENCE, &seq)]);
        reinterpret(&mut o, false);
        let el = o.get(tags::VOILUT_SEQUENCE).unwrap();
        assert_eq!(el.vr(), VR::SQ);
        let items = el.items().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0]
                .get(tags::WINDOW_CENTER)
                .unwrap()
                .to_float64()
                .unwrap(),
            40.0
        );
        // An item claiming 4 GB in 12 bytes: not parsed (no reservation), kept as UN.
        let lying = [
            &[0xFE, 0xFF, 0x00, 0xE0][..],
            &[0xF0, 0xFF, 0xFF, 0xFF],
            b"abcd",
        ]
        .concat();
        let mut o = with_un(&[(tags::VOILUT_SEQUENCE, &lying)]);
        reinterpret(&mut o, false);
        assert_eq!(o.get(tags::VOILUT_SEQUENCE).unwrap().vr(), VR::UN);
    }
}
