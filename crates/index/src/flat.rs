//! Exact inner-product search over contiguous rows: SIMD dot products (from
//! `simcase-kernels`, AVX-512, AVX2+FMA or portable by CPU), or one GEMM per block when many
//! queries share a scan; rows split across threads, a bounded min-heap per thread, merged at
//! the end. Vectors are L2-normalised at
//! ingest, so the inner product is the cosine.

use crate::{Hit, VectorIndex};
use rayon::prelude::*;
use simcase_kernels::{kernels, sgemm, MatMut, MatRef, Threads};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Rows per work unit: 2048 × 512-d × 4 B = 4 MiB, large enough to amortise scheduling.
const CHUNK_ROWS: usize = 2048;
/// Rows per cache block when many queries share a scan (256 × 512 × 4 B = 512 KiB, in L2).
const BLOCK_ROWS: usize = 256;

#[derive(Clone, Copy, PartialEq)]
struct MinHit(Hit);

impl Eq for MinHit {}
impl PartialOrd for MinHit {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for MinHit {
    // Reverse on score so the heap's top is the weakest kept hit; ties keep the lower row.
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.score
            .total_cmp(&self.0.score)
            .then(self.0.row.cmp(&o.0.row))
    }
}

/// Keeps the `k` best hits seen.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<MinHit>,
}

impl TopK {
    /// Room for the `k` best of at most `rows` pushes: the heap never holds more than
    /// `min(k, rows)`, so that is all it reserves, whatever `k` a caller asks for.
    pub(crate) fn new(k: usize, rows: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(rows)),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, row: u64, score: f32) {
        if self.heap.len() < self.k {
            self.heap.push(MinHit(Hit { row, score }));
        } else if let Some(top) = self.heap.peek() {
            let worse = MinHit(Hit { row, score });
            if worse < *top {
                self.heap.pop();
                self.heap.push(worse);
            }
        }
    }

    /// The score a new hit must at least reach to be kept: the weakest kept hit's once `k`
    /// are kept, else −∞. A score strictly below it would be refused by [`push`](Self::push).
    #[inline]
    fn floor(&self) -> f32 {
        match self.heap.peek() {
            Some(top) if self.heap.len() >= self.k => top.0.score,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Push the scores of rows `start..` (`scores[i]` is row `start + i`'s) that `kept`
    /// allows; the same as pushing each, but a score below the floor costs one comparison.
    #[inline]
    pub(crate) fn push_row_scores(&mut self, start: usize, scores: &[f32], kept: &[bool]) {
        let mut floor = self.floor();
        for (i, (&s, &k)) in scores.iter().zip(kept).enumerate() {
            // `push` would refuse it (NaN and equal scores go through `push`'s total order).
            if s < floor || !k {
                continue;
            }
            self.push((start + i) as u64, s);
            floor = self.floor();
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for h in other.heap {
            self.push(h.0.row, h.0.score);
        }
        self
    }

    /// Best first; equal scores by ascending row, so results are deterministic.
    pub(crate) fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.into_iter().map(|h| h.0).collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        v
    }
}

/// Inner product on the kernel path this CPU runs (AVX-512, AVX2+FMA or portable; see
/// `simcase_kernels::dispatch`).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    simcase_kernels::dot(a, b)
}

/// From this many queries on, a chunk's scores come from one GEMM (queries × rowsᵀ), which
/// reuses each row from cache across all queries instead of streaming it once per query.
pub(crate) const GEMM_MIN_QUERIES: usize = 8;

type Keep<'a> = Option<&'a (dyn Fn(u64) -> bool + Sync)>;

fn scan_dots(
    data: &[f32],
    dim: usize,
    queries: &[&[f32]],
    start: usize,
    end: usize,
    keep: Keep,
    tops: &mut [TopK],
) {
    let kern = kernels();
    // Blocked so that a block of rows stays in cache while every query visits it.
    for b in (start..end).step_by(BLOCK_ROWS) {
        let be = (b + BLOCK_ROWS).min(end);
        for (q, top) in queries.iter().zip(tops.iter_mut()) {
            for r in b..be {
                if keep.is_some_and(|f| !f(r as u64)) {
                    continue;
                }
                top.push(r as u64, kern.dot(q, &data[r * dim..(r + 1) * dim]));
            }
        }
    }
}

fn scan_gemm(
    data: &[f32],
    dim: usize,
    queries: &[&[f32]],
    start: usize,
    end: usize,
    keep: Keep,
    tops: &mut [TopK],
) {
    let nq = queries.len();
    let rows = end - start;
    let mut q = Vec::with_capacity(nq * dim);
    for x in queries {
        q.extend_from_slice(&x[..dim]);
    }
    let mut scores = vec![0f32; nq * rows];
    let block = &data[start * dim..end * dim];
    // scores (nq×rows) = q (nq×dim) · blockᵀ (dim×rows); the shapes fit by construction.
    let shapes = MatMut::row_major(&mut scores, nq, rows).and_then(|s| {
        let q = MatRef::row_major(&q, nq, dim)?;
        let rows_t = MatRef::row_major(block, rows, dim)?.t();
        sgemm(s, false, q, rows_t, Threads::One)
    });
    if let Err(e) = shapes {
        unreachable!("flat search: {e}");
    }
    let kept: Vec<bool> = (start..end)
        .map(|r| keep.is_none_or(|f| f(r as u64)))
        .collect();
    for (top, srow) in tops.iter_mut().zip(scores.chunks_exact(rows)) {
        top.push_row_scores(start, srow, &kept);
    }
}

/// Scan `data` (rows of `dim`) for each query; `keep` filters rows (e.g. a split or a label).
/// Each query must have `dim` values.
///
/// Memory, for `q` queries over `n` rows, is bounded by the rows, not by `k`: every heap
/// reserves only what it can fill, so the per-thread heaps hold at most `n` hits per query in
/// all and the merged ones `min(k, n)`, at 16 B a hit: at most 16 B × q × (n + min(k, n)),
/// plus the result (the same `min(k, n)` hits). Queries of 8 or more also take
/// 4 B × q × (dim + 2048) of scratch per running thread for the GEMM. Any `k`, even
/// `usize::MAX`, is safe.
pub fn search_rows(
    data: &[f32],
    dim: usize,
    queries: &[&[f32]],
    k: usize,
    keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
) -> Vec<Vec<Hit>> {
    let rows = data.len() / dim.max(1);
    if k == 0 || rows == 0 || queries.is_empty() {
        return vec![Vec::new(); queries.len()];
    }
    let gemm = queries.len() >= GEMM_MIN_QUERIES;
    par_topk(rows, queries.len(), k, |start, end, tops| {
        if gemm {
            scan_gemm(data, dim, queries, start, end, keep, tops);
        } else {
            scan_dots(data, dim, queries, start, end, keep, tops);
        }
    })
    .into_iter()
    .map(TopK::into_sorted)
    .collect()
}

/// The parallel frame of every scan: rows `0..rows` in chunks of [`CHUNK_ROWS`] across
/// threads, `scan(start, end, tops)` pushing each chunk's hits into one [`TopK`] of `k` per
/// query. A thread's heaps carry over from chunk to chunk (rayon's fold), so that once they
/// are full most scores fall below their floor and cost one comparison; the threads' heaps
/// are merged at the end (one per query, in query order). The top `k` by (score, row) does
/// not depend on the order rows are pushed in, so neither does the result.
pub(crate) fn par_topk(
    rows: usize,
    nq: usize,
    k: usize,
    scan: impl Fn(usize, usize, &mut [TopK]) + Sync,
) -> Vec<TopK> {
    let chunks = rows.div_ceil(CHUNK_ROWS);
    // Heaps reserve what one chunk can fill and grow from there (bounded by the rows).
    let fresh = || -> Vec<TopK> {
        (0..nq)
            .map(|_| TopK::new(k, CHUNK_ROWS.min(rows)))
            .collect()
    };
    (0..chunks)
        .into_par_iter()
        .fold(fresh, |mut tops, c| {
            let start = c * CHUNK_ROWS;
            let end = (start + CHUNK_ROWS).min(rows);
            scan(start, end, &mut tops);
            tops
        })
        .reduce(fresh, |a, b| {
            a.into_iter()
                .zip(b)
                .map(|(a, b)| {
                    if a.heap.len() >= b.heap.len() {
                        a.merge(b)
                    } else {
                        b.merge(a)
                    }
                })
                .collect()
        })
}

/// An in-memory or memory-mapped flat index.
pub struct FlatIndex<D: AsRef<[f32]> + Send + Sync> {
    data: D,
    dim: usize,
}

impl<D: AsRef<[f32]> + Send + Sync> FlatIndex<D> {
    /// Rows of `dim` values, row-major (the length must be a whole number of rows).
    pub fn new(data: D, dim: usize) -> Self {
        assert!(
            dim > 0 && data.as_ref().len() % dim == 0,
            "rows must be whole"
        );
        Self { data, dim }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data.as_ref()[r * self.dim..(r + 1) * self.dim]
    }
}

impl<D: AsRef<[f32]> + Send + Sync> VectorIndex for FlatIndex<D> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.data.as_ref().len() / self.dim
    }

    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> anyhow::Result<Vec<Vec<Hit>>> {
        Ok(search_rows(self.data.as_ref(), self.dim, queries, k, keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(data: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<u64> {
        let mut s: Vec<(f32, u64)> = data
            .chunks(dim)
            .enumerate()
            .map(|(i, r)| (r.iter().zip(q).map(|(a, b)| a * b).sum(), i as u64))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        s.into_iter().take(k).map(|x| x.1).collect()
    }

    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn dot_matches_naive_for_odd_lengths() {
        for n in [1, 7, 8, 31, 33, 100, 512] {
            let a = pseudo(n, 1);
            let b = pseudo(n, 2);
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn topk_equals_brute_force_across_chunks() {
        let (dim, rows) = (37, 5000); // spans several chunks and a ragged last block
        let data = pseudo(dim * rows, 7);
        let idx = FlatIndex::new(data.clone(), dim);
        let qs: Vec<Vec<f32>> = (0..3).map(|i| pseudo(dim, 100 + i)).collect();
        let qrefs: Vec<&[f32]> = qs.iter().map(|q| q.as_slice()).collect();
        let res = idx.search(&qrefs, 10, None).unwrap();
        for (q, hits) in qs.iter().zip(&res) {
            let got: Vec<u64> = hits.iter().map(|h| h.row).collect();
            assert_eq!(got, brute(&data, dim, q, 10));
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn batched_gemm_path_equals_per_query_path() {
        let (dim, rows) = (24, 3000);
        let data = pseudo(dim * rows, 11);
        let idx = FlatIndex::new(data.clone(), dim);
        let qs: Vec<Vec<f32>> = (0..GEMM_MIN_QUERIES + 3)
            .map(|i| pseudo(dim, 200 + i as u64))
            .collect();
        let qrefs: Vec<&[f32]> = qs.iter().map(|q| q.as_slice()).collect();
        let even = |r: u64| r.is_multiple_of(2);
        let batched = idx.search(&qrefs, 7, Some(&even)).unwrap();
        for (q, hits) in qs.iter().zip(&batched) {
            let single = idx
                .search(&[q.as_slice()], 7, Some(&even))
                .unwrap()
                .remove(0);
            let a: Vec<u64> = hits.iter().map(|h| h.row).collect();
            let b: Vec<u64> = single.iter().map(|h| h.row).collect();
            assert_eq!(a, b);
            assert!(a.iter().all(|r| r % 2 == 0));
        }
    }

    #[test]
    fn ties_break_by_row_and_filters_apply() {
        let data = vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
        let idx = FlatIndex::new(data, 2);
        let q = [1.0f32, 0.0];
        let hits = idx.search(&[&q], 2, None).unwrap();
        assert_eq!(
            hits[0].iter().map(|h| h.row).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let odd = |r: u64| r % 2 == 1;
        let hits = idx.search(&[&q], 2, Some(&odd)).unwrap();
        assert_eq!(
            hits[0].iter().map(|h| h.row).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(idx.search(&[&q], 0, None).unwrap()[0].is_empty());
    }

    #[test]
    fn any_k_is_bounded_by_the_rows() {
        // A heap sized by `k` would ask for 16 × usize::MAX bytes here and abort.
        let data = pseudo(5 * 3000, 3);
        let idx = FlatIndex::new(data.clone(), 5);
        let q = pseudo(5, 4);
        for k in [usize::MAX, usize::MAX / 16, 1 << 40, 3001] {
            let hits = idx.search(&[&q], k, None).unwrap().remove(0);
            assert_eq!(hits.len(), 3000, "k={k}");
            let rows: Vec<u64> = hits.iter().map(|h| h.row).collect();
            assert_eq!(rows, brute(&data, 5, &q, 3000));
        }
        let top = TopK::new(usize::MAX, 10);
        assert!(top.heap.capacity() < 100, "{}", top.heap.capacity());
    }
}
