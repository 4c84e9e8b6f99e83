//! Layer norm over the last dimension, in two passes (mean, then centred variance). candle's
//! fused kernel uses `E[x²] − E[x]²` in f32, which loses digits on ViT residual streams whose
//! outlier channels reach the hundreds.

use crate::error::{check, KernelError};
use crate::reduce::sum_lanes;
use rayon::prelude::*;

/// The row kernel: each row of `x` (rows of `w.len()`) normalised into `out`.
#[inline(always)]
pub(crate) fn layer_norm_rows(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let n = w.len();
    for (o, x) in o.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        let mean = sum_lanes(x) / n as f32;
        for (o, x) in o.iter_mut().zip(x) {
            *o = (x - mean) * (x - mean);
        }
        let var = sum_lanes(o) / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..n {
            o[i] = (x[i] - mean) * inv * w[i] + b[i];
        }
    }
}

/// `out = (x − mean) / sqrt(var + eps) · w + b` over rows of `w.len()`, 16 rows per task.
pub fn layer_norm(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    let n = w.len();
    check(n > 0 && b.len() == n, || {
        format!(
            "layer norm: weight {n} and bias {} must match and be non-empty",
            b.len()
        )
    })?;
    check(x.len().is_multiple_of(n) && out.len() == x.len(), || {
        format!(
            "layer norm: input {} and output {} must be whole rows of {n}",
            x.len(),
            out.len()
        )
    })?;
    let k = crate::kernels();
    out.par_chunks_mut(n * 16)
        .zip(x.par_chunks(n * 16))
        .for_each(|(o, x)| k.layer_norm_rows(o, x, w, b, eps));
    Ok(())
}
