//! DICOM through dicom-rs: modality LUT, then the VOI LUT table or window (or min-max), MONOCHROME1
//! inverted, first frame. Identifying attributes are read but only a salted hash of PatientID
//! ever leaves this module's callers.

use crate::{jpeg, jpegls, min_max, DecodeError, DecodeOptions, Image};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, VoiLutOption};
use std::borrow::Cow;

/// The DICOM attributes simcase keeps. `patient_id` is the raw value: callers hash it
/// before storing and never print it.
#[derive(Clone, Debug, Default)]
pub struct DicomMeta {
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_uid: Option<String>,
    pub instance_number: Option<String>,
    pub slice_location: Option<String>,
    pub study_date: Option<String>,
    pub transfer_syntax: String,
    pub patient_id: Option<String>,
    /// PatientName and PatientBirthDate, read only with [`DecodeOptions::keep_phi`].
    pub phi: Option<Phi>,
    pub frames: u32,
}

/// Identifying attributes beyond PatientID, kept only when the operator asks (`--keep-phi`).
#[derive(Clone, Debug, Default)]
pub struct Phi {
    pub patient_name: Option<String>,
    pub birth_date: Option<String>,
}

/// Which frames of a multi-frame object become items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrameSelect {
    /// The first frame only.
    #[default]
    First,
    /// The middle frame (`frames / 2`).
    Middle,
    All,
    /// Every n-th frame from the first.
    Stride(u32),
}

impl FrameSelect {
    pub fn indices(self, frames: u32) -> Vec<u32> {
        let n = frames.max(1);
        match self {
            Self::First => vec![0],
            Self::Middle => vec![n / 2],
            Self::All => (0..n).collect(),
            Self::Stride(k) => (0..n).step_by(k.max(1) as usize).collect(),
        }
    }
}

impl std::str::FromStr for FrameSelect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "first" => Self::First,
            "middle" => Self::Middle,
            "all" => Self::All,
            other => match other.strip_prefix("stride:").map(str::parse::<u32>) {
                Some(Ok(k)) if k > 0 => Self::Stride(k),
                _ => {
                    return Err(format!(
                        "unknown frame choice {s:?}: first, middle, all or stride:N"
                    ))
                }
            },
        })
    }
}

/// A CT window: named presets or explicit centre/width in HU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPreset {
    pub center: f64,
    pub width: f64,
}

impl std::str::FromStr for WindowPreset {
    type Err = String;
    /// `lung`, `mediastinum`, `abdomen`, `bone`, `brain`, or `C,W`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (center, width) = match s.to_ascii_lowercase().as_str() {
            "lung" => (-600.0, 1500.0),
            "mediastinum" => (50.0, 350.0),
            "abdomen" => (40.0, 400.0),
            "bone" => (400.0, 1800.0),
            "brain" => (40.0, 80.0),
            other => {
                let (c, w) = other
                    .split_once(',')
                    .ok_or_else(|| format!("unknown window {s:?}: use a preset or C,W"))?;
                let c = c
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad window centre {c:?}"))?;
                let w: f64 = w
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad window width {w:?}"))?;
                if w < 1.0 {
                    return Err(format!("window width must be >= 1, got {w}"));
                }
                (c, w)
            }
        };
        Ok(WindowPreset { center, width })
    }
}

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
fn walk_meta(bytes: &[u8]) -> (Option<String>, Result<usize, DecodeError>) {
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
            let e = DecodeError::Dicom(format!("meta element claims {len} bytes, {left} left"));
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

/// A trimmed, non-empty string value (a file object reads through to its data set).
pub(crate) fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let v = obj.element_opt(tag).ok()??.to_str().ok()?;
    let v = v.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!v.is_empty()).then(|| v.to_string())
}

fn dicom_err(e: impl std::fmt::Display) -> DecodeError {
    // dicom-rs errors can span lines (snafu backtraces); keep the first.
    let s = e.to_string();
    DecodeError::Dicom(s.lines().next().unwrap_or("unknown error").to_string())
}

/// DICOM PS3.3 C.11.2.1.2.1 linear window, to `[0, 1]`.
pub(crate) fn window_linear(x: f32, center: f64, width: f64) -> f32 {
    let (c, w) = (center - 0.5, (width - 1.0).max(1.0));
    let x = x as f64;
    if x <= c - w / 2.0 {
        0.0
    } else if x > c + w / 2.0 {
        1.0
    } else {
        (((x - c) / w) + 0.5) as f32
    }
}

/// Every element length in `b[i..end]` must fit in what is left of its container.
///
/// dicom-rs reserves an element's declared length before reading it, so a 700-byte file can
/// ask for gigabytes (found by fuzzing). This walk checks declared lengths against the bytes
/// that exist, recursing into sequences and items. Returns where it stopped.
fn check_lengths(
    b: &[u8],
    mut i: usize,
    end: usize,
    explicit: bool,
    big: bool,
    depth: usize,
    datasets: bool,
) -> Result<usize, DecodeError> {
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
    let bad = |what: String| Err(DecodeError::Dicom(what));
    if depth > 64 {
        return bad("sequences nested deeper than 64".into());
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
                        return bad(format!("item claims {len} bytes, {} left", end - i - 8));
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
            return bad(format!(
                "element ({group:04X},{elem:04X}) claims {len} bytes, {} left",
                end.saturating_sub(body)
            ));
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
fn check_file_lengths(bytes: &[u8], ts: Option<&str>, cap: u64) -> Result<Checked, DecodeError> {
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
                return Err(DecodeError::Dicom(format!(
                    "pixel data claims {len} bytes, {} left",
                    bytes.len().saturating_sub(at + 12)
                )));
            }
        }
    }
    let ts = ts.unwrap_or_default();
    match ts.trim_end_matches('\0') {
        "1.2.840.10008.1.2.1.99" => {
            use std::io::Read;
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(bytes.get(start..).unwrap_or_default())
                .take(cap + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| DecodeError::Dicom(format!("deflated data set: {e}")))?;
            if inflated.len() as u64 > cap {
                return Err(DecodeError::Dicom(format!(
                    "deflated data set expands beyond {cap} bytes"
                )));
            }
            check_lengths(&inflated, 0, inflated.len(), true, false, 0, true)?;
        }
        "1.2.840.10008.1.2" => {
            check_lengths(bytes, start, bytes.len(), false, false, 0, true)?;
        }
        "1.2.840.10008.1.2.2" => {
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
struct Checked {
    ts: Option<String>,
    start: usize,
    implicit_despite_meta: bool,
}

/// A data set written in implicit VR under a meta group that names an explicit little-endian
/// syntax (pydicom's SC_rgb_jpeg.dcm; pydicom reads such files with a warning): its first
/// element has no VR letters where explicit VR puts them.
fn implicit_despite_meta(bytes: &[u8], start: usize, ts: &str) -> bool {
    let ts = ts.trim_end_matches('\0');
    !matches!(
        ts,
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.2" | "1.2.840.10008.1.2.1.99"
    ) && bytes
        .get(start + 4..start + 6)
        .is_some_and(|vr| !vr.iter().all(u8::is_ascii_uppercase))
}

/// Parse a Part 10 file, or a bare data set without preamble and meta group (as some
/// archives and old exports write them), trying the three uncompressed syntaxes.
fn open(bytes: &[u8], limit: u64) -> Result<DefaultDicomObject, DecodeError> {
    // Pixels at up to 8 bytes each, plus room for the rest of the data set.
    let cap = limit.saturating_mul(8).saturating_add(64 << 20);
    if bytes.get(128..132) == Some(b"DICM") {
        let checked = check_file_lengths(bytes, None, cap)?;
        let read = |ts: &str, read_as: &str, start: usize| {
            use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
            let syntax = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(read_as)
                .ok_or_else(|| DecodeError::Dicom(format!("unknown transfer syntax {ts}")))?;
            let ds = dicom_object::InMemDicomObject::read_dataset_with_ts(&bytes[start..], syntax)
                .map_err(dicom_err)?;
            with_meta(ds, ts)
        };
        // An implicit-VR data set under an explicit syntax's meta group is read as implicit
        // (which is how its lengths were checked) and keeps the meta group's syntax for its
        // pixel data; dicom-rs alone would read it as explicit.
        if let (Some(ts), true) = (&checked.ts, checked.implicit_despite_meta) {
            return read(ts, "1.2.840.10008.1.2", checked.start);
        }
        let opened = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(&bytes[128..])
            .map_err(dicom_err);
        // A meta group dicom-rs will not parse (writers that omit its group length, as
        // pydicom's no_meta_group_length.dcm does): read the data set after it with the
        // syntax it names, and rebuild the meta group.
        return opened.or_else(|e| match &checked.ts {
            Some(ts) => read(ts, ts, checked.start).map_err(|_| e),
            None => Err(e),
        });
    }
    let mut last = None;
    for ts in [
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.2", // explicit VR big endian (retired, still found in archives)
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
                return with_meta(ds, ts);
            }
            Ok(_) => {
                last.get_or_insert(DecodeError::Dicom(
                    "no pixel data (not an image object)".into(),
                ));
            }
            Err(e) => {
                last.get_or_insert(dicom_err(e));
            }
        }
    }
    Err(last.unwrap_or(DecodeError::Unsupported))
}

/// A data set read without its meta group, given one that names `ts`.
fn with_meta(
    ds: dicom_object::InMemDicomObject,
    ts: &str,
) -> Result<DefaultDicomObject, DecodeError> {
    let sop_class =
        text(&ds, tags::SOP_CLASS_UID).unwrap_or_else(|| "1.2.840.10008.5.1.4.1.1.7".into());
    let sop = text(&ds, tags::SOP_INSTANCE_UID).unwrap_or_else(|| "2.25.1".into());
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .transfer_syntax(ts)
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop);
    ds.with_meta(meta).map_err(dicom_err)
}

/// Does `bytes` look like a bare DICOM data set (no preamble): group 0x0008 first, in either
/// byte order?
pub(crate) fn looks_like_bare_dataset(bytes: &[u8]) -> bool {
    matches!(bytes.get(..2), Some([0x08, 0x00] | [0x00, 0x08]))
        && bytes.len() > 16
        && bytes.get(128..132) != Some(b"DICM")
}

/// Decode the selected frames of a DICOM object: `(frame index, image)` and the attributes.
pub(crate) fn decode(
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<(Vec<(u32, Image)>, DicomMeta), DecodeError> {
    let obj = open(bytes, opts.pixel_limit())?;
    let meta = DicomMeta {
        modality: text(&obj, tags::MODALITY),
        body_part: text(&obj, tags::BODY_PART_EXAMINED),
        study_uid: text(&obj, tags::STUDY_INSTANCE_UID),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        sop_uid: text(&obj, tags::SOP_INSTANCE_UID),
        instance_number: text(&obj, tags::INSTANCE_NUMBER),
        slice_location: text(&obj, tags::SLICE_LOCATION),
        study_date: text(&obj, tags::STUDY_DATE),
        transfer_syntax: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        patient_id: text(&obj, tags::PATIENT_ID),
        phi: opts.keep_phi.then(|| Phi {
            patient_name: text(&obj, tags::PATIENT_NAME),
            birth_date: text(&obj, tags::PATIENT_BIRTH_DATE),
        }),
        frames: text(&obj, tags::NUMBER_OF_FRAMES)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    };
    let rows: u64 = text(&obj, tags::ROWS)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let cols: u64 = text(&obj, tags::COLUMNS)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(DecodeError::Dicom(
            "no pixel data (not an image object)".into(),
        ));
    }
    let limit = opts.pixel_limit();
    if rows * cols * u64::from(meta.frames.max(1)) > limit {
        return Err(DecodeError::TooLarge {
            width: cols,
            height: rows,
            limit,
        });
    }
    let bits: u16 = text(&obj, tags::BITS_ALLOCATED)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if is_direct(bits, &meta.transfer_syntax) {
        let frames = direct(&obj, &meta, bits, rows as usize, cols as usize, opts)?;
        return Ok((frames, meta));
    }
    let photometric = text(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if photometric == "YBR_FULL_422" && bits == 8 && NATIVE.contains(&meta.transfer_syntax.as_str())
    {
        let frames = ybr_422_native(&obj, &meta, rows as usize, cols as usize, opts)?;
        return Ok((frames, meta));
    }
    // JPEG Baseline / Extended (libjpeg-turbo) and JPEG-LS (CharLS): the chosen frames
    // decoded by simcase, then read as native pixels. Should that fail, dicom-rs's decoder
    // gets its turn, and simcase's error is reported only if dicom-rs fails too.
    let ts = meta.transfer_syntax.as_str();
    let to_native = match ts {
        jpeg::JPEG_BASELINE | jpeg::JPEG_EXTENDED => Some(jpeg::to_native as ToNative),
        uids::JPEGLS_LOSSLESS | uids::JPEGLS_NEAR_LOSSLESS => Some(jpegls::to_native as ToNative),
        _ => None,
    };
    let mut codec_error = None;
    let (obj, frame_numbers) = match to_native {
        Some(to_native) => {
            let selected = select_frames(opts, meta.frames.max(1))?;
            match to_native(&obj, meta.frames, &selected, rows as usize, cols as usize) {
                Ok(native) => (native, Some(selected)),
                Err(e) => {
                    codec_error = Some(e);
                    (obj, None)
                }
            }
        }
        None => (obj, None),
    };
    let pixels = obj.decode_pixel_data().map_err(|e| {
        codec_error.unwrap_or_else(|| {
            DecodeError::Dicom(format!(
                "transfer syntax {}: {}",
                meta.transfer_syntax,
                e.to_string().lines().next().unwrap_or("")
            ))
        })
    })?;
    let (w, h) = (pixels.columns() as usize, pixels.rows() as usize);
    if w == 0 || h == 0 {
        return Err(DecodeError::Dicom("zero rows or columns".into()));
    }
    let n = pixels.number_of_frames().max(1);
    // Frames decoded by simcase (JPEG) are native pixels now.
    let native = frame_numbers.is_some() || NATIVE.contains(&meta.transfer_syntax.as_str());
    // (frame number in the file, frame index in `pixels`)
    let selected: Vec<(u32, u32)> = match frame_numbers {
        Some(numbers) => numbers.into_iter().zip(0..).collect(),
        None => select_frames(opts, n)?
            .into_iter()
            .map(|f| (f, f))
            .collect(),
    };
    let frames = selected
        .into_iter()
        .map(|(f, i)| Ok((f, frame_image(&obj, &pixels, i, w, h, native, opts)?)))
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok((frames, meta))
}

/// A codec decoding the chosen frames of an object (all `frames` of it, `rows` x `cols`)
/// into a native copy.
type ToNative =
    fn(&DefaultDicomObject, u32, &[u32], usize, usize) -> Result<DefaultDicomObject, DecodeError>;

/// The frames of `n` to decode: a stored item's own (`part`), else the `--frames` choice.
fn select_frames(opts: &DecodeOptions, n: u32) -> Result<Vec<u32>, DecodeError> {
    match opts.part {
        Some(p) if p < n => Ok(vec![p]),
        Some(p) => Err(DecodeError::Dicom(format!("no frame {p} (of {n})"))),
        None => Ok(opts.frames.indices(n)),
    }
}

/// Uncompressed transfer syntaxes (read here directly when dicom-rs cannot, e.g. 32-bit).
const NATIVE: [&str; 4] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
];

/// Monochrome (modality LUT, then window / VOI LUT / min-max, MONOCHROME1 inverted) or colour
/// (dicom-rs converts RGB, YBR_* and PALETTE COLOR to RGB) for one frame.
fn frame_image(
    obj: &DefaultDicomObject,
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    w: usize,
    h: usize,
    native: bool,
    opts: &DecodeOptions,
) -> Result<Image, DecodeError> {
    let pi = pixels.photometric_interpretation().clone();
    if pi.as_str() == "PALETTE COLOR" {
        return palette(obj, pixels, frame, w, h);
    }
    if native && pi.as_str() == "YBR_FULL" && pixels.bits_allocated() == 8 {
        return ybr_full(pixels, frame, w, h);
    }
    Ok(if pi.is_monochrome() {
        // Modality LUT only; the window is applied here so an override can replace it.
        let raw = samples(pixels, frame, ModalityLutOption::Default, w * h)?;
        let raw = &raw[..];
        let window = opts.window.or_else(|| {
            pixels
                .window()
                .ok()
                .flatten()
                .and_then(|ws| ws.first().copied())
                .filter(|wl| wl.width >= 1.0)
                .map(|wl| WindowPreset {
                    center: wl.center,
                    width: wl.width,
                })
        });
        // A VOI LUT table, when present, takes precedence over the window (as in dicom-rs),
        // unless the caller chose a window.
        let voi_lut = match opts.window {
            Some(_) => None,
            None => pixels
                .voi_lut_sequence()
                .ok()
                .flatten()
                .and_then(|l| l.first())
                .filter(|l| !l.data.is_empty()),
        };
        let mut v: Vec<f32> = match (voi_lut, window) {
            (Some(l), _) => {
                let top = ((1u32 << l.bits_stored.clamp(1, 16)) - 1) as f32;
                let last = l.data.len() as i64 - 1;
                raw.iter()
                    .map(|&x| {
                        let i = (x.round() as i64 - i64::from(l.min_pixel_value)).clamp(0, last);
                        (f32::from(l.data[i as usize]) / top).clamp(0.0, 1.0)
                    })
                    .collect()
            }
            (None, Some(wp)) => raw
                .iter()
                .map(|&x| window_linear(x, wp.center, wp.width))
                .collect(),
            (None, None) => min_max(raw.to_vec()),
        };
        if pi.as_str() == "MONOCHROME1" {
            v.iter_mut().for_each(|x| *x = 1.0 - *x);
        }
        Image::from_gray(w, h, &v)
    } else {
        let img = pixels
            .to_dynamic_image_with_options(frame, &ConvertOptions::new())
            .map_err(dicom_err)?;
        match img {
            image::DynamicImage::ImageRgb16(_) | image::DynamicImage::ImageLuma16(_) => {
                let rgb = img.to_rgb16();
                let v: Vec<f32> = rgb.as_raw().iter().map(|&p| p as f32).collect();
                Image::from_interleaved_rgb(w, h, &min_max(v), 1.0)
            }
            other => {
                let rgb = other.to_rgb8();
                Image::from_interleaved_rgb(w, h, rgb.as_raw(), 255.0)
            }
        }
    })
}

/// Uncompressed YBR_FULL_422 (`Y1 Y2 Cb Cr` per pixel pair), which dicom-pixeldata sizes as
/// if it were full-resolution; chroma is shared by each horizontal pair.
fn ybr_422_native(
    obj: &DefaultDicomObject,
    meta: &DicomMeta,
    rows: usize,
    cols: usize,
    opts: &DecodeOptions,
) -> Result<Vec<(u32, Image)>, DecodeError> {
    let el = obj.element(tags::PIXEL_DATA).map_err(dicom_err)?;
    let bytes = el.value().to_bytes().map_err(dicom_err)?;
    let per = rows * cols * 2;
    if rows == 0 || cols == 0 || cols % 2 == 1 {
        return Err(DecodeError::Dicom(format!(
            "YBR_FULL_422 with {cols} columns"
        )));
    }
    let n = ((bytes.len() / per) as u32).min(meta.frames.max(1));
    if n == 0 {
        return Err(DecodeError::Dicom(
            "pixel data shorter than rows x columns".into(),
        ));
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
fn ycbcr(y: u8, cb: u8, cr: u8) -> [f32; 3] {
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
fn ybr_full(
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    w: usize,
    h: usize,
) -> Result<Image, DecodeError> {
    let n = w * h;
    let data = pixels.data();
    let part = data
        .get(frame as usize * 3 * n..(frame as usize + 1) * 3 * n)
        .ok_or_else(|| DecodeError::Dicom("pixel data shorter than rows x columns".into()))?;
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

/// The first `n` samples of one frame, through the modality LUT choice, no VOI.
fn samples(
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    modality: ModalityLutOption,
    n: usize,
) -> Result<Vec<f32>, DecodeError> {
    let mut v: Vec<f32> = pixels
        .to_vec_frame_with_options(
            frame,
            &ConvertOptions::new()
                .with_modality_lut(modality)
                .with_voi_lut(VoiLutOption::Identity),
        )
        .map_err(dicom_err)?;
    if v.len() < n {
        return Err(DecodeError::Dicom(
            "pixel data shorter than rows x columns".into(),
        ));
    }
    v.truncate(n);
    Ok(v)
}

/// PALETTE COLOR: stored indices through the red, green and blue lookup tables, each entry
/// scaled by its descriptor's bit depth.
fn palette(
    obj: &DefaultDicomObject,
    pixels: &dicom_pixeldata::DecodedPixelData,
    frame: u32,
    w: usize,
    h: usize,
) -> Result<Image, DecodeError> {
    let idx = samples(pixels, frame, ModalityLutOption::None, w * h)?;
    let luts = [
        (
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ]
    .map(|(d, v, seg)| palette_lut(obj, d, v, seg));
    let mut out = vec![0f32; 3 * w * h];
    for (c, lut) in luts.iter().enumerate() {
        let (table, first, top) = lut.as_ref().ok_or_else(|| {
            DecodeError::Dicom("PALETTE COLOR without a usable lookup table".into())
        })?;
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
fn palette_lut(
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
fn segmented_lut(obj: &DefaultDicomObject, tag: dicom_object::Tag, n: usize) -> Option<Vec<u16>> {
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
fn expand_segments(data: &[u16], count: Option<usize>, lut: &mut Vec<u16>, n: usize, depth: u8) {
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

/// RLE Lossless.
const RLE: &str = "1.2.840.10008.1.2.5";

/// Whether [`direct`] reads these pixels: what dicom-pixeldata 0.10 refuses.
fn is_direct(bits: u16, ts: &str) -> bool {
    (bits == 32 && (NATIVE.contains(&ts) || ts == RLE)) || (bits == 1 && NATIVE.contains(&ts))
}

/// Integer pixels that dicom-pixeldata refuses, read here: 32-bit native or RLE (dose grids,
/// some CT and secondary captures) and 1-bit native (segmentation masks). Rescale
/// slope/intercept, then the window or min-max; RGB min-max.
fn direct(
    obj: &DefaultDicomObject,
    meta: &DicomMeta,
    bits: u16,
    rows: usize,
    cols: usize,
    opts: &DecodeOptions,
) -> Result<Vec<(u32, Image)>, DecodeError> {
    let num = |tag| text(obj, tag).and_then(|s| s.parse::<f64>().ok());
    let spp = num(tags::SAMPLES_PER_PIXEL).unwrap_or(1.0) as usize;
    if !(spp == 1 || (spp == 3 && bits == 32)) || rows == 0 || cols == 0 {
        return Err(DecodeError::Dicom(format!(
            "{spp} samples per pixel at {bits} bits"
        )));
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
        let el = obj.element(tags::PIXEL_DATA).map_err(dicom_err)?;
        let big = meta.transfer_syntax == "1.2.840.10008.1.2.2";
        let words = match bits {
            1 => native1(el.value().primitive(), big, per * frames as usize)?,
            _ => native32(el.value().primitive(), big)?,
        };
        (words, num(tags::PLANAR_CONFIGURATION) == Some(1.0))
    };
    let n = (words.len() / per) as u32;
    if n == 0 {
        return Err(DecodeError::Dicom(
            "pixel data shorter than rows x columns".into(),
        ));
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
                Image::from_gray(cols, rows, &v)
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
fn native32(
    value: Option<&dicom_core::PrimitiveValue>,
    big: bool,
) -> Result<Vec<u32>, DecodeError> {
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
        None => return Err(DecodeError::Dicom("encapsulated 32-bit pixel data".into())),
    })
}

/// `count` 1-bit pixels, packed least significant bit first and not padded between frames.
fn native1(
    value: Option<&dicom_core::PrimitiveValue>,
    big: bool,
    count: usize,
) -> Result<Vec<u32>, DecodeError> {
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
        None => return Err(DecodeError::Dicom("encapsulated 1-bit pixel data".into())),
    };
    let count = count.min(bytes.len() * 8);
    Ok((0..count)
        .map(|i| u32::from((bytes[i / 8] >> (i % 8)) & 1))
        .collect())
}

/// 32-bit RLE Lossless frames as interleaved words: per frame one fragment holding 4 byte
/// segments per sample, most significant first (DICOM PS3.5 annex G).
/// Only the `wanted` frames are decoded; the others stay zero.
fn rle32(
    obj: &DefaultDicomObject,
    frames: u32,
    wanted: &[u32],
    per: usize,
    spp: usize,
) -> Result<Vec<u32>, DecodeError> {
    // PS3.5 annex G: one fragment per frame, so no frame boundary to look for.
    let streams = encapsulated_frames(obj, frames, "RLE", None)?;
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
        if nseg != 4 * spp {
            return Err(DecodeError::Dicom(format!(
                "RLE frame {f}: {nseg} segments, expected {} for 32-bit",
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
                .ok_or_else(|| DecodeError::Dicom(format!("RLE frame {f}: bad segment offset")))?;
            let bytes = packbits(data, pixels);
            if bytes.len() < pixels {
                return Err(DecodeError::Dicom(format!(
                    "RLE frame {f}: segment {seg} holds {} of {pixels} bytes",
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
    codec: &str,
    starts_frame: Option<fn(&[u8]) -> bool>,
) -> Result<Vec<Cow<'a, [u8]>>, DecodeError> {
    let el = obj.element(tags::PIXEL_DATA).map_err(dicom_err)?;
    let fragments = el
        .value()
        .fragments()
        .ok_or_else(|| DecodeError::Dicom(format!("{codec} pixel data is not encapsulated")))?;
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
        return Err(DecodeError::Dicom(format!(
            "{codec}: {} fragments for {frames} frames",
            fragments.len()
        )));
    };
    if streams.is_empty() {
        return Err(DecodeError::Dicom(format!("no {codec} fragments")));
    }
    Ok(streams)
}

/// PackBits, stopping at `want` bytes.
fn packbits(data: &[u8], want: usize) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_the_dicom_linear_function() {
        // C=40, W=400: [-160.5 .. 239.5] maps onto [0, 1].
        assert_eq!(window_linear(-1000.0, 40.0, 400.0), 0.0);
        assert_eq!(window_linear(1000.0, 40.0, 400.0), 1.0);
        assert!((window_linear(39.5, 40.0, 400.0) - 0.5).abs() < 1e-6);
    }

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

    #[test]
    fn presets_and_explicit_windows_parse() {
        let lung: WindowPreset = "Lung".parse().unwrap();
        assert_eq!((lung.center, lung.width), (-600.0, 1500.0));
        let c: WindowPreset = "40, 400".parse().unwrap();
        assert_eq!((c.center, c.width), (40.0, 400.0));
        assert!("liver".parse::<WindowPreset>().is_err());
        assert!("40,0".parse::<WindowPreset>().is_err());
    }
}

#[cfg(test)]
mod file_tests {
    use crate::{decode_bytes, DecodeOptions, Format};
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

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
        for (tag, v) in [
            (tags::SAMPLES_PER_PIXEL, 1u16),
            (tags::ROWS, 2),
            (tags::COLUMNS, 2),
            (tags::BITS_ALLOCATED, 16),
            (tags::BITS_STORED, 16),
            (tags::HIGH_BIT, 15),
            (tags::PIXEL_REPRESENTATION, 1),
        ] {
            o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        }
        let px: Vec<u8> = [-1000i16, 0, 1000, 2000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(px),
        ));
        let file = o
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE),
            )
            .unwrap();
        let mut out = Vec::new();
        file.write_all(&mut out).unwrap();
        out
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
}
