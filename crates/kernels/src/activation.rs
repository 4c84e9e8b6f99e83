//! Activations: exact (erf) GELU, QuickGELU, ReLU, ReLU6, and the branch-free `erf` and `exp`
//! approximations behind them (and behind the softmax), written so that they vectorise. The
//! AVX2 and AVX-512 paths fuse their multiply-adds (`FMA`), the portable path does not: they
//! agree within rounding, and each with the same code run with or without `mul_add`, bit for
//! bit (tests).

use crate::error::{check, KernelError};
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
const TASK: usize = 16384;

/// The activation fused after a convolution or linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Identity.
    None,
    /// Exact (erf) GELU.
    Gelu,
    /// `min(max(x, 0), 6)`, as EfficientNet-Lite.
    Relu6,
    /// `x·σ(1.702x)`, as OpenAI CLIP.
    QuickGelu,
    /// `max(x, 0)`.
    Relu,
}

/// `a·b + c`: with `FMA`, one fused multiply-add ([`f32::mul_add`], rounded once: one
/// instruction on the AVX2 and AVX-512 paths, which are compiled with FMA); without, a multiply
/// then an add, as the portable path does (it runs on CPUs without FMA, where `mul_add` is a
/// call into libm per element: 25x slower GELU on Zen 3).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Eigen's `generic_fast_erf_float` rational approximation: a few ulp from libm's erf, and
/// branch-free, so the loop vectorises.
///
/// Both polynomials (in `x²`) are evaluated by Estrin's scheme, not Horner's. A GELU loop is
/// bound by the latency of one element's chain of operations, not by their number: the
/// out-of-order window holds only a few elements' chains at once. Horner's rule made the
/// numerator's chain 13 dependent operations long (`x²`, then a multiply and an add per
/// coefficient); Estrin's makes it 6, for two more operations. With `FMA` each multiply-add
/// is fused (`madd`), which shortens the chain again: GELU 0.61 → 0.46 ns an element on one
/// Zen 3 core. Called with `FMA` outside code compiled for FMA, each `mul_add` is a call into
/// libm: the kernel tables are the way to run it.
#[inline(always)]
pub fn erf_fast<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let t = x * x;
    let t2 = t * t;
    let t4 = t2 * t2;
    let m = madd::<FMA>;
    let p01 = m(t, -2.954_6e-3, -1.609_603_3e-2);
    let p23 = m(t, -5.692_506_4e-5, -7.349_906e-4);
    let p45 = m(t, 2.770_681_4e-8, -2.101_024e-6);
    let p = m(t4, m(t2, -2.726_142_3e-10, p45), m(t2, p23, p01));
    let q01 = m(t, -7.373_329e-3, -1.426_474e-2);
    let q23 = m(t, -2.133_740_6e-4, -1.682_827e-3);
    let q = m(t4, -1.456_607_2e-5, m(t2, q23, q01));
    x * p / q
}

/// Cephes-style `exp`: 2^n · poly(r), branch-free so it vectorises. The polynomial is
/// evaluated by Estrin's scheme, and with `FMA` the reduction `r = x − n·ln 2` (ln 2 in two
/// parts) and the polynomial's steps are fused, for the reasons given at [`erf_fast`].
///
/// Two steps left the chain that bounds a softmax's loop: `1 + r` is added beside the
/// polynomial (`1 + r + r²·p` as one multiply-add) instead of after it, and 2^n goes into the
/// exponent field by an integer add instead of a multiply by 2^n. A softmax over 24 rows of
/// 257 in L1 ran 0.63 → 0.57 ns an element on one Zen 3 core. The clamp keeps `n` in
/// −125..=127, so the polynomial's exponent field (126 or 127) plus `n` stays a normal float's.
#[inline(always)]
pub fn exp_fast<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-86.5, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let m = madd::<FMA>;
    let r = m(n, -1.428_606_8e-6, m(n, -0.693_145_75, x));
    let r2 = r * r;
    let r4 = r2 * r2;
    let p01 = m(r, 1.666_666_5e-1, 5e-1);
    let p23 = m(r, 8.333_452e-3, 4.166_579_6e-2);
    let p45 = m(r, 1.987_569_1e-4, 1.398_199_9e-3);
    let p = m(r4, p45, m(r2, p23, p01));
    let e = m(p, r2, r + 1.0);
    // n as an integer from n's bits: adding 1.5·2^23 puts it (|n| ≤ 127 here) in the low bits
    // of the mantissa. This stays in vector registers, where `n as i32` (a saturating cast)
    // was done one lane at a time and made softmax 3x slower.
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    f32::from_bits(e.to_bits().wrapping_add(n_bits << 23))
}

/// The row kernel: `x += bias` per row of `bias.len()` (the whole slice is one row without a
/// bias), then exact GELU (with fused multiply-adds on a path with `FMA`).
#[inline(always)]
pub(crate) fn gelu_rows<const FMA: bool>(x: &mut [f32], bias: Option<&[f32]>) {
    let n = bias.map_or(x.len(), |b| b.len());
    for row in x.chunks_exact_mut(n) {
        if let Some(b) = bias {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
        for v in row.iter_mut() {
            let erf = erf_fast::<FMA>(*v * std::f32::consts::FRAC_1_SQRT_2);
            *v = if FMA {
                // ½x·(1 + erf) as ½x + ½x·erf.
                let h = 0.5 * *v;
                h.mul_add(erf, h)
            } else {
                0.5 * *v * (1.0 + erf)
            };
        }
    }
}

/// The row kernel for every activation.
#[inline(always)]
pub(crate) fn act_rows<const FMA: bool>(x: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::Gelu => {
            if !x.is_empty() {
                gelu_rows::<FMA>(x, None)
            }
        }
        Act::Relu6 => x.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Act::QuickGelu => x
            .iter_mut()
            .for_each(|v| *v /= 1.0 + exp_fast::<FMA>(-1.702 * *v)),
        Act::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// `act` in place, split across threads.
pub fn activate(x: &mut [f32], act: Act) {
    if act == Act::None {
        return;
    }
    let k = crate::kernels();
    x.par_chunks_mut(TASK).for_each(|c| k.act_rows(c, act));
}

/// `x = gelu(x + y)` in place, exact GELU; `y` is a bias (as long as the last dimension,
/// which must divide `x`) or a tensor as long as `x` (a residual).
pub fn gelu_add(x: &mut [f32], y: &[f32]) -> Result<(), KernelError> {
    let n = y.len();
    let k = crate::kernels();
    if n == x.len() {
        // A same-shape addend (residual): split both alike.
        x.par_chunks_mut(TASK)
            .zip(y.par_chunks(TASK))
            .for_each(|(c, y)| k.gelu_rows(c, Some(y)));
        return Ok(());
    }
    check(n > 0 && x.len().is_multiple_of(n), || {
        format!(
            "gelu: bias length {n} does not divide the input's {}",
            x.len()
        )
    })?;
    let rows_per_task = (TASK / n).max(1);
    x.par_chunks_mut(n * rows_per_task)
        .for_each(|c| k.gelu_rows(c, Some(y)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::lcg;
    use crate::{Isa, Kernels};

    /// The AVX2 and AVX-512 tables run the `FMA` form of GELU, QuickGELU and softmax: the same
    /// generic code here, compiled for the baseline, rounds each `mul_add` once through libm,
    /// and gives the same bits. (The portable table is the other form itself.)
    #[test]
    fn simd_paths_are_the_fused_form_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for isa in [Isa::Avx2, Isa::Avx512] {
            let Some(k) = Kernels::for_isa(isa) else {
                eprintln!("skipped: CPU lacks the {isa} path");
                continue;
            };
            for (n, rows, seed) in [(1, 1, 1), (7, 3, 2), (49, 5, 3), (196, 2, 4), (385, 2, 5)] {
                // Inputs over ±12, and a few at ±100: GELU's saturated tails, and exp's clamps
                // (QuickGELU's argument reaches ±170, softmax's −200).
                let mut x: Vec<f32> = lcg(n * rows, seed).iter().map(|v| 12.0 * v).collect();
                for v in x.iter_mut().step_by(5) {
                    *v = v.signum() * 100.0;
                }
                let bias = lcg(n, seed + 10);
                let (mut got, mut want) = (x.clone(), x.clone());
                k.gelu_rows(&mut got, Some(&bias));
                gelu_rows::<true>(&mut want, Some(&bias));
                assert_eq!(bits(&got), bits(&want), "{isa} gelu {rows}×{n}");
                let (mut got, mut want) = (x.clone(), x.clone());
                k.act_rows(&mut got, Act::QuickGelu);
                act_rows::<true>(&mut want, Act::QuickGelu);
                assert_eq!(bits(&got), bits(&want), "{isa} quick gelu {rows}×{n}");
                let b = lcg(n * rows, seed + 20);
                let (mut got, mut want) = (x.clone(), x.clone());
                k.softmax_rows(&mut got, n, Some(&b));
                crate::softmax::softmax_rows::<true>(&mut want, n, Some(&b));
                assert_eq!(bits(&got), bits(&want), "{isa} softmax {rows}×{n}");
            }
        }
    }
}
