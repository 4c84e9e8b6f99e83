//! Why a file failed, as a short class (its `kind`) beside the one-line reason: what a run's
//! failure summary, `simcase errors` and `/api/stats` group by. Classes come from the typed
//! decode errors, never from parsing their text, and never hold a path.

use simcase_imaging::{DecodeError, DicomError};

/// One file (or item) that could not be indexed in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The file, as given (a walked or manifest path).
    pub path: String,
    /// A short class of the reason (see [`kind_of`]).
    pub kind: String,
    /// The one-line reason.
    pub reason: String,
}

/// The file could not be read.
pub const UNREADABLE: &str = "unreadable file";
/// A folder of a walk could not be listed (its files were not seen).
pub const UNREADABLE_FOLDER: &str = "unreadable folder";
/// A walk met a link to nothing, or a link back to a folder above it.
pub const BROKEN_LINK: &str = "broken link";
/// The kinds a walk records for what it could not read, not for a file's content: a walk of
/// the same folder records them again, so a later walk clears them first.
pub const WALK_KINDS: [&str; 2] = [UNREADABLE_FOLDER, BROKEN_LINK];
/// Decoding selected no image (no frame or slice matched the options).
pub const NO_IMAGES: &str = "no images selected";
/// The model gave NaN or infinite values.
pub const NOT_FINITE: &str = "embedding not finite";

/// `s` fit for one log line: control characters escaped (`\n`, `\u{1b}`), so that a file
/// named with a newline cannot split a line or forge another.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A reason as one line: runs of whitespace, line breaks included, become one space (codecs'
/// messages end in a newline or span several), other control characters are escaped.
pub fn one_line(reason: &str) -> String {
    printable(&reason.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The class of a decode failure: `not an image`, `corrupt png`, `unsupported transfer
/// syntax UID`, `DICOM without pixel data`, … Few enough to group a whole archive's failures
/// in a screenful, specific enough to act on.
pub fn kind_of(e: &DecodeError) -> String {
    match e {
        DecodeError::Io(_) => UNREADABLE.into(),
        DecodeError::Unsupported => "not an image".into(),
        DecodeError::TooLarge { .. }
        | DecodeError::FramesTooLarge { .. }
        | DecodeError::OverBudget { .. } => "image too large".into(),
        DecodeError::Corrupt { format, .. } => format!("corrupt {format}"),
        DecodeError::Busy { .. } => "decode budget busy".into(),
        DecodeError::Dicom(d) => dicom_kind(d),
    }
}

fn dicom_kind(e: &DicomError) -> String {
    use DicomError as D;
    match e {
        D::NoPixelData => "DICOM without pixel data".into(),
        D::UnknownTransferSyntax { uid } | D::UnsupportedTransferSyntax { uid } => {
            format!("unsupported transfer syntax {uid}")
        }
        D::PixelDecode { uid, .. } => format!("DICOM pixel data did not decode ({uid})"),
        D::Parse(_)
        | D::LengthBeyondData { .. }
        | D::NestedTooDeep { .. }
        | D::Inflate(_)
        | D::InflatedTooLarge { .. } => "malformed or truncated DICOM".into(),
        D::TruncatedPixelData { .. } => "truncated DICOM pixel data".into(),
        D::UnsupportedPhotometric(p) => format!("unsupported photometric interpretation {p}"),
        D::Samples(_)
        | D::ZeroSize
        | D::BadAttribute { .. }
        | D::PaletteTable { .. }
        | D::FrameOutOfRange { .. } => "unusable DICOM image attributes".into(),
        D::Encapsulated { .. } => "corrupt DICOM pixel data".into(),
        D::NotEncapsulated { codec }
        | D::Fragments { codec, .. }
        | D::Codec { codec, .. }
        | D::FrameSize { codec, .. }
        | D::FrameComponents { codec, .. }
        | D::Frame { codec, .. } => format!("corrupt DICOM {codec} pixel data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_paths_print_as_one_line() {
        assert_eq!(
            one_line("corrupt jpeg data:\n found 1\r\n\n"),
            "corrupt jpeg data: found 1"
        );
        assert_eq!(one_line("a\u{1b}[31m"), "a\\u{1b}[31m");
        assert_eq!(
            printable("/a/b\n WARN forged.png"),
            "/a/b\\n WARN forged.png"
        );
        assert_eq!(printable("/a/ü b.png"), "/a/ü b.png");
    }

    #[test]
    fn kinds_group_by_cause_and_keep_the_transfer_syntax() {
        let ts = |uid: &str| {
            DecodeError::Dicom(DicomError::UnsupportedTransferSyntax { uid: uid.into() })
        };
        assert_eq!(kind_of(&ts("1.2.3")), "unsupported transfer syntax 1.2.3");
        assert_eq!(kind_of(&ts("1.2.3")), kind_of(&ts("1.2.3")));
        assert_ne!(kind_of(&ts("1.2.3")), kind_of(&ts("1.2.4")));
        assert_eq!(kind_of(&DecodeError::Unsupported), "not an image");
        let corrupt = |reason: &str| DecodeError::Corrupt {
            format: "png",
            reason: reason.into(),
        };
        // Different messages, one class.
        assert_eq!(kind_of(&corrupt("short")), kind_of(&corrupt("bad crc")));
        assert_eq!(kind_of(&corrupt("short")), "corrupt png");
        let parse = DecodeError::Dicom(DicomError::Parse("/secret/path.dcm: eof".into()));
        assert_eq!(kind_of(&parse), "malformed or truncated DICOM");
    }
}
