//! `act(x·wᵀ + b (+ residual))` as one GEMM: the destination is pre-filled with the bias (plus
//! the residual) and the GEMM accumulates into it, so neither the bias nor the residual costs
//! a separate pass over the activations.

use crate::activation::{activate, Act};
use crate::error::{check, KernelError};
use crate::gemm::{sgemm, MatMut, MatRef, Threads};

/// `x` is `m×k` row-major, `w` is `n×k` (PyTorch's `(out, in)` layout), `bias` is `n`,
/// `residual` is `m×n`; returns `act(x·wᵀ + bias + residual)`, `m×n` row-major.
pub fn linear(
    x: &[f32],
    (m, k): (usize, usize),
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
) -> Result<Vec<f32>, KernelError> {
    let n = bias.len();
    check(x.len() == m * k, || {
        format!("linear: input of {} is not {m}×{k}", x.len())
    })?;
    check(w.len() == n * k, || {
        format!("linear: x {m}×{k}, weight of {} is not {n}×{k}", w.len())
    })?;
    check(residual.is_none_or(|r| r.len() == m * n), || {
        format!("linear: residual is not {m}×{n}")
    })?;
    let mut dst = Vec::with_capacity(m * n);
    match residual {
        Some(r) if n > 0 => {
            for row in r.chunks_exact(n) {
                dst.extend(row.iter().zip(bias).map(|(a, b)| a + b));
            }
        }
        _ => {
            for _ in 0..m {
                dst.extend_from_slice(bias);
            }
        }
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 1 << 16 {
        Threads::Rayon(threads)
    } else {
        Threads::One
    };
    sgemm(
        MatMut::row_major(&mut dst, m, n)?,
        true,
        MatRef::row_major(x, m, k)?,
        MatRef::row_major(w, n, k)?.t(),
        par,
    )?;
    activate(&mut dst, act);
    Ok(dst)
}
