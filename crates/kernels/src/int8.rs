//! int8 linear layers: weights quantised once per output channel (symmetric, i8), activations
//! quantised per row at each call (asymmetric, u8 with a zero point), products summed exactly
//! in i32 and scaled back to f32 — what `--embed-precision int8` runs. The AVX-512 path is one
//! `vpdpbusd` (AVX512_VNNI) per 16 outputs and 4 inputs. The AVX2 path (every x86-64-v3 CPU,
//! AMD Zen 2/3 included) widens the codes to i16 and sums pairs with `vpmaddwd`, which cannot
//! saturate (`vpmaddubsw`, the usual AVX2 trick, can: two u8·i8 products overflow i16). The
//! portable path sums the same integers, so all three agree exactly (integer sums do not
//! depend on their order).
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
    /// The AVX2 layout, made at the first AVX2 product (see [`PackedI8::widened`]).
    wide: OnceLock<Vec<u32>>,
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
            wide: OnceLock::new(),
        })
    }

    /// The codes widened to i16 for `vpmaddwd`, made once: for each panel and group of 4
    /// inputs, 4 × 8 words — outputs 0–7 as (input 0, input 2) pairs, then (1, 3), then the
    /// same for outputs 8–15. Twice the bytes of `data`, and no unpacking in the inner loop.
    fn widened(&self) -> &[u32] {
        self.wide.get_or_init(|| {
            let mut out = Vec::with_capacity(2 * self.data.len());
            for words in self.data.chunks_exact(PANEL) {
                for half in words.chunks_exact(8) {
                    for pick in [[0, 2], [1, 3]] {
                        out.extend(half.iter().map(|w| {
                            let b = w.to_le_bytes();
                            let lo = b[pick[0]] as i8 as i16 as u16 as u32;
                            let hi = b[pick[1]] as i8 as i16 as u16 as u32;
                            lo | hi << 16
                        }));
                    }
                }
            }
            out
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
    /// `vpmaddwd` on codes widened to i16 (AVX2).
    Avx2,
    /// Plain Rust, the same integer sums.
    Portable,
}

/// The CPU features of the fast path.
const FEATURES: &[&str] = &["avx512f", "avx512bw", "avx512vnni"];

/// Whether this CPU has AVX512_VNNI (with AVX-512F and BW).
pub fn cpu_has_vnni() -> bool {
    crate::dispatch::cpu_has_all(FEATURES)
}

/// The int8 path of this process: AVX512_VNNI when the AVX-512 kernels are selected and the
/// CPU has it ([`crate::dispatch::packed_path`]); else AVX2 when the selected kernels are AVX2
/// or AVX-512 (`SIMCASE_KERNELS=avx2` forces it); the portable twin when
/// `SIMCASE_KERNELS=portable` forces it; `None` on a CPU without AVX2.
pub fn i8_path() -> Option<I8Path> {
    static PATH: OnceLock<Option<I8Path>> = OnceLock::new();
    *PATH.get_or_init(|| match crate::dispatch::packed_path(FEATURES) {
        Some(true) => Some(I8Path::Avx512Vnni),
        Some(false) => Some(I8Path::Portable),
        None if crate::dispatch::selection().isa >= crate::Isa::Avx2 => Some(I8Path::Avx2),
        None => None,
    })
}

/// One row's u8 codes (`out`, as long as `x`) with its scale and zero point: the row's range
/// (widened to hold 0) cut into 255 steps, each value rounded half up. Written in eight lanes
/// and without float-to-int casts (which the compiler does lane by lane), so every path's
/// table vectorises it; the codes are those of `(x/s + z + 0.5) as u8`, saturating.
#[inline(always)]
pub(crate) fn quantise_row(x: &[f32], out: &mut [u8]) -> (f32, i32) {
    // The range, widened to hold 0; each in its own pass of eight lanes (NaNs skipped).
    let hi = crate::reduce::max_lanes(x).max(0.0);
    let lo = crate::reduce::min_lanes(x).min(0.0);
    let s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    // Rounded half up (v + 0.5, truncated): every code is ≥ 0, and `as u8` saturates.
    let z = (-lo / s + 0.5) as u8 as f32;
    let inv = 1.0 / s;
    for (o, &v) in out.iter_mut().zip(x) {
        let y = v * inv + z + 0.5;
        // Clamped to [0, 255] (NaN to 0) and floored, as `y as u8` does; 2^23 added puts the
        // integer in the low mantissa bits.
        let y = if y > 0.0 { y } else { 0.0 };
        let y = if y < 255.0 { y } else { 255.0 };
        *o = (y.floor() + 8_388_608.0).to_bits() as u8;
    }
    (s, z as i32)
}

/// The rows of `x` (`m × k`) quantised ([`quantise_row`]), with each row's scale and zero
/// point, as words: four u8 codes a word (`⌈k/4⌉` words a row), or, with `pairs` (the AVX2
/// path), each such word as two, its codes 0 and 2 then 1 and 3, as u16 pairs. Codes past `k`
/// are the zero point (the weights there are zero). Rows are split across threads.
fn quantise_rows(x: &[f32], m: usize, k: usize, pairs: bool) -> (Vec<u32>, Vec<f32>, Vec<i32>) {
    use rayon::prelude::*;
    let groups = k.div_ceil(4);
    let per_row = if pairs { 2 * groups } else { groups };
    let mut words = vec![0u32; m * per_row];
    let mut scale = vec![1f32; m];
    let mut zero = vec![0i32; m];
    let kern = crate::kernels();
    words
        .par_chunks_mut(per_row)
        .zip(scale.par_iter_mut().zip(zero.par_iter_mut()))
        .zip(x.par_chunks(k))
        .with_min_len(16)
        .for_each_init(
            || vec![0u8; 4 * groups],
            |bytes, ((out, (sc, zp)), row)| {
                let (s, z) = kern.quantise_row(row, &mut bytes[..k]);
                bytes[k..].fill(z as u8);
                (*sc, *zp) = (s, z);
                for (o, b) in out
                    .chunks_exact_mut(per_row / groups)
                    .zip(bytes.chunks_exact(4))
                {
                    let [b0, b1, b2, b3] = [b[0], b[1], b[2], b[3]].map(u32::from);
                    if pairs {
                        o[0] = b0 | b2 << 16;
                        o[1] = b1 | b3 << 16;
                    } else {
                        o[0] = b0 | b1 << 8 | b2 << 16 | b3 << 24;
                    }
                }
            },
        );
    (words, scale, zero)
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
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    // The AVX2 path reads each activation word as two words of u16 pairs, (0, 2) and (1, 3).
    // Decided as the match below decides, so that a fallback to portable gets its own layout.
    #[cfg(target_arch = "x86_64")]
    let avx2 = path == I8Path::Avx2 && crate::Isa::Avx2.is_available();
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    let (words, sx, zx) = quantise_rows(x, m, k, avx2);
    let (codes, pairs): (&[u32], &[u32]) = if avx2 { (&[], &words) } else { (&words, &[]) };
    let rows = Rows {
        codes,
        pairs,
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
            #[cfg(target_arch = "x86_64")]
            I8Path::Avx2 if crate::Isa::Avx2.is_available() => {
                assert!(
                    pairs.len() >= 2 * m * w.groups
                        && w.widened().len() >= 4 * w.panels() * w.groups * 8
                        && last <= w.panels()
                        && out.n == w.n
                );
                // SAFETY: the CPU has AVX2 (checked just above); `pairs` holds m rows of
                // 2·groups words, the widened weights every panel, and the panels lie in `w`
                // (asserted).
                unsafe { avx2::panels((&rows, w), m, first, last, out) }
            }
            _ => portable_panels(&rows, w, first, last, out),
        },
    );
    Ok(())
}

/// The quantised rows of one call.
struct Rows<'a> {
    /// Four u8 codes a word (the portable and AVX-512 paths; empty on the AVX2 path).
    codes: &'a [u32],
    /// For the AVX2 path: each word of codes as two, its codes 0 and 2, then 1 and 3, as u16
    /// pairs; empty on the other paths.
    pairs: &'a [u32],
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PackedI8, Rows, PANEL};
    use crate::panels::Out;
    use std::arch::x86_64::*;

    /// Rows of one register tile: 4 rows × 16 outputs is 8 accumulators, leaving registers
    /// for the panel's widened weights (4) and a row's widened codes (2).
    const MR: usize = 4;

    // Rows go in blocks of `ROW_BLOCK` (the widened codes are `2·k` bytes a row) as on the
    // other paths: batch 16 on Zen 3 went from 35–40 to 45–50 GMAC/s; a block sized to
    // 192 KiB at every k measured slower at k = 384.
    use crate::panels::ROW_BLOCK;

    /// Panels `first..last` for rows `0..m`, in tiles of up to [`MR`] rows × one panel.
    ///
    /// # Safety
    /// AVX2; `m` rows of `2·w.groups` words in `rows.pairs`; `last ≤` the panel count.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn panels(
        ctx: (&Rows, &PackedI8),
        m: usize,
        first: usize,
        last: usize,
        out: &mut Out,
    ) {
        for i0 in (0..m).step_by(ROW_BLOCK) {
            let end = (i0 + ROW_BLOCK).min(m);
            for panel in first..last {
                let mut i = i0;
                while i < end {
                    let r = (end - i).min(MR);
                    // SAFETY: rows i..i+r < m and panel < last: the caller's contract.
                    unsafe {
                        match r {
                            4 => tile::<4>(ctx, panel, i, out),
                            3 => tile::<3>(ctx, panel, i, out),
                            2 => tile::<2>(ctx, panel, i, out),
                            _ => tile::<1>(ctx, panel, i, out),
                        }
                    }
                    i += r;
                }
            }
        }
    }

    /// Rows `i..i+R` × one panel. Weights and activations come split by input parity and
    /// widened to i16 ([`PackedI8::widened`], [`Rows::pairs`]), so per group of 4 inputs
    /// `vpmaddwd` gives `a0·w0 + a2·w2` and `a1·w1 + a3·w3` in i32: at most 2·255·127 each,
    /// so nothing saturates, and the sums are the portable path's.
    ///
    /// # Safety
    /// AVX2; `i + R ≤ m`; `panel <` the panel count; `rows.pairs` and `w.widened()` as
    /// asserted by the caller.
    #[inline]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize>(
        (rows, w): (&Rows, &PackedI8),
        panel: usize,
        i: usize,
        out: &mut Out,
    ) {
        let groups = w.groups;
        let n = w.n;
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let wp = w.widened().as_ptr();
        let xp = rows.pairs.as_ptr();
        for g in 0..groups {
            let mut b = [_mm256_setzero_si256(); 4];
            for (q, bq) in b.iter_mut().enumerate() {
                // SAFETY: panel < panels and g < groups: 32 words inside the widened weights.
                *bq = unsafe {
                    _mm256_loadu_si256(wp.add(((panel * groups + g) * 4 + q) * 8).cast())
                };
            }
            for r in 0..R {
                // SAFETY: row i + r < m, g < groups: two words inside `pairs`.
                let (even, odd) = unsafe {
                    let at = xp.add(((i + r) * groups + g) * 2);
                    (*at as i32, *at.add(1) as i32)
                };
                let (even, odd) = (_mm256_set1_epi32(even), _mm256_set1_epi32(odd));
                for h in 0..2 {
                    let s = _mm256_add_epi32(
                        _mm256_madd_epi16(even, b[2 * h]),
                        _mm256_madd_epi16(odd, b[2 * h + 1]),
                    );
                    acc[r][h] = _mm256_add_epi32(acc[r][h], s);
                }
            }
        }
        let c0 = panel * PANEL;
        let live = n.saturating_sub(c0).min(PANEL);
        for r in 0..R {
            let row = i + r;
            let sx = _mm256_set1_ps(rows.scale[row]);
            let zx = _mm256_set1_epi32(rows.zero[row]);
            if live == PANEL {
                for h in 0..2 {
                    let c = c0 + 8 * h;
                    // SAFETY: columns c..c+8 < n (a whole panel is live); row < m.
                    unsafe {
                        let cs = _mm256_loadu_si256(w.col_sum.as_ptr().add(c).cast());
                        let sw = _mm256_loadu_ps(w.scale.as_ptr().add(c));
                        let exact = _mm256_sub_epi32(acc[r][h], _mm256_mullo_epi32(zx, cs));
                        let v = _mm256_mul_ps(_mm256_mul_ps(sx, sw), _mm256_cvtepi32_ps(exact));
                        let dst = out.ptr.add(row * n + c);
                        _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), v));
                    }
                }
            } else {
                // A part panel (the last, n not a multiple of 16): lane by lane.
                let mut sums = [0i32; PANEL];
                for h in 0..2 {
                    // SAFETY: 8 i32s into an array of 16, at 0 or 8.
                    unsafe { _mm256_storeu_si256(sums.as_mut_ptr().add(8 * h).cast(), acc[r][h]) };
                }
                for (l, &s) in sums.iter().enumerate().take(live) {
                    *out.at(row, c0 + l) += rows.value(w, row, c0 + l, s);
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

    /// Every path's row quantiser gives the codes, scale and zero point of the plain scalar
    /// formula (`as u8`, f32::min/max), at every length class and on hostile values.
    #[test]
    fn every_path_quantises_rows_as_the_scalar_formula() {
        let reference = |x: &[f32]| -> (Vec<u8>, f32, i32) {
            let (lo, hi) = x
                .iter()
                .fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            let s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            let z = (-lo / s + 0.5) as u8 as f32;
            let inv = 1.0 / s;
            let codes = x.iter().map(|&v| (v * inv + z + 0.5) as u8).collect();
            (codes, s, z as i32)
        };
        let mut rows: Vec<Vec<f32>> = [0, 1, 7, 8, 9, 67, 384]
            .iter()
            .map(|&n| {
                lcg(n, n as u64 + 3)
                    .iter()
                    .map(|v| v * 40.0 - 7.0)
                    .collect()
            })
            .collect();
        rows.push(vec![3.0; 19]);
        rows.push(vec![
            -2.0, 0.0, 5.0, 1e-30, -1e-30, 2.5, 0.1, 4.99, 5.0, -1.99,
        ]);
        rows.push(vec![
            1.0,
            f32::NAN,
            -3.0,
            2.0,
            f32::NAN,
            0.5,
            0.25,
            7.0,
            1.0,
        ]);
        rows.push(vec![f32::INFINITY, 1.0, -1.0, 0.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for isa in crate::Isa::ALL {
            let Some(kern) = crate::Kernels::for_isa(isa) else {
                continue;
            };
            for x in &rows {
                let mut out = vec![0u8; x.len()];
                let (s, z) = kern.quantise_row(x, &mut out);
                let (want, ws, wz) = reference(x);
                assert_eq!(
                    (out, s.to_bits(), z),
                    (want, ws.to_bits(), wz),
                    "{isa}: {x:?}"
                );
            }
        }
    }

    /// The AVX2 path equals the portable path on every shape class, with codes at both ends
    /// of their ranges (u8 255 against i8 ±127: the pair sums `vpmaddubsw` would saturate).
    #[test]
    fn avx2_equals_portable() {
        if !crate::Isa::Avx2.is_available() {
            println!("skipped: this CPU has no AVX2");
            return;
        }
        let run = |fast: bool, dst: &mut [f32], x: &[f32], m: usize, w: &PackedI8, t: usize| {
            let path = if fast { I8Path::Avx2 } else { I8Path::Portable };
            gemm_i8(path, dst, x, m, w, t).unwrap()
        };
        crate::panels::fast_equals_portable(|w, n, k| PackedI8::pack(w, n, k).unwrap(), run);
        // Extremes: each row spans [0, 1] (codes 0..255, zero point 0), each weight row ±1
        // (codes ±127), signs alternating, so pairs reach 2·255·127.
        let (m, n, k) = (9, 48, 64);
        let x: Vec<f32> = (0..m * k)
            .map(|i| if i % 3 == 0 { 0.0 } else { 1.0 })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| if (i / 2) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let packed = PackedI8::pack(&w, n, k).unwrap();
        let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
        run(false, &mut a, &x, m, &packed, 1);
        run(true, &mut b, &x, m, &packed, 1);
        assert_eq!(a, b);
        let want: f32 = (0..k).map(|c| x[c] * w[c]).sum();
        assert!((a[0] - want).abs() < 1e-3, "{} vs {want}", a[0]);
    }
}
