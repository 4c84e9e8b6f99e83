//! Big rasters decoded small: a 62 KB 8000×8000 PNG is 1.1 GB as float RGB, and the models
//! look at 224×224. Images whose longest side exceeds [`REDUCE_ABOVE`] are never held at full
//! resolution: PNG rows are streamed from the `png` decoder and box-averaged by an integer
//! factor as they arrive (the area average PIL's `Image.reduce` computes), JPEG is decoded by
//! libjpeg-turbo at 1/2, 1/4 or 1/8 scale (DCT scaling). Images up to [`REDUCE_ABOVE`] (every
//! image of the evaluation sets) take the full-resolution path unchanged, bit for bit.

use crate::{DecodeError, Image};
use std::ffi::c_int;
use turbojpeg_sys as tj;

/// Longest side above which PNG and JPEG are decoded reduced (to at most this side).
pub const REDUCE_ABOVE: u32 = 2048;

/// The integer box factor that brings the longest side to at most [`REDUCE_ABOVE`]; 1 when
/// it already is.
pub(crate) fn box_factor(w: u32, h: u32) -> u32 {
    w.max(h).div_ceil(REDUCE_ABOVE).max(1)
}

/// Samples per pixel (after palette expansion) and bytes per sample, from a PNG's IHDR.
pub(crate) fn png_layout(bytes: &[u8]) -> Option<(u64, u64, bool)> {
    let depth = *bytes.get(24)?;
    let samples = match *bytes.get(25)? {
        0 => 1,
        2 => 3,
        3 => 4, // palette, expanded to RGB or RGBA
        4 => 2,
        _ => 4,
    };
    let interlaced = *bytes.get(28)? != 0;
    Some((samples, if depth == 16 { 2 } else { 1 }, interlaced))
}

/// Stream a non-interlaced PNG row by row, box-averaging `f`×`f` blocks (edge blocks average
/// what they cover). 8-bit data ends as mean/255, 16-bit as the mean min-max scaled by the
/// range of the full-resolution samples (as the full-resolution path scales them); alpha is
/// dropped as there. `Ok(None)` for interlaced files (the caller decodes them whole).
pub(crate) fn png_box(bytes: &[u8], f: u32, limit: u64) -> Result<Option<Image>, DecodeError> {
    let corrupt = |e: png::DecodingError| DecodeError::Corrupt {
        format: "png",
        reason: e.to_string(),
    };
    let mut dec = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: usize::try_from(limit.saturating_mul(8)).unwrap_or(usize::MAX),
        },
    );
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(corrupt)?;
    let info = reader.info();
    if info.interlaced {
        return Ok(None);
    }
    let (w, h) = (info.width as usize, info.height as usize);
    if w == 0 || h == 0 {
        return Err(DecodeError::Corrupt {
            format: "png",
            reason: "empty image".into(),
        });
    }
    let (ct, depth) = reader.output_color_type();
    let samples = ct.samples();
    let sixteen = depth == png::BitDepth::Sixteen;
    // Grey (and grey + alpha) stays one plane; RGB and RGBA keep three.
    let c = if samples >= 3 { 3 } else { 1 };
    let f = f.max(1) as usize;
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    let mut acc = vec![0u64; ow * c];
    let mut means: Vec<f64> = Vec::with_capacity(if sixteen { ow * oh * c } else { 0 });
    let mut planes = vec![0f32; ow * oh * c];
    let (mut lo, mut hi) = (u16::MAX, 0u16);
    let row_bytes = w * samples * if sixteen { 2 } else { 1 };
    let mut y = 0usize;
    while let Some(row) = reader.next_row().map_err(corrupt)? {
        let d = row.data();
        if d.len() < row_bytes || y >= h {
            return Err(DecodeError::Corrupt {
                format: "png",
                reason: format!("row {y} is {} bytes, {row_bytes} expected", d.len()),
            });
        }
        for x in 0..w {
            let cell = (x / f) * c;
            for ch in 0..c {
                let k = x * samples + ch;
                let v = if sixteen {
                    u16::from_be_bytes([d[2 * k], d[2 * k + 1]])
                } else {
                    u16::from(d[k])
                };
                lo = lo.min(v);
                hi = hi.max(v);
                acc[cell + ch] += u64::from(v);
            }
        }
        y += 1;
        if y.is_multiple_of(f) || y == h {
            let rows = (y - 1) % f + 1;
            let oy = (y - 1) / f;
            for ox in 0..ow {
                let n = (rows * f.min(w - ox * f)) as f64;
                for ch in 0..c {
                    let mean = acc[ox * c + ch] as f64 / n;
                    let v = if sixteen {
                        // Scaled below, once the full range is known.
                        mean
                    } else {
                        mean / 255.0
                    };
                    planes[ch * ow * oh + oy * ow + ox] = v as f32;
                    if sixteen {
                        means.push(mean);
                    }
                }
            }
            acc.fill(0);
        }
    }
    if y != h {
        return Err(DecodeError::Corrupt {
            format: "png",
            reason: format!("{y} of {h} rows"),
        });
    }
    if sixteen {
        // Means were pushed row by row, pixel by pixel, channel by channel.
        let range = f64::from(hi) - f64::from(lo);
        for (i, m) in means.into_iter().enumerate() {
            let (ch, px) = (i % c, i / c);
            planes[ch * ow * oh + px] = if range > 0.0 {
                ((m - f64::from(lo)) / range) as f32
            } else {
                0.0
            };
        }
    }
    Ok(Some(if c == 1 {
        Image::gray(ow, oh, planes)
    } else {
        Image::new(ow, oh, planes)
    }))
}

/// Average `f`×`f` blocks of an image (edge blocks average what they cover).
pub fn box_reduce(img: &Image, f: usize) -> Image {
    let f = f.max(1);
    let (w, h) = (img.width, img.height);
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    let mut out = vec![0f32; 3 * ow * oh];
    for c in 0..3 {
        let src = &img.data[c * w * h..(c + 1) * w * h];
        for oy in 0..oh {
            let ys = oy * f..((oy + 1) * f).min(h);
            for ox in 0..ow {
                let xs = ox * f..((ox + 1) * f).min(w);
                let n = (ys.len() * xs.len()) as f64;
                let s: f64 = ys
                    .clone()
                    .map(|y| {
                        src[y * w + xs.start..y * w + xs.end]
                            .iter()
                            .map(|&v| f64::from(v))
                            .sum::<f64>()
                    })
                    .sum();
                out[c * ow * oh + oy * ow + ox] = (s / n) as f32;
            }
        }
    }
    Image::new(ow, oh, out)
}

/// The DCT scale (1/2, 1/4 or 1/8) that brings the longest side to at most [`REDUCE_ABOVE`],
/// else 1/8: the denominator.
pub(crate) fn jpeg_denominator(w: u32, h: u32) -> u32 {
    [2u32, 4, 8]
        .into_iter()
        .find(|d| w.max(h).div_ceil(*d) <= REDUCE_ABOVE)
        .unwrap_or(8)
}

/// A TurboJPEG decompressor, destroyed on drop.
struct Tj(tj::tjhandle);

impl Drop for Tj {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init (checked non-null) and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Decode an 8-bit JPEG with libjpeg-turbo's DCT scaling at 1/`denom` (2, 4 or 8), then box
/// averaging if still larger than [`REDUCE_ABOVE`]. `Ok(None)` when libjpeg-turbo cannot
/// scale this file (lossless, 12-bit, CMYK, a header it refuses): the caller decodes it whole.
pub(crate) fn jpeg_scaled(bytes: &[u8], denom: u32) -> Result<Option<Image>, DecodeError> {
    // SAFETY: tj3Init has no preconditions; a null handle is checked next.
    let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
    if h.is_null() {
        return Ok(None);
    }
    let t = Tj(h);
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; the handle
    // is live.
    let rc = unsafe { tj::tj3DecompressHeader(t.0, bytes.as_ptr(), bytes.len() as _) };
    let get = |p: tj::TJPARAM| {
        // SAFETY: the handle is live; unknown parameters return -1.
        unsafe { tj::tj3Get(t.0, p as c_int) }
    };
    if rc != 0 || get(tj::TJPARAM_TJPARAM_PRECISION) != 8 || get(tj::TJPARAM_TJPARAM_LOSSLESS) == 1
    {
        return Ok(None);
    }
    let comps = match get(tj::TJPARAM_TJPARAM_COLORSPACE) {
        cs if cs == tj::TJCS_TJCS_GRAY as c_int => 1,
        cs if cs == tj::TJCS_TJCS_CMYK as c_int || cs == tj::TJCS_TJCS_YCCK as c_int => {
            return Ok(None)
        }
        _ => 3,
    };
    let (w, hgt) = (
        get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
    );
    if w <= 0 || hgt <= 0 {
        return Ok(None);
    }
    // SAFETY: the handle is live. A second bound beside the caller's count of scans.
    unsafe {
        tj::tj3Set(
            t.0,
            tj::TJPARAM_TJPARAM_SCANLIMIT as c_int,
            crate::MAX_JPEG_SCANS as c_int,
        )
    };
    let sf = tj::tjscalingfactor {
        num: 1,
        denom: denom as c_int,
    };
    // SAFETY: the handle is live and the header was read; unsupported factors return -1.
    if unsafe { tj::tj3SetScalingFactor(t.0, sf) } != 0 {
        return Ok(None);
    }
    // TJSCALED: ceil(dimension × num / denom).
    let (sw, sh) = (
        (w as usize).div_ceil(denom as usize),
        (hgt as usize).div_ceil(denom as usize),
    );
    let format = if comps == 1 {
        tj::TJPF_TJPF_GRAY
    } else {
        tj::TJPF_TJPF_RGB
    } as c_int;
    let mut buf = vec![0u8; sw * sh * comps];
    // SAFETY: `buf` holds sw × sh × comps bytes, exactly what TurboJPEG writes for `format`
    // at pitch 0 with the scaling factor just set (TJSCALED of the header's dimensions); the
    // source pointer and length describe `bytes`, which outlives the call; the handle is live.
    let rc = unsafe {
        tj::tj3Decompress8(
            t.0,
            bytes.as_ptr(),
            bytes.len() as _,
            buf.as_mut_ptr(),
            0,
            format,
        )
    };
    if rc != 0 {
        // A corrupt file is reported by the full decoder's own message.
        return Ok(None);
    }
    let img = if comps == 1 {
        let g = crate::gray_plane(&buf, 255.0);
        drop(buf);
        Image::gray(sw, sh, g)
    } else {
        let img = Image::from_interleaved_rgb(sw, sh, &buf, 255.0);
        drop(buf);
        img
    };
    let f = box_factor(sw as u32, sh as u32);
    Ok(Some(if f > 1 {
        box_reduce(&img, f as usize)
    } else {
        img
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_bytes, DecodeOptions};

    fn png(img: image::DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A pattern whose f×f block means are known: value = (x / f + 3·(y / f)) % 7 × 30 plus a
    /// within-block ramp that averages to a known offset.
    fn pattern(x: u32, y: u32, f: u32) -> u8 {
        let block = ((x / f + 3 * (y / f)) % 7) as u8 * 30;
        // Within each block, alternate +10 / -10 on a checkerboard: mean 0 for even f.
        let jitter = if (x + y).is_multiple_of(2) { 10 } else { 0 };
        block + jitter
    }

    #[test]
    fn a_big_grey_png_reduces_to_its_box_means_without_full_resolution() {
        // 4100 × 2050: longest side 4100 > 2048, factor 3 (4100 / 3 = 1367 ≤ 2048); 4100 and
        // 2050 are not multiples of 3, so edge blocks are partial.
        let (w, h) = (4100u32, 2050u32);
        let f = box_factor(w, h);
        assert_eq!(f, 3);
        let g = image::GrayImage::from_fn(w, h, |x, y| image::Luma([pattern(x, y, f)]));
        let bytes = png(g.clone().into());
        let d = decode_bytes(&bytes, &DecodeOptions::default()).unwrap();
        let (ow, oh) = (w.div_ceil(f) as usize, h.div_ceil(f) as usize);
        assert_eq!((d.image.width, d.image.height), (ow, oh));
        let n = ow * oh;
        for (oy, ox) in [(0, 0), (1, 5), (300, 600), (oh - 1, ow - 1), (oh - 1, 7)] {
            let xs = ox as u32 * f..((ox as u32 + 1) * f).min(w);
            let ys = oy as u32 * f..((oy as u32 + 1) * f).min(h);
            let cnt = (xs.len() * ys.len()) as f64;
            let sum: f64 = ys
                .flat_map(|y| xs.clone().map(move |x| (x, y)))
                .map(|(x, y)| f64::from(g.get_pixel(x, y)[0]))
                .sum();
            let want = (sum / cnt / 255.0) as f32;
            for c in 0..3 {
                assert_eq!(d.image.data[c * n + oy * ow + ox], want, "({ox},{oy}) c{c}");
            }
        }
    }

    #[test]
    fn a_big_16_bit_rgb_png_is_min_max_scaled_by_the_full_range() {
        // 2100 × 10: factor 2; channel values 1000..=3000 with known block means.
        let (w, h) = (2100u32, 10u32);
        let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(w, h, |x, y| {
            let v = 1000 + (x % 2) as u16 * 2000; // block mean 2000 on every channel
            image::Rgb([
                v,
                if y == 0 && x == 0 { 1000 } else { 2000 },
                3000 - (x % 2) as u16 * 2000,
            ])
        });
        let d = decode_bytes(
            &png(image::DynamicImage::ImageRgb16(img)),
            &DecodeOptions::default(),
        )
        .unwrap();
        assert_eq!((d.image.width, d.image.height), (1050, 5));
        let n = 1050 * 5;
        // Full range 1000..3000: a mean of 2000 is 0.5 on every channel.
        for c in 0..3 {
            assert_eq!(d.image.data[c * n + 1050 * 2 + 17], 0.5, "channel {c}");
        }
        // Green's first block: (1000 + 2000·3) / 4 = 1750 → 0.375.
        assert_eq!(d.image.data[n], 0.375);
    }

    #[test]
    fn ordinary_sizes_decode_as_before_at_full_resolution() {
        // 2048 is the largest side decoded whole: every value is its own pixel / 255.
        let (w, h) = (2048u32, 3u32);
        let g =
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 7 + y * 13) % 256) as u8]));
        let d = decode_bytes(&png(g.clone().into()), &DecodeOptions::default()).unwrap();
        assert_eq!((d.image.width, d.image.height), (2048, 3));
        let want: Vec<f32> = g.as_raw().iter().map(|&p| p as f32 / 255.0).collect();
        assert_eq!(&d.image.data[..want.len()], &want[..]);
        // And a big one is full size when asked to be.
        let big = image::GrayImage::from_fn(2049, 2, |x, _| image::Luma([(x % 256) as u8]));
        let full = DecodeOptions {
            full_resolution: true,
            ..Default::default()
        };
        let d = decode_bytes(&png(big.into()), &full).unwrap();
        assert_eq!((d.image.width, d.image.height), (2049, 2));
        assert_eq!(d.image.data[300], (300 % 256) as f32 / 255.0);
    }

    /// A grey progressive JPEG of `w × h` in stripes 64 pixels wide (TurboJPEG).
    fn progressive_jpeg(w: usize, h: usize) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h)
            .map(|i| {
                if (i % w / 64).is_multiple_of(2) {
                    40
                } else {
                    200
                }
            })
            .collect();
        // SAFETY: a compress handle (checked non-null) and parameters it knows; the source is
        // `w × h` grey bytes at pitch 0; TurboJPEG allocates the output (given null), which
        // is copied, then freed with tj3Free.
        unsafe {
            let t = Tj(tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as c_int));
            assert!(!t.0.is_null());
            for (p, v) in [
                (tj::TJPARAM_TJPARAM_QUALITY, 90),
                (tj::TJPARAM_TJPARAM_SUBSAMP, tj::TJSAMP_TJSAMP_GRAY as c_int),
                (tj::TJPARAM_TJPARAM_PROGRESSIVE, 1),
            ] {
                assert_eq!(tj::tj3Set(t.0, p as c_int, v), 0);
            }
            let (mut buf, mut len) = (std::ptr::null_mut(), 0);
            let rc = tj::tj3Compress8(
                t.0,
                px.as_ptr(),
                w as c_int,
                0,
                h as c_int,
                tj::TJPF_TJPF_GRAY as c_int,
                &mut buf,
                &mut len,
            );
            assert_eq!(rc, 0);
            let out = std::slice::from_raw_parts(buf, len as usize).to_vec();
            tj::tj3Free(buf.cast());
            out
        }
    }

    /// A progressive JPEG keeps all its coefficients however small it is decoded: the budget
    /// is asked for them beside the scaled planes (it was asked for the planes only: a 375 KB
    /// 7999² file was reserved at 109 MB and cost 340); one of more than
    /// [`crate::MAX_JPEG_SCANS`] scans is refused before any is decoded.
    #[test]
    fn a_progressive_jpeg_reserves_its_coefficients_and_few_scans() {
        let j = progressive_jpeg(4096, 4096);
        let budget = crate::DecodeBudget::new(1 << 30, std::time::Duration::ZERO);
        let opts = DecodeOptions {
            budget: Some(budget.clone()),
            ..Default::default()
        };
        let d = decode_bytes(&j, &opts).unwrap();
        assert_eq!((d.image.width, d.image.height), (2048, 2048));
        // The 2048² scaled planes (27 bytes a pixel) and 512 × 512 blocks of 64 two-byte
        // coefficients, for up to 3 components.
        let want = 2048 * 2048 * 27 + 512 * 512 * 128 * 3;
        assert!(budget.peak() >= want, "{} < {want}", budget.peak());
        let mut many = j.clone();
        let end = many.split_off(many.len() - 2);
        for _ in 0..crate::MAX_JPEG_SCANS {
            many.extend([0xFF, 0xDA]);
        }
        many.extend(end);
        let e = decode_bytes(&many, &opts).unwrap_err().to_string();
        assert!(e.contains("scans (at most 1000 are decoded)"), "{e}");
    }

    #[test]
    fn a_big_jpeg_is_dct_scaled() {
        // 4096 × 64 grey JPEG with 64-pixel blocks: scaled 1/2 to 2048 × 32.
        let (w, h) = (4096u32, 64u32);
        assert_eq!(jpeg_denominator(w, h), 2);
        let g = image::GrayImage::from_fn(w, h, |x, _| {
            image::Luma([if (x / 64).is_multiple_of(2) { 40 } else { 200 }])
        });
        let mut j = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageLuma8(g)
            .write_to(&mut j, image::ImageFormat::Jpeg)
            .unwrap();
        let d = decode_bytes(&j.into_inner(), &DecodeOptions::default()).unwrap();
        assert_eq!((d.image.width, d.image.height), (2048, 32));
        // Block centres keep their level (JPEG is lossy: within 3 levels).
        let at = |x: usize| d.image.data[16 * 2048 + x] * 255.0;
        assert!((at(16) - 40.0).abs() < 3.0, "{}", at(16));
        assert!((at(48) - 200.0).abs() < 3.0, "{}", at(48));
        // 1/8 and more for the largest.
        assert_eq!(jpeg_denominator(16000, 100), 8);
        assert_eq!(jpeg_denominator(8000, 8000), 4);
    }

    #[test]
    fn box_reduce_averages_blocks_and_edges() {
        let img = Image::from_gray(3, 2, &[0.0, 0.5, 1.0, 1.0, 0.5, 0.25]);
        let r = box_reduce(&img, 2);
        assert_eq!((r.width, r.height), (2, 1));
        assert_eq!(&r.data[..2], &[0.5, 0.625]);
    }
}
