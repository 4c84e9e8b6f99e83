//! Multi-head self-attention from a fused qkv projection, one (sequence, head) per task:
//! `softmax(q·kᵀ + bias)·v` written straight into `(tokens, heads·hd)` order. The scale is
//! expected to be folded into q. Saves the q/k/v and output transposes of a tensor version;
//! the windowed form also saves padding, partitioning and cropping a grid, and the padding's
//! queries.

use crate::error::{check, KernelError};
use crate::gemm::{sgemm, MatMut, MatRef, Threads};
use rayon::prelude::*;

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
    let mut out = vec![0f32; seqs * n * d];
    // One disjoint view per (sequence, head), in task order: sequence-major.
    let views: Vec<MatMut> = MatMut::row_major(&mut out, seqs * n, d)?
        .split_rows(n)
        .into_iter()
        .flat_map(|s| s.split_cols(hd))
        .collect();
    let k = crate::kernels();
    views.into_par_iter().enumerate().try_for_each_init(
        || vec![0f32; n * n],
        |scores, (task, dst)| {
            let (sq, h) = (task / heads, task % heads);
            let base = sq * n * d3;
            let (qo, ko, vo) = head_offsets(layout, d, hd, h);
            let q = MatRef::new(&qkv[base + qo..], n, hd, d3, 1)?;
            let kt = MatRef::new(&qkv[base + ko..], n, hd, d3, 1)?.t();
            let v = MatRef::new(&qkv[base + vo..], n, hd, d3, 1)?;
            sgemm(MatMut::row_major(scores, n, n)?, false, q, kt, Threads::One)?;
            let bias = bias.map(|b| &b[h * n * n..(h + 1) * n * n]);
            k.softmax_rows(scores, n, bias);
            sgemm(
                dst,
                false,
                MatRef::row_major(scores, n, n)?,
                v,
                Threads::One,
            )
        },
    )?;
    Ok(out)
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

/// Per-task buffers of [`window_attention`].
#[derive(Default)]
struct WindowScratch {
    /// Window positions of the grid's tokens.
    pos: Vec<usize>,
    /// Grid row of each of the window's grid tokens.
    rows: Vec<usize>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
    bias: Vec<f32>,
    out: Vec<f32>,
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
/// One (window, head) per task: its keys and values gathered in window order, its queries for
/// the grid's tokens only (the padding's rows are not computed), then scores, softmax and the
/// weighted values, each row written straight to its token.
pub fn window_attention(
    qkv: &[f32],
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
    let d3 = qkv.len() / tokens;
    let d = d3 / 3;
    let hd = d / heads;
    check(
        tokens * d3 == qkv.len() && 3 * d == d3 && hd * heads == d && hd > 0 && pad.len() == d3,
        || {
            format!(
                "window attention: qkv of {} and pad of {} do not match {tokens} tokens and {heads} heads",
                qkv.len(),
                pad.len()
            )
        },
    )?;
    let n = ws * ws;
    check(bias.is_none_or(|b| b.len() == heads * n * n), || {
        format!(
            "window attention: bias of {} is not {heads}×{n}×{n}",
            bias.map_or(0, |b| b.len())
        )
    })?;
    let (nh, nw) = (h.div_ceil(ws), w.div_ceil(ws));
    let mut out: Vec<f32> = Vec::with_capacity(tokens * d);
    let dst = Rows(out.as_mut_ptr());
    let k = crate::kernels();
    (0..b * nh * nw * heads).into_par_iter().try_for_each_init(
        WindowScratch::default,
        |s, task| -> Result<(), KernelError> {
            let (win, hh) = (task / heads, task % heads);
            let (bi, iy, ix) = (win / (nh * nw), win % (nh * nw) / nw, win % nw);
            // Keys and values in window order (the padding's where the grid ends), queries
            // for the grid's tokens only.
            let (qo, ko, vo) = head_offsets(layout, d, hd, hh);
            s.pos.clear();
            s.rows.clear();
            s.q.clear();
            s.k.clear();
            s.v.clear();
            for p in 0..n {
                let (y, x) = (iy * ws + p / ws, ix * ws + p % ws);
                let row = if y < h && x < w {
                    let r = (bi * h + y) * w + x;
                    s.pos.push(p);
                    s.rows.push(r);
                    let row = &qkv[r * d3..(r + 1) * d3];
                    s.q.extend_from_slice(&row[qo..qo + hd]);
                    row
                } else {
                    pad
                };
                s.k.extend_from_slice(&row[ko..ko + hd]);
                s.v.extend_from_slice(&row[vo..vo + hd]);
            }
            let nr = s.pos.len();
            s.scores.resize(nr * n, 0.0);
            sgemm(
                MatMut::row_major(&mut s.scores, nr, n)?,
                false,
                MatRef::row_major(&s.q, nr, hd)?,
                MatRef::row_major(&s.k, n, hd)?.t(),
                Threads::One,
            )?;
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
            k.softmax_rows(&mut s.scores, n, bias);
            s.out.resize(nr * hd, 0.0);
            sgemm(
                MatMut::row_major(&mut s.out, nr, hd)?,
                false,
                MatRef::row_major(&s.scores, nr, n)?,
                MatRef::row_major(&s.v, n, hd)?,
                Threads::One,
            )?;
            for (o, &r) in s.out.chunks(hd).zip(&s.rows) {
                // SAFETY: `r < tokens` and `hh·hd + hd ≤ d`, so the block is inside the
                // buffer's capacity of `tokens·d`; each grid token is in exactly one window
                // and each task has one head, so no other task writes this block.
                unsafe {
                    std::ptr::copy_nonoverlapping(o.as_ptr(), dst.at(r * d + hh * hd), hd);
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
        let (nh, nw) = (g.height.div_ceil(ws), g.width.div_ceil(ws));
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
    /// window or many, both qkv layouts, with and without a bias, on 1 and 3 threads: the same
    /// as padding, partitioning, attending and cropping.
    #[test]
    fn window_attention_is_padded_partitioned_attention() {
        let (heads, hd) = (3, 8);
        let d = heads * hd;
        for (batch, height, width, window) in [
            (1, 4, 4, 4),
            (2, 8, 12, 4),
            (1, 9, 8, 4),
            (2, 7, 11, 4),
            (1, 5, 6, 7),
        ] {
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
                            "{g:?} {layout:?} bias {}: {worst}",
                            b.is_some()
                        );
                    }
                }
            }
        }
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
}
