//! f32 weights packed once ([`PackedF32`]) and multiplied by the `gemm` crate's own AVX2
//! micro-kernels (`gemm_f32::microkernel::fma`: 16 outputs × 6 rows in registers), with no
//! packing at the call.
//!
//! Why: `gemm` copies its left operand (here the weight) into panels at every call once the
//! right one has more than 48 columns (rows of the input). A layer made in row bands
//! ([`crate::linear`], outputs past L2) calls it once a band, so `litemedsam`'s weights were
//! copied again for every band of 51–409 rows: 3.2% of an image's samples, plus the weight
//! read from L2 or L3 into the copy. Packed at load in the layout that copy has, the same
//! micro-kernels read them in place. `kernel_bench` (one core, Zen 3, six runs):
//! `litemedsam`'s banded layers at 4096 rows 0.98–1.19x `linear`'s rate (stage 3's fc1
//! 1.12–1.18x, e.g. 40.6 → 45.6 GMAC/s; its fc2 of 1280 inputs 0.98–1.04x), `dinov2-s`'s at
//! 257 rows 1.00–1.23x; `litemedsam` at batch 1 used 3.9% less CPU time (6 alternating
//! pairs).
//!
//! The sums are `gemm`'s where it runs the same micro-kernels: a product of 3 to [`KC`]
//! inputs, more than one row and more than one output is one depth block in both, each sum
//! a chain of FMAs in input order, so it equals [`crate::sgemm`]'s bit for bit (tests).
//! Elsewhere they differ within rounding: `gemm` makes a single row or a single output as a
//! matrix–vector product and 1–2 inputs as outer products, summed in other orders (here
//! `dinov2-s`'s last block, which keeps only the class token, goes through the micro-kernels
//! too: its PNG parity error went from 3.9e-7 to 2.1e-7); past [`KC`] inputs this splits
//! the depth into even blocks of at most [`KC`], as `gemm` does for a 32 KiB L1 (a larger L1,
//! or `gemm`'s path for small products, gives other blocks).
//!
//! Only the AVX2 path uses it ([`available`]): AVX-512 and the portable path keep the `gemm`
//! crate, whose AVX-512 kernels take other panel widths (and no AVX-512 machine was at hand to
//! measure them).
//!
//! Layout: panels of 16 output channels; for each input `c`, 16 consecutive floats, float `l`
//! of panel `p` being `w[16p + l][c]` (zero past `n`).

use crate::activation::Act;
use crate::dispatch::Kernels;
use crate::error::{check, KernelError};
use crate::gemm::{MatMut, MatRef};

/// Output channels per panel: the micro-kernels' 2 × 8 lanes.
pub(crate) const PANEL: usize = 16;
/// Rows per micro-kernel call.
pub(crate) const NR: usize = 6;
/// The deepest block of inputs one pass sums (`gemm`'s floor for its depth block).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const KC: usize = 512;
/// Panels per block: 128 outputs × at most [`KC`] inputs (256 KiB) stay in L2 while every
/// group of [`NR`] rows reads them, and a group's rows stay in L1 across the block's panels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PANEL_BLOCK: usize = 8;

#[cfg(target_arch = "x86_64")]
use gemm_f32::microkernel::fma::f32 as fma;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(fma::MR_DIV_N * 8 == PANEL && fma::NR == NR);

/// An `(out, in)` f32 weight in panels (see the module). The default is empty (no outputs, no
/// inputs): scratch for `repack`.
#[derive(Clone, Debug, Default)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedF32 {
    /// Packs `w`, `n × k` row-major (PyTorch's `(out, in)`).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Result<Self, KernelError> {
        check(w.len() == n * k, || {
            format!("f32 pack: weight of {} is not {n}×{k}", w.len())
        })?;
        let mut packed = Self::default();
        packed.repack(MatRef::row_major(w, n, k)?);
        Ok(packed)
    }

    /// The weight back in `(out, in)` layout, exactly (packing only moves values).
    pub fn unpack(&self) -> Vec<f32> {
        let k = self.k;
        let mut w = vec![0f32; self.n * k];
        for (j, row) in w.chunks_exact_mut(k.max(1)).take(self.n).enumerate() {
            let panel = &self.data[(j / PANEL) * k * PANEL..];
            for (c, v) in row.iter_mut().enumerate() {
                *v = panel[c * PANEL + j % PANEL];
            }
        }
        w
    }

    /// Packs `w` in place of this weight, reusing its buffer: output `j` is row `j` of `w`,
    /// any strides (attention packs its keys, `n × hd`, and its values transposed, `hd × n`).
    pub(crate) fn repack(&mut self, w: MatRef<'_>) {
        let v = w.raw();
        let (n, k) = (v.rows, v.cols);
        let panels = n.div_ceil(PANEL);
        self.data.resize(panels * k * PANEL, 0.0);
        self.n = n;
        self.k = k;
        // Every lane below `n` is written below; the last panel's lanes past it are zeros.
        if !n.is_multiple_of(PANEL) {
            let last = &mut self.data[(panels - 1) * k * PANEL..];
            for lanes in last.chunks_exact_mut(PANEL) {
                lanes[n % PANEL..].fill(0.0);
            }
        }
        let at = |j: usize, c: usize| {
            // SAFETY: j < rows and c < cols: the view was checked, when made, to lie inside
            // the slice it borrows, which outlives `w`.
            unsafe { *v.ptr.add(j * v.rs + c * v.cs) }
        };
        if v.rs == 1 {
            // Consecutive outputs adjacent (a transposed view): 16 in a row per input.
            for p in 0..panels {
                let width = PANEL.min(n - p * PANEL);
                for c in 0..k {
                    let o = &mut self.data[(p * k + c) * PANEL..][..width];
                    for (l, o) in o.iter_mut().enumerate() {
                        *o = at(p * PANEL + l, c);
                    }
                }
            }
        } else {
            // Eight outputs (rows of `w`) at a time: eight inputs of each transposed in
            // registers where the rows are contiguous and the CPU has AVX2, one element at a
            // time for the rest. (Element by element, attention's keys took about 1 cycle a
            // float: 0.6% of `dinov2-s`'s samples, Zen 3.)
            let simd = v.cs == 1 && crate::Isa::Avx2.is_available();
            for j0 in (0..n).step_by(8) {
                let (p, l0) = (j0 / PANEL, j0 % PANEL);
                let rows = 8.min(n - j0);
                let panel = &mut self.data[p * k * PANEL..(p + 1) * k * PANEL];
                let mut c0 = 0;
                if simd && rows == 8 {
                    #[cfg(target_arch = "x86_64")]
                    while c0 + 8 <= k {
                        // SAFETY: the CPU has AVX2 (checked above). Rows j0..j0+8 < n and
                        // columns c0..c0+8 ≤ k of the view, at unit column stride, lie inside
                        // the slice it borrows (checked when the view was made); the eight
                        // stores of 8 floats at (c0 + i)·16 + l0 (l0 is 0 or 8) lie inside
                        // the panel (c0 + 8 ≤ k).
                        unsafe {
                            transpose8(
                                v.ptr.add(j0 * v.rs + c0),
                                v.rs,
                                panel.as_mut_ptr().add(c0 * PANEL + l0),
                            )
                        };
                        c0 += 8;
                    }
                }
                for l in 0..rows {
                    for c in c0..k {
                        panel[c * PANEL + l0 + l] = at(j0 + l, c);
                    }
                }
            }
        }
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs per output.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// Eight rows of eight floats at `src` (rows `rs` floats apart) transposed: column `i` goes to
/// `dst + i·PANEL` as 8 consecutive floats (one input of 8 outputs in a panel).
///
/// # Safety
/// The CPU must have AVX2; `src + r·rs + 0..8` must be readable for r < 8, and
/// `dst + i·PANEL + 0..8` writable for i < 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(src: *const f32, rs: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    // SAFETY: the eight loads and the eight stores are the ones the caller vouches for.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * rs)));
        // Pairs of rows interleaved, then pairs of pairs: u[i] holds rows 0–3 of column i in
        // its low 128 bits and of column i + 4 in its high ones, u[i + 4] the same of rows
        // 4–7; the permutes join the two halves of each column.
        let t = |a: usize, b: usize| {
            (
                _mm256_unpacklo_ps(r[a], r[b]),
                _mm256_unpackhi_ps(r[a], r[b]),
            )
        };
        let (t0, t1) = t(0, 1);
        let (t2, t3) = t(2, 3);
        let (t4, t5) = t(4, 5);
        let (t6, t7) = t(6, 7);
        let u = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
            _mm256_shuffle_ps::<0x44>(t4, t6),
            _mm256_shuffle_ps::<0xEE>(t4, t6),
            _mm256_shuffle_ps::<0x44>(t5, t7),
            _mm256_shuffle_ps::<0xEE>(t5, t7),
        ];
        for i in 0..4 {
            _mm256_storeu_ps(
                dst.add(i * PANEL),
                _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]),
            );
            _mm256_storeu_ps(
                dst.add((i + 4) * PANEL),
                _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]),
            );
        }
    }
}

/// Whether this process multiplies packed f32 weights: the selected kernels are AVX2
/// (`SIMCASE_KERNELS` as [`crate::selection`] reads it) and the CPU has AVX2 and FMA.
pub fn available() -> bool {
    cfg!(target_arch = "x86_64")
        && crate::selection().isa == crate::Isa::Avx2
        && crate::Isa::Avx2.is_available()
}

/// What [`gemm_packed`] does with its destination.
#[derive(Clone, Copy)]
pub(crate) enum Store<'a> {
    /// `dst = a · wᵀ`: no element is read before it is written, so `dst` may be fresh memory.
    Overwrite,
    /// `dst = act(a · wᵀ + bias (+ residual))`, as [`Store::Overwrite`] and then the
    /// [`Epilogue`] on each tile of at most 6 rows × 128 columns once its last depth block is
    /// summed, while the tile is in L1 (see [`Epilogue`]).
    Finish(Epilogue<'a>),
}

/// The bias, residual and activation of a linear layer, applied by [`gemm_packed`] tile by
/// tile ([`Store::Finish`]), where the destination used to be pre-filled with the bias and
/// residual and activated in a pass after: two more passes over a layer's output, which for
/// `dinov2-s`'s MLP (257 × 1536 floats) lies past L2. `litemedsam` at batch 1 ran 2.6% faster
/// (3 alternating pairs, Zen 3); `dinov2-s` did not move: its pre-fill and activation passes
/// (2.9% of its samples) became 3.0% in the tiles, the residual being read from L2 or L3 either
/// way.
///
/// Each output is `acc + (bias + residual)` (`acc + bias` without a residual), then the
/// activation; GELU without a residual adds the bias inside [`crate::Kernels::gelu_rows`], the
/// same sum.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// One per output channel of the weight (`w.n()`): `dst`'s column `j` takes `bias[c0 + j]`.
    pub(crate) bias: &'a [f32],
    /// Rows of `w.n()`, as many as `dst` has: `dst[i][j]` takes `residual[i·n + c0 + j]`.
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) act: Act,
}

impl Epilogue<'_> {
    /// Applies itself to `row`, the weight's outputs `col ..` (as many as `row` holds) of row
    /// `i` of the destination, `n` the weight's outputs. The shapes were checked by
    /// [`gemm_packed`].
    fn apply(&self, kern: &Kernels, row: &mut [f32], i: usize, n: usize, col: usize) {
        let bias = &self.bias[col..col + row.len()];
        if self.residual.is_none() && self.act == Act::Gelu {
            return kern.gelu_rows(row, Some(bias));
        }
        let res = self.residual.map(|r| &r[i * n + col..][..row.len()]);
        // SAFETY: `gemm_packed` runs only where the CPU has AVX2 and FMA (it checks first).
        unsafe { add_avx2(row, bias, res) };
        kern.act_rows(row, self.act);
    }
}

/// `row += bias (+ residual)`, compiled for AVX2 (8 lanes, where the crate's baseline has 4).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn add_avx2(row: &mut [f32], bias: &[f32], residual: Option<&[f32]>) {
    match residual {
        None => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
        Some(res) => {
            for ((v, b), r) in row.iter_mut().zip(bias).zip(res) {
                *v += b + r;
            }
        }
    }
}

/// `dst = a · wᵀ` over output columns `c0 .. c0 + dst.cols()`, finished as `store` says: `a` is
/// `r × k` with unit column stride, `dst` `r × cols` with unit column stride, `c0` a multiple
/// of [`PANEL`].
/// `Err` when the shapes do not chain or the CPU cannot run it ([`available`]'s CPU test;
/// `SIMCASE_KERNELS` is the caller's to heed, through [`available`]).
pub(crate) fn gemm_packed(
    dst: MatMut<'_>,
    a: MatRef<'_>,
    w: &PackedF32,
    c0: usize,
    store: Store<'_>,
) -> Result<(), KernelError> {
    let (d, x) = (dst.raw(), a.raw());
    let (rows, cols) = (d.rows, d.cols);
    check(
        x.rows == rows
            && x.cols == w.k
            && c0.is_multiple_of(PANEL)
            && c0.checked_add(cols).is_some_and(|end| end <= w.n),
        || {
            format!(
                "packed f32: {}×{} · ({}×{})ᵀ does not give {rows} rows × columns {c0}..{}",
                x.rows,
                x.cols,
                w.n,
                w.k,
                c0.saturating_add(cols)
            )
        },
    )?;
    check(x.cs == 1 && d.cs == 1, || {
        "packed f32: input and output need unit column strides".to_string()
    })?;
    if let Store::Finish(e) = store {
        check(
            e.bias.len() == w.n && e.residual.is_none_or(|r| r.len() == rows * w.n),
            || {
                format!(
                    "packed f32: bias of {} or residual of {} does not fit {rows}×{}",
                    e.bias.len(),
                    e.residual.map_or(0, |r| r.len()),
                    w.n
                )
            },
        )?;
    }
    check(crate::Isa::Avx2.is_available(), || {
        "packed f32: this CPU lacks AVX2 or FMA".to_string()
    })?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let kern = crate::kernels();
    // The epilogue on rows `t .. t + nn`, columns `lo .. hi` of `dst`, all written.
    let finish = |t: usize, nn: usize, lo: usize, hi: usize| {
        if let Store::Finish(e) = store {
            for i in t..t + nn {
                // SAFETY: row i < rows and columns lo..hi ≤ cols of the view, at unit stride
                // (checked when the view was made and above); every element was written by
                // the product; `dst` is an exclusive borrow.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(d.ptr.add(i * d.rs + lo), hi - lo) };
                e.apply(kern, row, i, w.n, c0 + lo);
            }
        }
    };
    if w.k == 0 {
        // An empty sum: zeros.
        for i in 0..rows {
            // SAFETY: row i < rows of the view, `cols` floats at unit stride, checked when the
            // view was made; `dst` is an exclusive borrow.
            unsafe { std::ptr::write_bytes(d.ptr.add(i * d.rs), 0, cols) };
        }
        finish(0, rows, 0, cols);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    {
        let k = w.k;
        let kc = k.div_ceil(k.div_ceil(KC));
        let (first, last) = (c0 / PANEL, (c0 + cols).div_ceil(PANEL));
        for d0 in (0..k).step_by(kc) {
            let depth = kc.min(k - d0);
            // `gemm`'s alpha status: 0 overwrites `dst` (the first depth block), 1 adds the
            // block's sums to it (the later ones).
            let add = u8::from(d0 > 0);
            let last_block = d0 + depth == k;
            for p0 in (first..last).step_by(PANEL_BLOCK) {
                let p1 = (p0 + PANEL_BLOCK).min(last);
                for t in (0..rows).step_by(NR) {
                    let nn = NR.min(rows - t);
                    for p in p0..p1 {
                        let mm = PANEL.min(c0 + cols - p * PANEL);
                        let kernel = fma::UKR[mm.div_ceil(8) - 1][nn - 1];
                        // SAFETY: the CPU has AVX2 and FMA (checked above), which the kernels
                        // are compiled for. The kernel writes `dst` rows t..t+nn, columns
                        // p·16−c0 .. +mm (inside the view: t + nn ≤ rows, p·16 + mm ≤
                        // c0 + cols), reading them first only past the first depth block
                        // (`add` = 1), which wrote them;
                        // reads the panel's inputs d0..d0+depth, 16 floats each
                        // (panels are zero-padded to 16; p < the panel count, d0 + depth ≤ k);
                        // and reads `a` rows t..t+nn, columns d0..d0+depth (inside its view).
                        // Views were checked against their slices when made; `dst` is an
                        // exclusive borrow, so nothing read overlaps it.
                        unsafe {
                            let lhs = w.data.as_ptr().add((p * k + d0) * PANEL);
                            kernel(
                                mm,
                                nn,
                                depth,
                                d.ptr.add(t * d.rs + (p * PANEL - c0)),
                                lhs,
                                x.ptr.add(t * x.rs + d0),
                                d.rs as isize,
                                1,
                                PANEL as isize,
                                1,
                                x.rs as isize,
                                1.0,
                                1.0,
                                add,
                                false,
                                false,
                                false,
                                lhs,
                            );
                        }
                    }
                    if last_block {
                        finish(t, nn, p0 * PANEL - c0, (p1 * PANEL).min(c0 + cols) - c0);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{sgemm, Threads};
    use crate::panels::{lcg, transpose};

    /// Against `sgemm`: bit for bit from 3 to [`KC`] inputs, more than one row and more than
    /// one output (one depth block, the same kernel), within rounding elsewhere (`gemm`'s
    /// matrix–vector and outer products, and depth blocks past [`KC`], which add to the
    /// first); over part panels (the 8-wide kernels too), part row groups, several panel
    /// blocks, and column ranges starting past 0, which leave the columns before them alone.
    /// The columns written start as NaN, so an element read before it is written, or never
    /// written, fails; no inputs give zeros.
    #[test]
    fn packed_product_is_sgemm_s() {
        if !crate::Isa::Avx2.is_available() {
            eprintln!("no AVX2 and FMA here: the packed f32 product cannot run");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 40, 300),
            (30, 1, 300),
            (12, 40, 2),
            (12, 24, 40),
            (7, 21, 5),
            (13, 16, 64),
            (49, 49, 32),
            (49, 32, 49),
            (51, 1280 + 3, 320),
            (257, 384, 512),
            (20, 200, 513),
            (20, 40, 1000),
            (9, 40, 1536),
            (5, 17, 0),
        ] {
            let (x, w, before) = (lcg(m * k, 1), lcg(n * k, 2), lcg(m * n, 3));
            let packed = PackedF32::pack(&w, n, k).unwrap();
            let wt = transpose(&w, n, k);
            for c0 in [0, 16] {
                // (No inputs: an empty weight, which no column range starts inside.)
                if c0 >= n || (k == 0 && c0 > 0) {
                    continue;
                }
                let cols = n - c0;
                // Row i: `before` up to c0, NaN from there.
                let start: Vec<f32> = before
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| if i % n < c0 { v } else { f32::NAN })
                    .collect();
                let mut want = start.clone();
                let mut got = start.clone();
                let a = MatRef::row_major(&x, m, k).unwrap();
                let b = MatRef::new(&wt[c0..], k, cols, n, 1).unwrap();
                let dst = MatMut::new(&mut want[c0..], m, cols, n, 1).unwrap();
                sgemm(dst, false, a, b, Threads::One).unwrap();
                let dst = MatMut::new(&mut got[c0..], m, cols, n, 1).unwrap();
                gemm_packed(dst, a, &packed, c0, Store::Overwrite).unwrap();
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    if (3..=KC).contains(&k) && m > 1 && n > 1 {
                        assert!(
                            g.to_bits() == e.to_bits(),
                            "{m}×{n}×{k} from {c0}: [{i}] {g} vs {e}"
                        );
                    } else {
                        assert!(
                            (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                            "{m}×{n}×{k}: [{i}] {g} vs {e}"
                        );
                    }
                }
                // Columns before c0 are untouched, in every row.
                for (row, (g, s)) in got.chunks(n).zip(start.chunks(n)).enumerate() {
                    assert!(
                        g[..c0] == s[..c0],
                        "{m}×{n}×{k}: row {row} before column {c0}"
                    );
                }
            }
        }
    }

    /// `Store::Finish` is the product followed by its epilogue on the whole destination (bias
    /// added inside GELU without a residual, `acc + (bias + residual)` with one), bit for bit,
    /// over column ranges from 0 and from 16, several panel blocks and depth blocks, and no
    /// inputs at all; a bias or residual of the wrong size is refused.
    #[test]
    fn finish_is_the_product_then_the_epilogue() {
        if !crate::Isa::Avx2.is_available() {
            eprintln!("no AVX2 and FMA here: the packed f32 product cannot run");
            return;
        }
        let kern = crate::kernels();
        for &(m, n, k) in &[(7, 21, 5), (13, 300, 64), (20, 200, 1100), (4, 40, 0)] {
            let (x, w, bias, res) = (lcg(m * k, 4), lcg(n * k, 5), lcg(n, 6), lcg(m * n, 7));
            let packed = PackedF32::pack(&w, n, k).unwrap();
            let a = MatRef::row_major(&x, m, k).unwrap();
            for act in [Act::None, Act::Gelu, Act::QuickGelu] {
                for residual in [None, Some(&res[..])] {
                    for c0 in [0, 16] {
                        let cols = n - c0;
                        let mut want = vec![f32::NAN; m * n];
                        let dst = MatMut::new(&mut want[c0..], m, cols, n, 1).unwrap();
                        gemm_packed(dst, a, &packed, c0, Store::Overwrite).unwrap();
                        for (i, row) in want.chunks_mut(n).enumerate() {
                            for (j, v) in row.iter_mut().enumerate().skip(c0) {
                                *v += bias[j] + residual.map_or(0.0, |r| r[i * n + j]);
                            }
                            kern.act_rows(&mut row[c0..], act);
                        }
                        let mut got = vec![f32::NAN; m * n];
                        let dst = MatMut::new(&mut got[c0..], m, cols, n, 1).unwrap();
                        let e = Epilogue {
                            bias: &bias,
                            residual,
                            act,
                        };
                        gemm_packed(dst, a, &packed, c0, Store::Finish(e)).unwrap();
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(g, e)| g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()));
                        assert!(
                            same,
                            "{m}×{n}×{k} {act:?} from {c0}, residual {}",
                            residual.is_some()
                        );
                    }
                }
            }
            let bad = Epilogue {
                bias: &bias[1..],
                residual: None,
                act: Act::None,
            };
            let mut out = vec![0f32; m * n];
            let dst = MatMut::row_major(&mut out, m, n).unwrap();
            assert!(gemm_packed(dst, a, &packed, 0, Store::Finish(bad)).is_err());
            let bad = Epilogue {
                bias: &bias,
                residual: Some(&res[1..]),
                act: Act::None,
            };
            let dst = MatMut::row_major(&mut out, m, n).unwrap();
            assert!(gemm_packed(dst, a, &packed, 0, Store::Finish(bad)).is_err());
        }
    }

    /// Repacking a strided view, rows or columns adjacent, into a buffer that held a larger
    /// weight gives what packing a dense copy gives, zero padding included.
    #[test]
    fn repack_of_a_view_is_pack_of_its_copy() {
        let mut p = PackedF32::pack(&lcg(40 * 70, 6), 40, 70).unwrap();
        for (n, k) in [(49, 32), (32, 49), (5, 3), (16, 16)] {
            // `n × k` inside a wider buffer (row stride k + 3), and its transpose's view.
            let stride = k + 3;
            let buf = lcg(n * stride, 7);
            let dense: Vec<f32> = buf.chunks(stride).flat_map(|r| r[..k].to_vec()).collect();
            p.repack(MatRef::new(&buf, n, k, stride, 1).unwrap());
            let want = PackedF32::pack(&dense, n, k).unwrap();
            assert_eq!((p.n, p.k, &p.data), (want.n, want.k, &want.data), "{n}×{k}");
            let t = MatRef::new(&buf, n, k, stride, 1).unwrap().t();
            p.repack(t);
            let want = PackedF32::pack(&transpose(&dense, n, k), k, n).unwrap();
            assert_eq!(
                (p.n, p.k, &p.data),
                (want.n, want.k, &want.data),
                "{n}×{k} transposed"
            );
        }
    }

    /// Unpacking (element by element) gives the packed weight back, with and without a part
    /// panel, part groups of 8 outputs and of 8 inputs (packed by the AVX2 transposes where
    /// the CPU has them, element by element around them).
    #[test]
    fn unpack_inverts_pack() {
        for (n, k) in [
            (1, 1),
            (16, 3),
            (37, 20),
            (257, 64),
            (24, 8),
            (0, 5),
            (4, 0),
        ] {
            let w = lcg(n * k, 9);
            assert_eq!(PackedF32::pack(&w, n, k).unwrap().unpack(), w, "{n}×{k}");
        }
    }

    /// Shapes that do not chain, and a column range off the panel grid, are refused.
    #[test]
    fn mismatched_shapes_are_refused() {
        let packed = PackedF32::pack(&lcg(32 * 8, 1), 32, 8).unwrap();
        let x = lcg(4 * 8, 2);
        let mut out = vec![0f32; 4 * 32];
        let a = MatRef::row_major(&x, 4, 8).unwrap();
        let dst = MatMut::new(&mut out, 4, 24, 32, 1).unwrap();
        assert!(gemm_packed(dst, a, &packed, 8, Store::Overwrite).is_err());
        let dst = MatMut::new(&mut out, 4, 32, 32, 1).unwrap();
        assert!(gemm_packed(dst, a, &packed, 16, Store::Overwrite).is_err());
        let a7 = MatRef::row_major(&x, 4, 7).unwrap();
        let dst = MatMut::new(&mut out, 4, 32, 32, 1).unwrap();
        assert!(gemm_packed(dst, a7, &packed, 0, Store::Overwrite).is_err());
        assert!(PackedF32::pack(&x, 5, 8).is_err());
    }
}
