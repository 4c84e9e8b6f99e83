//! `act(x·wᵀ + b (+ residual))` as one GEMM: the destination is pre-filled with the bias (plus
//! the residual) and the GEMM accumulates into it, so neither the bias nor the residual costs
//! a separate pass over the activations. On packed weights ([`linear_packed`], the AVX2 path)
//! it goes the other way: the product writes the output first, into fresh memory, and the
//! bias, residual and activation follow on each tile of at most 6 × 128 while it is in L1
//! (`packed_f32`'s `Store::Finish`), so nothing touches the output before the arithmetic
//! does and nothing passes over it after.

use crate::activation::{activate, Act};
use crate::bf16::{gemm_bf16, Bf16Path, PackedBf16};
use crate::error::{check, KernelError};
use crate::gemm::{sgemm, MatMut, MatRef, Threads};
use crate::int8::{gemm_i8, I8Path, PackedI8};
use crate::packed_f32::{gemm_packed, Epilogue, PackedF32, Store};

/// `x` is `m×k` row-major; `wt` is the weight as `k×n` row-major, the transpose of PyTorch's
/// `(out, in)` layout; `bias` is `n`, `residual` is `m×n`; returns `act(x·wt + bias +
/// residual)`, `m×n` row-major.
///
/// Why `k×n`: the `gemm` crate computes a row-major destination as its transpose, in which
/// the weight is the left operand, and it copies that operand into packed panels at every
/// call, always unless consecutive output channels are adjacent in memory, and even then once
/// more than 48 rows are multiplied (gemm-common's `lhs` packing threshold). Stored `k×n`, they
/// are adjacent, so small products skip the copy and the others read consecutive memory:
/// dinov2-s's layers at batch 1 went from 32–35 to 44–51 GMAC/s a core on AVX-512 (Zen 4;
/// `pack_lhs` was 18% of an image's time), and batch 16 is unchanged. On the AVX2 path the
/// weight is packed once instead ([`linear_packed`]).
pub fn linear(
    x: &[f32],
    (m, k): (usize, usize),
    wt: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
) -> Result<Vec<f32>, KernelError> {
    let n = bias.len();
    check(wt.len() == n * k, || {
        format!("linear: x {m}×{k}, weight of {} is not {k}×{n}", wt.len())
    })?;
    linear_with(x, (m, k), wt, bias, residual, act)
}

/// [`linear`] with the weight packed once ([`PackedF32`], from PyTorch's `(out, in)`
/// layout), multiplied without the `gemm` crate's packing copy at each call (see
/// [`crate::packed_f32`]); the same sums as [`linear`] for 3 to 512 inputs, more than one row
/// and more than one output, within rounding otherwise. `Err` on a CPU without AVX2 and FMA;
/// it runs AVX2 whatever `SIMCASE_KERNELS` selects, so callers check
/// [`crate::packed_f32::available`].
///
/// The product writes the output first, into fresh memory, and the bias, residual and
/// activation follow tile by tile while each is in L1 (`packed_f32`'s `Store::Finish`):
/// nothing touches the output before the arithmetic does, and nothing passes over it after. A
/// large output is made in row bands, one task each; a smaller one, with more than one thread,
/// split by output columns.
pub fn linear_packed(
    x: &[f32],
    (m, k): (usize, usize),
    w: &PackedF32,
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
) -> Result<Vec<f32>, KernelError> {
    let n = bias.len();
    check_packed((m, k), (w.n(), w.k()), n)?;
    check_input(x, (m, k), n, residual)?;
    // The one condition the product checks that the shapes do not settle: refused here,
    // before any band is made.
    check(crate::Isa::Avx2.is_available(), || {
        "packed f32: this CPU lacks AVX2 or FMA".to_string()
    })?;
    let epilogue = |first: usize, rows: usize| Epilogue {
        bias,
        residual: residual.map(|r| &r[first * n..(first + rows) * n]),
        act,
    };
    let threads = rayon::current_num_threads();
    if m * n >= BANDED_OUTPUT {
        // Whole groups of the micro-kernels' rows: a band of 51 rows (1280 outputs) ended in
        // a group of 3, whose kernel keeps 6 sums in flight where 12 fill the FMA units
        // (`litemedsam` ran 1.7% of its samples in such part groups, Zen 3).
        let band_rows = (BAND / n.max(1))
            .clamp(16, 1024)
            .next_multiple_of(crate::packed_f32::NR);
        // SAFETY: the product overwrites (`Store::Finish`): it reads no element of a band
        // before writing it, and writes all of it when it returns `Ok`.
        return unsafe {
            crate::buffer::try_par_bands_uninit(m, n, band_rows, |first, band| {
                let r = band.len() / n.max(1);
                let a = MatRef::row_major(&x[first * k..(first + r) * k], r, k)?;
                let dst = MatMut::uninit_row_major(band, r, n)?;
                gemm_packed(dst, a, w, 0, Store::Finish(epilogue(first, r)))
            })
        };
    }
    let a = MatRef::row_major(x, m, k)?;
    // SAFETY: the products overwrite (`Store::Finish`): none reads an element before writing
    // it, and their column blocks cover the output when each returns `Ok`.
    unsafe {
        crate::buffer::try_new_matrix(m, n, |dst| {
            if threads > 1 && m * n * k > 1 << 16 {
                // By output columns, as [`linear`] splits.
                let wd = n.div_ceil(threads).next_multiple_of(16);
                use rayon::prelude::*;
                dst.split_cols(wd)
                    .into_par_iter()
                    .enumerate()
                    .try_for_each(|(i, blk)| {
                        gemm_packed(blk, a, w, i * wd, Store::Finish(epilogue(0, m)))
                    })
            } else {
                gemm_packed(dst, a, w, 0, Store::Finish(epilogue(0, m)))
            }
        })
    }
}

/// [`linear`]: the weight `k × n`, its length checked by the caller.
fn linear_with(
    x: &[f32],
    (m, k): (usize, usize),
    wt: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
) -> Result<Vec<f32>, KernelError> {
    let n = bias.len();
    let threads = rayon::current_num_threads();
    if m * n >= BANDED_OUTPUT {
        return banded(x, (m, k), wt, bias, residual, act);
    }
    let mut dst = prefill(x, (m, k), n, bias, residual)?;
    let a = MatRef::row_major(x, m, k)?;
    if threads > 1 && m * n * k > 1 << 16 {
        // Split by output columns: each thread multiplies all of `x` by its own columns of the
        // weight on one thread (at batch 1, gemm's own splitting of one product cost ~10% of
        // dinov2-s's time against this).
        let wd = n.div_ceil(threads).next_multiple_of(16);
        let blocks = MatMut::row_major(&mut dst, m, n)?.split_cols(wd);
        use rayon::prelude::*;
        blocks
            .into_par_iter()
            .enumerate()
            .map(|(i, blk)| mul(blk, a, wt, i * wd, (k, n)))
            .collect::<Result<(), KernelError>>()?;
    } else {
        mul(MatMut::row_major(&mut dst, m, n)?, a, wt, 0, (k, n))?;
    }
    activate(&mut dst, act);
    Ok(dst)
}

/// `dst += a · wt[.., c0 .. c0 + dst.cols()]` on the calling thread, `wt` being `k × n`.
fn mul(
    dst: MatMut<'_>,
    a: MatRef<'_>,
    wt: &[f32],
    c0: usize,
    (k, n): (usize, usize),
) -> Result<(), KernelError> {
    let b = MatRef::new(&wt[c0..], k, dst.cols(), n, 1)?;
    sgemm(dst, true, a, b, Threads::One)
}

/// Outputs of at least this many floats (4 MiB, past any core's L2) are made in row bands.
const BANDED_OUTPUT: usize = 1 << 20;

/// Floats of output a band aims at: 64K (256 KiB), so that a band stays in L2 from its fill
/// through the GEMM to its activation.
const BAND: usize = 1 << 16;

/// [`linear`] for a large output, one band of rows per task: each band is filled with the bias
/// (and residual), multiplied into and activated while it is in cache. Made as one product and
/// then activated, such an output (64 MiB at `litemedsam`'s first stage) went through memory
/// three times: once to fill, once to accumulate, once for the activation.
fn banded(
    x: &[f32],
    (m, k): (usize, usize),
    wt: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
) -> Result<Vec<f32>, KernelError> {
    let n = bias.len();
    check_input(x, (m, k), n, residual)?;
    let rows = (BAND / n.max(1)).clamp(16, 1024);
    let kern = crate::kernels();
    let finish = |first: usize, band: &mut [f32]| {
        let r = band.len() / n;
        let a = MatRef::row_major(&x[first * k..(first + r) * k], r, k)?;
        mul(MatMut::row_major(band, r, n)?, a, wt, 0, (k, n))?;
        if act != Act::None {
            kern.act_rows(band, act);
        }
        Ok(())
    };
    use crate::buffer::par_bands;
    match residual {
        Some(res) => par_bands(
            m,
            n,
            rows,
            |i| {
                bias.iter()
                    .zip(&res[i * n..(i + 1) * n])
                    .map(|(b, r)| b + r)
            },
            finish,
        ),
        None => par_bands(m, n, rows, |_| bias.iter().copied(), finish),
    }
}

/// [`linear`] with bf16 weights ([`PackedBf16`], `n × k`) and activations rounded to bf16,
/// summed in f32, on `path` (see [`crate::bf16`]). Bias, residual and activation stay f32.
pub fn linear_bf16(
    x: &[f32],
    (m, k): (usize, usize),
    w: &PackedBf16,
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    path: Bf16Path,
) -> Result<Vec<f32>, KernelError> {
    low_precision_linear(x, (m, k), (w.n(), w.k()), bias, residual, act, |dst| {
        gemm_bf16(path, dst, x, m, w, rayon::current_num_threads())
    })
}

/// [`linear`] with int8 weights ([`PackedI8`], per output channel) and activations quantised
/// per row at this call, summed in i32 (see [`crate::int8`]). Bias, residual and activation
/// stay f32.
pub fn linear_i8(
    x: &[f32],
    (m, k): (usize, usize),
    w: &PackedI8,
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    path: I8Path,
) -> Result<Vec<f32>, KernelError> {
    low_precision_linear(x, (m, k), (w.n(), w.k()), bias, residual, act, |dst| {
        gemm_i8(path, dst, x, m, w, rayon::current_num_threads())
    })
}

/// A bf16 or int8 linear layer (its weight `wn × wk`, packed): the shapes checked, the destination
/// pre-filled, `product` accumulating into it, the activation applied.
fn low_precision_linear(
    x: &[f32],
    (m, k): (usize, usize),
    (wn, wk): (usize, usize),
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    product: impl FnOnce(&mut [f32]) -> Result<(), KernelError>,
) -> Result<Vec<f32>, KernelError> {
    let n = bias.len();
    check_packed((m, k), (wn, wk), n)?;
    let mut dst = prefill(x, (m, k), n, bias, residual)?;
    product(&mut dst)?;
    activate(&mut dst, act);
    Ok(dst)
}

/// A packed weight (`wn × wk`, any precision) fits an `m × k` input and `n` biases.
fn check_packed(
    (m, k): (usize, usize),
    (wn, wk): (usize, usize),
    n: usize,
) -> Result<(), KernelError> {
    check(wn == n && wk == k, || {
        format!("linear: x {m}×{k}, packed weight {wn}×{wk}, bias {n}")
    })
}

/// The `m × n` destination of a linear layer, filled with the bias (plus the residual), after
/// checking the input's and the residual's shapes.
fn prefill(
    x: &[f32],
    (m, k): (usize, usize),
    n: usize,
    bias: &[f32],
    residual: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    check_input(x, (m, k), n, residual)?;
    Ok(match residual {
        Some(r) => crate::buffer::par_rows(m, n, |i| {
            bias.iter().zip(&r[i * n..(i + 1) * n]).map(|(b, x)| b + x)
        }),
        None => crate::buffer::par_rows(m, n, |_| bias.iter().copied()),
    })
}

/// `x` is `m × k` and `residual`, if any, `m × n`.
fn check_input(
    x: &[f32],
    (m, k): (usize, usize),
    n: usize,
    residual: Option<&[f32]>,
) -> Result<(), KernelError> {
    check(x.len() == m * k, || {
        format!("linear: input of {} is not {m}×{k}", x.len())
    })?;
    check(residual.is_none_or(|r| r.len() == m * n), || {
        format!("linear: residual is not {m}×{n}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::{bf16_path, Bf16Path};
    use crate::panels::{lcg, transpose};

    /// `act(x·wᵀ + b + r)` in f64 for each output.
    fn naive(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        r: &[f32],
        (m, n, k): (usize, usize, usize),
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                    .sum();
                out[i * n + j] = s + b[j] as f64 + r[i * n + j] as f64;
            }
        }
        out
    }

    /// Large enough to be split by output columns across threads (n not a multiple of the
    /// split width), small, and large enough to be made in row bands (the last band short):
    /// all give the plain product with bias and residual, and the activation of it.
    #[test]
    fn linear_split_banded_or_not_is_the_product_with_bias_and_residual() {
        for &(m, n, k) in &[(3, 5, 7), (257, 200, 96), (4100, 260, 24)] {
            let x = lcg(m * k, 1);
            let w = lcg(n * k, 2);
            let b = lcg(n, 3);
            let r = lcg(m * n, 4);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            let wt = transpose(&w, n, k);
            let got = pool
                .install(|| linear(&x, (m, k), &wt, &b, Some(&r), Act::None))
                .unwrap();
            for (g, want) in got.iter().zip(naive(&x, &w, &b, &r, (m, n, k))) {
                assert!(
                    (*g as f64 - want).abs() < 1e-4,
                    "{m}×{n}×{k}: {g} vs {want}"
                );
            }
            let gelu = pool
                .install(|| linear(&x, (m, k), &wt, &b, Some(&r), Act::Gelu))
                .unwrap();
            let mut want = got;
            activate(&mut want, Act::Gelu);
            assert!(gelu == want, "{m}×{n}×{k}: GELU of the product");
        }
        const { assert!(4100 * 260 >= BANDED_OUTPUT && 257 * 200 < BANDED_OUTPUT) };
    }

    /// The packed layer is [`linear`] bit for bit up to 512 inputs (one depth block), within
    /// rounding past them (the bias and residual are added after the sums instead of before),
    /// in all three ways a layer is made: small, split by columns across threads (n not a
    /// multiple of the split width), and in row bands; with the residual and GELU.
    #[test]
    fn packed_linear_is_linear() {
        if !crate::Isa::Avx2.is_available() {
            eprintln!("no AVX2 and FMA here: the packed f32 layer cannot run");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(m, n, k) in &[
            (3, 5, 7),
            (257, 200, 96),
            (4100, 260, 24),
            (700, 1600, 130),
            (257, 384, 1536),
            (1030, 1024, 520),
        ] {
            let (x, w, b, r) = (lcg(m * k, 1), lcg(n * k, 2), lcg(n, 3), lcg(m * n, 4));
            let wt = transpose(&w, n, k);
            let packed = PackedF32::pack(&w, n, k).unwrap();
            for act in [Act::None, Act::Gelu, Act::QuickGelu] {
                for res in [None, Some(&r[..])] {
                    let (want, got) = pool.install(|| {
                        let want = linear(&x, (m, k), &wt, &b, res, act).unwrap();
                        // A freed block of NaNs of the output's size, which malloc hands back
                        // once glibc's mmap threshold has risen past that size (after its first
                        // free): the banded packed layer writes into fresh memory, so an
                        // element it missed fails the comparison. (`packed_f32`'s tests fill
                        // the destination with NaNs themselves.)
                        drop(std::hint::black_box(vec![f32::NAN; m * n]));
                        (
                            want,
                            linear_packed(&x, (m, k), &packed, &b, res, act).unwrap(),
                        )
                    });
                    assert!(
                        got.iter().zip(&want).all(|(g, e)| if k <= 512 {
                            g.to_bits() == e.to_bits()
                        } else {
                            (g - e).abs() <= 1e-5 * (1.0 + e.abs())
                        }),
                        "{m}×{n}×{k} {act:?}, residual {}",
                        res.is_some()
                    );
                }
            }
        }
        const { assert!(700 * 1600 >= BANDED_OUTPUT && 1030 * 1024 >= BANDED_OUTPUT) };
        let packed = PackedF32::pack(&lcg(6, 1), 2, 3).unwrap();
        assert!(linear_packed(&lcg(6, 2), (2, 3), &packed, &[0.0; 3], None, Act::None).is_err());
    }

    /// The bf16 layer: the f32 layer of the bf16-rounded operands, bias and residual in f32.
    #[test]
    fn bf16_linear_is_the_linear_of_rounded_operands() {
        let (m, n, k) = (37, 70, 50);
        let round = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&a| crate::bf16::bf16_value(crate::bf16::bf16_bits(a)))
                .collect()
        };
        let (x, w, b, r) = (lcg(m * k, 5), lcg(n * k, 6), lcg(n, 7), lcg(m * n, 8));
        let packed = PackedBf16::pack(&w, n, k).unwrap();
        let want = naive(&round(&x), &round(&w), &b, &r, (m, n, k));
        let mut paths = vec![Bf16Path::Portable];
        paths.extend(bf16_path());
        for path in paths {
            let got = linear_bf16(&x, (m, k), &packed, &b, Some(&r), Act::None, path).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-4, "{path:?}: {g} vs {w}");
            }
        }
    }
}
