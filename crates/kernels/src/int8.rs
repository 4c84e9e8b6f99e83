//! int8 linear layers: weights quantised once per output channel (symmetric, i8), activations
//! quantised per row at each call (asymmetric, u8 with a zero point), products summed exactly
//! in i32 and scaled back to f32 — what `--embed-precision int8` runs. The AVX-512 path is one
//! `vpdpbusd` (AVX512_VNNI) per 16 outputs and 4 inputs; the portable path sums the same
//! integers, so the two agree exactly (integer sums do not depend on their order).
//!
//! For row `i` and output `j`: `x[i,c] ≈ sx[i]·(qx[i,c] − zx[i])` and `w[j,c] ≈ sw[j]·qw[j,c]`,
//! so `Σ_c x·w ≈ sx[i]·sw[j]·(Σ_c qx·qw − zx[i]·Σ_c qw[j,c])`; the column sums of `qw` are
//! kept with the weights.
//!
//! Layout. As [`crate::bf16`], with four inputs a word: panels of 16 output channels, for each
//! group of 4 inputs 16 words, word `j` holding `qw[16·panel + j][4g..4g + 4]` (zero past `n`
//! or `k`); an activation row is its u8 codes, 4 a word, broadcast to all lanes.

use crate::error::{check, KernelError};
use crate::panels::{for_panel_ranges, Out, PANEL};
use std::sync::OnceLock;

/// An `(out, in)` weight matrix quantised per output channel, in panels (see the module).
#[derive(Clone, Debug)]
pub struct PackedI8 {
    n: usize,
    k: usize,
    /// Groups of 4 inputs: `⌈k / 4⌉`.
    groups: usize,
    data: Vec<u32>,
    /// Per output channel: the scale back to f32.
    scale: Vec<f32>,
    /// Per output channel: `Σ_c qw[j,c]`.
    col_sum: Vec<i32>,
}

impl PackedI8 {
    /// Quantises and packs `w`, `n × k` row-major: each row scaled so that its largest
    /// magnitude is 127, rounded to nearest.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Result<Self, KernelError> {
        check(w.len() == n * k, || {
            format!("int8 pack: weight of {} is not {n}×{k}", w.len())
        })?;
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(PANEL);
        let mut q = vec![0i8; n * k];
        let mut scale = vec![0f32; n];
        let mut col_sum = vec![0i32; n];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 && max.is_finite() {
                max / 127.0
            } else {
                1.0
            };
            scale[j] = s;
            for (c, v) in row.iter().enumerate() {
                let code = (v / s).round().clamp(-127.0, 127.0) as i8;
                q[j * k + c] = code;
                col_sum[j] += code as i32;
            }
        }
        let mut data = vec![0u32; panels * groups * PANEL];
        for panel in 0..panels {
            for g in 0..groups {
                for l in 0..PANEL {
                    let j = panel * PANEL + l;
                    let mut word = [0u8; 4];
                    for (b, byte) in word.iter_mut().enumerate() {
                        let c = 4 * g + b;
                        if j < n && c < k {
                            *byte = q[j * k + c] as u8;
                        }
                    }
                    data[(panel * groups + g) * PANEL + l] = u32::from_le_bytes(word);
                }
            }
        }
        Ok(Self {
            n,
            k,
            groups,
            data,
            scale,
            col_sum,
        })
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

/// How an int8 product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8Path {
    /// `vpdpbusd` (AVX512_VNNI).
    Avx512Vnni,
    /// Plain Rust, the same integer sums.
    Portable,
}

/// The CPU features of the fast path.
const FEATURES: &[&str] = &["avx512f", "avx512bw", "avx512vnni"];

/// Whether this CPU has AVX512_VNNI (with AVX-512F and BW).
pub fn cpu_has_vnni() -> bool {
    crate::dispatch::cpu_has_all(FEATURES)
}

/// The int8 path of this process ([`crate::dispatch::packed_path`]): AVX512_VNNI, the
/// portable twin when `SIMCASE_KERNELS=portable` forces it, or `None`.
pub fn i8_path() -> Option<I8Path> {
    static PATH: OnceLock<Option<I8Path>> = OnceLock::new();
    *PATH.get_or_init(|| {
        crate::dispatch::packed_path(FEATURES).map(|fast| {
            if fast {
                I8Path::Avx512Vnni
            } else {
                I8Path::Portable
            }
        })
    })
}

/// The rows of `x` (`m × k`) as u8 codes, 4 a word (`⌈k/4⌉` words a row), with each row's
/// scale and zero point: the row's range (widened to hold 0) cut into 255 steps. Rows are
/// split across threads.
fn quantise_rows(x: &[f32], m: usize, k: usize) -> (Vec<u32>, Vec<f32>, Vec<i32>) {
    use rayon::prelude::*;
    let groups = k.div_ceil(4);
    let mut codes = vec![0u32; m * groups];
    let mut scale = vec![1f32; m];
    let mut zero = vec![0i32; m];
    codes
        .par_chunks_mut(groups)
        .zip(scale.par_iter_mut().zip(zero.par_iter_mut()))
        .zip(x.par_chunks(k))
        .with_min_len(16)
        .for_each(|((out, (sc, zp)), row)| {
            let (lo, hi) = row
                .iter()
                .fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            let s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            // Rounded half up (v + 0.5, truncated): every code is ≥ 0, and `as u8` saturates.
            let z = (-lo / s + 0.5) as u8 as f32;
            *sc = s;
            *zp = z as i32;
            let inv = 1.0 / s;
            let code = |v: f32| (v * inv + z + 0.5) as u8;
            let mut it = row.chunks_exact(4);
            for (word, four) in out.iter_mut().zip(&mut it) {
                *word = u32::from_le_bytes([
                    code(four[0]),
                    code(four[1]),
                    code(four[2]),
                    code(four[3]),
                ]);
            }
            let rest = it.remainder();
            if !rest.is_empty() {
                // Past k the weights are zero, so any code would do: the zero point.
                let mut b = [z as u8; 4];
                for (byte, &v) in b.iter_mut().zip(rest) {
                    *byte = code(v);
                }
                out[groups - 1] = u32::from_le_bytes(b);
            }
        });
    (codes, scale, zero)
}

/// `dst += x · wᵀ` through int8: `x` is `m × k` row-major (quantised per row here), `dst`
/// `m × n` row-major, pre-filled by the caller. Output panels are split across `threads`.
pub fn gemm_i8(
    path: I8Path,
    dst: &mut [f32],
    x: &[f32],
    m: usize,
    w: &PackedI8,
    threads: usize,
) -> Result<(), KernelError> {
    let (n, k) = (w.n, w.k);
    check(x.len() == m * k, || {
        format!("int8 gemm: input of {} is not {m}×{k}", x.len())
    })?;
    check(dst.len() == m * n, || {
        format!("int8 gemm: output of {} is not {m}×{n}", dst.len())
    })?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (codes, sx, zx) = quantise_rows(x, m, k);
    let rows = Rows {
        codes: &codes,
        scale: &sx,
        zero: &zx,
        m,
    };
    for_panel_ranges(
        dst,
        (m, n),
        w.panels(),
        threads,
        |first, last, out| match path {
            #[cfg(target_arch = "x86_64")]
            I8Path::Avx512Vnni if cpu_has_vnni() => {
                assert!(codes.len() >= m * w.groups && last <= w.panels() && out.n == w.n);
                // SAFETY: the CPU has AVX-512F/BW and AVX512_VNNI (checked just above); `codes`
                // holds m rows of `groups` words and the panels lie in `w` (asserted).
                unsafe { avx512::panels((&rows, w), m, first, last, out) }
            }
            _ => portable_panels(&rows, w, first, last, out),
        },
    );
    Ok(())
}

/// The quantised rows of one call.
struct Rows<'a> {
    codes: &'a [u32],
    scale: &'a [f32],
    zero: &'a [i32],
    m: usize,
}

impl Rows<'_> {
    /// Output `(i, j)` from its integer sum.
    #[inline(always)]
    fn value(&self, w: &PackedI8, i: usize, j: usize, sum: i32) -> f32 {
        let exact = sum - self.zero[i] * w.col_sum[j];
        self.scale[i] * w.scale[j] * exact as f32
    }
}

/// Panels `first..last` for every row, in plain Rust.
fn portable_panels(rows: &Rows, w: &PackedI8, first: usize, last: usize, out: &mut Out) {
    let groups = w.groups;
    for panel in first..last {
        let pw = &w.data[panel * groups * PANEL..(panel + 1) * groups * PANEL];
        let live = (w.n - panel * PANEL).min(PANEL);
        for i in 0..rows.m {
            let mut acc = [0i32; PANEL];
            for (&a, b) in rows.codes[i * groups..(i + 1) * groups]
                .iter()
                .zip(pw.chunks_exact(PANEL))
            {
                let a = a.to_le_bytes();
                for (s, &bw) in acc.iter_mut().zip(b) {
                    let b = bw.to_le_bytes();
                    for t in 0..4 {
                        *s += a[t] as i32 * (b[t] as i8) as i32;
                    }
                }
            }
            for (l, &s) in acc.iter().enumerate().take(live) {
                let j = panel * PANEL + l;
                *out.at(i, j) += rows.value(w, i, j, s);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedI8, Rows, PANEL};
    use crate::panels::Out;
    use std::arch::x86_64::*;

    crate::panels::register_tiles!("avx512f,avx512bw,avx512vnni", (&Rows, &PackedI8));

    /// Rows `i..i+R` × panels `panel..panel+P`: integer sums in registers, one `vpdpbusd`
    /// per row, panel and group of 4 inputs; then scaled and added to `out` (masked past n).
    ///
    /// # Safety
    /// AVX-512F/BW and AVX512_VNNI; `i + R ≤ m`; `panel + P ≤` the panel count.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    // Row and panel indices address the register tile, the output and the inputs together;
    // with constant bounds the loops unroll and the tile stays in registers.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const P: usize>(
        (rows, w): (&Rows, &PackedI8),
        panel: usize,
        i: usize,
        out: &mut Out,
    ) {
        let groups = w.groups;
        let n = w.n;
        let mut acc = [[_mm512_setzero_si512(); P]; R];
        let wp = w.data.as_ptr();
        let xp = rows.codes.as_ptr();
        for g in 0..groups {
            let mut b = [_mm512_setzero_si512(); P];
            for (q, bq) in b.iter_mut().enumerate() {
                // SAFETY: panel + q < panels and g < groups: 16 words inside `w.data`.
                *bq = unsafe {
                    _mm512_loadu_si512(wp.add(((panel + q) * groups + g) * PANEL).cast())
                };
            }
            for r in 0..R {
                // SAFETY: row i + r < m, g < groups: inside `codes`.
                let a = _mm512_set1_epi32(unsafe { *xp.add((i + r) * groups + g) } as i32);
                for q in 0..P {
                    acc[r][q] = _mm512_dpbusd_epi32(acc[r][q], a, b[q]);
                }
            }
        }
        for r in 0..R {
            let row = i + r;
            let sx = _mm512_set1_ps(rows.scale[row]);
            let zx = _mm512_set1_epi32(rows.zero[row]);
            for q in 0..P {
                let c0 = (panel + q) * PANEL;
                let live = n.saturating_sub(c0).min(PANEL);
                if live == 0 {
                    continue;
                }
                let mask: u16 = if live == PANEL {
                    u16::MAX
                } else {
                    (1u16 << live) - 1
                };
                // SAFETY: the mask keeps lanes at columns < n; row < m.
                unsafe {
                    let cs = _mm512_maskz_loadu_epi32(mask, w.col_sum.as_ptr().add(c0));
                    let sw = _mm512_maskz_loadu_ps(mask, w.scale.as_ptr().add(c0));
                    let exact = _mm512_sub_epi32(acc[r][q], _mm512_mullo_epi32(zx, cs));
                    let v = _mm512_mul_ps(_mm512_mul_ps(sx, sw), _mm512_cvtepi32_ps(exact));
                    let dst = out.ptr.add(row * n + c0);
                    let old = _mm512_maskz_loadu_ps(mask, dst);
                    _mm512_mask_storeu_ps(dst, mask, _mm512_add_ps(old, v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::lcg;

    /// The int8 product is close to the f32 one (within the quantisation steps).
    #[test]
    fn portable_product_approximates_the_f32_product() {
        let (m, n, k) = (5, 21, 67);
        let x = lcg(m * k, 1);
        let w = lcg(n * k, 2);
        let packed = PackedI8::pack(&w, n, k).unwrap();
        let mut dst = vec![0f32; m * n];
        gemm_i8(I8Path::Portable, &mut dst, &x, m, &packed, 2).unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum();
                // Each product errs by at most half a step of each operand.
                let bound = k as f32 * (1.0 / 255.0 + 0.5 / 127.0) * 1.2;
                assert!(
                    (dst[i * n + j] - want).abs() < bound,
                    "({i},{j}): {} vs {want}",
                    dst[i * n + j]
                );
            }
        }
    }

    /// The AVX512_VNNI path equals the portable path on every shape class: the same integer
    /// sums, the same scaling.
    #[test]
    fn avx512_vnni_equals_portable() {
        if !cpu_has_vnni() {
            println!("skipped: this CPU has no AVX512_VNNI");
            return;
        }
        crate::panels::fast_equals_portable(
            |w, n, k| PackedI8::pack(w, n, k).unwrap(),
            |fast, dst, x, m, w, threads| {
                let path = if fast {
                    I8Path::Avx512Vnni
                } else {
                    I8Path::Portable
                };
                gemm_i8(path, dst, x, m, w, threads).unwrap()
            },
        );
    }
}
