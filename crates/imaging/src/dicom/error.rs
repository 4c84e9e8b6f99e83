//! Why a DICOM object did not decode, as data: each reason a variant with its values, so
//! callers can tell a hostile length from a codec failure without reading text, while the
//! message stays one line for a log or the errors table (`DecodeError::Dicom` prefixes
//! "DICOM: ").

use dicom_core::Tag;
use dicom_pixeldata::PhotometricInterpretation;

/// Why a DICOM object could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// dicom-rs could not parse the data set or its meta group (its message, first line).
    #[error("{0}")]
    Parse(String),
    /// The file holds no Pixel Data: not an image object (SR, DICOMDIR, RT plans, …).
    #[error("no pixel data (not an image object)")]
    NoPixelData,
    /// A declared length runs past what is left of its container; refused before dicom-rs
    /// would reserve it.
    #[error("{of} claims {claimed} bytes, {left} left")]
    LengthBeyondData {
        /// Whose length it is.
        of: Declared,
        /// The length declared.
        claimed: u64,
        /// The bytes that are left.
        left: u64,
    },
    /// Sequences nested deeper than the length check follows.
    #[error("sequences nested deeper than {limit}")]
    NestedTooDeep {
        /// The depth limit.
        limit: usize,
    },
    /// A deflated data set could not be inflated.
    #[error("deflated data set: {0}")]
    Inflate(#[source] std::io::Error),
    /// A deflated data set inflates beyond what the pixel limit allows.
    #[error("deflated data set expands beyond {cap} bytes")]
    InflatedTooLarge {
        /// The bound, in bytes.
        cap: u64,
    },
    /// The meta group names a transfer syntax that dicom-rs does not know.
    #[error("unknown transfer syntax {uid}")]
    UnknownTransferSyntax {
        /// The Transfer Syntax UID.
        uid: String,
    },
    /// dicom-rs knows the transfer syntax but has no decoder for its pixel data.
    #[error("transfer syntax {uid}: no decoder for its pixel data")]
    UnsupportedTransferSyntax {
        /// The Transfer Syntax UID.
        uid: String,
    },
    /// dicom-pixeldata failed to decode the pixel data of this transfer syntax.
    #[error("transfer syntax {uid}: {reason}")]
    PixelDecode {
        /// The Transfer Syntax UID.
        uid: String,
        /// dicom-pixeldata's message, first line.
        reason: String,
    },
    /// dicom-pixeldata failed to read the samples of a decoded frame (its message, first
    /// line).
    #[error("{0}")]
    Samples(String),
    /// Rows or Columns is zero (or absent).
    #[error("zero rows or columns")]
    ZeroSize,
    /// An attribute value the decoding path it selects cannot use.
    #[error("{name} {value} ({expected} expected)")]
    BadAttribute {
        /// The attribute's keyword.
        name: &'static str,
        /// Its value, as read.
        value: String,
        /// What the path needs.
        expected: &'static str,
    },
    /// A photometric interpretation simcase cannot turn into RGB.
    #[error("unsupported photometric interpretation {0}")]
    UnsupportedPhotometric(PhotometricInterpretation),
    /// PALETTE COLOR whose lookup table for one channel is missing or inconsistent.
    #[error("PALETTE COLOR without a usable {channel} lookup table")]
    PaletteTable {
        /// `red`, `green` or `blue`.
        channel: &'static str,
    },
    /// A frame asked for that the object does not hold.
    #[error("no frame {frame} (of {count})")]
    FrameOutOfRange {
        /// The 0-based frame asked for.
        frame: u32,
        /// How many frames there are.
        count: u32,
    },
    /// Fewer pixel data samples than rows × columns (× samples per pixel) need.
    #[error("pixel data shorter than rows x columns ({found} of {expected} samples)")]
    TruncatedPixelData {
        /// Samples one frame needs.
        expected: usize,
        /// Samples there are.
        found: usize,
    },
    /// Native pixel data expected (by the transfer syntax), encapsulated found.
    #[error("encapsulated {bits}-bit pixel data")]
    Encapsulated {
        /// Bits allocated.
        bits: u16,
    },
    /// Encapsulated pixel data expected (by the transfer syntax), native found.
    #[error("{codec} pixel data is not encapsulated")]
    NotEncapsulated {
        /// The codec of the transfer syntax.
        codec: DicomCodec,
    },
    /// The fragments cannot be matched to the frames.
    #[error("{codec}: {fragments} fragments for {frames} frames")]
    Fragments {
        /// The codec of the transfer syntax.
        codec: DicomCodec,
        /// Fragments in the pixel data.
        fragments: usize,
        /// Number of Frames.
        frames: usize,
    },
    /// The codec library failed or refused a stream (its message).
    #[error("{codec}: {reason}")]
    Codec {
        /// The codec.
        codec: DicomCodec,
        /// What it said, in one line.
        reason: String,
    },
    /// A frame decodes to another size than the header's.
    #[error("{codec} frame {frame} is {width}x{height}, the header says {columns}x{rows}")]
    FrameSize {
        /// The codec.
        codec: DicomCodec,
        /// 0-based frame.
        frame: u32,
        /// Width of the decoded frame.
        width: usize,
        /// Height of the decoded frame.
        height: usize,
        /// Columns of the header.
        columns: usize,
        /// Rows of the header.
        rows: usize,
    },
    /// A frame has another number of components than the header or the first frame.
    #[error("{codec} frame {frame} has {found} components, {expected} expected")]
    FrameComponents {
        /// The codec.
        codec: DicomCodec,
        /// 0-based frame.
        frame: u32,
        /// Components of the decoded frame.
        found: usize,
        /// Components of the header or of the first frame.
        expected: usize,
    },
    /// A frame's stream is inconsistent in another way (segments, sample depth, interleave).
    #[error("{codec} frame {frame}: {reason}")]
    Frame {
        /// The codec.
        codec: DicomCodec,
        /// 0-based frame.
        frame: u32,
        /// What is wrong, in one line.
        reason: String,
    },
}

/// The codecs simcase runs itself on encapsulated pixel data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DicomCodec {
    /// JPEG Baseline and Extended, through libjpeg-turbo.
    Jpeg,
    /// JPEG-LS, through CharLS.
    JpegLs,
    /// RLE Lossless (32-bit), read here.
    Rle,
}

impl std::fmt::Display for DicomCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Jpeg => "JPEG",
            Self::JpegLs => "JPEG-LS",
            Self::Rle => "RLE",
        })
    }
}

/// Whose declared length [`DicomError::LengthBeyondData`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// An element of the meta group (0002,xxxx).
    MetaElement,
    /// A sequence item or pixel data fragment.
    Item,
    /// A data set element.
    Element(Tag),
    /// An explicit-VR Pixel Data header found anywhere in the file.
    PixelData,
}

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MetaElement => f.write_str("meta element"),
            Self::Item => f.write_str("item"),
            Self::Element(tag) => write!(f, "element {tag}"),
            Self::PixelData => f.write_str("pixel data"),
        }
    }
}

/// The first line of a dicom-rs message (snafu errors can carry a backtrace on later lines).
pub(super) fn first_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_string()
}

/// dicom-rs failed to read a data set or its meta group.
pub(super) fn parse_err(e: impl std::fmt::Display) -> DicomError {
    DicomError::Parse(first_line(e))
}

/// dicom-pixeldata failed to read a decoded frame's samples.
pub(super) fn samples_err(e: impl std::fmt::Display) -> DicomError {
    DicomError::Samples(first_line(e))
}
