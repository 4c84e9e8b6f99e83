//! The numbers behind every figure, from one model's stored embeddings (never re-embedded):
//! the P@N curve, the per-class table, the top-1 confusion, kNN accuracy against k, the
//! index-size scaling curve, a PCA map and retrieval examples. Each is JSON, written to the
//! report's `report.json`, and the figures are drawn from that JSON only, so what a figure
//! shows is what the file says.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use simcase_eval::protocol::Row;
use simcase_eval::{at_level, f1_per_class, precision_at, vote_accuracy, LEVELS};
use simcase_index::{FlatIndex, Reader, VectorIndex};
use std::collections::{BTreeMap, HashMap};

/// The deepest N of the P@N curve, and the neighbours retrieved per query (as eval).
pub const MAX_N: usize = 100;

/// Examples per class the scaling curve subsamples the index to (then the whole index).
pub const SCALING_NS: [usize; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// The flattening rule, as the report states it.
pub const FLAT_RULE: &str = "the curve flattens at the smallest examples-per-class n from \
    which the mean P@1 stays within 0.02 of the full-index P@1 for every larger n";
const FLAT_TOLERANCE: f64 = 0.02;

/// Knobs of the analyses.
#[derive(Clone, Debug)]
pub struct Knobs {
    /// Largest k of the kNN curve (eval's `--max-k`).
    pub max_k: usize,
    /// Seeds per scaling subsample.
    pub seeds: u64,
    /// Retrieval examples per modality.
    pub examples: usize,
    /// No progress bars.
    pub quiet: bool,
}

/// One labelled split of the protocol: train rows are the index, test rows the queries.
pub struct Split<'a> {
    reader: &'a Reader,
    dim: usize,
    train: Vec<&'a Row>,
    val: Vec<&'a Row>,
    test: Vec<&'a Row>,
}

/// A query's label and its ranked train rows `(train position, score)`.
type Ranking = Vec<(usize, f32)>;

impl<'a> Split<'a> {
    /// The rows of a scored manifest, split.
    pub fn new(reader: &'a Reader, rows: &'a [Row]) -> Self {
        let of = |s: &str| rows.iter().filter(|r| r.split() == s).collect::<Vec<_>>();
        Self {
            reader,
            dim: reader.settings().dim,
            train: of("train"),
            val: of("val"),
            test: of("test"),
        }
    }

    fn vector(&self, r: &Row) -> Result<&'a [f32]> {
        self.reader
            .vector(r.id())
            .context("a row's vector is missing")
    }

    /// Rank `queries` against the train rows at `positions` (all when `None`), `depth` deep.
    fn rank(
        &self,
        queries: &[&Row],
        positions: Option<&[usize]>,
        depth: usize,
    ) -> Result<Vec<Ranking>> {
        let all: Vec<usize>;
        let positions = match positions {
            Some(p) => p,
            None => {
                all = (0..self.train.len()).collect();
                &all
            }
        };
        let mut flat = Vec::with_capacity(positions.len() * self.dim);
        for &p in positions {
            flat.extend_from_slice(self.vector(self.train[p])?);
        }
        let index = FlatIndex::new(flat, self.dim);
        let vecs = queries
            .iter()
            .map(|q| self.vector(q))
            .collect::<Result<Vec<_>>>()?;
        Ok(index
            .search(&vecs, depth, None)?
            .into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|h| (positions[h.row as usize], h.score))
                    .collect()
            })
            .collect())
    }

    fn train_counts(&self, positions: &[usize], lvl: usize) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for &p in positions {
            *m.entry(at_level(self.train[p].label(), lvl)).or_insert(0) += 1;
        }
        m
    }

    /// `(class, ranked classes)` at a level, as [`precision_at`] takes them.
    fn labelled(
        &self,
        queries: &[&Row],
        ranked: &[Ranking],
        lvl: usize,
    ) -> Vec<(String, Vec<String>)> {
        self.voters(queries, ranked, lvl)
            .into_iter()
            .map(|(c, r)| (c, r.into_iter().map(|(l, _)| l).collect()))
            .collect()
    }

    /// `(class, ranked (class, score))` at a level, as the kNN vote takes them.
    fn voters(
        &self,
        queries: &[&Row],
        ranked: &[Ranking],
        lvl: usize,
    ) -> Vec<(String, Vec<(String, f32)>)> {
        queries
            .iter()
            .zip(ranked)
            .map(|(q, r)| {
                let r = r
                    .iter()
                    .map(|(p, s)| (at_level(self.train[*p].label(), lvl), *s))
                    .collect();
                (at_level(q.label(), lvl), r)
            })
            .collect()
    }
}

/// Everything label-based for one model. `eval` is the model's `simcase eval` report (its
/// tuned k is the per-class table's).
pub fn labelled(split: &Split, eval: &Value, knobs: &Knobs) -> Result<Value> {
    let everything: Vec<usize> = (0..split.train.len()).collect();
    let test = split.rank(&split.test, None, MAX_N)?;
    let val = split.rank(&split.val, None, MAX_N)?;
    // P@N for N = 1…100, per level.
    let ns: Vec<usize> = (1..=MAX_N).collect();
    let mut curve = serde_json::Map::new();
    let mut knn_curve = serde_json::Map::new();
    for (lvl, name) in LEVELS.iter().enumerate() {
        let q = split.labelled(&split.test, &test, lvl);
        let rep = precision_at(&q, &split.train_counts(&everything, lvl), &ns);
        let micro: Vec<f64> = ns.iter().map(|n| rep.p[n].micro).collect();
        let macro_: Vec<f64> = ns.iter().map(|n| rep.p[n].macro_).collect();
        curve.insert(
            name.to_string(),
            json!({ "N": ns, "micro": micro, "macro": macro_, "queries": rep.queries,
                    "skipped": rep.skipped }),
        );
        // kNN accuracy against k on val (where k is tuned) and test.
        let (vq, tq) = (
            split.voters(&split.val, &val, lvl),
            split.voters(&split.test, &test, lvl),
        );
        let ks: Vec<usize> = (1..=knobs.max_k.max(1)).collect();
        let va: Vec<f64> = ks.iter().map(|&k| vote_accuracy(&vq, k)).collect();
        let ta: Vec<f64> = ks.iter().map(|&k| vote_accuracy(&tq, k)).collect();
        knn_curve.insert(
            name.to_string(),
            json!({ "k": ks, "val": va, "test": ta, "tuned_k": eval["knn"][name]["k"] }),
        );
    }
    // The per-class table and the confusion, at the full label.
    let full = LEVELS.len() - 1;
    let counts = split.train_counts(&everything, full);
    let q = split.labelled(&split.test, &test, full);
    let k = eval["knn"][LEVELS[full]]["k"].as_u64().unwrap_or(1) as usize;
    let pairs: Vec<(String, String)> = split
        .voters(&split.test, &test, full)
        .iter()
        .map(|(t, nb)| (t.clone(), simcase_eval::knn_vote(nb, k).unwrap_or_default()))
        .collect();
    let f1 = f1_per_class(&pairs);
    let mut classes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (c, n) in &counts {
        classes.entry(c.clone()).or_default().0 = *n;
    }
    for (c, _) in &q {
        classes.entry(c.clone()).or_default().1 += 1;
    }
    let mut table: Vec<Value> = classes
        .iter()
        .map(|(c, &(index, queries))| {
            let mine: Vec<(String, Vec<String>)> =
                q.iter().filter(|(l, _)| l == c).cloned().collect();
            let rep = precision_at(&mine, &counts, &[1, 10]);
            let scored = queries > 0 && index > 0;
            let p = |n: usize| scored.then(|| rep.p[&n].micro);
            json!({ "class": c, "index": index, "queries": queries, "P@1": p(1), "P@10": p(10),
                    "knn_f1": (queries > 0).then(|| f1.get(c).copied().unwrap_or(0.0)) })
        })
        .collect();
    // Worst first; classes that cannot be scored (no queries, or none in the index) last.
    let key = |v: &Value| {
        (
            v["P@1"].as_f64().unwrap_or(f64::INFINITY),
            v["P@10"].as_f64().unwrap_or(f64::INFINITY),
        )
    };
    table.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let names: Vec<String> = classes.keys().cloned().collect();
    let at: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut matrix = vec![vec![0usize; names.len()]; names.len()];
    for (c, ranked) in &q {
        if let Some(top) = ranked.first() {
            matrix[at[c.as_str()]][at[top.as_str()]] += 1;
        }
    }
    let singletons: Vec<Value> = classes
        .iter()
        .filter(|(_, (i, q))| i + q == 1)
        .map(|(c, (i, _))| {
            json!({ "class": c, "where": if *i == 1 { "index only: never a query" }
                                       else { "queries only: absent from the index, skipped" } })
        })
        .collect();
    let scaling = scaling(split, knobs)?;
    Ok(json!({
        "curve": curve,
        "knn_curve": knn_curve,
        "per_class": table,
        "single_image_classes": singletons,
        "confusion": { "classes": names, "counts": matrix },
        "scaling": scaling,
        "examples": examples(split, &test, knobs.examples),
    }))
}

/// A small deterministic generator (splitmix64) for the scaling subsamples.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The index-size scaling curve at the full label: each class of the index cut to at most
/// n examples (a seeded draw, several seeds), the test queries searched, modified P@1 and
/// P@10 (micro). The last n is the largest class, where every seed keeps the whole index.
fn scaling(split: &Split, knobs: &Knobs) -> Result<Value> {
    let full = LEVELS.len() - 1;
    let mut by_class: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (p, r) in split.train.iter().enumerate() {
        by_class
            .entry(at_level(r.label(), full))
            .or_default()
            .push(p);
    }
    let largest = by_class.values().map(Vec::len).max().unwrap_or(0);
    let mut ns: Vec<usize> = SCALING_NS
        .iter()
        .copied()
        .filter(|&n| n < largest)
        .collect();
    ns.push(largest);
    let seeds = knobs.seeds.max(1);
    let bar = crate::progress((ns.len() as u64) * seeds, "scaling subsamples", knobs.quiet);
    let (mut p1, mut p10) = (Vec::new(), Vec::new());
    for &n in &ns {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for seed in 0..seeds {
            let mut pick = Vec::new();
            for (ci, rows) in by_class.values().enumerate() {
                let mut rows = rows.clone();
                Mix(seed.wrapping_mul(1_000_003).wrapping_add(ci as u64)).shuffle(&mut rows);
                rows.truncate(n);
                pick.extend(rows);
            }
            // The index's own order: at the largest n, every seed is the whole index as is.
            pick.sort_unstable();
            let ranked = split.rank(&split.test, Some(&pick), 10)?;
            let q = split.labelled(&split.test, &ranked, full);
            let rep = precision_at(&q, &split.train_counts(&pick, full), &[1, 10]);
            a.push(rep.p[&1].micro);
            b.push(rep.p[&10].micro);
            bar.inc(1);
        }
        p1.push(a);
        p10.push(b);
    }
    bar.finish_and_clear();
    let stats = |v: &[Vec<f64>]| {
        let mean: Vec<f64> = v
            .iter()
            .map(|s| s.iter().sum::<f64>() / s.len() as f64)
            .collect();
        let min: Vec<f64> = v
            .iter()
            .map(|s| s.iter().copied().fold(f64::INFINITY, f64::min))
            .collect();
        let max: Vec<f64> = v
            .iter()
            .map(|s| s.iter().copied().fold(f64::NEG_INFINITY, f64::max))
            .collect();
        json!({ "mean": mean, "min": min, "max": max, "runs": v })
    };
    let mean1: Vec<f64> = p1
        .iter()
        .map(|s| s.iter().sum::<f64>() / s.len() as f64)
        .collect();
    let full_p1 = mean1.last().copied().unwrap_or(0.0);
    let flat_at = flattens_at(&ns, &mean1);
    Ok(json!({
        "n": ns, "seeds": seeds, "largest_class": largest,
        "P@1": stats(&p1), "P@10": stats(&p10),
        "full_P@1": full_p1, "flattens_at": flat_at, "rule": FLAT_RULE,
    }))
}

/// [`FLAT_RULE`]: the first n from which every mean is within the tolerance of the last
/// (the whole index).
pub fn flattens_at(ns: &[usize], means: &[f64]) -> Option<usize> {
    let full = *means.last()?;
    (0..ns.len())
        .find(|&i| {
            means[i..]
                .iter()
                .all(|m| (full - m).abs() <= FLAT_TOLERANCE)
        })
        .map(|i| ns[i])
}

/// A few test queries per modality (spread over the manifest's order) with their top 5.
fn examples(split: &Split, ranked: &[Ranking], per_modality: usize) -> Vec<Value> {
    let mut by_mod: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, q) in split.test.iter().enumerate() {
        by_mod.entry(at_level(q.label(), 0)).or_default().push(i);
    }
    let mut out = Vec::new();
    for (m, qs) in by_mod {
        let take = per_modality.min(qs.len());
        for j in 0..take {
            let i = qs[j * qs.len() / take];
            let q = split.test[i];
            let hits: Vec<Value> = ranked[i]
                .iter()
                .take(5)
                .map(|&(p, s)| {
                    let t = split.train[p];
                    json!({ "id": t.id(), "label": t.label(), "score": s,
                            "correct": t.label() == q.label() })
                })
                .collect();
            out.push(json!({ "modality": m, "id": q.id(), "label": q.label(), "hits": hits }));
        }
    }
    out
}

/// Examples for an unscored manifest: evenly spaced rows, each with its 5 nearest others.
pub fn unscored_examples(
    reader: &Reader,
    rows: &[simcase_eval::protocol::Embedded],
    count: usize,
) -> Result<Vec<Value>> {
    let dim = reader.settings().dim;
    let mut flat = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        flat.extend_from_slice(reader.vector(r.id).context("a row's vector is missing")?);
    }
    let index = FlatIndex::new(flat, dim);
    let take = count.min(rows.len());
    let picks: Vec<usize> = (0..take).map(|j| j * rows.len() / take).collect();
    let vecs: Vec<&[f32]> = picks.iter().map(|&i| index.row(i)).collect();
    let hits = index.search(&vecs, 6, None)?;
    Ok(picks
        .iter()
        .zip(hits)
        .map(|(&i, hs)| {
            let hits: Vec<Value> = hs
                .iter()
                .filter(|h| h.row as usize != i)
                .take(5)
                .map(|h| {
                    let t = &rows[h.row as usize];
                    json!({ "id": t.id, "label": t.label, "score": h.score })
                })
                .collect();
            json!({ "modality": rows[i].label.as_deref().map(|l| at_level(l, 0)),
                    "id": rows[i].id, "label": rows[i].label, "hits": hits })
        })
        .collect())
}

/// A 2-D PCA of the vectors of `ids` (centred; the top two components by power iteration on
/// the covariance, with deflation), with each component's share of the variance.
pub fn pca(reader: &Reader, ids: &[u64]) -> Result<Value> {
    let dim = reader.settings().dim;
    let n = ids.len();
    anyhow::ensure!(n >= 2, "a map needs at least 2 embedded images");
    let mut x = Vec::with_capacity(n * dim);
    for &id in ids {
        x.extend(
            reader
                .vector(id)
                .context("a row's vector is missing")?
                .iter()
                .map(|&v| v as f64),
        );
    }
    Ok(pca_rows(x, dim))
}

/// [`pca`] of `n` rows of `dim` values, row-major.
pub fn pca_rows(mut x: Vec<f64>, dim: usize) -> Value {
    let n = x.len() / dim;
    let mut mean = vec![0f64; dim];
    for r in x.chunks(dim) {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n as f64;
        }
    }
    for r in x.chunks_mut(dim) {
        for (v, m) in r.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
    let mut cov = vec![0f64; dim * dim];
    for r in x.chunks(dim) {
        for i in 0..dim {
            let ri = r[i];
            for (c, rj) in cov[i * dim..(i + 1) * dim].iter_mut().zip(r) {
                *c += ri * rj;
            }
        }
    }
    cov.iter_mut().for_each(|c| *c /= (n - 1) as f64);
    let trace: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
    let mut comps = Vec::new();
    let mut shares = Vec::new();
    for c in 0..2 {
        let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + ((i * 7 + c) % 13) as f64).collect();
        let mut lambda = 0.0;
        for _ in 0..500 {
            let mut w = vec![0f64; dim];
            for i in 0..dim {
                w[i] = cov[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(&v)
                    .map(|(a, b)| a * b)
                    .sum();
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            w.iter_mut().for_each(|a| *a /= norm);
            let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            lambda = norm;
            if delta < 1e-10 {
                break;
            }
        }
        // Deflate: remove this component from the covariance.
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] -= lambda * v[i] * v[j];
            }
        }
        shares.push(if trace > 0.0 { lambda / trace } else { 0.0 });
        comps.push(v);
    }
    let points: Vec<[f64; 2]> = x
        .chunks(dim)
        .map(|r| {
            let p = |c: &Vec<f64>| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>();
            [p(&comps[0]), p(&comps[1])]
        })
        .collect();
    json!({ "explained": shares, "points": points })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_flattens_where_it_stays_near_the_whole_index() {
        let ns = [1, 2, 5, 10, 20, 35];
        // Rises, overshoots by more than the tolerance at 10, settles from 20.
        assert_eq!(
            flattens_at(&ns, &[0.2, 0.3, 0.45, 0.53, 0.49, 0.5]),
            Some(20)
        );
        // Within the tolerance from 5 on.
        assert_eq!(
            flattens_at(&ns, &[0.2, 0.3, 0.485, 0.51, 0.49, 0.5]),
            Some(5)
        );
        // A single point is its own plateau; no points, none.
        assert_eq!(flattens_at(&[7], &[0.4]), Some(7));
        assert_eq!(flattens_at(&[], &[]), None);
    }

    #[test]
    fn seeded_shuffles_are_repeatable_permutations() {
        let mut a: Vec<usize> = (0..50).collect();
        let mut b = a.clone();
        Mix(7).shuffle(&mut a);
        Mix(7).shuffle(&mut b);
        assert_eq!(a, b);
        let mut c = b.clone();
        Mix(8).shuffle(&mut c);
        assert_ne!(a, c);
        c.sort_unstable();
        assert_eq!(c, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn pca_finds_the_axes_of_an_elongated_cloud() {
        // 200 points in 4-D: spread 10 along (1,1,0,0)/√2, 3 along z, 0.1 noise elsewhere.
        let mut m = Mix(1);
        let mut u = || (m.next() % 10_000) as f64 / 10_000.0 - 0.5;
        let mut x = Vec::new();
        let mut truth = Vec::new();
        for _ in 0..200 {
            let (a, b) = (10.0 * u(), 3.0 * u());
            truth.push((a, b));
            let r = std::f64::consts::FRAC_1_SQRT_2;
            x.extend([a * r + 0.1 * u(), a * r + 0.1 * u(), b, 0.1 * u()]);
        }
        let v = pca_rows(x, 4);
        let e0 = v["explained"][0].as_f64().unwrap();
        let e1 = v["explained"][1].as_f64().unwrap();
        // Variances 100/12 and 9/12 against a little noise.
        assert!(e0 > 0.9 && e1 > 0.07 && e0 + e1 > 0.99, "{e0} {e1}");
        // PC1 is the long axis (up to sign): the projections correlate with it.
        let pts = v["points"].as_array().unwrap();
        let corr = |k: usize, pick: &dyn Fn(&(f64, f64)) -> f64| {
            let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
            for (p, t) in pts.iter().zip(&truth) {
                let (a, b) = (p[k].as_f64().unwrap(), pick(t));
                (sxy, sxx, syy) = (sxy + a * b, sxx + a * a, syy + b * b);
            }
            (sxy / (sxx * syy).sqrt()).abs()
        };
        assert!(corr(0, &|t| t.0) > 0.999, "{}", corr(0, &|t| t.0));
        assert!(corr(1, &|t| t.1) > 0.99, "{}", corr(1, &|t| t.1));
    }
}
