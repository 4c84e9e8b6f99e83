//! Depthwise `k×k` convolution on channels-last `(b, h, w, c)` data with bias and a fused
//! activation: one pass vectorised over the channels (candle runs grouped convolutions one
//! group at a time).

use crate::activation::{act_rows, Act};
use crate::error::{check, KernelError};
use std::mem::MaybeUninit;

/// The convolution's geometry: input `h×w×c` per image, output `ho×wo×c`, a `k×k` kernel,
/// `stride`, and `pad` zeros before the first row and column (the far side is implied by the
/// output size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwGeometry {
    /// Input rows per image.
    pub h: usize,
    /// Input columns per image.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Output rows per image.
    pub ho: usize,
    /// Output columns per image.
    pub wo: usize,
    /// Kernel size.
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zeros before the first row and the first column.
    pub pad: (usize, usize),
    /// Activation applied to the output.
    pub act: Act,
}

impl DwGeometry {
    fn check_common(&self, kernel: &[f32], bias: &[f32]) -> Result<(), KernelError> {
        check(self.c > 0 && self.k > 0 && self.stride > 0, || {
            format!(
                "depthwise: channels {}, kernel {}, stride {} must be positive",
                self.c, self.k, self.stride
            )
        })?;
        check(
            kernel.len() == self.k * self.k * self.c && bias.len() == self.c,
            || {
                format!(
                "depthwise: kernel {} (want {}·{}·{}) or bias {} (want {}) has the wrong length",
                kernel.len(),
                self.k,
                self.k,
                self.c,
                bias.len(),
                self.c
            )
            },
        )
    }

    /// Checks one output row's arguments (row `row` of all images' output rows stacked).
    pub(crate) fn check_row(
        &self,
        x: &[f32],
        kernel: &[f32],
        bias: &[f32],
        row: usize,
        out_row: &mut [f32],
    ) -> Result<(), KernelError> {
        self.check_common(kernel, bias)?;
        let image = self.h * self.w * self.c;
        check(self.ho > 0 && out_row.len() == self.wo * self.c, || {
            format!(
                "depthwise: output row of {} for {}×{}",
                out_row.len(),
                self.wo,
                self.c
            )
        })?;
        check((row / self.ho + 1) * image <= x.len(), || {
            format!(
                "depthwise: row {row} is past the input's {} values",
                x.len()
            )
        })
    }

    /// `(images, output length)` for input `x`, if the sizes fit.
    pub fn check(
        &self,
        x: &[f32],
        kernel: &[f32],
        bias: &[f32],
    ) -> Result<(usize, usize), KernelError> {
        self.check_common(kernel, bias)?;
        let image = self.h * self.w * self.c;
        check(image > 0 && x.len().is_multiple_of(image), || {
            format!(
                "depthwise: input of {} is not whole {}×{}×{} images",
                x.len(),
                self.h,
                self.w,
                self.c
            )
        })?;
        let b = x.len() / image;
        Ok((b, b * self.ho * self.wo * self.c))
    }
}

/// Channels an accumulator holds: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// Blocks of [`LANES`] channels summed side by side.
const GROUP: usize = 4;

/// Output channels `at..at + G·LANES` of one pixel: the bias, then each tap in order.
#[inline(always)]
fn block_sums<const G: usize>(
    o: &mut [MaybeUninit<f32>],
    img: &[f32],
    k: &[f32],
    bias: &[f32],
    taps: &[(usize, usize)],
    at: usize,
) {
    const { assert!(G > 0) };
    let span = G * LANES;
    let mut acc = [[0f32; LANES]; G];
    for (g, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(&bias[at + g * LANES..at + (g + 1) * LANES]);
    }
    for &(pi, ki) in taps {
        let p = &img[pi + at..pi + at + span];
        let kk = &k[ki + at..ki + at + span];
        for (g, a) in acc.iter_mut().enumerate() {
            let p: &[f32; LANES] = p[g * LANES..(g + 1) * LANES].try_into().unwrap();
            let kk: &[f32; LANES] = kk[g * LANES..(g + 1) * LANES].try_into().unwrap();
            for l in 0..LANES {
                a[l] += p[l] * kk[l];
            }
        }
    }
    for (g, a) in acc.iter().enumerate() {
        for (o, &a) in o[at + g * LANES..at + (g + 1) * LANES].iter_mut().zip(a) {
            o.write(a);
        }
    }
}

/// The row kernel: output row `row` (all images' output rows stacked), then the activation.
///
/// For each output pixel and each block of [`LANES`] channels, the sum stays in registers over
/// the taps (bias first, then the taps in kernel order: the same sums, in the same order, as
/// accumulating into the output row tap by tap, which loaded and stored the output at every
/// tap and ran at a third of this speed).
#[inline(always)]
pub(crate) fn depthwise_row<const FMA: bool>(
    g: &DwGeometry,
    x: &[f32],
    k: &[f32],
    bias: &[f32],
    row: usize,
    orow: &mut [MaybeUninit<f32>],
) {
    let (h, w, c, s) = (g.h, g.w, g.c, g.stride);
    let (bi, oy) = (row / g.ho, row % g.ho);
    let img = &x[bi * h * w * c..(bi + 1) * h * w * c];
    // (input offset, kernel offset) of each tap inside the image, for the current pixel.
    let mut taps: Vec<(usize, usize)> = Vec::with_capacity(g.k * g.k);
    let blocks = c / LANES;
    for ox in 0..g.wo {
        taps.clear();
        for ky in 0..g.k {
            let Some(iy) = (oy * s + ky).checked_sub(g.pad.0).filter(|&y| y < h) else {
                continue;
            };
            for kx in 0..g.k {
                let Some(ix) = (ox * s + kx).checked_sub(g.pad.1).filter(|&x| x < w) else {
                    continue;
                };
                taps.push(((iy * w + ix) * c, (ky * g.k + kx) * c));
            }
        }
        let o = &mut orow[ox * c..(ox + 1) * c];
        // GROUP blocks at a time: independent sums, so that each add need not wait for the
        // previous tap's (one block alone ran at the add's latency).
        let mut cb = 0;
        while cb + GROUP <= blocks {
            block_sums::<GROUP>(o, img, k, bias, &taps, cb * LANES);
            cb += GROUP;
        }
        while cb < blocks {
            block_sums::<1>(o, img, k, bias, &taps, cb * LANES);
            cb += 1;
        }
        for ch in blocks * LANES..c {
            let mut acc = bias[ch];
            for &(pi, ki) in &taps {
                acc += img[pi + ch] * k[ki + ch];
            }
            o[ch].write(acc);
        }
    }
    // Callers pass exactly one row (`check_row`, or `depthwise`'s bands); only what was
    // written is read as floats, whatever the length.
    let done = &mut orow[..g.wo * c];
    // SAFETY: the `wo` pixels' `c` channels each were written above (the blocks of LANES, then
    // the tail); `MaybeUninit<f32>` has the layout of `f32`.
    let done = unsafe { &mut *(done as *mut [MaybeUninit<f32>] as *mut [f32]) };
    act_rows::<FMA>(done, g.act);
}

/// The convolution: `x` is `(b, h, w, c)`, `kernel` is `(k·k, c)` (tap-major), `bias` is
/// `c`; returns `(b, ho, wo, c)`, one output row per task.
pub fn depthwise(
    g: &DwGeometry,
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
) -> Result<Vec<f32>, KernelError> {
    let (_, len) = g.check(x, kernel, bias)?;
    let row = g.wo * g.c;
    if len == 0 {
        return Ok(Vec::new());
    }
    let k = crate::kernels();
    // Each row is written once, by the kernel, into fresh memory: zeroing the whole output
    // first (64 MiB at litemedsam's first stage) cost a pass through memory, and zeroing each
    // row before the kernel wrote it was still 2% of an image (Zen 3).
    // SAFETY: `depthwise_row` writes every element of its row (see its end), and each band
    // here is one row of `wo·c`.
    let out = unsafe {
        crate::buffer::par_bands_uninit(len / row, row, 1, |r, orow| {
            (k.depthwise_row)(g, x, kernel, bias, r, orow)
        })
    };
    Ok(out)
}
