//! Reading a DICOM file into a dicom-rs object without trusting its lengths: the meta group
//! walked by hand, every declared length checked against the bytes that exist (dicom-rs
//! reserves what a length claims: fuzzing found gigabyte reservations from tiny files), and
//! the irregular files archives hold (no meta group, no group length, implicit VR under an
//! explicit meta group) read as pydicom reads them.

use super::attrs::text;
use super::error::{parse_err, Declared, DicomError};
use crate::DecodeError;
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

/// The Transfer Syntax UID from a Part 10 file's meta group (read by hand, without the
/// parser), for reports and error messages about files that do not decode.
pub fn transfer_syntax(bytes: &[u8]) -> Option<String> {
    if bytes.get(128..132)? != b"DICM" {
        return None;
    }
    walk_meta(bytes).0
}

/// The meta group of a Part 10 file (explicit VR little endian, group 0002), walked by hand:
/// the Transfer Syntax UID if one was read, and where the data set starts, or the element
/// whose declared length runs past the file.
pub(super) fn walk_meta(bytes: &[u8]) -> (Option<String>, Result<usize, DicomError>) {
    let mut ts = None;
    let mut i = 132;
    while bytes.get(i..i + 2) == Some(&[0x02, 0x00]) {
        let vr = bytes.get(i + 4..i + 6).unwrap_or(b"??");
        let (len, head) = if matches!(vr, b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN") {
            let v: [u8; 4] = bytes
                .get(i + 8..i + 12)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 4]);
            (u32::from_le_bytes(v) as usize, 12)
        } else {
            let v: [u8; 2] = bytes
                .get(i + 6..i + 8)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 2]);
            (usize::from(u16::from_le_bytes(v)), 8)
        };
        let Some(end) = (i + head).checked_add(len).filter(|&e| e <= bytes.len()) else {
            let left = bytes.len().saturating_sub(i + head);
            let e = DicomError::LengthBeyondData {
                of: Declared::MetaElement,
                claimed: len as u64,
                left: left as u64,
            };
            return (ts, Err(e));
        };
        if bytes.get(i + 2..i + 4) == Some(&[0x10, 0x00]) {
            let v = String::from_utf8_lossy(&bytes[i + head..end]);
            ts = Some(v.trim_end_matches(['\0', ' ']).to_string());
        }
        i = end;
    }
    (ts, Ok(i))
}

/// Every element length in `b[i..end]` must fit in what is left of its container.
///
/// dicom-rs reserves an element's declared length before reading it, so a 700-byte file can
/// ask for gigabytes (found by fuzzing). This walk checks declared lengths against the bytes
/// that exist, recursing into sequences and items. Returns where it stopped.
pub(super) fn check_lengths(
    b: &[u8],
    mut i: usize,
    end: usize,
    explicit: bool,
    big: bool,
    depth: usize,
    datasets: bool,
) -> Result<usize, DicomError> {
    let u16_at = |k: usize| -> Option<u16> {
        let v: [u8; 2] = b.get(k..k + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        })
    };
    let u32_at = |k: usize| -> Option<u32> {
        let v: [u8; 4] = b.get(k..k + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        })
    };
    let beyond = |of, claimed: u32, left: usize| {
        Err(DicomError::LengthBeyondData {
            of,
            claimed: u64::from(claimed),
            left: left as u64,
        })
    };
    const MAX_DEPTH: usize = 64;
    if depth > MAX_DEPTH {
        return Err(DicomError::NestedTooDeep { limit: MAX_DEPTH });
    }
    while i + 8 <= end {
        let (Some(group), Some(elem)) = (u16_at(i), u16_at(i + 2)) else {
            break;
        };
        if group == 0xFFFE {
            let len = u32_at(i + 4).unwrap_or(0);
            match elem {
                0xE00D | 0xE0DD => return Ok(i + 8),
                _ if len == u32::MAX => {
                    i = check_lengths(b, i + 8, end, explicit, big, depth + 1, true)?;
                }
                _ => {
                    let stop = (i + 8).checked_add(len as usize).filter(|&e| e <= end);
                    let Some(stop) = stop else {
                        return beyond(Declared::Item, len, end - i - 8);
                    };
                    // A sequence item holds a data set; a pixel data fragment holds codec bytes.
                    if datasets {
                        check_lengths(b, i + 8, stop, explicit, big, depth + 1, true)?;
                    }
                    i = stop;
                }
            }
            continue;
        }
        let (len, head, vr) = if explicit {
            let vr = b.get(i + 4..i + 6).unwrap_or(b"??");
            // The 2-byte-length VRs; anything else, unknown bytes included, is read as dicom-rs
            // reads it: reserved bytes, then a 4-byte length.
            let short = matches!(
                vr,
                b"AE"
                    | b"AS"
                    | b"AT"
                    | b"CS"
                    | b"DA"
                    | b"DS"
                    | b"DT"
                    | b"FL"
                    | b"FD"
                    | b"IS"
                    | b"LO"
                    | b"LT"
                    | b"PN"
                    | b"SH"
                    | b"SL"
                    | b"SS"
                    | b"ST"
                    | b"TM"
                    | b"UI"
                    | b"UL"
                    | b"US"
            );
            let long = !short;
            if long {
                (u32_at(i + 8).unwrap_or(0), 12, vr)
            } else {
                (u32::from(u16_at(i + 6).unwrap_or(0)), 8, vr)
            }
        } else {
            (u32_at(i + 4).unwrap_or(0), 8, &b"??"[..])
        };
        let body = i + head;
        if len == u32::MAX {
            // The standard reads UN of undefined length as implicit VR little endian; dicom-rs
            // keeps the surrounding syntax, and it is dicom-rs's reading that allocates.
            // Encapsulated pixel data holds fragments, everything else data set items.
            let pixel = group == 0x7FE0 && matches!(elem, 0x0008..=0x0010);
            i = check_lengths(b, body, end, explicit, big, depth + 1, !pixel)?;
            continue;
        }
        let stop = body.checked_add(len as usize).filter(|&e| e <= end);
        let Some(stop) = stop else {
            let tag = dicom_core::Tag(group, elem);
            return beyond(Declared::Element(tag), len, end.saturating_sub(body));
        };
        // Implicit VR does not name sequences; a value that opens with an item tag is one.
        let opens_item = b.get(body..body + 4) == Some(&[0xFE, 0xFF, 0x00, 0xE0][..]) && !big
            || b.get(body..body + 4) == Some(&[0xFF, 0xFE, 0xE0, 0x00][..]) && big;
        if vr == b"SQ" || (!explicit && opens_item) {
            check_lengths(b, body, stop, explicit, big, depth + 1, true)?;
        }
        i = stop;
    }
    Ok(end)
}

/// [`check_lengths`] for a whole file: the meta group (explicit LE), then the data set in the
/// syntax the meta group names; a deflated data set is inflated (up to `cap` bytes) and
/// checked as explicit VR little endian.
pub(super) fn check_file_lengths(
    bytes: &[u8],
    ts: Option<&str>,
    cap: u64,
) -> Result<Checked, DecodeError> {
    let part10 = bytes.get(128..132) == Some(b"DICM");
    let (start, ts) = if part10 {
        let (ts, end) = walk_meta(bytes);
        (end?, ts)
    } else {
        (0, ts.map(String::from))
    };
    // Only a meta group can be contradicted; a bare data set's syntax is our guess, which
    // dicom-rs will follow.
    let implicit = part10 && implicit_despite_meta(bytes, start, ts.as_deref().unwrap_or(""));
    let checked = Checked {
        ts: ts.clone(),
        start,
        implicit_despite_meta: implicit,
    };
    // A second Pixel Data header past a malformed fragment sequence escapes the walk below
    // but not dicom-rs (fuzzing found one); any explicit-VR Pixel Data header must fit too.
    for at in bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == [0xE0, 0x7F, 0x10, 0x00])
        .map(|(k, _)| k)
    {
        let vr = bytes.get(at + 4..at + 8);
        if matches!(vr, Some(b"OB\0\0" | b"OW\0\0")) {
            let len = bytes
                .get(at + 8..at + 12)
                .and_then(|v| v.try_into().ok())
                .map_or(0, u32::from_le_bytes);
            if len != u32::MAX && (at + 12).saturating_add(len as usize) > bytes.len() {
                return Err(DicomError::LengthBeyondData {
                    of: Declared::PixelData,
                    claimed: u64::from(len),
                    left: bytes.len().saturating_sub(at + 12) as u64,
                }
                .into());
            }
        }
    }
    let ts = ts.unwrap_or_default();
    match ts.trim_end_matches('\0') {
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            use std::io::Read;
            // Inflated a block at a time, each block's bytes taken from the decode budget
            // first, twice (this copy, and dicom-rs's own when it parses the object): a
            // 1 MB upload can inflate to the cap, and eight of them at once held 7.8 GB.
            // Blocks start at four times the compressed size (a small file asks for little)
            // and double up to 8 MiB.
            let deflated = bytes.get(start..).unwrap_or_default();
            let mut block = (4 * deflated.len() as u64).clamp(64 << 10, 8 << 20);
            let mut inflated = Vec::new();
            let mut reader = flate2::read::DeflateDecoder::new(deflated).take(cap + 1);
            loop {
                crate::budget::reserve(2 * block)?;
                let n = (&mut reader)
                    .take(block)
                    .read_to_end(&mut inflated)
                    .map_err(DicomError::Inflate)?;
                if (n as u64) < block {
                    break;
                }
                block = (2 * block).min(8 << 20);
            }
            if inflated.len() as u64 > cap {
                return Err(DicomError::InflatedTooLarge { cap }.into());
            }
            check_lengths(&inflated, 0, inflated.len(), true, false, 0, true)?;
        }
        uids::IMPLICIT_VR_LITTLE_ENDIAN => {
            check_lengths(bytes, start, bytes.len(), false, false, 0, true)?;
        }
        super::attrs::EXPLICIT_VR_BIG_ENDIAN => {
            check_lengths(bytes, start, bytes.len(), true, true, 0, true)?;
        }
        _ => {
            check_lengths(bytes, start, bytes.len(), !implicit, false, 0, true)?;
        }
    }
    Ok(checked)
}

/// How a file's data set was length-checked, and so how it must be read: the syntax its meta
/// group names, where the data set starts, and whether it is implicit VR despite the meta
/// group (read so, or dicom-rs would read lengths the check never saw).
pub(super) struct Checked {
    ts: Option<String>,
    start: usize,
    implicit_despite_meta: bool,
}

/// A data set written in implicit VR under a meta group that names an explicit little-endian
/// syntax (pydicom's SC_rgb_jpeg.dcm; pydicom reads such files with a warning): its first
/// element has no VR letters where explicit VR puts them.
pub(super) fn implicit_despite_meta(bytes: &[u8], start: usize, ts: &str) -> bool {
    let ts = ts.trim_end_matches('\0');
    !matches!(
        ts,
        uids::IMPLICIT_VR_LITTLE_ENDIAN
            | super::attrs::EXPLICIT_VR_BIG_ENDIAN
            | uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    ) && bytes
        .get(start + 4..start + 6)
        .is_some_and(|vr| !vr.iter().all(u8::is_ascii_uppercase))
}

/// Parse a Part 10 file, or a bare data set without preamble and meta group (as some
/// archives and old exports write them), trying the three uncompressed syntaxes; then its
/// UN values are read by their dictionary VR ([`super::un`]), once, for every reader.
pub(super) fn open(bytes: &[u8], limit: u64) -> Result<DefaultDicomObject, DecodeError> {
    let mut obj = parse(bytes, limit)?;
    let big =
        obj.meta().transfer_syntax().trim_end_matches('\0') == super::attrs::EXPLICIT_VR_BIG_ENDIAN;
    super::un::reinterpret(&mut obj, big);
    Ok(obj)
}

/// [`open`] without the UN rewrite.
fn parse(bytes: &[u8], limit: u64) -> Result<DefaultDicomObject, DecodeError> {
    // Pixels at up to 8 bytes each, plus room for the rest of the data set.
    let cap = limit.saturating_mul(8).saturating_add(64 << 20);
    if bytes.get(128..132) == Some(b"DICM") {
        let checked = check_file_lengths(bytes, None, cap)?;
        let read = |ts: &str, read_as: &str, start: usize| {
            use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
            let syntax = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(read_as)
                .ok_or_else(|| DicomError::UnknownTransferSyntax { uid: ts.into() })?;
            let ds = dicom_object::InMemDicomObject::read_dataset_with_ts(&bytes[start..], syntax)
                .map_err(parse_err)?;
            with_meta(ds, ts)
        };
        // An implicit-VR data set under an explicit syntax's meta group is read as implicit
        // (which is how its lengths were checked) and keeps the meta group's syntax for its
        // pixel data; dicom-rs alone would read it as explicit.
        if let (Some(ts), true) = (&checked.ts, checked.implicit_despite_meta) {
            return Ok(read(ts, uids::IMPLICIT_VR_LITTLE_ENDIAN, checked.start)?);
        }
        let opened = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(&bytes[128..])
            .map_err(parse_err);
        // A meta group dicom-rs will not parse (writers that omit its group length, as
        // pydicom's no_meta_group_length.dcm does): read the data set after it with the
        // syntax it names, and rebuild the meta group.
        return Ok(opened.or_else(|e| match &checked.ts {
            Some(ts) => read(ts, ts, checked.start).map_err(|_| e),
            None => Err(e),
        })?);
    }
    let mut last = None;
    for ts in [
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
        super::attrs::EXPLICIT_VR_BIG_ENDIAN, // retired, still found in archives
    ] {
        use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
        let Some(syntax) = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts) else {
            continue;
        };
        if let Err(e) = check_file_lengths(bytes, Some(ts), cap) {
            last.get_or_insert(e);
            continue;
        }
        let parsed = dicom_object::InMemDicomObject::read_dataset_with_ts(bytes, syntax);
        match parsed {
            Ok(ds) if ds.element_opt(tags::PIXEL_DATA).ok().flatten().is_some() => {
                return Ok(with_meta(ds, ts)?);
            }
            Ok(_) => {
                last.get_or_insert(DicomError::NoPixelData.into());
            }
            Err(e) => {
                last.get_or_insert(parse_err(e).into());
            }
        }
    }
    Err(last.unwrap_or(DecodeError::Unsupported))
}

/// A data set read without its meta group, given one that names `ts`.
pub(super) fn with_meta(
    ds: dicom_object::InMemDicomObject,
    ts: &str,
) -> Result<DefaultDicomObject, DicomError> {
    let sop_class = text(&ds, tags::SOP_CLASS_UID)
        .unwrap_or_else(|| uids::SECONDARY_CAPTURE_IMAGE_STORAGE.into());
    let sop = text(&ds, tags::SOP_INSTANCE_UID).unwrap_or_else(|| "2.25.1".into());
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .transfer_syntax(ts)
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop);
    ds.with_meta(meta).map_err(parse_err)
}

/// Does `bytes` look like a bare DICOM data set (no preamble): group 0x0008 first, in either
/// byte order?
pub(crate) fn looks_like_bare_dataset(bytes: &[u8]) -> bool {
    matches!(bytes.get(..2), Some([0x08, 0x00] | [0x00, 0x08]))
        && bytes.len() > 16
        && bytes.get(128..132) != Some(b"DICM")
}
