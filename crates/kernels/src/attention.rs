//! Multi-head self-attention from a fused qkv projection, one (sequence, head) per task:
//! `softmax(q·kᵀ + bias)·v` written straight into `(tokens, heads·hd)` order. The scale is
//! expected to be folded into q. Saves the q/k/v and output transposes of a tensor version.

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
            let (qo, ko, vo) = match layout {
                QkvLayout::Blocks => (h * hd, d + h * hd, 2 * d + h * hd),
                QkvLayout::Interleaved => (3 * h * hd, 3 * h * hd + hd, 3 * h * hd + 2 * hd),
            };
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
