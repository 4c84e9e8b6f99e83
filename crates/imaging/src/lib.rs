//! Decoding radiology images into one canonical form, and the resize the models were trained with.
//!
//! Every input becomes an [`Image`]: 3 planes (CHW) of `f32` in `[0, 1]`. 8-bit data is
//! `value / 255` so results match PIL + torchvision pipelines bit for bit; 16-bit, float and
//! DICOM data are min-max scaled after the DICOM transforms (modality LUT, then VOI window),
//! because their raw range carries no display meaning.

pub mod budget;
mod dicom;
mod reduce;
mod resize;
mod thumbnail;
pub mod volume;
mod window;

use std::path::Path;
use std::sync::Arc;

pub use budget::{DecodeBudget, Permit};
pub use dicom::{transfer_syntax, Declared, DicomCodec, DicomError, DicomMeta, FrameSelect, Phi};
pub use reduce::{box_reduce, REDUCE_ABOVE};
pub use resize::resize_bilinear;
pub use thumbnail::thumbnail_png;
pub use volume::Axis;
pub use window::WindowPreset;

/// Refuse images whose header claims more pixels than this, before allocating (decompression bombs).
pub const MAX_PIXELS: u64 = 20_000 * 20_000;

/// A decoded image: `3 × height × width` planes, values in `[0, 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Planar RGB, `data[c * h * w + y * w + x]`.
    pub data: Vec<f32>,
}

impl Image {
    /// An image from planar RGB `data`; panics unless it holds `3 × width × height` values.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), 3 * width * height, "image buffer size");
        Self {
            width,
            height,
            data,
        }
    }

    /// Replicate one grey plane to three.
    pub fn from_gray(width: usize, height: usize, gray: &[f32]) -> Self {
        let mut plane = Vec::with_capacity(3 * gray.len());
        plane.extend_from_slice(gray);
        Self::gray(width, height, plane)
    }

    /// Replicate one grey plane to three in its own buffer (grown in place when it has the
    /// room, as a plane collected into `Vec::with_capacity(3 * n)` has): no second copy of a
    /// full-resolution plane.
    pub fn gray(width: usize, height: usize, mut plane: Vec<f32>) -> Self {
        let n = plane.len();
        plane.reserve_exact(2 * n);
        plane.extend_from_within(..n);
        plane.extend_from_within(..n);
        Self::new(width, height, plane)
    }

    /// Planar image from interleaved RGB samples, each divided by `div` (a division, not a
    /// multiplication by the reciprocal, to match numpy's `a / 255.0` bit for bit).
    pub fn from_interleaved_rgb<T: Copy + Into<f32>>(
        width: usize,
        height: usize,
        rgb: &[T],
        div: f32,
    ) -> Self {
        let n = width * height;
        let mut data = vec![0f32; 3 * n];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * n + i] = px[c].into() / div;
            }
        }
        Self::new(width, height, data)
    }
}

/// What a file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A PNG image.
    Png,
    /// A JPEG image.
    Jpeg,
    /// A DICOM Part 10 file or a bare DICOM data set.
    Dicom,
    /// A NIfTI volume.
    Nifti,
    /// An NRRD volume.
    Nrrd,
    /// A gzip wrapper (e.g. `.nii.gz`); the content decides.
    Gzip,
}

impl Format {
    /// The lowercase name used in logs and error messages (`"png"`, `"dicom"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::Dicom => "dicom",
            Format::Nifti => "nifti",
            Format::Nrrd => "nrrd",
            Format::Gzip => "gzip",
        }
    }
}

/// A decoded image: the pixels, DICOM attributes when it was DICOM, and which part of the
/// file it is when the file holds several (a frame, a volume slice).
#[derive(Clone, Debug)]
pub struct Decoded {
    /// The pixels, 3 planes in `[0, 1]`.
    pub image: Image,
    /// What the file turned out to be.
    pub format: Format,
    /// The DICOM attributes, when the file was DICOM.
    pub dicom: Option<DicomMeta>,
    /// Which frame or slice this is; `None` for PNG, JPEG and single-frame DICOM.
    pub part: Option<Part>,
}

/// One image of a multi-image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// 0-based index of this frame or slice in the file.
    pub index: u32,
    /// How many frames or slices the file holds (along the slicing axis, for a volume).
    pub count: u32,
    /// Whether this is a DICOM frame or a volume slice.
    pub kind: PartKind,
}

/// What kind of part of a multi-image file a [`Part`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// A frame of a multi-frame DICOM object.
    Frame,
    /// A slice of a volume, across this axis.
    Slice(Axis),
}

/// Why a file could not be decoded. The message is one line, fit for a log or an errors table.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// The leading bytes match no supported format.
    #[error("unsupported format (not PNG, JPEG, DICOM, NIfTI or NRRD)")]
    Unsupported,
    /// The header's dimensions exceed the pixel limit in force.
    #[error("image too large: {width}x{height} exceeds the {limit}-pixel limit")]
    TooLarge {
        /// Width claimed by the header.
        width: u64,
        /// Height claimed by the header.
        height: u64,
        /// The pixel limit exceeded.
        limit: u64,
    },
    /// A multi-frame object's frames together exceed the pixel limit in force.
    #[error("image too large: {frames} frames of {width}x{height} exceed the {limit}-pixel limit")]
    FramesTooLarge {
        /// Width claimed by the header.
        width: u64,
        /// Height claimed by the header.
        height: u64,
        /// Number of Frames claimed by the header.
        frames: u32,
        /// The pixel limit exceeded.
        limit: u64,
    },
    /// The data is malformed for its format.
    #[error("corrupt {format} data: {reason}")]
    Corrupt {
        /// The format whose data is corrupt (`"png"`, `"gzip"`, `"volume"`, …).
        format: &'static str,
        /// What was wrong, in one line.
        reason: String,
    },
    /// A DICOM object could not be parsed or decoded (dicom-rs, JPEG, JPEG-LS, RLE).
    #[error("DICOM: {0}")]
    Dicom(#[from] DicomError),
    /// Decoding would need more memory than the whole decode budget.
    #[error("image too large: decoding needs about {needed} bytes, more than the whole {budget}-byte decode budget")]
    OverBudget {
        /// Estimated bytes.
        needed: u64,
        /// The budget's total.
        budget: u64,
    },
    /// The decode budget had no room for this image before the deadline (try again later).
    #[error("busy: {needed} bytes of decode budget not free within {waited_ms} ms")]
    Busy {
        /// Estimated bytes.
        needed: u64,
        /// How long it waited.
        waited_ms: u64,
    },
}

/// Options for decoding; the default is the DICOM object's own first window.
#[derive(Clone, Debug, Default)]
pub struct DecodeOptions {
    /// Override the DICOM VOI window with a preset or explicit centre/width.
    pub window: Option<WindowPreset>,
    /// A lower pixel limit than [`MAX_PIXELS`] (a server's uploads), checked from the header
    /// before any pixel is decoded.
    pub max_pixels: Option<u64>,
    /// Frames of multi-frame DICOM objects that become items (default: the first).
    pub frames: FrameSelect,
    /// Read PatientName and birth date too (only for an operator's `--keep-phi`).
    pub keep_phi: bool,
    /// Volumes (NIfTI, NRRD): the slicing axis and every n-th slice (0 or 1: all).
    pub axis: Axis,
    /// Keep every n-th slice of a volume (0 or 1: all).
    pub slice_stride: usize,
    /// Only this frame or slice (a stored item's part, e.g. for its thumbnail).
    pub part: Option<u32>,
    /// Decode under this shared byte budget (see [`budget`]): the estimate is taken before
    /// any pixel buffer exists and held until the caller of [`decode_items_with`] is done.
    pub budget: Option<Arc<DecodeBudget>>,
    /// Decode PNG and JPEG larger than [`REDUCE_ABOVE`] at full resolution (default: reduced
    /// while decoding; see [`REDUCE_ABOVE`]).
    pub full_resolution: bool,
}

impl DecodeOptions {
    /// The pixel limit in force: `max_pixels` if set, never above [`MAX_PIXELS`].
    pub fn pixel_limit(&self) -> u64 {
        self.max_pixels.unwrap_or(MAX_PIXELS).min(MAX_PIXELS)
    }
}

/// Guess the format from the leading bytes; extensions lie in real archives. Gzip-wrapped
/// files report [`Format::Gzip`] (their content is sniffed after inflating).
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Some(Format::Dicom)
    } else if bytes.get(344..348) == Some(b"n+1\0") || bytes.get(4..8) == Some(b"n+2\0") {
        Some(Format::Nifti)
    } else if bytes.starts_with(b"NRRD000") {
        Some(Format::Nrrd)
    } else if bytes.starts_with(&[0x1F, 0x8B]) {
        Some(Format::Gzip)
    } else if dicom::looks_like_bare_dataset(bytes) {
        Some(Format::Dicom)
    } else {
        None
    }
}

/// Read and decode one file (a query: a pipe, such as `<(…)`, is read too).
pub fn decode_path(path: &Path, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let bytes = if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        read_file(path, None)?
    } else {
        std::fs::read(path)?
    };
    decode_bytes(&bytes, opts)
}

/// A file's bytes, refused before any is read when it is not a regular file (a folder, a
/// device such as `/dev/zero`, a pipe) or is larger than `limit` (a decode budget's whole:
/// the budget bounds what one decode holds, the file's bytes included, so a larger file is
/// not read; `--decode-budget-mb` raises it). Inside a budgeted decode its size is reserved
/// from the budget first.
pub fn read_file(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(DecodeError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let len = meta.len();
    if let Some(budget) = limit.filter(|&l| len > l) {
        return Err(DecodeError::OverBudget {
            needed: len,
            budget,
        });
    }
    budget::reserve(len)?;
    // Only the bytes reserved: a file that grows meanwhile is read as it was.
    let mut bytes = Vec::new();
    // A failed allocation is this file's error, not an abort.
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e))?;
    file.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Where the bytes to decode are: in memory, or in a file read under the decode's budget.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// An upload, a fetched instance.
    Bytes(&'a [u8]),
    /// A stored file: its size is taken from the budget before it is read (a server reads
    /// stored files for as many requests as it has connections).
    File(&'a Path),
}

/// Every image of an in-memory file: one for PNG/JPEG, the selected frames of a DICOM
/// object, the slices of a volume.
pub fn decode_items(bytes: &[u8], opts: &DecodeOptions) -> Result<Vec<Decoded>, DecodeError> {
    decode_items_with(bytes, opts, |items| items)
}

/// [`decode_items`], then `then` on the images while the decode budget's bytes are still
/// held (preprocess or render there, so that full-size pixels never outlive their bytes).
pub fn decode_items_with<T>(
    bytes: &[u8],
    opts: &DecodeOptions,
    then: impl FnOnce(Vec<Decoded>) -> T,
) -> Result<T, DecodeError> {
    decode_input_with(Input::Bytes(bytes), opts, then)
}

/// [`decode_items_with`] for an [`Input`]: a file is read inside the budgeted decode, so
/// that its bytes are counted with the pixels they become.
pub fn decode_input_with<T>(
    input: Input<'_>,
    opts: &DecodeOptions,
    then: impl FnOnce(Vec<Decoded>) -> T,
) -> Result<T, DecodeError> {
    budgeted(opts, || match input {
        Input::Bytes(b) => decode_guarded(b, opts, false),
        Input::File(p) => decode_guarded(&read_file(p, None)?, opts, false),
    })
    .map(|(items, permit)| {
        let out = then(items);
        drop(permit);
        out
    })
}

/// Run a decode under `opts.budget` (if any): its readers reserve their estimates as they
/// learn them; a decode that needs to grow while holding bytes starts again holding the total.
fn budgeted<T>(
    opts: &DecodeOptions,
    decode: impl Fn() -> Result<T, DecodeError>,
) -> Result<(T, Option<Permit>), DecodeError> {
    let Some(budget) = &opts.budget else {
        return decode().map(|t| (t, None));
    };
    let mut pre = None;
    for _ in 0..3 {
        let (r, held) = budget::gated(budget, pre.take(), &decode);
        match (r, held.retry) {
            (Err(_), Some(total)) => {
                // Everything given back first: never wait while holding.
                drop(held);
                pre = Some(budget.acquire(total)?);
            }
            (r, _) => return r.map(|t| (t, held.permit)),
        }
    }
    let (r, held) = budget::gated(budget, pre.take(), &decode);
    r.map(|t| (t, held.permit))
}

thread_local! {
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as inside a decode whose panics are caught and reported as the file's
/// error, until dropped.
struct Contained(bool);

impl Contained {
    fn enter() -> Self {
        Self(CONTAINED.with(|c| c.replace(true)))
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        CONTAINED.with(|c| c.set(self.0));
    }
}

/// Whether this thread is inside a decode whose panics are caught: a panic hook stays quiet
/// there, since the panic becomes the file's one-line error (with the file's name).
pub fn in_contained_decode() -> bool {
    CONTAINED.with(|c| c.get())
}

/// [`decode_items`]; with `middle`, a volume yields only its middle slice along `opts.axis`.
fn decode_guarded(
    bytes: &[u8],
    opts: &DecodeOptions,
    middle: bool,
) -> Result<Vec<Decoded>, DecodeError> {
    // Codecs in dependencies can panic on malformed data (fuzzing found dicom-rs's RLE decoder
    // indexing past a short segment); that is one bad file, never a crashed run or server.
    let decoded = {
        let _contained = Contained::enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_any(bytes, opts, middle)
        }))
    };
    let mut items = decoded.map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("unknown");
        DecodeError::Corrupt {
            format: sniff(bytes).map_or("file", Format::name),
            reason: format!(
                "the decoder failed on malformed data ({})",
                why.lines().next().unwrap_or("")
            ),
        }
    })??;
    // NaN/inf voxels (float volumes, odd LUTs) must not reach a model: they would poison the
    // embedding and every cosine computed against it.
    for d in &mut items {
        zero_non_finite(&mut d.image.data);
    }
    Ok(items)
}

fn decode_any(
    bytes: &[u8],
    opts: &DecodeOptions,
    middle: bool,
) -> Result<Vec<Decoded>, DecodeError> {
    let one = |image, format, dicom| Decoded {
        image,
        format,
        dicom,
        part: None,
    };
    match sniff(bytes) {
        Some(f @ (Format::Png | Format::Jpeg)) => {
            Ok(vec![one(decode_raster(bytes, f, opts)?, f, None)])
        }
        Some(Format::Dicom) => {
            let (frames, meta) = dicom::decode(bytes, opts)?;
            let count = meta.frames.max(1);
            Ok(frames
                .into_iter()
                .map(|(i, image)| Decoded {
                    image,
                    format: Format::Dicom,
                    dicom: Some(meta.clone()),
                    part: (count > 1).then_some(Part {
                        index: i,
                        count,
                        kind: PartKind::Frame,
                    }),
                })
                .collect())
        }
        Some(f @ (Format::Nifti | Format::Nrrd)) => {
            let vol = if f == Format::Nifti {
                volume::read_nifti(bytes, opts.pixel_limit())?
            } else {
                volume::read_nrrd(bytes, opts.pixel_limit())?
            };
            let mid;
            let opts = match opts.part {
                None if middle => {
                    mid = DecodeOptions {
                        part: Some((volume::slice_count(&vol, opts.axis) / 2) as u32),
                        ..opts.clone()
                    };
                    &mid
                }
                _ => opts,
            };
            budget::reserve(volume::slices_bytes(
                &vol,
                opts.axis,
                opts.slice_stride,
                opts,
            ))?;
            Ok(volume::slices(&vol, opts.axis, opts.slice_stride, opts)
                .into_iter()
                .map(|(index, count, image)| Decoded {
                    image,
                    format: f,
                    dicom: None,
                    part: Some(Part {
                        index,
                        count,
                        kind: PartKind::Slice(opts.axis),
                    }),
                })
                .collect())
        }
        Some(Format::Gzip) => {
            // `.nii.gz` and friends: inflate (bounded), then decode what is inside. The
            // inflated size is what the trailer states (single-member gzip, < 4 GiB: every
            // file within the pixel limits), reserved before inflating.
            let mut cap = opts.pixel_limit().saturating_mul(8) + (1 << 20);
            if opts.budget.is_some() {
                let stated = bytes
                    .len()
                    .checked_sub(4)
                    .and_then(|i| bytes.get(i..))
                    .and_then(|t| t.try_into().ok())
                    .map_or(0, |t: [u8; 4]| u64::from(u32::from_le_bytes(t)));
                cap = cap.min(stated);
                budget::reserve(cap)?;
            }
            let inner = volume::gunzip(bytes, cap)?;
            if sniff(&inner) == Some(Format::Gzip) {
                return Err(DecodeError::Unsupported);
            }
            decode_any(&inner, opts, middle)
        }
        None => Err(DecodeError::Unsupported),
    }
}

/// Decode an in-memory file (uploads, tests, fuzzing): its first image.
pub fn decode_bytes(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    decode_bytes_with(bytes, opts, |d| d)
}

/// [`decode_bytes`], then `then` on the image while the decode budget's bytes are held.
pub fn decode_bytes_with<T>(
    bytes: &[u8],
    opts: &DecodeOptions,
    then: impl FnOnce(Decoded) -> T,
) -> Result<T, DecodeError> {
    let first = DecodeOptions {
        frames: FrameSelect::First,
        ..opts.clone()
    };
    // The first frame of a DICOM object; a volume's middle slice (only that one is cut out).
    let (items, permit) = budgeted(&first, || decode_guarded(bytes, &first, true))?;
    let d = items.into_iter().next().ok_or(DecodeError::Unsupported)?;
    let out = then(d);
    drop(permit);
    Ok(out)
}

/// Width and height from a PNG's IHDR or a JPEG's SOF marker, read without decoding: the
/// pixel limit is enforced before a decoder allocates anything.
pub fn header_dimensions(bytes: &[u8], format: Format) -> Option<(u32, u32)> {
    let be32 = |i: usize| Some(u32::from_be_bytes(bytes.get(i..i + 4)?.try_into().ok()?));
    match format {
        Format::Png => (bytes.get(12..16)? == b"IHDR").then_some((be32(16)?, be32(20)?)),
        Format::Jpeg => jpeg_frame(bytes).map(|(w, h, _)| (w, h)),
        _ => None,
    }
}

/// A JPEG's frame header (SOF): width, height and its marker.
fn jpeg_frame(bytes: &[u8]) -> Option<(u32, u32, u8)> {
    let be16 = |i: usize| Some(u16::from_be_bytes(bytes.get(i..i + 2)?.try_into().ok()?));
    let mut i = 2;
    loop {
        while *bytes.get(i)? != 0xFF {
            i += 1;
        }
        while *bytes.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *bytes.get(i)?;
        i += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xDA | 0xD9 => return None,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return Some((u32::from(be16(i + 5)?), u32::from(be16(i + 3)?), marker));
            }
            _ => i += usize::from(be16(i)?),
        }
    }
}

/// Scans a progressive JPEG may have: libjpeg-turbo's suggested limit is 500; ordinary files
/// have about ten. Past it a small file can hold a core for minutes.
pub(crate) const MAX_JPEG_SCANS: usize = 1000;

/// Whether a JPEG is progressive (SOF2, SOF6, SOF10, SOF14), or its frame was not found.
fn jpeg_progressive(bytes: &[u8]) -> bool {
    jpeg_frame(bytes).is_none_or(|(_, _, m)| matches!(m, 0xC2 | 0xC6 | 0xCA | 0xCE))
}

/// Whether a JPEG reaches its end-of-image marker (`FF D9`), walked marker by marker from
/// the start: segments (an embedded thumbnail's markers included) are skipped by their
/// lengths, and in entropy-coded data every 0xFF is stuffed (`FF 00`) or a restart marker.
/// What follows the marker (padding, a trailer) is not looked at.
fn jpeg_ends(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            i += 1; // entropy-coded data
            continue;
        }
        match bytes[i + 1] {
            0xD9 => return true,
            0xFF => i += 1, // fill byte
            0x00 | 0x01 | 0xD0..=0xD8 => i += 2,
            _ => match bytes.get(i + 2..i + 4) {
                Some(len) => i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]])),
                None => return false,
            },
        }
    }
    false
}

/// Start-of-scan markers in a JPEG (entropy-coded data stuffs every 0xFF, so each `FF DA` is
/// a marker).
fn jpeg_scans(bytes: &[u8]) -> usize {
    bytes.windows(2).filter(|m| *m == [0xFF, 0xDA]).count()
}

/// The `image` crate's error as a one-line [`DecodeError::Corrupt`] for `format`.
fn raster_corrupt(format: Format) -> impl Fn(image::ImageError) -> DecodeError {
    move |e| DecodeError::Corrupt {
        format: format.name(),
        reason: e.to_string(),
    }
}

/// The `image` crate's PNG or JPEG decoder over `bytes`, its header read (no pixels yet),
/// with allocations capped by the pixel limit.
fn raster_decoder(
    bytes: &[u8],
    format: Format,
    limit: u64,
) -> Result<impl image::ImageDecoder + '_, DecodeError> {
    let fmt = match format {
        Format::Png => image::ImageFormat::Png,
        _ => image::ImageFormat::Jpeg,
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), fmt);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(limit * 8);
    reader.limits(limits);
    reader.into_decoder().map_err(raster_corrupt(format))
}

fn decode_raster(bytes: &[u8], format: Format, opts: &DecodeOptions) -> Result<Image, DecodeError> {
    use image::ImageDecoder;
    let limit = opts.pixel_limit();
    // Dimensions from the header bytes, else from the decoder's own header parse (which
    // allocates no pixels, and refuses a malformed file with its reason).
    let (w, h) = match header_dimensions(bytes, format) {
        Some(d) => d,
        None => raster_decoder(bytes, format, limit)?.dimensions(),
    };
    if u64::from(w) * u64::from(h) > limit {
        return Err(DecodeError::TooLarge {
            width: w.into(),
            height: h.into(),
            limit,
        });
    }
    // Peak bytes (see the budget module's memory model): samples per pixel and bytes per
    // sample from the PNG header (JPEG: up to 3 components of 8 bits).
    let (samples, depth, interlaced) = match format {
        Format::Png => reduce::png_layout(bytes).unwrap_or((4, 2, true)),
        _ => (3, 1, false),
    };
    let (w, h) = (u64::from(w), u64::from(h));
    // Each scan of a JPEG is a pass over all its coefficients: thousands of them in a small
    // file hold a core for minutes, so their number is bounded.
    let scans = if format == Format::Jpeg {
        jpeg_scans(bytes)
    } else {
        0
    };
    if scans > MAX_JPEG_SCANS {
        return Err(DecodeError::Corrupt {
            format: format.name(),
            reason: format!("{scans} scans (at most {MAX_JPEG_SCANS} are decoded)"),
        });
    }
    if format == Format::Jpeg && !jpeg_ends(bytes) {
        // The decoders fill a cut-off scan with grey and say nothing (Pillow refuses it too).
        return Err(DecodeError::Corrupt {
            format: format.name(),
            reason: "truncated: it ends before its end-of-image marker".into(),
        });
    }
    // A JPEG in more than one scan (progressive, or its components one scan each; or one whose
    // frame marker is not found) keeps every DCT coefficient until its last scan, however
    // small it is decoded: 64 of 2 bytes per 8 × 8 block and component.
    let coefficients = if format == Format::Jpeg && (scans > 1 || jpeg_progressive(bytes)) {
        w.div_ceil(8) * h.div_ceil(8) * 128 * samples
    } else {
        0
    };
    let full = |w: u64, h: u64| w * h * (2 * samples * depth + 4 * samples + 12) + coefficients;
    let reduce = !opts.full_resolution && w.max(h) > u64::from(REDUCE_ABOVE);
    if reduce && format == Format::Png && !interlaced {
        let f = u64::from(reduce::box_factor(w as u32, h as u32));
        let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
        // The reduced planes (1 or 3), the grey plane replicated, the 16-bit means, one
        // accumulator row and the decoder's row buffers.
        let c = if samples >= 3 { 3 } else { 1 };
        let means = if depth == 2 { 8 * c } else { 0 };
        budget::reserve(ow * oh * (4 * c + 12 + means) + 4 * w * samples * depth + (1 << 20))?;
        if let Some(img) = reduce::png_box(bytes, f as u32, limit)? {
            return Ok(img);
        }
    }
    if reduce && format == Format::Jpeg {
        let d = u64::from(reduce::jpeg_denominator(w as u32, h as u32));
        let (sw, sh) = (w.div_ceil(d), h.div_ceil(d));
        // The scaled samples and their planes (twice, when box-averaged further), plus
        // libjpeg-turbo's row buffers.
        budget::reserve(sw * sh * (3 + 12 + 12) + 64 * w + coefficients + (1 << 20))?;
        if let Some(img) = reduce::jpeg_scaled(bytes, d as u32)? {
            return Ok(img);
        }
    }
    budget::reserve(full(w, h))?;
    use image::DynamicImage;
    let dec = raster_decoder(bytes, format, limit)?;
    let (w, h) = dec.dimensions();
    if u64::from(w) * u64::from(h) > limit {
        return Err(DecodeError::TooLarge {
            width: w.into(),
            height: h.into(),
            limit,
        });
    }
    let img = DynamicImage::from_decoder(dec).map_err(raster_corrupt(format))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(DecodeError::Corrupt {
            format: format.name(),
            reason: "empty image".into(),
        });
    }
    Ok(match img {
        DynamicImage::ImageLuma8(g) => Image::gray(w, h, gray_plane(g.as_raw(), 255.0)),
        DynamicImage::ImageLumaA8(_) => {
            Image::gray(w, h, gray_plane(img.to_luma8().as_raw(), 255.0))
        }
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            Image::gray(w, h, min_max(gray_plane(img.to_luma16().as_raw(), 1.0)))
        }
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => {
            let rgb = img.to_rgb16();
            let v: Vec<f32> = rgb.as_raw().iter().map(|&p| p as f32).collect();
            Image::from_interleaved_rgb(w, h, &min_max(v), 1.0)
        }
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            let rgb = img.to_rgb32f();
            Image::from_interleaved_rgb(w, h, &min_max(rgb.into_raw()), 1.0)
        }
        other => {
            // 8-bit RGB, RGBA and palette PNGs (the decoder expands palettes to RGB).
            let rgb = other.to_rgb8();
            Image::from_interleaved_rgb(w, h, rgb.as_raw(), 255.0)
        }
    })
}

/// Scale to `[0, 1]` by the data's own range; a constant image becomes all zeros.
pub fn min_max(mut v: Vec<f32>) -> Vec<f32> {
    let (lo, hi) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let range = hi - lo;
    for x in &mut v {
        *x = if range > 0.0 && x.is_finite() {
            (*x - lo) / range
        } else {
            0.0
        };
    }
    v
}

/// One grey plane of `samples / div` (a division, as numpy's `a / 255.0`), collected with room
/// for the two copies [`Image::gray`] appends.
fn gray_plane<T: Copy + Into<f32>>(samples: &[T], div: f32) -> Vec<f32> {
    let mut plane = Vec::with_capacity(3 * samples.len());
    plane.extend(samples.iter().map(|&p| p.into() / div));
    plane
}

/// Zero NaN and ±inf samples. A read-only check first, with no branch per sample so that it
/// vectorises (the per-sample branch and store took 16% of a decode thread on 8-bit X-rays,
/// which never have any); the writes only where one was found.
fn zero_non_finite(data: &mut [f32]) {
    let finite = |c: &[f32]| c.iter().fold(true, |ok, v| ok & v.is_finite());
    if data.chunks(4096).all(finite) {
        return;
    }
    for v in data {
        if !v.is_finite() {
            *v = 0.0;
        }
    }
}

/// Content hash of a file's bytes, for deduplication.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// [`content_hash`] of a file, read a block at a time (for a file too large to hold).
pub fn file_content_hash(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG cut off in its scan is refused, at whatever size it is decoded (the decoders
    /// filled the rest with grey); whole, it decodes.
    #[test]
    fn a_truncated_jpeg_is_refused() {
        for (w, h) in [(300u32, 200u32), (4096, 64)] {
            let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x ^ y) & 0xFF) as u8]));
            let mut j = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageLuma8(img)
                .write_to(&mut j, image::ImageFormat::Jpeg)
                .unwrap();
            let j = j.into_inner();
            assert!(decode_bytes(&j, &DecodeOptions::default()).is_ok());
            // Whatever follows the end marker is not looked at (a trailer holding a scan
            // marker, as motion photos append).
            let mut trailer = j.clone();
            trailer.extend([0xFF, 0xD8, 0xFF, 0xDA, 0, 8, 1, 2, 3, 4, 5, 6]);
            assert!(decode_bytes(&trailer, &DecodeOptions::default()).is_ok());
            let cut = &j[..j.len() * 2 / 3];
            let e = decode_bytes(cut, &DecodeOptions::default()).unwrap_err();
            assert_eq!(
                e.to_string(),
                "corrupt jpeg data: truncated: it ends before its end-of-image marker",
                "{w}x{h}"
            );
        }
    }

    /// Devices and folders are refused before a byte is read (`/dev/zero` would be read until
    /// memory ran out), and so is a file larger than the limit; a file is read whole otherwise.
    #[test]
    fn read_file_refuses_what_is_not_a_regular_file_or_too_large() {
        for p in ["/dev/zero", "/"] {
            let e = read_file(Path::new(p), None).unwrap_err().to_string();
            assert_eq!(e, "cannot read file: not a regular file", "{p}");
        }
        let p = std::env::temp_dir().join(format!("simcase-read-file-{}", std::process::id()));
        std::fs::write(&p, [7u8; 100]).unwrap();
        let e = read_file(&p, Some(99)).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::OverBudget {
                    needed: 100,
                    budget: 99
                }
            ),
            "{e}"
        );
        assert_eq!(read_file(&p, Some(100)).unwrap(), [7u8; 100]);
        std::fs::remove_file(&p).unwrap();
    }

    fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn non_finite_samples_become_zero_wherever_they_are() {
        let mut data: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        let clean = data.clone();
        zero_non_finite(&mut data);
        assert_eq!(data, clean, "finite samples are left alone");
        for (i, bad) in [
            (0, f32::NAN),
            (4095, f32::INFINITY),
            (9_999, f32::NEG_INFINITY),
        ] {
            let mut d = clean.clone();
            d[i] = bad;
            d[5000] = -0.0;
            zero_non_finite(&mut d);
            let mut want = clean.clone();
            want[i] = 0.0;
            want[5000] = -0.0; // finite: stays, sign included
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&d), bits(&want), "sample {i}");
        }
    }

    #[test]
    fn a_grey_plane_is_replicated_in_its_own_buffer() {
        let plane = gray_plane(&[0u8, 51, 255], 255.0);
        assert_eq!(plane, [0.0, 0.2, 1.0]);
        let img = Image::gray(3, 1, plane);
        assert_eq!(img, Image::from_gray(3, 1, &[0.0, 0.2, 1.0]));
        assert_eq!(img.data, [0.0, 0.2, 1.0, 0.0, 0.2, 1.0, 0.0, 0.2, 1.0]);
    }

    #[test]
    fn header_dimensions_are_read_before_decoding_and_limit_it() {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::new(37, 21));
        let png = png_bytes(img.clone());
        assert_eq!(header_dimensions(&png, Format::Png), Some((37, 21)));
        let mut jpg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpg, image::ImageFormat::Jpeg).unwrap();
        let jpg = jpg.into_inner();
        assert_eq!(header_dimensions(&jpg, Format::Jpeg), Some((37, 21)));
        let small = DecodeOptions {
            max_pixels: Some(36 * 21),
            ..Default::default()
        };
        for bytes in [&png, &jpg] {
            let e = decode_bytes(bytes, &small).unwrap_err();
            assert!(
                matches!(
                    e,
                    DecodeError::TooLarge {
                        width: 37,
                        height: 21,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(decode_bytes(bytes, &Default::default()).is_ok());
        }
        // Truncated headers give no dimensions rather than a panic.
        for n in 0..png.len().min(40) {
            let _ = header_dimensions(&png[..n], Format::Png);
            let _ = header_dimensions(&jpg[..n.min(jpg.len())], Format::Jpeg);
        }
    }

    #[test]
    fn gray8_png_is_value_over_255_replicated() {
        let g = image::GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
        let d = decode_bytes(&png_bytes(g.into()), &Default::default()).unwrap();
        assert_eq!(d.format, Format::Png);
        assert_eq!(d.image.data, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn gray16_png_is_min_max_scaled() {
        let g =
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(3, 1, vec![1000u16, 1500, 2000])
                .unwrap();
        let d = decode_bytes(&png_bytes(g.into()), &Default::default()).unwrap();
        assert_eq!(&d.image.data[..3], &[0.0, 0.5, 1.0]);
    }

    #[test]
    fn rgb8_png_is_planar() {
        let g = image::RgbImage::from_raw(2, 1, vec![255, 0, 51, 0, 255, 102]).unwrap();
        let d = decode_bytes(&png_bytes(g.into()), &Default::default()).unwrap();
        assert_eq!(d.image.data, vec![1.0, 0.0, 0.0, 1.0, 0.2, 0.4]);
    }

    #[test]
    fn garbage_is_unsupported_and_truncated_png_is_corrupt() {
        assert!(matches!(
            decode_bytes(b"hello world", &Default::default()),
            Err(DecodeError::Unsupported)
        ));
        let g = image::GrayImage::from_raw(64, 64, vec![7; 64 * 64]).unwrap();
        let bytes = png_bytes(g.into());
        let err = decode_bytes(&bytes[..bytes.len() / 2], &Default::default()).unwrap_err();
        assert!(
            matches!(err, DecodeError::Corrupt { format: "png", .. }),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'));
    }
}
