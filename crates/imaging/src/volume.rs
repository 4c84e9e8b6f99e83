//! 3-D volumes (NIfTI-1 through the `nifti` crate, NRRD read here) as stacks of 2-D slices.
//!
//! Slices are cut along a patient axis found from the volume's affine (NIfTI sform, else
//! qform, else pixdim; NRRD `space directions`), and shown as radiologists read them: axial
//! and coronal with the patient's right on the image's left, anterior (axial) or superior
//! (coronal, sagittal) at the top. CT in Hounsfield units is windowed; other volumes (MR) are
//! scaled between their 1st and 99th percentiles.

use crate::{DecodeError, DecodeOptions, Image, WindowPreset};
use std::io::Read;

/// Which patient axis slices are cut across.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Axis {
    #[default]
    /// Across the superior–inferior axis (transverse slices).
    Axial,
    /// Across the anterior–posterior axis (front-to-back slices).
    Coronal,
    /// Across the left–right axis (side slices).
    Sagittal,
}

impl Axis {
    /// The lowercase name (`"axial"`, `"coronal"`, `"sagittal"`), as parsed by `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Axial => "axial",
            Axis::Coronal => "coronal",
            Axis::Sagittal => "sagittal",
        }
    }
}

impl std::str::FromStr for Axis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "axial" => Ok(Axis::Axial),
            "coronal" => Ok(Axis::Coronal),
            "sagittal" => Ok(Axis::Sagittal),
            _ => Err(format!("unknown axis {s:?}: axial, coronal or sagittal")),
        }
    }
}

/// A scalar volume: `data[x + nx·(y + ny·z)]`, and the RAS direction (with spacing) of each
/// voxel axis.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Voxel counts along x, y, z.
    pub dims: [usize; 3],
    /// Voxel values, x fastest.
    pub data: Vec<f32>,
    /// For each voxel axis, its RAS direction scaled by the voxel spacing (mm).
    pub dirs: [[f64; 3]; 3],
}

fn corrupt(format: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt {
        format,
        reason: reason.into(),
    }
}

/// Gunzip at most `cap` bytes; more is a decompression bomb.
pub(crate) fn gunzip(bytes: &[u8], cap: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt("gzip", e.to_string()))?;
    if out.len() as u64 > cap {
        return Err(corrupt(
            "gzip",
            format!("expands beyond {cap} bytes (decompression bomb?)"),
        ));
    }
    Ok(out)
}

fn check_size(dims: [usize; 3], limit: u64) -> Result<(), DecodeError> {
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    if dims.contains(&0) {
        return Err(DecodeError::Corrupt {
            format: "volume",
            reason: "a dimension is zero".into(),
        });
    }
    if n > limit {
        return Err(DecodeError::TooLarge {
            width: dims[0] as u64,
            height: (dims[1] * dims[2]) as u64,
            limit,
        });
    }
    Ok(())
}

/// What a NIfTI-1 or NIfTI-2 header says about the first 3-D volume, at NIfTI-2's precision.
struct NiftiInfo {
    dim: [i64; 8],
    datatype: i16,
    vox_offset: f64,
    scl: (f64, f64),
    pixdim: [f64; 8],
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    srow: [[f64; 4]; 3],
    big: bool,
    header_len: usize,
}

/// A single-file NIfTI-1 (`n+1`, header through the `nifti` crate) or NIfTI-2 (`n+2`, header
/// read here) volume: the first 3-D volume of 4-D data, scaled by `scl_slope`/`scl_inter`,
/// oriented by sform, else qform, else pixdim.
pub fn read_nifti(bytes: &[u8], limit: u64) -> Result<Volume, DecodeError> {
    let info = if bytes.get(4..8) == Some(b"n+2\0") {
        nifti2_info(bytes)?
    } else {
        nifti1_info(bytes)?
    };
    nifti_volume(bytes, &info, limit)
}

fn nifti1_info(bytes: &[u8]) -> Result<NiftiInfo, DecodeError> {
    let bad = |e: nifti::NiftiError| corrupt("NIfTI", e.to_string());
    let h = nifti::NiftiHeader::from_reader(std::io::Cursor::new(bytes)).map_err(bad)?;
    if &h.magic != b"n+1\0" {
        return Err(corrupt("NIfTI", "not a single-file NIfTI-1 (n+1) volume"));
    }
    let srow = [h.srow_x, h.srow_y, h.srow_z].map(|r| r.map(f64::from));
    Ok(NiftiInfo {
        dim: h.dim.map(i64::from),
        datatype: h.datatype,
        vox_offset: f64::from(h.vox_offset),
        scl: (f64::from(h.scl_slope), f64::from(h.scl_inter)),
        pixdim: h.pixdim.map(f64::from),
        qform_code: i32::from(h.qform_code),
        sform_code: i32::from(h.sform_code),
        quatern: [h.quatern_b, h.quatern_c, h.quatern_d].map(f64::from),
        srow,
        big: h.endianness == nifti::Endianness::Big,
        header_len: 352,
    })
}

/// The NIfTI-2 header (540 bytes, either byte order), field by field.
fn nifti2_info(b: &[u8]) -> Result<NiftiInfo, DecodeError> {
    if b.len() < 540 {
        return Err(corrupt("NIfTI", "NIfTI-2 header shorter than 540 bytes"));
    }
    let big = match &b[0..4] {
        [0x1C, 0x02, 0, 0] => false,
        [0, 0, 0x02, 0x1C] => true,
        _ => return Err(corrupt("NIfTI", "NIfTI-2 header size is not 540")),
    };
    // The `N` bytes at `k` in little-endian order, whatever the file's (all inside 540).
    fn le<const N: usize>(b: &[u8], k: usize, big: bool) -> [u8; N] {
        let mut v: [u8; N] = b[k..k + N].try_into().expect("inside the header");
        if big {
            v.reverse();
        }
        v
    }
    let i64_at = |k| i64::from_le_bytes(le(b, k, big));
    let f64_at = |k| f64::from_le_bytes(le(b, k, big));
    let i32_at = |k| i32::from_le_bytes(le(b, k, big));
    let i16_at = |k| i16::from_le_bytes(le(b, k, big));
    let row = |k: usize| [0, 1, 2, 3].map(|j| f64_at(k + 8 * j));
    Ok(NiftiInfo {
        dim: std::array::from_fn(|i| i64_at(16 + 8 * i)),
        datatype: i16_at(12),
        vox_offset: i64_at(168) as f64,
        scl: (f64_at(176), f64_at(184)),
        pixdim: std::array::from_fn(|i| f64_at(104 + 8 * i)),
        qform_code: i32_at(344),
        sform_code: i32_at(348),
        quatern: [f64_at(352), f64_at(360), f64_at(368)],
        srow: [row(400), row(432), row(464)],
        big,
        header_len: 544,
    })
}

fn nifti_volume(bytes: &[u8], h: &NiftiInfo, limit: u64) -> Result<Volume, DecodeError> {
    let nd = h.dim[0].clamp(1, 7) as usize;
    let mut dims = [1usize; 3];
    for (i, d) in dims.iter_mut().enumerate() {
        if i < nd {
            let n = h.dim[i + 1];
            if n < 0 || n > i64::from(u32::MAX) {
                return Err(corrupt("NIfTI", format!("dimension {} is {n}", i + 1)));
            }
            *d = (n as usize).max(1);
        }
    }
    check_size(dims, limit)?;
    // The f32 volume (the voxel bytes are the file's own).
    crate::budget::reserve(4 * (dims[0] * dims[1] * dims[2]) as u64)?;
    let (width, kind) = match h.datatype {
        2 => (1, 'u'),
        256 => (1, 'i'),
        4 => (2, 'i'),
        512 => (2, 'u'),
        8 => (4, 'i'),
        768 => (4, 'u'),
        16 => (4, 'f'),
        64 => (8, 'f'),
        1024 => (8, 'i'),
        1280 => (8, 'u'),
        other => {
            return Err(corrupt(
                "NIfTI",
                format!("unsupported datatype {other} (not scalar)"),
            ))
        }
    };
    let offset = if h.vox_offset.is_finite() && h.vox_offset >= h.header_len as f64 {
        h.vox_offset as usize
    } else {
        h.header_len
    };
    let n = dims[0] * dims[1] * dims[2];
    let raw = offset
        .checked_add(n * width)
        .and_then(|end| bytes.get(offset..end))
        .ok_or_else(|| {
            corrupt(
                "NIfTI",
                format!(
                    "{} voxel bytes from offset {offset}, {} in the file",
                    n * width,
                    bytes.len().saturating_sub(offset)
                ),
            )
        })?;
    let mut data = to_f32(raw, width, kind, h.big);
    let (slope, inter) = h.scl;
    if slope.is_finite() && slope != 0.0 && inter.is_finite() && (slope, inter) != (1.0, 0.0) {
        data.iter_mut()
            .for_each(|v| *v = (f64::from(*v) * slope + inter) as f32);
    }
    let px = |i: usize| h.pixdim[i].abs().max(1e-6);
    let dirs = if h.sform_code > 0 {
        [0, 1, 2].map(|i| [0, 1, 2].map(|w| h.srow[w][i]))
    } else if h.qform_code > 0 {
        let [b, c, dq] = h.quatern;
        let a = (1.0 - b * b - c * c - dq * dq).max(0.0).sqrt();
        let r = [
            [
                a * a + b * b - c * c - dq * dq,
                2.0 * (b * c - a * dq),
                2.0 * (b * dq + a * c),
            ],
            [
                2.0 * (b * c + a * dq),
                a * a + c * c - b * b - dq * dq,
                2.0 * (c * dq - a * b),
            ],
            [
                2.0 * (b * dq - a * c),
                2.0 * (c * dq + a * b),
                a * a + dq * dq - c * c - b * b,
            ],
        ];
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        [0, 1, 2].map(|i| {
            let s = px(i + 1) * if i == 2 { qfac } else { 1.0 };
            [0, 1, 2].map(|w| r[w][i] * s)
        })
    } else {
        [[px(1), 0.0, 0.0], [0.0, px(2), 0.0], [0.0, 0.0, px(3)]]
    };
    Ok(Volume { dims, data, dirs })
}

/// An attached NRRD volume (`raw` or `gzip` encoding); 3-D scalar data.
pub fn read_nrrd(bytes: &[u8], limit: u64) -> Result<Volume, DecodeError> {
    let bad = |r: &str| corrupt("NRRD", r);
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| bad("no blank line after the header"))?;
    let head = std::str::from_utf8(&bytes[..split]).map_err(|_| bad("header is not text"))?;
    let body = &bytes[split + 2..];
    let mut field = std::collections::HashMap::new();
    for line in head.lines().skip(1) {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            field.insert(
                k.trim().to_ascii_lowercase(),
                v.trim_start_matches('=').trim().to_string(),
            );
        }
    }
    if field.contains_key("data file") || field.contains_key("datafile") {
        return Err(bad("detached data files are not read"));
    }
    let get = |k: &str| field.get(k).map(String::as_str);
    let dim: usize = get("dimension")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no dimension"))?;
    if dim != 3 {
        return Err(bad(&format!("{dim}-D data (only 3-D scalar volumes)")));
    }
    let sizes: Vec<usize> = get("sizes")
        .unwrap_or("")
        .split_whitespace()
        .map(|s| s.parse().map_err(|_| bad("bad sizes")))
        .collect::<Result<_, _>>()?;
    let dims: [usize; 3] = sizes
        .try_into()
        .map_err(|_| bad("sizes does not have 3 values"))?;
    check_size(dims, limit)?;
    // The f32 volume, and the raw voxels when inflated from a gzip body (8 bytes at most).
    crate::budget::reserve(12 * (dims[0] * dims[1] * dims[2]) as u64)?;
    let ty = get("type").unwrap_or("").to_ascii_lowercase();
    let (width, kind) = match ty.as_str() {
        "signed char" | "int8" | "int8_t" => (1, 'i'),
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => (1, 'u'),
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            (2, 'i')
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => (2, 'u'),
        "int" | "signed int" | "int32" | "int32_t" => (4, 'i'),
        "uint" | "unsigned int" | "uint32" | "uint32_t" => (4, 'u'),
        "float" => (4, 'f'),
        "double" => (8, 'f'),
        other => return Err(bad(&format!("unsupported type {other:?}"))),
    };
    let n = dims.iter().product::<usize>();
    let need = n * width;
    let raw = match get("encoding").unwrap_or("raw") {
        "raw" => body.to_vec(),
        "gzip" | "gz" => gunzip(body, need as u64)?,
        other => return Err(bad(&format!("unsupported encoding {other:?}"))),
    };
    if raw.len() < need {
        return Err(bad(&format!("{} data bytes, {need} expected", raw.len())));
    }
    let big = get("endian") == Some("big");
    let data = to_f32(&raw[raw.len() - need..], width, kind, big);
    // Space directions are given in the volume's space; NRRD volumes are usually LPS.
    let lps = matches!(
        get("space").map(str::to_ascii_lowercase).as_deref(),
        Some("left-posterior-superior" | "lps")
    );
    let mut dirs = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    if let Some(sd) = get("space directions") {
        let vecs: Vec<Vec<f64>> = sd
            .split(')')
            .filter_map(|p| p.split_once('(').map(|(_, v)| v))
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .collect();
        if vecs.len() == 3 && vecs.iter().all(|v| v.len() == 3) {
            for (i, v) in vecs.iter().enumerate() {
                dirs[i] = [v[0], v[1], v[2]];
                if lps {
                    dirs[i][0] = -dirs[i][0];
                    dirs[i][1] = -dirs[i][1];
                }
            }
        }
    }
    Ok(Volume { dims, data, dirs })
}

/// Samples of `width` bytes (`kind`: signed `i`, unsigned `u`, float `f`) as f32.
fn to_f32(raw: &[u8], width: usize, kind: char, big: bool) -> Vec<f32> {
    raw.chunks_exact(width)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(c);
            if big {
                b[..width].reverse();
            }
            let b4 = [b[0], b[1], b[2], b[3]];
            match (width, kind) {
                (1, 'i') => b[0] as i8 as f32,
                (1, _) => b[0] as f32,
                (2, 'i') => i16::from_le_bytes([b[0], b[1]]) as f32,
                (2, _) => u16::from_le_bytes([b[0], b[1]]) as f32,
                (4, 'i') => i32::from_le_bytes(b4) as f32,
                (4, 'u') => u32::from_le_bytes(b4) as f32,
                (4, _) => f32::from_le_bytes(b4),
                (_, 'i') => i64::from_le_bytes(b) as f32,
                (_, 'u') => u64::from_le_bytes(b) as f32,
                _ => f64::from_le_bytes(b) as f32,
            }
        })
        .collect()
}

/// For world axis `w` (R, A, S): the voxel axis most aligned with it, and whether the voxel
/// index grows toward +w.
fn aligned(dirs: &[[f64; 3]; 3]) -> [(usize, bool); 3] {
    let mut used = [false; 3];
    let mut out = [(0, true); 3];
    // Assign the most decisive world axis first, so an oblique volume still gets a permutation.
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| {
        let m = |w: usize| (0..3).map(|i| dirs[i][w].abs()).fold(0.0, f64::max);
        m(b).total_cmp(&m(a))
    });
    for w in order {
        let v = (0..3)
            .filter(|&i| !used[i])
            .max_by(|&a, &b| dirs[a][w].abs().total_cmp(&dirs[b][w].abs()))
            .unwrap_or(0);
        used[v] = true;
        out[w] = (v, dirs[v][w] >= 0.0);
    }
    out
}

/// How volume intensities become display values.
fn display(vol: &Volume, window: Option<WindowPreset>) -> Box<dyn Fn(f32) -> f32> {
    let [lo, hi, p1, p99] = quantiles(&vol.data, [0.001, 0.999, 0.01, 0.99]);
    // Hounsfield units: air sits near -1000.
    let ct = lo <= -900.0 && hi > -200.0;
    match (window, ct) {
        (Some(w), _) => Box::new(move |x| crate::window::window_linear(x, w.center, w.width)),
        (None, true) => Box::new(|x| crate::window::window_linear(x, 40.0, 400.0)),
        (None, false) => {
            let span = (p99 - p1).max(f32::EPSILON);
            Box::new(move |x| ((x - p1) / span).clamp(0.0, 1.0))
        }
    }
}

/// Quantiles of the finite values, from one sorted strided sample of at most ~1M values.
fn quantiles<const N: usize>(v: &[f32], at: [f64; N]) -> [f32; N] {
    let step = (v.len() / 1_000_000).max(1);
    let mut s: Vec<f32> = v
        .iter()
        .step_by(step)
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if s.is_empty() {
        // Nothing finite: the unit range.
        return at.map(|q| if q < 0.5 { 0.0 } else { 1.0 });
    }
    s.sort_by(f32::total_cmp);
    at.map(|q| s[((s.len() - 1) as f64 * q).round() as usize])
}

/// Stretch rows so a pixel is as tall as it is wide in the patient (bilinear).
fn square_pixels(img: Image, aspect: f64) -> Image {
    if !(0.0..=64.0).contains(&aspect) || (aspect - 1.0).abs() < 0.01 {
        return img;
    }
    let h = ((img.height as f64 * aspect).round() as usize).clamp(1, 4096);
    crate::resize_bilinear(&img, img.width, h)
}

/// How many slices `vol` has across `axis`.
pub fn slice_count(vol: &Volume, axis: Axis) -> usize {
    let [r, a, s] = aligned(&vol.dirs);
    let k = match axis {
        Axis::Axial => s.0,
        Axis::Coronal => a.0,
        Axis::Sagittal => r.0,
    };
    vol.dims[k]
}

/// Peak bytes of [`slices`] with these arguments: every picked slice as f32 RGB after square
/// pixels, plus one slice's grey plane and unstretched planes, plus the quantile sample.
pub(crate) fn slices_bytes(vol: &Volume, axis: Axis, stride: usize, opts: &DecodeOptions) -> u64 {
    let [r, a, s] = aligned(&vol.dirs);
    let (slice, col, row) = match axis {
        Axis::Axial => (s.0, r.0, a.0),
        Axis::Coronal => (a.0, r.0, s.0),
        Axis::Sagittal => (r.0, a.0, s.0),
    };
    let (nc, nr, ns) = (vol.dims[col] as u64, vol.dims[row] as u64, vol.dims[slice]);
    let picked = match opts.part {
        Some(_) => 1,
        None => ns.div_ceil(stride.max(1)) as u64,
    };
    let len = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-9);
    let aspect = len(vol.dirs[row]) / len(vol.dirs[col]);
    let rows = if (0.0..=64.0).contains(&aspect) {
        ((nr as f64 * aspect).round() as u64).min(4096).max(nr)
    } else {
        nr
    };
    picked * nc * rows * 12 + nc * nr * 16 + 8_000_000
}

/// Slices across `axis`, every `stride`-th, in increasing patient coordinate:
/// `(index, count, image)`.
pub fn slices(
    vol: &Volume,
    axis: Axis,
    stride: usize,
    opts: &DecodeOptions,
) -> Vec<(u32, u32, Image)> {
    let [r, a, s] = aligned(&vol.dirs);
    // (slice axis, column axis + its screen direction, row axis + its screen direction):
    // columns run toward the patient's left (−R) or posterior (−A); rows downward (−A or −S).
    let (slice, col, row) = match axis {
        Axis::Axial => (s, (r.0, !r.1), (a.0, !a.1)),
        Axis::Coronal => (a, (r.0, !r.1), (s.0, !s.1)),
        Axis::Sagittal => (r, (a.0, !a.1), (s.0, !s.1)),
    };
    let [nx, ny, _] = vol.dims;
    let stridev = [1, nx, nx * ny];
    let (nc, nr, ns) = (vol.dims[col.0], vol.dims[row.0], vol.dims[slice.0]);
    let f = display(vol, opts.window);
    // Row spacing over column spacing: thick slices make coronal and sagittal cuts flat.
    let len = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-9);
    let aspect = len(vol.dirs[row.0]) / len(vol.dirs[col.0]);
    // Toward +world when the voxel index grows toward it; else reversed.
    let pos = |n: usize, i: usize, grows: bool| if grows { i } else { n - 1 - i };
    let picked: Vec<usize> = match opts.part {
        Some(p) => ((p as usize) < ns)
            .then_some(p as usize)
            .into_iter()
            .collect(),
        None => (0..ns).step_by(stride.max(1)).collect(),
    };
    picked
        .into_iter()
        .map(|k| {
            let sk = pos(ns, k, slice.1);
            // Room for the two copies `Image::gray` appends.
            let mut g = Vec::with_capacity(3 * nc * nr);
            for y in 0..nr {
                // `row.1` is true when the voxel index grows toward the screen's bottom.
                let vy = pos(nr, y, row.1);
                for x in 0..nc {
                    let vx = pos(nc, x, col.1);
                    let idx = vx * stridev[col.0] + vy * stridev[row.0] + sk * stridev[slice.0];
                    g.push(f(vol.data[idx]));
                }
            }
            (
                k as u32,
                ns as u32,
                square_pixels(Image::gray(nc, nr, g), aspect),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×3×2 volume whose value encodes its voxel index.
    fn vol(dirs: [[f64; 3]; 3]) -> Volume {
        Volume {
            dims: [4, 3, 2],
            data: (0..24).map(|i| i as f32).collect(),
            dirs,
        }
    }

    #[test]
    fn axial_slices_follow_the_affine() {
        // RAS-aligned voxels: x → R, y → A, z → S.
        let v = vol([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let opts = DecodeOptions {
            window: Some(WindowPreset {
                center: 11.5,
                width: 24.0,
            }),
            ..Default::default()
        };
        let s = slices(&v, Axis::Axial, 1, &opts);
        assert_eq!(s.len(), 2);
        let (i, n, img) = &s[0];
        assert_eq!((*i, *n, img.width, img.height), (0, 2, 4, 3));
        // Top-left pixel: most anterior (y = 2) and patient's right (x = 3), inferior slice.
        let tl = img.data[0];
        let want = crate::window::window_linear((3 + 4 * 2) as f32, 11.5, 24.0);
        assert!((tl - want).abs() < 1e-6, "{tl} vs {want}");
        // An LPS-flipped volume (x → L, y → P) gives the same picture.
        let w = vol([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]);
        let t = slices(&w, Axis::Axial, 1, &opts);
        let tl2 = t[0].2.data[0];
        let want2 = crate::window::window_linear(0.0, 11.5, 24.0);
        assert!((tl2 - want2).abs() < 1e-6);
        // Coronal and sagittal cut the other axes; stride skips slices.
        assert_eq!(slices(&v, Axis::Coronal, 1, &opts)[0].2.width, 4);
        assert_eq!(slices(&v, Axis::Coronal, 1, &opts).len(), 3);
        assert_eq!(slices(&v, Axis::Sagittal, 2, &opts).len(), 2);
    }

    #[test]
    fn a_volume_query_is_its_middle_slice_alone() {
        // 2×2×5 shorts, slice k holding k everywhere; axial slices are k = 0..5.
        let mut f = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 5\nencoding: raw\nendian: little\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n\n".to_vec();
        for k in 0..5i16 {
            for _ in 0..4 {
                f.extend_from_slice(&(k * 100).to_le_bytes());
            }
        }
        let opts = DecodeOptions {
            window: Some(WindowPreset {
                center: 200.0,
                width: 800.0,
            }),
            ..Default::default()
        };
        let one = crate::decode_bytes(&f, &opts).unwrap();
        let part = one.part.unwrap();
        assert_eq!((part.index, part.count), (2, 5));
        let all = crate::decode_items(&f, &opts).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[2].image.data, one.image.data);
        assert_ne!(all[1].image.data, one.image.data);
    }

    /// A 2×2×1 int16 NIfTI-2 in either byte order, with sform diag(-1, 2, 3) and slope 2.
    #[allow(clippy::type_complexity)]
    fn nifti2(big: bool, voxels: &[i16]) -> Vec<u8> {
        let mut h = vec![0u8; 544];
        let mut put = |k: usize, b: &[u8]| h[k..k + b.len()].copy_from_slice(b);
        let (i16b, i32b, i64b, f64b): (
            fn(i16) -> [u8; 2],
            fn(i32) -> [u8; 4],
            fn(i64) -> [u8; 8],
            fn(f64) -> [u8; 8],
        ) = if big {
            (
                i16::to_be_bytes,
                i32::to_be_bytes,
                i64::to_be_bytes,
                f64::to_be_bytes,
            )
        } else {
            (
                i16::to_le_bytes,
                i32::to_le_bytes,
                i64::to_le_bytes,
                f64::to_le_bytes,
            )
        };
        put(0, &i32b(540));
        put(4, b"n+2\0\r\n\x1a\n");
        put(12, &i16b(4));
        put(14, &i16b(16));
        for (i, d) in [3i64, 2, 2, 1, 1, 1, 1, 1].iter().enumerate() {
            put(16 + 8 * i, &i64b(*d));
        }
        put(168, &i64b(544));
        put(176, &f64b(2.0));
        put(348, &i32b(1));
        put(400, &f64b(-1.0));
        put(432 + 8, &f64b(2.0));
        put(464 + 16, &f64b(3.0));
        for v in voxels {
            h.extend_from_slice(&i16b(*v));
        }
        h
    }

    #[test]
    fn nifti2_in_both_byte_orders() {
        for big in [false, true] {
            let v = read_nifti(&nifti2(big, &[1, 2, 3, -4]), 1 << 20).unwrap();
            assert_eq!(v.dims, [2, 2, 1]);
            assert_eq!(v.data, [2.0, 4.0, 6.0, -8.0], "big endian: {big}");
            assert_eq!(v.dirs, [[-1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]);
            // Fewer voxel bytes than the header promises: an error, not a short volume.
            let e = read_nifti(&nifti2(big, &[1, 2, 3]), 1 << 20).unwrap_err();
            assert!(e.to_string().contains("8 voxel bytes"), "{e}");
        }
    }

    #[test]
    fn nrrd_headers_are_checked() {
        let ok = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 1\nencoding: raw\nendian: little\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,2)\n\n\x01\x00\x02\x00\x03\x00\xff\xff";
        let v = read_nrrd(ok, 1 << 20).unwrap();
        assert_eq!(v.data, vec![1.0, 2.0, 3.0, -1.0]);
        assert_eq!(v.dirs[0], [-1.0, 0.0, 0.0]);
        assert_eq!(v.dirs[2], [0.0, 0.0, 2.0]);
        let big =
            b"NRRD0004\ntype: short\ndimension: 3\nsizes: 100000 100000 100\nencoding: raw\n\n";
        assert!(matches!(
            read_nrrd(big, 1 << 30),
            Err(DecodeError::TooLarge { .. })
        ));
        let short = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n\x01";
        assert!(read_nrrd(short, 1 << 20).is_err());
    }
}
