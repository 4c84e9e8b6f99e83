//! Re-ranking for image retrieval, as pure functions over in-memory f32 vectors.
//!
//! Why: a plain cosine ranking scores each index item against the query alone. Two classic
//! post-processing steps also use the neighbours' neighbours, and often lift mAP/P@N for free
//! (no training):
//!
//! * **α-query expansion (αQE)** and **database-side augmentation (DBA)**, Radenović, Tolias
//!   and Chum, "Fine-tuning CNN image retrieval with no human annotation", TPAMI 2018. αQE
//!   replaces the query by the L2-normalised sum of itself and its top-n neighbours, each
//!   weighted by its cosine score to the power α; DBA applies the same to every database vector
//!   (offline, over the database itself), so queries and items live in the same smoothed space.
//! * **k-reciprocal re-ranking**, Zhong, Zheng, Cao and Li, "Re-ranking Person
//!   Re-identification with k-reciprocal Encoding", CVPR 2017, following their public
//!   `re_ranking` code step by step: original distance, k-reciprocal sets with the ½·k1
//!   expansion rule, Gaussian-kernel encoding V, local query expansion over k2, Jaccard
//!   distance, and d* = (1 − λ)·d_J + λ·d.
//!
//! Why shortlist-only for k-reciprocal: the reference computes an (N+M)² distance matrix over
//! all probes and the whole gallery, which is quadratic in the index size and cannot run per
//! query in a search engine. [`k_reciprocal_rerank`] instead takes one query and its top-K
//! shortlist from the ANN/flat index (K ≈ 100) and re-ranks only that: the same algorithm with
//! one probe and the shortlist as gallery, costing O(K²·dim) per query; the caller keeps
//! whatever lies beyond the shortlist behind it, in its original order. DBA is an offline
//! O(N²·dim) pass; see [`dba`].
//!
//! Vectors are expected to be L2-normalised and of one dimension; dot products run over the
//! shorter of two vectors (nothing panics on a mismatch, but the result is then meaningless).

/// Dot product over the common prefix of `a` and `b`, accumulated in f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// `v / ‖v‖` as f32; a zero (or non-finite-norm) vector comes back unscaled.
fn normalised(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter().map(|x| (x / norm) as f32).collect()
    } else {
        v.iter().map(|x| *x as f32).collect()
    }
}

/// αQE weight of a neighbour with cosine score `s`: `max(s, 0)^α`, and 0 for a non-positive,
/// NaN or infinite score (so that α = 0 does not turn 0⁰ into a weight of 1).
fn qe_weight(s: f32, alpha: f32) -> f64 {
    if !(s > 0.0 && s.is_finite()) {
        return 0.0;
    }
    let w = (s as f64).powf(alpha as f64);
    if w.is_finite() {
        w
    } else {
        0.0
    }
}

/// α-query expansion (Radenović et al., TPAMI 2018): the new query is
/// `L2-normalise(query + Σ_{i<n} max(s_i, 0)^α · x_i)`.
///
/// `neighbours` are the query's neighbours `(vector, cosine score)`, best first; only the first
/// `n` are used (fewer if there are fewer), and a neighbour with a score ≤ 0 contributes
/// nothing. `n = 0` returns the query normalised. α = 0 is plain average query expansion over
/// the positively scored neighbours; the paper uses α = 3. The result has the query's length;
/// a zero result is returned as is.
pub fn alpha_qe(query: &[f32], neighbours: &[(&[f32], f32)], n: usize, alpha: f32) -> Vec<f32> {
    let mut acc: Vec<f64> = query.iter().map(|x| *x as f64).collect();
    for (x, s) in neighbours.iter().take(n) {
        let w = qe_weight(*s, alpha);
        if w == 0.0 {
            continue;
        }
        for (a, xi) in acc.iter_mut().zip(x.iter()) {
            *a += w * *xi as f64;
        }
    }
    normalised(&acc)
}

/// Database-side augmentation (Radenović et al., TPAMI 2018): every row of the row-major
/// `rows` (`dim` columns) is replaced by the αQE over its own top-`n` neighbours in the
/// database, the row itself included as its first neighbour with score 1:
/// `x_i' = L2-normalise(Σ_{j ∈ top-n(i)} max(s_ij, 0)^α · x_j)`, which is
/// [`alpha_qe`]`(x_i, the n − 1 best other rows, n − 1, α)`.
///
/// `n = 0` or `1` returns the rows normalised; `n` is clamped to the number of rows. Ties
/// between equal scores go to the lower row index. A trailing partial row (when `rows.len()`
/// is not a multiple of `dim`) is dropped, and `dim = 0` gives an empty result.
///
/// Cost: exact brute force, O(N²·dim) time for N rows (every pair's dot product, computed
/// row by row) and O(N) extra memory beyond the output; meant as an offline pass over an index
/// of up to tens of thousands of rows, not a per-query step.
pub fn dba(rows: &[f32], dim: usize, n: usize, alpha: f32) -> Vec<f32> {
    if dim == 0 {
        return Vec::new();
    }
    let m = rows.len() / dim;
    let rows = &rows[..m * dim];
    let others = n.saturating_sub(1).min(m.saturating_sub(1));
    let by_score_desc =
        |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(m * dim);
    let mut sims: Vec<(usize, f32)> = Vec::with_capacity(m);
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        sims.clear();
        if others > 0 {
            sims.extend(
                rows.chunks_exact(dim)
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, r)| (j, dot(row, r) as f32)),
            );
            if others < sims.len() {
                sims.select_nth_unstable_by(others - 1, by_score_desc);
                sims.truncate(others);
            }
            sims.sort_by(by_score_desc);
        }
        let neighbours: Vec<(&[f32], f32)> = sims
            .iter()
            .filter_map(|&(j, s)| rows.get(j * dim..(j + 1) * dim).map(|r| (r, s)))
            .collect();
        out.extend(alpha_qe(row, &neighbours, others, alpha));
    }
    out
}

/// `round(k / 2)` with numpy's ties-to-even, as the reference's `int(np.around(k1 / 2))`.
fn half_rounded(k: usize) -> usize {
    let h = k / 2;
    if k % 2 == 1 && h % 2 == 1 {
        h + 1
    } else {
        h
    }
}

/// The k-reciprocal neighbours R(i, k) of row `i`: those of its k+1 nearest (itself included)
/// that have `i` among their own k+1 nearest. In `rank[i]` order.
fn k_reciprocal_set(rank: &[Vec<usize>], i: usize, k: usize) -> Vec<usize> {
    let top = |r: usize| -> &[usize] {
        let row = &rank[r];
        &row[..row.len().min(k + 1)]
    };
    top(i)
        .iter()
        .copied()
        .filter(|&f| top(f).contains(&i))
        .collect()
}

/// k-reciprocal re-ranking (Zhong et al., CVPR 2017) of one query's shortlist.
///
/// `candidates` is the query's top-K shortlist from a first-stage cosine search (any order).
/// Returns every candidate once as `(index into candidates, d*)`, ascending by d* (ties to the
/// lower index), where d* = (1 − λ)·d_J + λ·d. As in the authors' public `re_ranking` code, with
/// the query as the only probe and the shortlist as the gallery, over the 1 + K points:
///
/// 1. original distance d = 2 − 2·cos (the squared Euclidean distance of unit vectors; clamped
///    at 0, self-distance 0), each row divided by its maximum (as the reference's
///    `transpose(d / max(d, axis=0))`); ranks sort a row ascending, each point first in its own
///    row, ties to the lower index;
/// 2. R(p, k1) = the k-reciprocal neighbours of p; for each q ∈ R(p, k1), R(q, round(k1/2))
///    (numpy rounding) is added when |R(q, k1/2) ∩ R(p, k1)| > ⅔·|R(q, k1/2)|;
/// 3. V_p = exp(−d(p, ·)) over that expanded set, normalised to sum 1 (0 elsewhere);
/// 4. local query expansion: V_p ← mean of V over p's k2 nearest (itself included), skipped
///    for k2 = 1;
/// 5. d_J(q, g) = 1 − Σ min(V_q, V_g) / (2 − Σ min(V_q, V_g)).
///
/// The paper's defaults are k1 = 20, k2 = 6, λ = 0.3; λ = 1 returns the original cosine order.
/// k1 is clamped to K and k2 to 1..=K + 1; an empty shortlist gives an empty result.
///
/// Cost: O(K²·dim) for the similarities plus O(K²) memory for V (about 80 kB at K = 100);
/// the expansion step is O(K·k1³) in the worst case.
pub fn k_reciprocal_rerank(
    query: &[f32],
    candidates: &[&[f32]],
    k1: usize,
    k2: usize,
    lambda: f32,
) -> Vec<(usize, f32)> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let points: Vec<&[f32]> = std::iter::once(query)
        .chain(candidates.iter().copied())
        .collect();
    let n = points.len();
    let k1 = k1.min(n - 1);
    let k2 = k2.clamp(1, n);

    // 1. Original distance, row-normalised, and each row's ranking.
    let mut dist = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let d = (2.0 - 2.0 * dot(points[i], points[j])).max(0.0);
            dist[i][j] = d;
            dist[j][i] = d;
        }
    }
    for row in dist.iter_mut() {
        let max = row.iter().copied().fold(0.0f64, f64::max);
        if max > 0.0 && max.is_finite() {
            row.iter_mut().for_each(|d| *d /= max);
        }
    }
    let rank: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut r: Vec<usize> = (0..n).collect();
            r.sort_by(|&a, &b| {
                dist[i][a]
                    .total_cmp(&dist[i][b])
                    .then((a != i).cmp(&(b != i)))
                    .then(a.cmp(&b))
            });
            r
        })
        .collect();

    // 2.–3. Expanded k-reciprocal sets and their Gaussian-kernel encoding.
    let half = half_rounded(k1);
    let mut v = vec![vec![0.0f64; n]; n];
    for (p, vp) in v.iter_mut().enumerate() {
        let r = k_reciprocal_set(&rank, p, k1);
        let mut expanded = vec![false; n];
        r.iter().for_each(|&x| expanded[x] = true);
        for &q in &r {
            let rq = k_reciprocal_set(&rank, q, half);
            let common = rq.iter().filter(|x| r.contains(x)).count();
            if 3 * common > 2 * rq.len() {
                rq.iter().for_each(|&x| expanded[x] = true);
            }
        }
        let mut total = 0.0;
        for (j, &inside) in expanded.iter().enumerate() {
            if inside {
                vp[j] = (-dist[p][j]).exp();
                total += vp[j];
            }
        }
        if total > 0.0 {
            vp.iter_mut().for_each(|w| *w /= total);
        }
    }

    // 4. Local query expansion over the k2 nearest.
    if k2 > 1 {
        v = (0..n)
            .map(|p| {
                let mut mean = vec![0.0f64; n];
                for &q in &rank[p][..k2] {
                    mean.iter_mut().zip(&v[q]).for_each(|(m, w)| *m += w);
                }
                mean.iter_mut().for_each(|m| *m /= k2 as f64);
                mean
            })
            .collect();
    }

    // 5. Jaccard distance of the query (row 0) to each candidate, blended with d.
    let lambda = lambda as f64;
    let mut out: Vec<(usize, f32)> = (1..n)
        .map(|g| {
            let common: f64 = v[0].iter().zip(&v[g]).map(|(a, b)| a.min(*b)).sum();
            let jaccard = 1.0 - common / (2.0 - common);
            let d = (1.0 - lambda) * jaccard + lambda * dist[0][g];
            (g - 1, d as f32)
        })
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    out
}

/// k-reciprocal re-ranking's knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kr {
    /// The k of the k-reciprocal sets.
    pub k1: usize,
    /// The local query expansion's neighbours.
    pub k2: usize,
    /// The weight of the original distance.
    pub lambda: f32,
}

impl Kr {
    /// The paper's defaults: k1 = 20, k2 = 6, λ = 0.3.
    pub const PAPER: Kr = Kr {
        k1: 20,
        k2: 6,
        lambda: 0.3,
    };

    /// The re-ranking of one shortlist, scores = −d* (higher is nearer).
    pub fn rerank(self, q: &[f32], short: &[&[f32]]) -> Vec<(usize, f32)> {
        k_reciprocal_rerank(q, short, self.k1, self.k2, self.lambda)
            .into_iter()
            .map(|(i, d)| (i, -d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn close<T: Copy + Into<f64>>(a: &[f32], b: &[T], tol: f64) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (*x as f64 - (*y).into()).abs() < tol)
    }

    #[test]
    fn alpha_qe_by_hand() {
        // q = (1,0), x = (0.6,0.8), s = 0.6, α = 3: weight 0.216,
        // q + 0.216·x = (1.1296, 0.1728), norm √1.305856 = 1.142741…
        let x: &[f32] = &[0.6, 0.8];
        let got = alpha_qe(&[1.0, 0.0], &[(x, 0.6)], 1, 3.0);
        assert!(close(&got, &[0.988_500_8f64, 0.151_215_4], 1e-6), "{got:?}");
        // α = 1: (1.36, 0.48) / √2.08.
        let got = alpha_qe(&[1.0, 0.0], &[(x, 0.6)], 1, 1.0);
        assert!(close(&got, &[0.942_990_3f64, 0.332_820_1], 1e-6), "{got:?}");
    }

    #[test]
    fn alpha_qe_n0_negative_and_clamped() {
        let x: &[f32] = &[0.6, 0.8];
        let y: &[f32] = &[0.0, 1.0];
        // n = 0: the query, normalised; the neighbours are ignored.
        assert!(close(
            &alpha_qe(&[3.0, 4.0], &[(x, 0.9)], 0, 3.0),
            &[0.6, 0.8],
            1e-7
        ));
        // A negative (or zero) score adds nothing, even with α = 0 (where 0⁰ would be 1).
        for alpha in [0.0, 1.0, 3.0] {
            let got = alpha_qe(&[1.0, 0.0], &[(y, -0.5), (x, 0.0)], 2, alpha);
            assert!(close(&got, &[1.0, 0.0], 1e-7), "α={alpha}: {got:?}");
        }
        // Negative first, positive second: only the second counts (α = 1: (1.36, 0.48)/√2.08).
        let got = alpha_qe(&[1.0, 0.0], &[(y, -0.5), (x, 0.6)], 2, 1.0);
        assert!(close(&got, &[0.942_990_3f64, 0.332_820_1], 1e-6), "{got:?}");
        // n beyond the neighbours is clamped; empty inputs do not panic.
        assert!(close(
            &alpha_qe(&[1.0, 0.0], &[(x, 0.6)], 99, 1.0),
            &got,
            1e-7
        ));
        assert!(alpha_qe(&[], &[], 5, 3.0).is_empty());
        assert_eq!(alpha_qe(&[0.0, 0.0], &[], 1, 3.0), vec![0.0, 0.0]);
    }

    #[test]
    fn dba_by_hand() {
        // a = (1,0), b = (0.6,0.8), c = (0,1); a·b = 0.6, a·c = 0, b·c = 0.8.
        let rows = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
        // n = 2, α = 3: each row plus its best other row weighted by s³.
        //   a' ∝ a + 0.216·b = (1.1296, 0.1728)
        //   b' ∝ b + 0.512·c = (0.6, 1.312)
        //   c' ∝ c + 0.512·b = (0.3072, 1.4096)
        let got = dba(&rows, 2, 2, 3.0);
        let want = [
            0.988_500_8,
            0.151_215_4,
            0.415_890_8,
            0.909_414_6,
            0.212_936_1,
            0.977_066_1,
        ];
        assert!(close(&got, &want, 1e-6), "{got:?}");
        // n = 3: b also takes a (0.6³ = 0.216): (0.816, 1.312); a and c gain c resp. a with
        // score 0, which adds nothing.
        let got = dba(&rows, 2, 3, 3.0);
        let want3 = [want[0], want[1], 0.528_136_0, 0.849_159_8, want[4], want[5]];
        assert!(close(&got, &want3, 1e-6), "{got:?}");
        // n beyond the rows is clamped.
        assert!(close(&dba(&rows, 2, 50, 3.0), &want3, 1e-7));
        // n = 0 or 1: the rows themselves; degenerate shapes do not panic.
        assert!(close(&dba(&rows, 2, 1, 3.0), &rows, 1e-7));
        assert!(close(&dba(&rows, 2, 0, 3.0), &rows, 1e-7));
        assert!(dba(&rows, 0, 2, 3.0).is_empty());
        assert!(dba(&[], 4, 2, 3.0).is_empty());
        assert_eq!(dba(&rows[..5], 2, 2, 3.0).len(), 4);
    }

    fn unit(deg: f64) -> Vec<f32> {
        let r = deg.to_radians();
        vec![r.cos() as f32, r.sin() as f32]
    }

    fn cosine_order(query: &[f32], candidates: &[&[f32]]) -> Vec<usize> {
        let mut o: Vec<usize> = (0..candidates.len()).collect();
        o.sort_by(|&a, &b| dot(query, candidates[b]).total_cmp(&dot(query, candidates[a])));
        o
    }

    #[test]
    fn k_reciprocal_lifts_same_cluster_points() {
        // Unit vectors by angle. Cluster A spans 1°–10°, cluster B 31°–41°; the query (20°)
        // belongs to A but sits on its edge, so B's 31° is its second cosine neighbour. The
        // tight B points are not k-reciprocal with the query, the A points are (through 10°).
        let angles = [31.0, 5.0, 38.0, 10.0, 1.0, 41.0, 7.0, 36.0];
        let in_a = [false, true, false, true, true, false, true, false];
        let vs: Vec<Vec<f32>> = angles.iter().map(|a| unit(*a)).collect();
        let cands: Vec<&[f32]> = vs.iter().map(|v| v.as_slice()).collect();
        let q = unit(20.0);

        let before = cosine_order(&q, &cands);
        assert_eq!(before, vec![3, 0, 6, 1, 7, 2, 4, 5]);
        assert!(!in_a[before[1]], "a B point is second by cosine");

        let after = k_reciprocal_rerank(&q, &cands, 3, 2, 0.3);
        let order: Vec<usize> = after.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, vec![3, 6, 1, 4, 0, 7, 2, 5]);
        assert!(order[..4].iter().all(|&i| in_a[i]), "all of A first");
        // d* as a numpy transcription of the authors' re_ranking gives (float64, stable argsort).
        let reference: [f64; 8] = [
            0.782_985_3,
            0.620_570_9,
            0.921_065_0,
            0.535_286_1,
            0.712_745_1,
            1.0,
            0.582_430_4,
            0.874_970_9,
        ];
        for (i, d) in &after {
            assert!(
                (*d as f64 - reference[*i]).abs() < 1e-5,
                "{i}: {d} vs {}",
                reference[*i]
            );
        }
    }

    /// A deterministic pseudo-random unit vector (xorshift).
    fn pseudo_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
        let v: Vec<f64> = (0..dim)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        normalised(&v)
    }

    #[test]
    fn lambda_one_keeps_cosine_order() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let q = pseudo_unit(&mut seed, 16);
        let vs: Vec<Vec<f32>> = (0..30).map(|_| pseudo_unit(&mut seed, 16)).collect();
        let cands: Vec<&[f32]> = vs.iter().map(|v| v.as_slice()).collect();
        let got = k_reciprocal_rerank(&q, &cands, 5, 3, 1.0);
        let order: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, cosine_order(&q, &cands));
        // d* = d = (2 − 2s) / max over the row.
        let d: Vec<f64> = cands.iter().map(|c| 2.0 - 2.0 * dot(&q, c)).collect();
        let max = d.iter().copied().fold(0.0, f64::max);
        for (i, v) in &got {
            assert!((*v as f64 - d[*i] / max).abs() < 1e-6);
        }
    }

    #[test]
    fn k_reciprocal_edge_cases() {
        let q = unit(0.0);
        assert!(k_reciprocal_rerank(&q, &[], 20, 6, 0.3).is_empty());
        let one = unit(30.0);
        let got = k_reciprocal_rerank(&q, &[one.as_slice()], 20, 6, 0.3);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 0);
        assert!(got[0].1.is_finite());
        // k1, k2 far beyond the shortlist (clamped), and k1 = k2 = 0: a permutation, finite.
        let vs: Vec<Vec<f32>> = [10.0, 50.0, 20.0].iter().map(|a| unit(*a)).collect();
        let cands: Vec<&[f32]> = vs.iter().map(|v| v.as_slice()).collect();
        for (k1, k2) in [(20, 6), (0, 0), (1, 1), (100, 100)] {
            let got = k_reciprocal_rerank(&q, &cands, k1, k2, 0.3);
            let idx: BTreeSet<usize> = got.iter().map(|(i, _)| *i).collect();
            assert_eq!(idx, BTreeSet::from([0, 1, 2]), "k1={k1} k2={k2}");
            assert!(got.iter().all(|(_, d)| d.is_finite()));
            assert!(got.windows(2).all(|w| w[0].1 <= w[1].1));
        }
        // Identical points (all distances 0) do not divide by zero.
        let got = k_reciprocal_rerank(&q, &[q.as_slice(), q.as_slice()], 3, 2, 0.3);
        assert!(got.iter().all(|(_, d)| d.is_finite()));
    }

    #[test]
    fn half_k1_rounds_like_numpy() {
        // int(np.around(k / 2)) for k = 0..=8, 20, 21, 23 (ties to even).
        let got: Vec<usize> = [0, 1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 23]
            .iter()
            .map(|k| half_rounded(*k))
            .collect();
        assert_eq!(got, vec![0, 0, 1, 2, 2, 2, 3, 4, 4, 10, 10, 12]);
    }

    /// Straightforward re-statement of the paper's steps, written independently of the
    /// implementation: sets as BTreeSets, ranks by a full sort, rounding by `round_ties_even`.
    /// Returns the Jaccard distance of point 0 (the query) to points 1..n.
    #[allow(clippy::needless_range_loop)] // index loops mirror the paper's notation
    fn jaccard_by_hand(points: &[Vec<f32>], k1: usize, k2: usize) -> Vec<f64> {
        let n = points.len();
        let mut d = vec![vec![0.0f64; n]; n];
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let s: f64 = (0..points[i].len())
                        .map(|t| points[i][t] as f64 * points[j][t] as f64)
                        .sum();
                    d[i][j] = 2.0 - 2.0 * s;
                }
            }
        }
        for i in 0..n {
            let m = d[i].iter().cloned().fold(0.0, f64::max);
            for j in 0..n {
                d[i][j] /= m;
            }
        }
        let ranked = |i: usize| -> Vec<usize> {
            let mut r: Vec<usize> = (0..n).collect();
            r.sort_by(|a, b| d[i][*a].partial_cmp(&d[i][*b]).unwrap().then(a.cmp(b)));
            r
        };
        let nearest =
            |i: usize, k: usize| -> BTreeSet<usize> { ranked(i).into_iter().take(k + 1).collect() };
        let recip = |i: usize, k: usize| -> BTreeSet<usize> {
            nearest(i, k)
                .into_iter()
                .filter(|f| nearest(*f, k).contains(&i))
                .collect()
        };
        let half = (k1 as f64 / 2.0).round_ties_even() as usize;
        let mut v = vec![vec![0.0f64; n]; n];
        for p in 0..n {
            let r = recip(p, k1);
            let mut e = r.clone();
            for q in &r {
                let rq = recip(*q, half);
                let inter = rq.intersection(&r).count() as f64;
                if inter > 2.0 / 3.0 * rq.len() as f64 {
                    e.extend(rq);
                }
            }
            let z: f64 = e.iter().map(|j| (-d[p][*j]).exp()).sum();
            for j in &e {
                v[p][*j] = (-d[p][*j]).exp() / z;
            }
        }
        if k2 != 1 {
            let old = v.clone();
            for p in 0..n {
                let nb = ranked(p);
                for j in 0..n {
                    v[p][j] = nb[..k2].iter().map(|q| old[*q][j]).sum::<f64>() / k2 as f64;
                }
            }
        }
        (1..n)
            .map(|g| {
                let m: f64 = (0..n).map(|j| v[0][j].min(v[g][j])).sum();
                1.0 - m / (2.0 - m)
            })
            .collect()
    }

    #[test]
    fn jaccard_matches_step_by_step() {
        let raw = [
            [1.0f32, 0.2, 0.0],
            [0.9, 0.5, 0.1],
            [0.2, 1.0, 0.3],
            [0.8, -0.1, 0.4],
        ];
        let four: Vec<Vec<f32>> = raw
            .iter()
            .map(|p| normalised(&p.map(|x| x as f64)))
            .collect();
        let nine: Vec<Vec<f32>> = [20.0, 31.0, 5.0, 38.0, 10.0, 1.0, 41.0, 7.0, 36.0]
            .iter()
            .map(|a| unit(*a))
            .collect();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let twelve: Vec<Vec<f32>> = (0..12).map(|_| pseudo_unit(&mut seed, 4)).collect();
        for (points, k1, k2) in [
            (&twelve, 3, 3),
            (&twelve, 5, 2),
            (&twelve, 7, 1),
            (&four, 2, 1),
            (&four, 2, 2),
            (&four, 3, 2),
            (&nine, 3, 2),
            (&nine, 4, 3),
        ] {
            let cands: Vec<&[f32]> = points[1..].iter().map(|v| v.as_slice()).collect();
            // λ = 0: d* is the Jaccard distance alone.
            let got = k_reciprocal_rerank(&points[0], &cands, k1, k2, 0.0);
            let want = jaccard_by_hand(points, k1, k2);
            assert_eq!(got.len(), want.len());
            for (i, dj) in &got {
                assert!(
                    (*dj as f64 - want[*i]).abs() < 1e-6,
                    "k1={k1} k2={k2} cand {i}: {dj} vs {}",
                    want[*i]
                );
            }
        }
        // The 4-point case is not degenerate: numpy's reference gives these for k1=2, k2=1.
        let cands: Vec<&[f32]> = four[1..].iter().map(|v| v.as_slice()).collect();
        let got = k_reciprocal_rerank(&four[0], &cands, 2, 1, 0.0);
        let mut by_index = got.clone();
        by_index.sort_by_key(|(i, _)| *i);
        let reference: [f64; 3] = [0.150_054_1, 1.0, 0.176_836_0];
        for (i, d) in by_index {
            assert!((d as f64 - reference[i]).abs() < 1e-5, "{i}: {d}");
        }
    }
}
