//! Softmax over rows (the attention kernel's middle step), with an optional additive bias.

use crate::activation::exp_fast;
use crate::reduce::{max_lanes, sum_lanes};

/// The row kernel: each row of `n` gets `bias`'s matching row added, then softmax (its `exp`
/// with fused multiply-adds on a path with `FMA`).
#[inline(always)]
pub(crate) fn softmax_rows<const FMA: bool>(s: &mut [f32], n: usize, bias: Option<&[f32]>) {
    for (i, row) in s.chunks_exact_mut(n).enumerate() {
        if let Some(b) = bias {
            for (v, b) in row.iter_mut().zip(&b[i * n..(i + 1) * n]) {
                *v += b;
            }
        }
        let m = max_lanes(row);
        for v in row.iter_mut() {
            *v = exp_fast::<FMA>(*v - m);
        }
        let inv = 1.0 / sum_lanes(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}
