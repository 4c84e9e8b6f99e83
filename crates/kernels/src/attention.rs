//! Multi-head self-attention from a fused qkv projection, one (sequence, head) per task:
//! `softmax(q·kᵀ + bias)·v` written straight into `(tokens, heads·hd)` order. The scale is
//! expected to be folded into q. Saves the q/k/v and output transposes of a tensor version;
//! the windowed form also saves padding, partitioning and cropping a grid, and the padding's
//! queries, and can project each window's qkv and output in the task that attends over it
//! (the grid's projections went through memory): `window_attention_block` does so where that
//! pays, and decides where that is.

use crate::activation::Act;
use crate::dispatch::Kernels;
use crate::error::{check, KernelError};
use crate::gemm::{sgemm, MatMut, MatRef, Threads};
use crate::packed_f32::{gemm_packed, Epilogue, PackedF32, Store};
use rayon::prelude::*;

/// Scratch of [`head`], one per task.
#[derive(Default)]
struct HeadScratch {
    scores: Vec<f32>,
    /// The head's keys (`n × hd`) and its values transposed (`hd × n`), in panels.
    k: PackedF32,
    v: PackedF32,
}

/// One head: `dst = softmax(q·kᵀ + bias)·v`; `q` is `r × hd`, `k` and `v` are `n × hd`, `bias`
/// `r` rows of `n` (or none), `dst` `r × hd`.
///
/// On the AVX2 path ([`crate::packed_f32::available`]) the keys and the values are packed
/// into panels here and multiplied by `gemm`'s micro-kernels directly, as the linear layers'
/// weights are: `gemm` itself, called twice a (window, head) on products of 49 × 32 × 49,
/// spent about half its time outside its micro-kernels (`litemedsam`'s 7-sided windows made
/// about 20 GMAC/s a core, Zen 3). The sums are `gemm`'s where it runs the same micro-kernels
/// (see [`crate::packed_f32`]: more than one row, 3 to 512 keys or head channels), within
/// rounding otherwise. Off the AVX2 path, `gemm`.
fn head(
    dst: MatMut<'_>,
    q: MatRef<'_>,
    k: MatRef<'_>,
    v: MatRef<'_>,
    bias: Option<&[f32]>,
    s: &mut HeadScratch,
    kern: &Kernels,
) -> Result<(), KernelError> {
    let (r, n) = (q.rows(), k.rows());
    s.scores.resize(r * n, 0.0);
    if crate::packed_f32::available() {
        s.k.repack(k);
        s.v.repack(v.t());
        gemm_packed(
            MatMut::row_major(&mut s.scores, r, n)?,
            q,
            &s.k,
            0,
            Store::Overwrite,
        )?;
        kern.softmax_rows(&mut s.scores, n, bias);
        gemm_packed(
            dst,
            MatRef::row_major(&s.scores, r, n)?,
            &s.v,
            0,
            Store::Overwrite,
        )
    } else {
        let scores = MatMut::row_major(&mut s.scores, r, n)?;
        sgemm(scores, false, q, k.t(), Threads::One)?;
        kern.softmax_rows(&mut s.scores, n, bias);
        let p = MatRef::row_major(&s.scores, r, n)?;
        sgemm(dst, false, p, v, Threads::One)
    }
}

/// Where q, k and v of head `h` sit in a token's fused qkv row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkvLayout {
    /// `[q(all heads) | k | v]`, as DINOv2/timm `qkv`.
    Blocks,
    /// `[h0: q k v | h1: q k v | ...]`, as TinyViT.
    Interleaved,
}

/// Attention over `seqs` sequences of `tokens` tokens: `qkv` is `(seqs·tokens, 3·dim)`
/// row-major, `bias` an optional `(heads, tokens, tokens)` added to the logits. Returns
/// `(seqs·tokens, dim)`.
pub fn attention(
    qkv: &[f32],
    seqs: usize,
    tokens: usize,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    let n = tokens;
    check(seqs > 0 && n > 0 && heads > 0, || {
        format!("attention: {seqs} sequences, {n} tokens, {heads} heads")
    })?;
    let d3 = qkv.len() / (seqs * n);
    let d = d3 / 3;
    let hd = d / heads;
    check(
        seqs * n * d3 == qkv.len() && 3 * d == d3 && hd * heads == d && hd > 0,
        || {
            format!(
                "attention: qkv of {} does not match {seqs}×{n} tokens and {heads} heads",
                qkv.len()
            )
        },
    )?;
    check(bias.is_none_or(|b| b.len() == heads * n * n), || {
        format!(
            "attention: bias of {} is not {heads}×{n}×{n}",
            bias.map_or(0, |b| b.len())
        )
    })?;
    let k = crate::kernels();
    let heads_into = |all: MatMut<'_>| -> Result<(), KernelError> {
        // One disjoint view per (sequence, head), in task order: sequence-major.
        let views: Vec<MatMut> = all
            .split_rows(n)
            .into_iter()
            .flat_map(|s| s.split_cols(hd))
            .collect();
        views.into_par_iter().enumerate().try_for_each_init(
            HeadScratch::default,
            |s, (task, dst)| {
                let (sq, h) = (task / heads, task % heads);
                let base = sq * n * d3;
                let (qo, ko, vo) = head_offsets(layout, d, hd, h);
                let q = MatRef::new(&qkv[base + qo..], n, hd, d3, 1)?;
                let keys = MatRef::new(&qkv[base + ko..], n, hd, d3, 1)?;
                let v = MatRef::new(&qkv[base + vo..], n, hd, d3, 1)?;
                let bias = bias.map(|b| &b[h * n * n..(h + 1) * n * n]);
                head(dst, q, keys, v, bias, s, k)
            },
        )
    };
    if crate::packed_f32::available() {
        // On the AVX2 path every head's last product overwrites its block (`Store::Overwrite`),
        // so the output is not zeroed first (0.3% of `dinov2-s`'s samples, Zen 3).
        // SAFETY: the views cover the output, and each head's last product reads none of its
        // view before writing all of it.
        unsafe { crate::buffer::try_new_matrix(seqs * n, d, heads_into) }
    } else {
        // `gemm` gets zeros.
        let mut out = vec![0f32; seqs * n * d];
        heads_into(MatMut::row_major(&mut out, seqs * n, d)?)?;
        Ok(out)
    }
}

/// Where q, k and v of head `h` start in a fused qkv row of `d` channels per part.
fn head_offsets(layout: QkvLayout, d: usize, hd: usize, h: usize) -> (usize, usize, usize) {
    match layout {
        QkvLayout::Blocks => (h * hd, d + h * hd, 2 * d + h * hd),
        QkvLayout::Interleaved => (3 * h * hd, 3 * h * hd + hd, 3 * h * hd + 2 * hd),
    }
}

/// A grid of tokens cut into square windows, as Swin/TinyViT attention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGrid {
    /// Images.
    pub batch: usize,
    /// Grid rows.
    pub height: usize,
    /// Grid columns.
    pub width: usize,
    /// Window side; a grid that it does not divide is padded at the bottom and right.
    pub window: usize,
}

impl WindowGrid {
    /// Windows down and across each image, the padded edges' included (none for a side of 0).
    pub fn tiles(&self) -> (usize, usize) {
        let ws = self.window.max(1);
        (self.height.div_ceil(ws), self.width.div_ceil(ws))
    }
}

/// Per-task buffers of [`window_attention`].
#[derive(Default)]
struct WindowScratch {
    /// Window positions of the grid's tokens.
    pos: Vec<usize>,
    /// Grid row of each of the window's grid tokens.
    rows: Vec<usize>,
    /// The task's heads' q, k and v of every window position, one row each.
    qkv: Vec<f32>,
    /// Those rows of the grid's tokens only, for a window the grid does not fill.
    q: Vec<f32>,
    /// The window's grid tokens' inputs to the qkv projection, when the task makes it.
    x: Vec<f32>,
    /// Their rows of the output projection's residual, and its output, when the task makes it.
    residual: Vec<f32>,
    projected: Vec<f32>,
    head: HeadScratch,
    bias: Vec<f32>,
    out: Vec<f32>,
}

/// How many of `heads` one task of [`window_attention`] takes: all of them, so that a
/// window's rows are gathered once, unless that leaves fewer than four tasks a thread; then
/// the largest divisor of `heads` that does not.
fn heads_per_task(windows: usize, heads: usize) -> usize {
    let want = 4 * rayon::current_num_threads();
    (1..=heads)
        .rev()
        .find(|&g| heads.is_multiple_of(g) && windows * (heads / g) >= want)
        .unwrap_or(1)
}

/// The ranges of a fused qkv row holding heads `h0 .. h0 + g` (each `hd` wide, `d` channels a
/// part), in the order [`head_offsets`] expects of a row of those heads only.
fn head_ranges(
    layout: QkvLayout,
    d: usize,
    hd: usize,
    h0: usize,
    g: usize,
) -> [std::ops::Range<usize>; 3] {
    match layout {
        QkvLayout::Blocks => {
            let part = |p: usize| p * d + h0 * hd..p * d + (h0 + g) * hd;
            [part(0), part(1), part(2)]
        }
        QkvLayout::Interleaved => {
            let all = 3 * h0 * hd..3 * (h0 + g) * hd;
            [all.clone(), all.end..all.end, all.end..all.end]
        }
    }
}

/// The output rows of [`window_attention`], written by its tasks without a lock.
struct Rows(*mut f32);

// SAFETY: the pointer is only written through, each (row, head) block by exactly one task
// (see `window_attention`), and the buffer outlives every task.
unsafe impl Sync for Rows {}

impl Rows {
    /// The element at `at` (a method, so that closures capture the `Sync` wrapper).
    fn at(&self, at: usize) -> *mut f32 {
        self.0.wrapping_add(at)
    }
}

/// Window attention over a channels-last grid (`grid.batch × height × width` tokens), without
/// padding, partitioning or cropping it: `qkv` is `(tokens, 3·dim)`, the grid's tokens only, in
/// grid order; `pad` (`3·dim`) is the qkv row of a padding token (the projection of a zero
/// row after its norm), which fills a window the grid does not. `bias` is an optional
/// `(heads, ws², ws²)` over window positions. Returns `(tokens, dim)` in grid order: what
/// padding the grid with zeros, [`attention`] over its windows and cropping give, up to the
/// order of float sums, with no work for the padding's queries.
///
/// One window per task, with all its heads ([`heads_per_task`]: a group of them when there are
/// too few windows to keep the threads busy). Each position's q, k and v of those heads are
/// gathered once, in window order, as one row; the heads read them through strided views.
/// Queries are the grid's tokens only (the padding's rows are not computed). Then, per head:
/// scores, softmax and the weighted values; each token's row of the task's heads is written
/// straight to its place. (One task per (window, head) copied 128 bytes at a time, three times
/// a token per head: a third of the attention's time in `litemedsam`, Zen 3.)
pub fn window_attention(
    qkv: &[f32],
    pad: &[f32],
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    windows(QkvSource::Rows(qkv), pad, grid, heads, layout, bias)
}

/// [`window_attention`] with the qkv projection made window by window, and optionally the
/// output projection and the residual after it: `x` is `(tokens, dim)`, the projection's
/// inputs (the normalised tokens) in grid order, `qkv` its weight (`3·dim` outputs of `x`'s
/// width, packed) and bias. Each task projects its window's tokens into its own scratch, which
/// stays in cache, where the projection of the whole grid wrote `3·dim` floats a token to
/// memory for the tasks to gather back (`litemedsam`'s first attention stage: 24 MiB an image
/// and block); with `out`, it also projects its window's attention and adds the residual
/// before writing the rows. The same values as [`crate::linear_packed`], [`window_attention`]
/// and [`crate::linear_packed`] again, bit for bit (test). Needs the AVX2 path
/// ([`crate::packed_f32::available`]); the tasks take all of a window's heads.
#[allow(clippy::too_many_arguments)]
pub fn window_attention_projected(
    x: &[f32],
    qkv: (&PackedF32, &[f32]),
    out: Option<OutProjection<'_>>,
    pad: &[f32],
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    let source = QkvSource::Project {
        x,
        w: qkv.0,
        bias: qkv.1,
        out,
    };
    windows(source, pad, grid, heads, layout, bias)
}

/// The largest qkv weight [`window_attention_block`] projects window by window: each window
/// reads all of it, so it must stay in L2 between windows. `litemedsam` on Zen 3 (512 KiB of
/// L2 a core), the qkv projection and the attention of one block by window against layer by
/// layer (best of 5, three runs): 128 → 384 (192 KiB) 1.04–1.13x on one thread, 1.03–1.06x
/// on two; 160 → 480 (300 KiB) 1.04–1.08x and 1.00–1.18x; but 320 → 960 (1.2 MiB, from L3
/// once a window) 0.95–0.99x and 0.91–0.97x.
const PROJECTED_WEIGHT_BYTES: usize = 384 << 10;

/// Whether `tasks` of equal work keep `threads` busy to within 2% (the last round of tasks
/// leaves threads idle). A task that projects its window takes all of it: `litemedsam`'s
/// 14-sided windows are 25 an image, 13 against 12 on two threads, which cost about what
/// projecting by window saved (`kernel_bench`'s attention block on two threads, 0.92–1.04x,
/// once 0.65x).
fn balanced(tasks: usize, threads: usize) -> bool {
    tasks.div_ceil(threads.max(1)) * threads.max(1) * 50 <= tasks * 51
}

/// Whether [`window_attention_block`] goes window by window for a qkv weight `qkv` over
/// `grid`, on the calling thread's rayon pool: where the weight fits `PROJECTED_WEIGHT_BYTES`
/// (384 KiB) and the windows share out evenly over the threads (`balanced`). It sits beside
/// `heads_per_task`, which shares a window's heads out.
pub fn by_window(qkv: &PackedF32, grid: WindowGrid) -> bool {
    let (nh, nw) = grid.tiles();
    qkv.n() * qkv.k() * 4 <= PROJECTED_WEIGHT_BYTES
        && balanced(grid.batch * nh * nw, rayon::current_num_threads())
}

/// An attention block's residual branch over windows, `residual + proj(attention(qkv(x)))`,
/// on packed f32 weights: `x` `(tokens, dim_in)` the normalised tokens in grid order, `out`
/// the output projection with the block's input as its residual. Window by window
/// ([`window_attention_projected`]) where [`by_window`] says it pays, layer by layer
/// ([`crate::linear_packed`], [`window_attention`], [`crate::linear_packed`]) elsewhere: the
/// same values bit for bit (test). Needs the AVX2 path ([`crate::packed_f32::available`]).
#[allow(clippy::too_many_arguments)]
pub fn window_attention_block(
    x: &[f32],
    qkv: (&PackedF32, &[f32]),
    out: OutProjection<'_>,
    pad: &[f32],
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    if by_window(qkv.0, grid) {
        return window_attention_projected(x, qkv, Some(out), pad, grid, heads, layout, bias);
    }
    let (k, tokens) = (qkv.0.k(), x.len() / qkv.0.k().max(1));
    let q = crate::linear_packed(x, (tokens, k), qkv.0, qkv.1, None, Act::None)?;
    let o = window_attention(&q, pad, grid, heads, layout, bias)?;
    let d = out.weight.k();
    let (w, b, r) = (out.weight, out.bias, Some(out.residual));
    crate::linear_packed(&o, (o.len() / d.max(1), d), w, b, r, Act::None)
}

/// The output projection of [`window_attention_projected`]: each token's row becomes
/// `residual + o·wᵀ + bias`, as an attention block's residual branch ends.
#[derive(Clone, Copy)]
pub struct OutProjection<'a> {
    /// `dim` outputs of `dim` inputs, packed.
    pub weight: &'a PackedF32,
    /// Its bias, `dim`.
    pub bias: &'a [f32],
    /// The rows added, `(tokens, dim)` in grid order (the block's input).
    pub residual: &'a [f32],
}

/// Where a window's qkv rows come from.
#[derive(Clone, Copy)]
enum QkvSource<'a> {
    /// The rows of the whole grid's projection, `(tokens, 3·dim)`.
    Rows(&'a [f32]),
    /// Projected per window from the inputs `x`, `(tokens, dim)`, and projected out again
    /// with `out`.
    Project {
        x: &'a [f32],
        w: &'a PackedF32,
        bias: &'a [f32],
        out: Option<OutProjection<'a>>,
    },
}

/// [`window_attention`] and [`window_attention_projected`].
fn windows(
    source: QkvSource<'_>,
    pad: &[f32],
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    let WindowGrid {
        batch: b,
        height: h,
        width: w,
        window: ws,
    } = grid;
    let tokens = b * h * w;
    check(tokens > 0 && ws > 0 && heads > 0, || {
        format!("window attention: {grid:?}, {heads} heads")
    })?;
    let (d3, given) = match source {
        QkvSource::Rows(qkv) => (qkv.len() / tokens, qkv.len()),
        QkvSource::Project { w, .. } => (w.n(), tokens * w.n()),
    };
    let d = d3 / 3;
    let hd = d / heads;
    check(
        tokens * d3 == given && 3 * d == d3 && hd * heads == d && hd > 0 && pad.len() == d3,
        || {
            format!(
                "window attention: qkv of {given} and pad of {} do not match {tokens} tokens and {heads} heads",
                pad.len()
            )
        },
    )?;
    if let QkvSource::Project { x, w, bias, out } = source {
        check(
            x.len() == tokens * w.k() && bias.len() == d3 && crate::packed_f32::available(),
            || {
                format!(
                    "window attention: inputs of {} and a projection of {} inputs (bias {}) do \
                     not match {tokens} tokens, or the CPU lacks the packed products",
                    x.len(),
                    w.k(),
                    bias.len()
                )
            },
        )?;
        check(
            out.is_none_or(|o| {
                (o.weight.n(), o.weight.k(), o.bias.len()) == (d, d, d)
                    && o.residual.len() == tokens * d
            }),
            || format!("window attention: the output projection does not fit {tokens} × {d}"),
        )?;
    }
    let n = ws * ws;
    check(bias.is_none_or(|b| b.len() == heads * n * n), || {
        format!(
            "window attention: bias of {} is not {heads}×{n}×{n}",
            bias.map_or(0, |b| b.len())
        )
    })?;
    let (nh, nw) = grid.tiles();
    let windows = b * nh * nw;
    // A task that projects its window makes every head's q, k and v.
    let g = match source {
        QkvSource::Rows(_) => heads_per_task(windows, heads),
        QkvSource::Project { .. } => heads,
    };
    let (gd, gd3) = (g * hd, 3 * g * hd);
    let mut out: Vec<f32> = Vec::with_capacity(tokens * d);
    let dst = Rows(out.as_mut_ptr());
    let k = crate::kernels();
    (0..windows * (heads / g))
        .into_par_iter()
        .try_for_each_init(
            WindowScratch::default,
            |s, task| -> Result<(), KernelError> {
                let (win, h0) = (task / (heads / g), task % (heads / g) * g);
                let (bi, iy, ix) = (win / (nh * nw), win % (nh * nw) / nw, win % nw);
                // The window positions the grid fills, and their grid rows.
                s.pos.clear();
                s.rows.clear();
                for p in 0..n {
                    let (y, x) = (iy * ws + p / ws, ix * ws + p % ws);
                    if y < h && x < w {
                        s.pos.push(p);
                        s.rows.push((bi * h + y) * w + x);
                    }
                }
                let nr = s.pos.len();
                // The task's heads of every window position, in window order (the padding's
                // where the grid ends): one row of `gd3` each, laid out as a qkv row of `g` heads.
                match source {
                    QkvSource::Rows(qkv) => {
                        let ranges = head_ranges(layout, d, hd, h0, g);
                        s.qkv.clear();
                        let mut grid_rows = s.pos.iter().zip(&s.rows).peekable();
                        for p in 0..n {
                            let row = match grid_rows.next_if(|&(&q, _)| q == p) {
                                Some((_, &r)) => &qkv[r * d3..(r + 1) * d3],
                                None => pad,
                            };
                            for range in ranges.iter().filter(|r| !r.is_empty()) {
                                s.qkv.extend_from_slice(&row[range.clone()]);
                            }
                        }
                    }
                    QkvSource::Project {
                        x, w: pw, bias: pb, ..
                    } => project_window(s, x, pw, pb, pad, n)?,
                }
                // Queries for the grid's tokens only: all rows of a full window, else a copy of
                // the grid's rows.
                let queries: &[f32] = if nr == n {
                    &s.qkv
                } else {
                    s.q.clear();
                    for &p in &s.pos {
                        s.q.extend_from_slice(&s.qkv[p * gd3..(p + 1) * gd3]);
                    }
                    &s.q
                };
                s.out.resize(nr * gd, 0.0);
                for j in 0..g {
                    let hh = h0 + j;
                    let (qo, ko, vo) = head_offsets(layout, gd, hd, j);
                    let bias = match bias.map(|b| &b[hh * n * n..(hh + 1) * n * n]) {
                        Some(bh) if nr == n => Some(bh),
                        // The bias's rows of the grid's tokens.
                        Some(bh) => {
                            s.bias.clear();
                            for &p in &s.pos {
                                s.bias.extend_from_slice(&bh[p * n..(p + 1) * n]);
                            }
                            Some(&s.bias[..])
                        }
                        None => None,
                    };
                    head(
                        MatMut::new(&mut s.out[j * hd..], nr, hd, gd, 1)?,
                        MatRef::new(&queries[qo..], nr, hd, gd3, 1)?,
                        MatRef::new(&s.qkv[ko..], n, hd, gd3, 1)?,
                        MatRef::new(&s.qkv[vo..], n, hd, gd3, 1)?,
                        bias,
                        &mut s.head,
                        k,
                    )?;
                }
                let rows_out = match source {
                    QkvSource::Project { out: Some(o), .. } => {
                        project_out(s, o)?;
                        &s.projected
                    }
                    _ => &s.out,
                };
                for (o, &r) in rows_out.chunks(gd).zip(&s.rows) {
                    // SAFETY: `r < tokens` and `h0·hd + gd ≤ d`, so the block is inside the
                    // buffer's capacity of `tokens·d`; each grid token is in exactly one window
                    // and the tasks of a window take disjoint heads, so no other task writes it.
                    unsafe {
                        std::ptr::copy_nonoverlapping(o.as_ptr(), dst.at(r * d + h0 * hd), gd);
                    }
                }
                Ok(())
            },
        )?;
    // SAFETY: every grid token is in one window, and the tasks of that window wrote all of its
    // heads' blocks, so all `tokens·d` elements are written.
    unsafe { out.set_len(tokens * d) };
    Ok(out)
}

/// A task's window rows of q, k and v, all heads (`3·dim` a row, in window order), projected
/// from its grid tokens' rows of `x` (`s.rows`, at positions `s.pos`); the padding's rows are
/// `pad`. The grid tokens are projected together (one product), then moved to their positions.
fn project_window(
    s: &mut WindowScratch,
    x: &[f32],
    w: &PackedF32,
    bias: &[f32],
    pad: &[f32],
    n: usize,
) -> Result<(), KernelError> {
    let (k, d3, nr) = (w.k(), w.n(), s.rows.len());
    s.x.clear();
    for &r in &s.rows {
        s.x.extend_from_slice(&x[r * k..(r + 1) * k]);
    }
    // Sized once a task: every element is written below (the product, then the moves or the
    // padding), so the scratch is not cleared between windows.
    s.qkv.resize(n * d3, 0.0);
    let e = Epilogue {
        bias,
        residual: None,
        act: Act::None,
    };
    gemm_packed(
        MatMut::row_major(&mut s.qkv[..nr * d3], nr, d3)?,
        MatRef::row_major(&s.x, nr, k)?,
        w,
        0,
        Store::Finish(e),
    )?;
    if nr < n {
        // Row i goes to position pos[i] ≥ i: from the last, so none is overwritten first.
        for (i, &p) in s.pos.iter().enumerate().rev() {
            if p != i {
                s.qkv.copy_within(i * d3..(i + 1) * d3, p * d3);
            }
        }
        let mut grid_pos = s.pos.iter().peekable();
        for p in 0..n {
            if grid_pos.next_if(|&&q| q == p).is_none() {
                s.qkv[p * d3..(p + 1) * d3].copy_from_slice(pad);
            }
        }
    }
    Ok(())
}

/// A task's attention rows (`s.out`, all heads) projected out, with the residual rows of its
/// grid tokens added, into `s.projected`: the rows the task writes.
fn project_out(s: &mut WindowScratch, o: OutProjection<'_>) -> Result<(), KernelError> {
    let (d, nr) = (o.weight.n(), s.rows.len());
    s.residual.clear();
    for &r in &s.rows {
        s.residual
            .extend_from_slice(&o.residual[r * d..(r + 1) * d]);
    }
    s.projected.resize(nr * d, 0.0);
    let e = Epilogue {
        bias: o.bias,
        residual: Some(&s.residual),
        act: Act::None,
    };
    gemm_packed(
        MatMut::row_major(&mut s.projected, nr, d)?,
        MatRef::row_major(&s.out, nr, d)?,
        o.weight,
        0,
        Store::Finish(e),
    )
}

/// Attention for each sequence's first token only, as a CLS-pooled ViT's last block needs:
/// `q` is `(seqs, dim)`, the first tokens' queries (scale folded in); `kv` is
/// `(seqs·tokens, 2·dim)`, every token's keys then values (`[k | v]`, heads in order, as the
/// k and v of [`QkvLayout::Blocks`]). Returns `(seqs, dim)`: row 0 of each sequence of
/// [`attention`], up to the order of float sums. One (sequence, head) per task: `tokens` dot
/// products, a softmax, and the weighted sum of the values.
pub fn attention_first(
    q: &[f32],
    kv: &[f32],
    seqs: usize,
    tokens: usize,
    heads: usize,
) -> Result<Vec<f32>, KernelError> {
    let n = tokens;
    check(seqs > 0 && n > 0 && heads > 0, || {
        format!("attention: {seqs} sequences, {n} tokens, {heads} heads")
    })?;
    let d = q.len() / seqs;
    let hd = d / heads;
    check(
        seqs * d == q.len() && hd * heads == d && hd > 0 && kv.len() == seqs * n * 2 * d,
        || {
            format!(
                "attention: q of {} and kv of {} do not match {seqs}×{n} tokens and {heads} heads",
                q.len(),
                kv.len()
            )
        },
    )?;
    let mut out = vec![0f32; seqs * d];
    let k = crate::kernels();
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || vec![0f32; n],
        |scores, (task, dst)| {
            let (sq, h) = (task / heads, task % heads);
            let qh = &q[sq * d + h * hd..][..hd];
            let row = |j: usize| &kv[(sq * n + j) * 2 * d..][..2 * d];
            for (j, s) in scores.iter_mut().enumerate() {
                *s = k.dot(qh, &row(j)[h * hd..][..hd]);
            }
            k.softmax_rows(scores, n, None);
            for (j, &p) in scores.iter().enumerate() {
                for (o, &v) in dst.iter_mut().zip(&row(j)[d + h * hd..][..hd]) {
                    *o += p * v;
                }
            }
        },
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::lcg;

    /// The reference's way: pad the grid's qkv rows with `pad`, cut it into windows, run
    /// [`attention`] over them and put the grid's rows back.
    fn padded(
        qkv: &[f32],
        pad: &[f32],
        g: WindowGrid,
        heads: usize,
        layout: QkvLayout,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let (ws, d3) = (g.window, pad.len());
        let (nh, nw) = g.tiles();
        let mut windows = Vec::new();
        let mut rows = Vec::new();
        for bi in 0..g.batch {
            for iy in 0..nh {
                for ix in 0..nw {
                    for p in 0..ws * ws {
                        let (y, x) = (iy * ws + p / ws, ix * ws + p % ws);
                        if y < g.height && x < g.width {
                            let r = (bi * g.height + y) * g.width + x;
                            windows.extend_from_slice(&qkv[r * d3..(r + 1) * d3]);
                            rows.push(Some(r));
                        } else {
                            windows.extend_from_slice(pad);
                            rows.push(None);
                        }
                    }
                }
            }
        }
        let seqs = g.batch * nh * nw;
        let att = attention(&windows, seqs, ws * ws, heads, layout, bias).unwrap();
        let d = d3 / 3;
        let mut out = vec![f32::NAN; g.batch * g.height * g.width * d];
        for (i, r) in rows.iter().enumerate() {
            if let Some(r) = r {
                out[r * d..(r + 1) * d].copy_from_slice(&att[i * d..(i + 1) * d]);
            }
        }
        out
    }

    /// Grids the window divides and does not (padding at the bottom, the right, both), one
    /// window or many, both qkv layouts, with and without a bias, on 1 and 3 threads, tasks of
    /// one head, some heads or all: the same as padding, partitioning, attending and cropping.
    #[test]
    fn window_attention_is_padded_partitioned_attention() {
        let hd = 8;
        // With 4 heads, the tasks take 4, 2 or 1 of them, by the windows and threads.
        for (batch, height, width, window, heads) in [
            (1, 4, 4, 4, 3),
            (2, 8, 12, 4, 3),
            (1, 9, 8, 4, 3),
            (2, 7, 11, 4, 3),
            (1, 5, 6, 7, 3),
            (1, 9, 8, 4, 4),
            (2, 7, 11, 4, 4),
            (1, 5, 6, 7, 4),
        ] {
            let d = heads * hd;
            let g = WindowGrid {
                batch,
                height,
                width,
                window,
            };
            let tokens = batch * height * width;
            let qkv = lcg(tokens * 3 * d, 1);
            let pad = lcg(3 * d, 2);
            let n = window * window;
            let bias = lcg(heads * n * n, 3);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                for layout in [QkvLayout::Blocks, QkvLayout::Interleaved] {
                    for b in [None, Some(&bias[..])] {
                        let got = pool
                            .install(|| window_attention(&qkv, &pad, g, heads, layout, b))
                            .unwrap();
                        let want = padded(&qkv, &pad, g, heads, layout, b);
                        assert_eq!(got.len(), want.len());
                        let worst = got
                            .iter()
                            .zip(&want)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        assert!(
                            worst < 1e-5,
                            "{g:?} {heads} heads {layout:?} bias {}: {worst}",
                            b.is_some()
                        );
                    }
                }
            }
        }
    }

    /// Projecting each window's tokens in its task gives the projection of the whole grid
    /// then [`window_attention`], and with the output projection, the projection of its
    /// output with the residual, bit for bit: full and part windows, both layouts, with and
    /// without a bias, on 1 and 3 threads. Inputs or projections that do not fit are refused.
    #[test]
    fn projected_windows_are_the_projection_then_the_windows() {
        if !crate::packed_f32::available() {
            eprintln!("no AVX2 path here: the packed projections cannot run");
            return;
        }
        let hd = 8;
        for (batch, height, width, window, heads, dim_in) in [
            (1, 4, 4, 4, 3, 20),
            (2, 7, 11, 4, 3, 16),
            (1, 9, 8, 4, 4, 33),
            (1, 5, 6, 7, 4, 8),
        ] {
            let d = heads * hd;
            let g = WindowGrid {
                batch,
                height,
                width,
                window,
            };
            let tokens = batch * height * width;
            let x = lcg(tokens * dim_in, 11);
            let w = PackedF32::pack(&lcg(3 * d * dim_in, 12), 3 * d, dim_in).unwrap();
            let (wb, pad) = (lcg(3 * d, 13), lcg(3 * d, 14));
            let wo = PackedF32::pack(&lcg(d * d, 16), d, d).unwrap();
            let (bo, residual) = (lcg(d, 17), lcg(tokens * d, 18));
            let out = OutProjection {
                weight: &wo,
                bias: &bo,
                residual: &residual,
            };
            let n = window * window;
            let bias = lcg(heads * n * n, 15);
            let linear = |x: &[f32], k: usize, w: &PackedF32, b: &[f32], r: Option<&[f32]>| {
                crate::linear_packed(x, (tokens, k), w, b, r, Act::None).unwrap()
            };
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                for layout in [QkvLayout::Blocks, QkvLayout::Interleaved] {
                    for b in [None, Some(&bias[..])] {
                        for o in [None, Some(out)] {
                            let (got, want) = pool.install(|| {
                                let qkv = linear(&x, dim_in, &w, &wb, None);
                                let a = window_attention(&qkv, &pad, g, heads, layout, b).unwrap();
                                let want = match o {
                                    Some(o) => linear(&a, d, o.weight, o.bias, Some(o.residual)),
                                    None => a,
                                };
                                let got = window_attention_projected(
                                    &x,
                                    (&w, &wb),
                                    o,
                                    &pad,
                                    g,
                                    heads,
                                    layout,
                                    b,
                                );
                                (got.unwrap(), want)
                            });
                            let same = got.len() == want.len()
                                && got
                                    .iter()
                                    .zip(&want)
                                    .all(|(a, e)| a.to_bits() == e.to_bits());
                            assert!(
                                same,
                                "{g:?} {heads} heads {layout:?} bias {} out {}",
                                b.is_some(),
                                o.is_some()
                            );
                        }
                    }
                }
            }
            let run = |x: &[f32], wb: &[f32], o: Option<OutProjection<'_>>| {
                let l = QkvLayout::Blocks;
                window_attention_projected(x, (&w, wb), o, &pad, g, heads, l, None)
            };
            assert!(run(&x[1..], &wb, None).is_err());
            assert!(run(&x, &wb[1..], None).is_err());
            let short = OutProjection {
                residual: &residual[1..],
                ..out
            };
            assert!(run(&x, &wb, Some(short)).is_err());
            let wide = PackedF32::pack(&lcg(d * (d + 1), 19), d, d + 1).unwrap();
            let wide = OutProjection {
                weight: &wide,
                ..out
            };
            assert!(run(&x, &wb, Some(wide)).is_err());
        }
    }

    #[test]
    fn tasks_take_all_heads_unless_too_few_windows() {
        let pool = |t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        };
        // litemedsam's stages on 2 threads: 361, 25 and 100 windows take all their heads.
        for (windows, heads) in [(361, 4), (25, 5), (100, 10)] {
            assert_eq!(pool(2).install(|| heads_per_task(windows, heads)), heads);
        }
        // On 16 threads, 25 windows of 5 heads need one head a task; 16 windows of 10 heads
        // need 4 tasks a window, so 2 heads a task (64 tasks); one window of 3 heads, 1.
        assert_eq!(pool(16).install(|| heads_per_task(25, 5)), 1);
        assert_eq!(pool(16).install(|| heads_per_task(16, 10)), 2);
        assert_eq!(pool(16).install(|| heads_per_task(1, 3)), 1);
    }

    #[test]
    fn a_pad_row_of_another_width_is_an_error() {
        let g = WindowGrid {
            batch: 1,
            height: 2,
            width: 2,
            window: 2,
        };
        let e = window_attention(&[0.0; 4 * 12], &[0.0; 6], g, 2, QkvLayout::Blocks, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not match"), "{e}");
    }

    /// The block equals the layers it replaces bit for bit whichever way it goes: by window on
    /// one thread, layer by layer on two, where its three windows do not share out evenly.
    #[test]
    fn window_block_is_the_layers_either_way() {
        if !crate::packed_f32::available() {
            eprintln!("no AVX2 path here: the packed projections cannot run");
            return;
        }
        let (heads, hd, dim_in) = (2, 8, 12);
        let d = heads * hd;
        let g = WindowGrid {
            batch: 1,
            height: 4,
            width: 11,
            window: 4,
        };
        let tokens = 44;
        let x = lcg(tokens * dim_in, 21);
        let w = PackedF32::pack(&lcg(3 * d * dim_in, 22), 3 * d, dim_in).unwrap();
        let (wb, pad) = (lcg(3 * d, 23), lcg(3 * d, 24));
        let wo = PackedF32::pack(&lcg(d * d, 25), d, d).unwrap();
        let (bo, residual, bias) = (lcg(d, 26), lcg(tokens * d, 27), lcg(heads * 256, 28));
        let out = OutProjection {
            weight: &wo,
            bias: &bo,
            residual: &residual,
        };
        let layout = QkvLayout::Interleaved;
        for (threads, windowed) in [(1, true), (2, false)] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (got, want, went) = pool.install(|| {
                let qkv = crate::linear_packed(&x, (tokens, dim_in), &w, &wb, None, Act::None);
                let a = window_attention(&qkv.unwrap(), &pad, g, heads, layout, Some(&bias));
                let r = Some(&residual[..]);
                let want = crate::linear_packed(&a.unwrap(), (tokens, d), &wo, &bo, r, Act::None);
                let got =
                    window_attention_block(&x, (&w, &wb), out, &pad, g, heads, layout, Some(&bias));
                (got.unwrap(), want.unwrap(), by_window(&w, g))
            });
            assert_eq!(went, windowed, "{threads} threads");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{threads} threads");
        }
    }

    /// Windows go by window only where the tasks share out evenly (`litemedsam`'s 361
    /// windows on two threads, not its 25) and the qkv weight fits L2 (128 → 384 and 160 →
    /// 480, not 320 → 960).
    #[test]
    fn windows_share_out_evenly_or_go_by_layer() {
        assert!(balanced(361, 2) && balanced(100, 2) && balanced(25, 1));
        assert!(!balanced(25, 2) && !balanced(3, 2));
        assert!(balanced(0, 0) && balanced(7, 1));
        let grid = WindowGrid {
            batch: 1,
            height: 7,
            width: 7,
            window: 7,
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for (n, k, fits) in [(384, 128, true), (480, 160, true), (960, 320, false)] {
            let w = PackedF32::pack(&vec![0.0; n * k], n, k).unwrap();
            assert_eq!(one.install(|| by_window(&w, grid)), fits, "{k} → {n}");
        }
    }
}
