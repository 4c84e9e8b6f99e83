//! Softmax over rows (the attention kernel's middle step), with an optional additive bias.

use crate::activation::exp_fast;
use crate::reduce::max_lanes;

/// The row kernel: each row of `n` gets `bias`'s matching row added, then softmax (its `exp`
/// with fused multiply-adds on a path with `FMA`).
///
/// Three passes over a row: the bias added while the maximum is taken, `exp` while the sum is
/// taken, then the scale. Each reduction keeps the eight lanes of `reduce.rs` ([`max_lanes`],
/// [`sum_lanes`](crate::reduce::sum_lanes)), so the values are theirs (tests); five passes
/// (the bias, the maximum, `exp`, the sum, the scale) spent a fifth of the time on loads,
/// stores and the scalar tails of `litemedsam`'s rows of 49.
#[inline(always)]
pub(crate) fn softmax_rows<const FMA: bool>(s: &mut [f32], n: usize, bias: Option<&[f32]>) {
    for (i, row) in s.chunks_exact_mut(n).enumerate() {
        let m = match bias {
            Some(b) => add_max(row, &b[i * n..(i + 1) * n]),
            None => max_lanes(row),
        };
        let inv = 1.0 / exp_sum::<FMA>(row, m);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// `x += b`, returning the maximum of the new `x` as [`max_lanes`] takes it.
#[inline(always)]
fn add_max(x: &mut [f32], b: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let split = x.len() / 8 * 8;
    let (body, tail) = x.split_at_mut(split);
    let (bb, bt) = b.split_at(split);
    for (c, cb) in body.chunks_exact_mut(8).zip(bb.chunks_exact(8)) {
        for l in 0..8 {
            c[l] += cb[l];
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut t = f32::NEG_INFINITY;
    for (v, b) in tail.iter_mut().zip(bt) {
        *v += b;
        t = t.max(*v);
    }
    acc.iter().copied().fold(t, f32::max)
}

/// `x = exp(x − m)`, returning the sum of the new `x` as
/// [`sum_lanes`](crate::reduce::sum_lanes) takes it.
#[inline(always)]
fn exp_sum<const FMA: bool>(x: &mut [f32], m: f32) -> f32 {
    let mut acc = [0f32; 8];
    let split = x.len() / 8 * 8;
    let (body, tail) = x.split_at_mut(split);
    for c in body.chunks_exact_mut(8) {
        for l in 0..8 {
            c[l] = exp_fast::<FMA>(c[l] - m);
            acc[l] += c[l];
        }
    }
    for v in tail.iter_mut() {
        *v = exp_fast::<FMA>(*v - m);
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::lcg;
    use crate::reduce::sum_lanes;

    /// The five passes the fused ones replaced: bias, maximum, `exp`, sum, scale.
    fn five_passes(s: &mut [f32], n: usize, bias: Option<&[f32]>) {
        for (i, row) in s.chunks_exact_mut(n).enumerate() {
            if let Some(b) = bias {
                for (v, b) in row.iter_mut().zip(&b[i * n..(i + 1) * n]) {
                    *v += b;
                }
            }
            let m = max_lanes(row);
            for v in row.iter_mut() {
                *v = exp_fast::<false>(*v - m);
            }
            let inv = 1.0 / sum_lanes(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }

    /// The fused passes give the five passes' values bit for bit: every row length up to 40
    /// (the tails past the eight lanes), with and without a bias, rows of ±0 and of a NaN.
    #[test]
    fn fused_passes_equal_the_five_passes() {
        for n in 1..=40 {
            let mut x: Vec<f32> = lcg(3 * n, n as u64).iter().map(|v| 20.0 * v).collect();
            x[..n]
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = if i % 2 == 0 { 0.0 } else { -0.0 });
            x[2 * n] = f32::NAN;
            let b = lcg(3 * n, 100 + n as u64);
            for bias in [None, Some(&b[..])] {
                let (mut got, mut want) = (x.clone(), x.clone());
                softmax_rows::<false>(&mut got, n, bias);
                five_passes(&mut want, n, bias);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "n = {n}, bias {}", bias.is_some());
            }
        }
    }
}
