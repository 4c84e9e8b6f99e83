//! The attributes simcase reads from a DICOM object: what it keeps (`DicomMeta`, and `Phi`
//! only on request), the image attributes that choose a decoding path (read once, the
//! photometric interpretation as dicom-rs's enum), which frames become items, the one-line
//! reading of text values, and the transfer syntaxes that decide the path, that every other
//! file of this module uses.

use super::error::DicomError;
use crate::DecodeOptions;
use dicom_dictionary_std::{tags, uids};
use dicom_pixeldata::PhotometricInterpretation;

/// The DICOM attributes simcase keeps. `patient_id` is the raw value: callers hash it
/// before storing and never print it.
#[derive(Clone, Debug, Default)]
pub struct DicomMeta {
    /// Modality (0008,0060), e.g. `CT`, `MR`, `CR`.
    pub modality: Option<String>,
    /// Body Part Examined (0018,0015).
    pub body_part: Option<String>,
    /// Study Instance UID (0020,000D).
    pub study_uid: Option<String>,
    /// Series Instance UID (0020,000E).
    pub series_uid: Option<String>,
    /// SOP Instance UID (0008,0018).
    pub sop_uid: Option<String>,
    /// SOP Class UID (0008,0016): what a report referencing the image names.
    pub sop_class_uid: Option<String>,
    /// Instance Number (0020,0013), as written.
    pub instance_number: Option<String>,
    /// Slice Location (0020,1041), as written.
    pub slice_location: Option<String>,
    /// Study Date (0008,0020), as written (`YYYYMMDD`).
    pub study_date: Option<String>,
    /// The transfer syntax UID of the file.
    pub transfer_syntax: String,
    /// Patient ID (0010,0020), raw; hash before storing.
    pub patient_id: Option<String>,
    /// PatientName and PatientBirthDate, read only with [`DecodeOptions::keep_phi`].
    pub phi: Option<Phi>,
    /// Number of Frames (0028,0008); 1 when absent or not a number.
    pub frames: u32,
}

/// Identifying attributes beyond PatientID, kept only when the operator asks (`--keep-phi`).
#[derive(Clone, Debug, Default)]
pub struct Phi {
    /// Patient's Name (0010,0010).
    pub patient_name: Option<String>,
    /// Patient's Birth Date (0010,0030).
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
    /// Every frame.
    All,
    /// Every n-th frame from the first.
    Stride(u32),
}

impl FrameSelect {
    /// The 0-based frame indices chosen out of `frames` (at least one frame is assumed).
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

/// A trimmed, non-empty string value (a file object reads through to its data set).
pub(crate) fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let v = obj.element_opt(tag).ok()??.to_str().ok()?;
    let v = v.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!v.is_empty()).then(|| v.to_string())
}

/// The image attributes that choose how the pixels are decoded, read once per object.
#[derive(Clone, Debug)]
pub(super) struct PixelAttrs {
    /// Rows (0028,0010); 0 when absent or not a number.
    pub rows: usize,
    /// Columns (0028,0011); 0 when absent or not a number.
    pub cols: usize,
    /// Number of Frames, as in [`DicomMeta::frames`].
    pub frames: u32,
    /// Bits Allocated (0028,0100); 0 when absent or not a number.
    pub bits: u16,
    /// Bits Stored (0028,0101); `None` when absent or not a number.
    pub bits_stored: Option<u16>,
    /// Samples per Pixel (0028,0002); 1 when absent or not a number.
    pub samples_per_pixel: u16,
    /// Photometric Interpretation (0028,0004); `None` when absent. Values outside the
    /// standard's list are `Other`, refused where a path needs to know the colour model.
    pub photometric: Option<PhotometricInterpretation>,
}

impl PixelAttrs {
    /// Read from `obj`, whose Number of Frames is `frames`.
    pub fn read(obj: &dicom_object::InMemDicomObject, frames: u32) -> Self {
        Self {
            rows: number(obj, tags::ROWS).unwrap_or(0),
            cols: number(obj, tags::COLUMNS).unwrap_or(0),
            frames,
            bits: number(obj, tags::BITS_ALLOCATED).unwrap_or(0),
            bits_stored: number(obj, tags::BITS_STORED),
            samples_per_pixel: number(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1),
            photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION)
                .map(PhotometricInterpretation::from),
        }
    }

    /// Bits Stored, where present, from 1 to 32: dicom-pixeldata asserts it (a panic on the
    /// file's data).
    pub fn check_bits(&self) -> Result<(), DicomError> {
        match self.bits_stored {
            Some(b) if !(1..=32).contains(&b) => Err(DicomError::BadAttribute {
                name: "BitsStored",
                value: b.to_string(),
                expected: "1 to 32",
            }),
            _ => Ok(()),
        }
    }

    /// Whether the photometric interpretation is `pi`.
    pub fn is(&self, pi: &PhotometricInterpretation) -> bool {
        self.photometric.as_ref() == Some(pi)
    }
}

/// A value parsed from its trimmed text; `None` when absent or not a number.
fn number<T: std::str::FromStr>(
    obj: &dicom_object::InMemDicomObject,
    tag: dicom_object::Tag,
) -> Option<T> {
    text(obj, tag)?.parse().ok()
}

/// The frames of `n` to decode: a stored item's own (`part`), else the `--frames` choice.
pub(super) fn select_frames(opts: &DecodeOptions, n: u32) -> Result<Vec<u32>, DicomError> {
    match opts.part {
        Some(p) if p < n => Ok(vec![p]),
        Some(p) => Err(DicomError::FrameOutOfRange { frame: p, count: n }),
        None => Ok(opts.frames.indices(n)),
    }
}

/// Explicit VR Big Endian: retired from the standard (hence deprecated in dicom-rs), still
/// found in archives.
#[allow(deprecated)]
pub(super) const EXPLICIT_VR_BIG_ENDIAN: &str = uids::EXPLICIT_VR_BIG_ENDIAN;

/// Uncompressed transfer syntaxes (read here directly when dicom-rs cannot, e.g. 32-bit).
pub(super) const NATIVE: [&str; 4] = [
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
];

/// RLE Lossless.
pub(super) const RLE: &str = uids::RLE_LOSSLESS;
