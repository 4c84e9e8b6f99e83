//! bf16 linear layers: weights packed once as bf16 pairs, activations rounded to bf16 per
//! call, products summed in f32 — what `--precision bf16` runs. The AVX-512 path is one
//! `vdpbf16ps` per 16 outputs and 2 inputs (AVX512_BF16: twice the multiply-adds of an f32
//! FMA per instruction); the portable path does the same arithmetic in the same order
//! (per output: the odd element's product, then the even one's, each added to the f32 sum),
//! so the two agree to the last bit on normal numbers, which a test checks.
//!
//! Layout. Weights `w` (`n × k`, PyTorch's `(out, in)`) are cut into panels of 16 output
//! channels; a panel holds, for each input pair `p`, 16 words, word `j` carrying
//! `w[16·panel + j][2p]` in its low half and `w[…][2p + 1]` in its high half (zero past `n`
//! or `k`). An activation row is the same pairs, one word each, broadcast to all 16 lanes.

use crate::error::{check, KernelError};
use crate::panels::{for_panel_ranges, Out, PANEL};
use std::sync::OnceLock;

/// The bf16 bits nearest to `x` (round to nearest, ties to even; NaN stays NaN, quieted;
/// a subnormal becomes zero of its sign), bit for bit what `vcvtneps2bf16` gives.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    if x.is_subnormal() {
        return (b >> 16) as u16 & 0x8000;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to bf16 ([`bf16_bits`] on each value) into `out`, of the same length: 16 at a
/// time by `vcvtneps2bf16` where the CPU has AVX512_BF16.
fn round_row(x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len(), "bf16 round: lengths");
    #[cfg(target_arch = "x86_64")]
    if bf16_path() == Some(Bf16Path::Avx512Bf16) {
        // SAFETY: that path is chosen only where the CPU has AVX-512F and AVX512_BF16; the
        // lengths are equal (asserted).
        return unsafe { avx512::round_row(x, out) };
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = bf16_bits(v);
    }
}

/// The f32 value of bf16 bits (exact).
#[inline(always)]
pub fn bf16_value(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Two bf16 values in one word: `lo` in bits 0–15, `hi` in 16–31.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16
}

/// An `(out, in)` weight matrix as bf16 pairs in panels of 16 output channels (see the
/// module's comment).
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// Input pairs: `⌈k / 2⌉`.
    pairs: usize,
    data: Vec<u32>,
}

impl PackedBf16 {
    /// Packs `w`, `n × k` row-major, rounding each weight to bf16.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Result<Self, KernelError> {
        check(w.len() == n * k, || {
            format!("bf16 pack: weight of {} is not {n}×{k}", w.len())
        })?;
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0u32; panels * pairs * PANEL];
        let at = |r: usize, c: usize| if r < n && c < k { w[r * k + c] } else { 0.0 };
        for panel in 0..panels {
            for p in 0..pairs {
                for j in 0..PANEL {
                    let r = panel * PANEL + j;
                    data[(panel * pairs + p) * PANEL + j] = pair(at(r, 2 * p), at(r, 2 * p + 1));
                }
            }
        }
        Ok(Self { n, k, pairs, data })
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs per output.
    pub fn k(&self) -> usize {
        self.k
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }
}

/// How a bf16 product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Path {
    /// `vdpbf16ps` (AVX512_BF16).
    Avx512Bf16,
    /// Plain Rust, the same arithmetic: the reference the fast path is tested against, and
    /// what `SIMCASE_KERNELS=portable` runs.
    Portable,
}

/// The CPU features of the fast path.
const FEATURES: &[&str] = &["avx512f", "avx512bf16"];

/// Whether this CPU has AVX512_BF16 (with AVX-512F).
pub fn cpu_has_bf16() -> bool {
    crate::dispatch::cpu_has_all(FEATURES)
}

/// The bf16 path of this process ([`crate::dispatch::packed_path`]): AVX512_BF16, the
/// portable twin when `SIMCASE_KERNELS=portable` forces it, or `None` (the caller stays at
/// f32 and says so).
pub fn bf16_path() -> Option<Bf16Path> {
    static PATH: OnceLock<Option<Bf16Path>> = OnceLock::new();
    *PATH.get_or_init(|| {
        crate::dispatch::packed_path(FEATURES).map(|fast| {
            if fast {
                Bf16Path::Avx512Bf16
            } else {
                Bf16Path::Portable
            }
        })
    })
}

/// The rows of `x` (`m × k`) as bf16 pairs, `⌈k/2⌉` words a row (the last word's high half
/// zero when `k` is odd), on the calling thread: 16 values an instruction where the CPU has
/// AVX512_BF16. For dinov2-s's widest input at batch 1 that takes about 0.1 ms, where
/// splitting the rows across threads, one value at a time, took twice as long (Zen 4,
/// in-process A/B: 31 against 62 µs a call on average, about 4% of a bf16 image).
fn activation_pairs(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    let pairs = k.div_ceil(2);
    let mut out = vec![0u32; m * pairs];
    let even = k & !1;
    for (o, row) in out
        .chunks_exact_mut(pairs.max(1))
        .zip(x.chunks_exact(k.max(1)))
    {
        // A word holds elements 2p (low half) and 2p + 1 (high half): on a little-endian
        // machine, the row's bf16 values in order.
        if cfg!(target_endian = "little") {
            // SAFETY: u16 has no invalid bit patterns and a smaller alignment than u32, so
            // the words are exactly 2·pairs u16s (nothing falls in the prefix or suffix).
            let (_, halves, _) = unsafe { o.align_to_mut::<u16>() };
            round_row(&row[..even], &mut halves[..even]);
        } else {
            for (w, two) in o.iter_mut().zip(row.chunks_exact(2)) {
                *w = pair(two[0], two[1]);
            }
        }
        if even < k {
            o[pairs - 1] = pair(row[even], 0.0);
        }
    }
    out
}

/// `dst += x · wᵀ` in bf16 with f32 sums: `x` is `m × k` row-major, `dst` `m × n` row-major
/// (pre-filled by the caller: bias, residual). Output panels are split across `threads`
/// rayon threads.
pub fn gemm_bf16(
    path: Bf16Path,
    dst: &mut [f32],
    x: &[f32],
    m: usize,
    w: &PackedBf16,
    threads: usize,
) -> Result<(), KernelError> {
    let (n, k) = (w.n, w.k);
    check(x.len() == m * k, || {
        format!("bf16 gemm: input of {} is not {m}×{k}", x.len())
    })?;
    check(dst.len() == m * n, || {
        format!("bf16 gemm: output of {} is not {m}×{n}", dst.len())
    })?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let xa = activation_pairs(x, m, k);
    for_panel_ranges(
        dst,
        (m, n),
        w.panels(),
        threads,
        |first, last, out| match path {
            #[cfg(target_arch = "x86_64")]
            Bf16Path::Avx512Bf16 if cpu_has_bf16() => {
                assert!(xa.len() >= m * w.pairs && last <= w.panels() && out.n == w.n);
                // SAFETY: the CPU has AVX-512F and AVX512_BF16 (checked just above); `xa` holds m
                // rows of `pairs` words and the panels lie in `w` (asserted).
                unsafe { avx512::panels((&xa, w), m, first, last, out) }
            }
            _ => portable_panels(&xa, m, w, first, last, out),
        },
    );
    Ok(())
}

/// Panels `first..last` of `w` for every row, in plain Rust: per output, over the pairs in
/// order, the high (odd) product added, then the low (even) one, as `vdpbf16ps` does (the
/// products of two bf16 values are exact in f32, so a multiply then an add is that
/// instruction's arithmetic). Sixteen outputs at a time, which the compiler vectorises.
fn portable_panels(xa: &[u32], m: usize, w: &PackedBf16, first: usize, last: usize, out: &mut Out) {
    let pairs = w.pairs;
    let hi = |v: u32| f32::from_bits(v & 0xFFFF_0000);
    let lo = |v: u32| f32::from_bits(v << 16);
    for panel in first..last {
        let pw = &w.data[panel * pairs * PANEL..(panel + 1) * pairs * PANEL];
        let live = (w.n - panel * PANEL).min(PANEL);
        for i in 0..m {
            let mut acc = [0f32; PANEL];
            for (j, a) in acc.iter_mut().enumerate().take(live) {
                *a = *out.at(i, panel * PANEL + j);
            }
            for (&a, b) in xa[i * pairs..(i + 1) * pairs]
                .iter()
                .zip(pw.chunks_exact(PANEL))
            {
                let (ah, al) = (hi(a), lo(a));
                for (s, &bj) in acc.iter_mut().zip(b) {
                    *s += ah * hi(bj);
                    *s += al * lo(bj);
                }
            }
            for (j, a) in acc.iter().enumerate().take(live) {
                *out.at(i, panel * PANEL + j) = *a;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedBf16, PANEL};
    use crate::panels::Out;
    use std::arch::x86_64::*;

    crate::panels::register_tiles!("avx512f,avx512bf16", (&[u32], &PackedBf16));

    /// [`super::round_row`], 16 values per `vcvtneps2bf16`, the tail one by one.
    ///
    /// # Safety
    /// AVX-512F and AVX512_BF16; `out.len() == x.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_row(x: &[f32], out: &mut [u16]) {
        let mut i = 0;
        while i + 16 <= x.len() {
            // SAFETY: i + 16 ≤ the length of both.
            unsafe {
                let v = _mm512_loadu_ps(x.as_ptr().add(i));
                let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), h);
            }
            i += 16;
        }
        for (o, &v) in out[i..].iter_mut().zip(&x[i..]) {
            *o = super::bf16_bits(v);
        }
    }

    /// Rows `i..i+R` × panels `panel..panel+P`: sums loaded from `out` (masked past `n`),
    /// one `vdpbf16ps` per row, panel and input pair, stored back.
    ///
    /// # Safety
    /// AVX-512F and AVX512_BF16; `i + R ≤ m`; `panel + P ≤` the panel count.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    // Row and panel indices address the register tile, the output and the inputs together;
    // with constant bounds the loops unroll and the tile stays in registers.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const P: usize>(
        (xa, w): (&[u32], &PackedBf16),
        panel: usize,
        i: usize,
        out: &mut Out,
    ) {
        let pairs = w.pairs;
        let n = w.n;
        let mut mask = [0u16; P];
        for (q, m) in mask.iter_mut().enumerate() {
            let c0 = (panel + q) * PANEL;
            let live = n.saturating_sub(c0).min(PANEL);
            *m = if live == PANEL {
                u16::MAX
            } else {
                (1u16 << live) - 1
            };
        }
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for r in 0..R {
            for q in 0..P {
                let c0 = (panel + q) * PANEL;
                if mask[q] != 0 {
                    // SAFETY: row i + r < m; the mask keeps lanes at columns < n.
                    acc[r][q] =
                        unsafe { _mm512_maskz_loadu_ps(mask[q], out.ptr.add((i + r) * n + c0)) };
                }
            }
        }
        let wp = w.data.as_ptr();
        let xp = xa.as_ptr();
        for p in 0..pairs {
            let mut b = [_mm512_setzero_si512(); P];
            for (q, bq) in b.iter_mut().enumerate() {
                // SAFETY: panel + q < panels and p < pairs: 16 words inside `w.data`.
                *bq =
                    unsafe { _mm512_loadu_si512(wp.add(((panel + q) * pairs + p) * PANEL).cast()) };
            }
            for r in 0..R {
                // SAFETY: row i + r < m, p < pairs: inside `xa`.
                let a = _mm512_set1_epi32(unsafe { *xp.add((i + r) * pairs + p) } as i32);
                for q in 0..P {
                    acc[r][q] = _mm512_dpbf16_ps(
                        acc[r][q],
                        std::mem::transmute::<__m512i, __m512bh>(a),
                        std::mem::transmute::<__m512i, __m512bh>(b[q]),
                    );
                }
            }
        }
        for r in 0..R {
            for q in 0..P {
                let c0 = (panel + q) * PANEL;
                if mask[q] != 0 {
                    // SAFETY: as for the loads.
                    unsafe {
                        _mm512_mask_storeu_ps(out.ptr.add((i + r) * n + c0), mask[q], acc[r][q])
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::lcg;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: to the even one.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(bf16_bits(f32::INFINITY)), f32::INFINITY);
    }

    /// The vector rounding (`vcvtneps2bf16`, where this CPU has it) gives [`bf16_bits`]'s bits
    /// on every kind of value: ties, subnormals (to zero), NaNs (quieted, payload kept),
    /// infinities, values that round up to infinity, and random bit patterns.
    #[test]
    fn vector_rounding_is_bf16_bits() {
        let mut x = vec![
            0.0,
            -0.0,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -(1.0 + 3.0 / 256.0),
            f32::MIN_POSITIVE,
            f32::MIN_POSITIVE / 2.0,
            -1e-40,
            f32::from_bits(1),
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::from_bits(0xFFC1_2345),
        ];
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        x.extend((0..4093).map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f32::from_bits((s >> 32) as u32)
        }));
        if !cpu_has_bf16() {
            eprintln!("no AVX512_BF16 here: only the portable rounding is exercised");
        }
        let mut got = vec![0u16; x.len()];
        round_row(&x, &mut got);
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            assert_eq!(g, bf16_bits(v), "value {i}: {v:e} ({:#010x})", v.to_bits());
        }
    }

    /// The portable path against f64 sums of the bf16-rounded operands.
    #[test]
    fn portable_product_is_the_bf16_product() {
        let (m, n, k) = (5, 21, 13);
        let x = lcg(m * k, 1);
        let w = lcg(n * k, 2);
        let packed = PackedBf16::pack(&w, n, k).unwrap();
        let mut dst = lcg(m * n, 3);
        let before = dst.clone();
        gemm_bf16(Bf16Path::Portable, &mut dst, &x, m, &packed, 2).unwrap();
        let r = |v: f32| bf16_value(bf16_bits(v)) as f64;
        for i in 0..m {
            for j in 0..n {
                let want: f64 = before[i * n + j] as f64
                    + (0..k)
                        .map(|c| r(x[i * k + c]) * r(w[j * k + c]))
                        .sum::<f64>();
                assert!((dst[i * n + j] as f64 - want).abs() < 1e-5, "({i},{j})");
            }
        }
    }

    /// The AVX512_BF16 path equals the portable path, bit for bit, on every shape class.
    #[test]
    fn avx512_bf16_equals_portable() {
        if !cpu_has_bf16() {
            println!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        crate::panels::fast_equals_portable(
            |w, n, k| PackedBf16::pack(w, n, k).unwrap(),
            |fast, dst, x, m, w, threads| {
                let path = if fast {
                    Bf16Path::Avx512Bf16
                } else {
                    Bf16Path::Portable
                };
                gemm_bf16(path, dst, x, m, w, threads).unwrap()
            },
        );
    }

    #[test]
    fn shapes_that_do_not_chain_are_errors() {
        let p = PackedBf16::pack(&[0.0; 6], 2, 3).unwrap();
        let mut d = vec![0.0; 4];
        assert!(gemm_bf16(Bf16Path::Portable, &mut d, &[0.0; 5], 2, &p, 1).is_err());
        assert!(PackedBf16::pack(&[0.0; 5], 2, 3).is_err());
    }
}
