//! Depthwise `k×k` convolution on channels-last `(b, h, w, c)` data with bias and a fused
//! activation: one pass vectorised over the channels (candle runs grouped convolutions one
//! group at a time).

use crate::activation::{act_rows, Act};
use crate::error::{check, KernelError};
use rayon::prelude::*;

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

/// The row kernel: output row `row` (all images' output rows stacked), then the activation.
#[inline(always)]
pub(crate) fn depthwise_row(
    g: &DwGeometry,
    x: &[f32],
    k: &[f32],
    bias: &[f32],
    row: usize,
    orow: &mut [f32],
) {
    let (h, w, c, s) = (g.h, g.w, g.c, g.stride);
    let (bi, oy) = (row / g.ho, row % g.ho);
    let img = &x[bi * h * w * c..(bi + 1) * h * w * c];
    for ox in 0..g.wo {
        let o = &mut orow[ox * c..(ox + 1) * c];
        o.copy_from_slice(bias);
        for ky in 0..g.k {
            let iy = (oy * s + ky) as isize - g.pad.0 as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..g.k {
                let ix = (ox * s + kx) as isize - g.pad.1 as isize;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                let px = &img[(iy as usize * w + ix as usize) * c..][..c];
                let kk = &k[(ky * g.k + kx) * c..][..c];
                for ((o, p), k) in o.iter_mut().zip(px).zip(kk) {
                    *o += p * k;
                }
            }
        }
    }
    act_rows(orow, g.act);
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
    let mut out = vec![0f32; len];
    if len == 0 {
        return Ok(out);
    }
    let k = crate::kernels();
    out.par_chunks_mut(g.wo * g.c)
        .enumerate()
        .for_each(|(row, orow)| k.depthwise_row(g, x, kernel, bias, row, orow));
    Ok(out)
}
