//! Scored spaces beyond a frozen model's own: adapted (a `simcase_adapt` map learned from the
//! train split and tuned on val), fused (several models' L2-normalised embeddings
//! concatenated, weights tuned on val), and the leave-classes-out check that an adapter does
//! not hurt classes it never saw. Every space is scored by [`evaluate_with`], so the protocol
//! is the frozen model's, unchanged; test rows never reach a trainer or a tuner.

use crate::protocol::{evaluate_with, Row};
use crate::{at_level, LEVELS};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use simcase_adapt::{Fitted, Method, Sample};
use simcase_index::{FlatIndex, Reader, VectorIndex};
use simcase_query::GroupBy;
use std::collections::{BTreeSet, HashMap, HashSet};

/// One space to score: a name, a width and each row's vector (by the row's id).
pub struct Space {
    /// `model`, `model:method`, `a+b` or `a+b:method`.
    pub name: String,
    /// The vectors' width.
    pub dim: usize,
    /// Each row's vector, by the row's id.
    pub vectors: HashMap<u64, Vec<f32>>,
}

impl Space {
    /// A model's own vectors for `rows`.
    pub fn frozen(reader: &Reader, rows: &[Row]) -> Result<Space> {
        let s = reader.settings();
        let mut vectors = HashMap::new();
        for r in rows {
            let v = reader.vector(r.id()).context("a row's vector is missing")?;
            vectors.insert(r.id(), v.to_vec());
        }
        Ok(Space {
            name: s.model.clone(),
            dim: s.dim,
            vectors,
        })
    }

    /// The protocol's report of this space.
    pub fn score(
        &self,
        rows: &[Row],
        missing: usize,
        max_k: usize,
        group_by: Option<GroupBy>,
    ) -> Result<Value> {
        evaluate_with(
            &self.name,
            self.dim,
            rows,
            &|id| self.vectors.get(&id).map(Vec::as_slice),
            missing,
            max_k,
            group_by,
        )
    }

    /// P@1 of the val rows against the train rows at the full label (what tuning maximises).
    pub fn val_p1(&self, rows: &[Row]) -> Result<f64> {
        let (train, flat) = train_matrix(self, rows);
        let val: Vec<&Row> = rows.iter().filter(|r| r.split() == "val").collect();
        anyhow::ensure!(
            !train.is_empty() && !val.is_empty(),
            "no train or no val rows"
        );
        let index = FlatIndex::new(flat, self.dim);
        let qs: Vec<&[f32]> = val
            .iter()
            .map(|r| self.vectors[&r.id()].as_slice())
            .collect();
        let hits = index.search(&qs, 1, None)?;
        let right = val
            .iter()
            .zip(hits)
            .filter(|(q, h)| {
                h.first()
                    .is_some_and(|h| train[h.row as usize].label() == q.label())
            })
            .count();
        Ok(right as f64 / val.len() as f64)
    }
}

/// Fuse several models' spaces of the same manifest: each row's vectors (L2-normalised, as
/// stored) concatenated with weights, then normalised again. Rows are matched by manifest
/// line; a row missing from any model is left out. The weights are tuned on val by
/// [`simcase_adapt::tune_weights`] (what `simcase adapt --model a+b` uses). Returns the fused rows (the first model's), the space and the weights.
pub fn fuse(parts: &[(Space, Vec<Row>)]) -> Result<(Vec<Row>, Space, Vec<f64>)> {
    anyhow::ensure!(parts.len() >= 2, "fusion needs at least two models");
    let by_line: Vec<HashMap<usize, u64>> = parts
        .iter()
        .map(|(_, rows)| rows.iter().map(|r| (r.line(), r.id())).collect())
        .collect();
    let rows: Vec<Row> = parts[0]
        .1
        .iter()
        .filter(|r| by_line.iter().all(|m| m.contains_key(&r.line())))
        .cloned()
        .collect();
    let name = parts
        .iter()
        .map(|(s, _)| s.name.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let dim: usize = parts.iter().map(|(s, _)| s.dim).sum();
    let build = |w: &[f64]| -> Space {
        let vectors = rows
            .iter()
            .map(|r| {
                let mut v = Vec::with_capacity(dim);
                for ((space, _), (m, wi)) in parts.iter().zip(by_line.iter().zip(w)) {
                    let id = m[&r.line()];
                    v.extend(space.vectors[&id].iter().map(|x| x * *wi as f32));
                }
                simcase_models::l2_normalize_in_place(&mut v);
                (r.id(), v)
            })
            .collect();
        Space {
            name: name.clone(),
            dim,
            vectors,
        }
    };
    let (w, _) =
        simcase_adapt::tune_weights(parts.len(), |w| build(w).val_p1(&rows).unwrap_or(0.0));
    let space = build(&w);
    Ok((rows, space, w))
}

/// Learn `method` on `space` from the train rows (full labels) and tune it on the val rows,
/// leaving out the rows of `held_out` classes; the test rows are never handed over. Returns
/// the adapted space (every row mapped) and what the trainer saw.
pub fn adapt(
    space: &Space,
    rows: &[Row],
    method: Method,
    held_out: &HashSet<String>,
) -> Result<(Space, Fitted)> {
    let of = |split: &str| -> Vec<Sample> {
        rows.iter()
            .filter(|r| r.split() == split && !held_out.contains(r.label()))
            .map(|r| Sample {
                id: r.id(),
                vector: space.vectors[&r.id()].as_slice(),
                label: Some(r.label()),
            })
            .collect()
    };
    let (train, val) = (of("train"), of("val"));
    let fitted = simcase_adapt::fit(method, &train, &val)
        .with_context(|| format!("adapting {} with {method}", space.name))?;
    let vectors = space
        .vectors
        .iter()
        .map(|(id, v)| (*id, fitted.adapter.apply(v)))
        .collect();
    Ok((
        Space {
            name: format!("{}:{method}", space.name),
            dim: fitted.adapter.dim_out,
            vectors,
        },
        fitted,
    ))
}

/// The classes held out of adaptation for the leave-classes-out check: `share` of the full
/// labels that have both train and test rows (at least one), picked by a hash of their name,
/// so the choice is the same for every model and run.
pub fn held_out_classes(rows: &[Row], share: f64) -> Vec<String> {
    let with = |split: &str| -> BTreeSet<&str> {
        rows.iter()
            .filter(|r| r.split() == split)
            .map(|r| r.label())
            .collect()
    };
    let (train, test) = (with("train"), with("test"));
    let mut both: Vec<&str> = train.intersection(&test).copied().collect();
    both.sort_by_key(|c| simcase_imaging::content_hash(c.as_bytes()));
    let k = ((both.len() as f64 * share).ceil() as usize).clamp(1, both.len().max(1));
    let mut out: Vec<String> = both.into_iter().take(k).map(String::from).collect();
    out.sort();
    out
}

/// P@1 (micro, full label) of the test queries of `held_out` classes, the index being every
/// train row; and how many such queries there are.
pub fn unseen_p1(space: &Space, rows: &[Row], held_out: &HashSet<String>) -> Result<(f64, usize)> {
    let sub: Vec<Row> = rows
        .iter()
        .filter(|r| r.split() != "test" || held_out.contains(r.label()))
        .cloned()
        .collect();
    let rep = space.score(&sub, 0, 1, None)?;
    let l = &rep["levels"][LEVELS[2]];
    Ok((
        l["P@1"]["micro"].as_f64().unwrap_or(0.0),
        l["queries"].as_u64().unwrap_or(0) as usize,
    ))
}

/// The leave-classes-out record of one adapted space against its frozen space.
pub fn unseen_record(name: &str, frozen: (f64, usize), adapted: f64, held_out: &[String]) -> Value {
    json!({
        "space": name,
        "held_out_classes": held_out,
        "queries": frozen.1,
        "frozen_P@1": frozen.0,
        "adapted_P@1": adapted,
        "delta": adapted - frozen.0,
        "hurts_unseen": adapted - frozen.0 < -HURT,
    })
}

/// The train rows of `rows`, in order, and their vectors as one row-major matrix.
fn train_matrix<'a>(space: &Space, rows: &'a [Row]) -> (Vec<&'a Row>, Vec<f32>) {
    let train: Vec<&Row> = rows.iter().filter(|r| r.split() == "train").collect();
    let mut flat = Vec::with_capacity(train.len() * space.dim);
    for r in &train {
        flat.extend_from_slice(&space.vectors[&r.id()]);
    }
    (train, flat)
}

/// α-query expansion with database-side augmentation: the train rows (the index) each replaced
/// by the αQE of itself over its `n` nearest train rows (DBA), every other row (a query) by
/// its αQE over its `n` nearest of those. Named `SPACE+aqe`.
pub fn expand(space: &Space, rows: &[Row], n: usize, alpha: f32) -> Result<Space> {
    let dim = space.dim;
    let (train, flat) = train_matrix(space, rows);
    let dba = crate::rerank::dba(&flat, dim, n, alpha);
    let index = FlatIndex::new(dba, dim);
    let mut vectors = HashMap::new();
    for (i, r) in train.iter().enumerate() {
        vectors.insert(r.id(), index.row(i).to_vec());
    }
    // A query row sharing its file (its id) with a train row keeps the train row's vector:
    // one id holds one vector, and the index's must not be replaced by a query's.
    let in_index: HashSet<u64> = train.iter().map(|r| r.id()).collect();
    let queries: Vec<&Row> = rows
        .iter()
        .filter(|r| r.split() != "train" && !in_index.contains(&r.id()))
        .collect();
    let qv: Vec<&[f32]> = queries
        .iter()
        .map(|r| space.vectors[&r.id()].as_slice())
        .collect();
    let hits = index.search(&qv, n.max(1), None)?;
    for ((r, q), hs) in queries.iter().zip(&qv).zip(hits) {
        let nb: Vec<(&[f32], f32)> = hs
            .iter()
            .map(|h| (index.row(h.row as usize), h.score))
            .collect();
        vectors.insert(r.id(), crate::rerank::alpha_qe(q, &nb, n, alpha));
    }
    Ok(Space {
        name: format!("{}+aqe", space.name),
        dim,
        vectors,
    })
}

/// [`expand`] with `n` and α tuned on val P@1 (n 1, 2, 3, 5, 8; α 1 or 3; ties to the
/// smaller n). Returns the space, n and α.
pub fn tune_expand(space: &Space, rows: &[Row]) -> Result<(Space, usize, f32)> {
    let mut best: Option<(f64, Space, usize, f32)> = None;
    for n in [1, 2, 3, 5, 8] {
        for alpha in [1.0f32, 3.0] {
            let s = expand(space, rows, n, alpha)?;
            let p = s.val_p1(rows)?;
            if best.as_ref().is_none_or(|b| p > b.0 + 1e-12) {
                best = Some((p, s, n, alpha));
            }
        }
    }
    let (_, s, n, a) = best.context("nothing tuned")?;
    Ok((s, n, a))
}

pub use simcase_query::rerank::Kr;

/// P@1 of the val rows against the train rows, each shortlist of 100 re-ranked by `kr`.
pub fn val_p1_reranked(space: &Space, rows: &[Row], kr: Kr) -> Result<f64> {
    let (train, flat) = train_matrix(space, rows);
    let index = FlatIndex::new(flat, space.dim);
    let val: Vec<&Row> = rows.iter().filter(|r| r.split() == "val").collect();
    anyhow::ensure!(!val.is_empty(), "no val rows to tune on");
    let qv: Vec<&[f32]> = val
        .iter()
        .map(|r| space.vectors[&r.id()].as_slice())
        .collect();
    let hits = index.search(&qv, 100, None)?;
    let right = val
        .iter()
        .zip(&qv)
        .zip(hits)
        .filter(|((r, q), hs)| {
            let short: Vec<&[f32]> = hs.iter().map(|h| index.row(h.row as usize)).collect();
            kr.rerank(q, &short)
                .first()
                .is_some_and(|&(i, _)| train[hs[i].row as usize].label() == r.label())
        })
        .count();
    Ok(right as f64 / val.len() as f64)
}

/// k-reciprocal knobs tuned on val P@1 (k1 10 or 20, k2 3 or 6, λ 0.3; ties to the first).
pub fn tune_kr(space: &Space, rows: &[Row]) -> Result<(Kr, f64)> {
    let mut best: Option<(f64, Kr)> = None;
    for k1 in [10, 20] {
        for k2 in [3, 6] {
            let kr = Kr {
                k1,
                k2,
                lambda: 0.3,
            };
            let p = val_p1_reranked(space, rows, kr)?;
            if best.as_ref().is_none_or(|b| p > b.0 + 1e-12) {
                best = Some((p, kr));
            }
        }
    }
    let (p, kr) = best.context("nothing tuned")?;
    Ok((kr, p))
}

/// The test rows' vectors, the queries whose latency is measured.
fn test_vectors<'a>(space: &'a Space, rows: &[Row]) -> Vec<&'a [f32]> {
    rows.iter()
        .filter(|r| r.split() == "test")
        .map(|r| space.vectors[&r.id()].as_slice())
        .collect()
}

/// Milliseconds per test query of a plain exact search of the train rows (top 100), for the
/// re-ranking costs to be read against.
pub fn search_ms(space: &Space, rows: &[Row]) -> Result<f64> {
    let (_, flat) = train_matrix(space, rows);
    let index = FlatIndex::new(flat, space.dim);
    let qv = test_vectors(space, rows);
    let t = std::time::Instant::now();
    for q in &qv {
        index.search(&[q], 100, None)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / qv.len().max(1) as f64)
}

/// Milliseconds per test query of αQE at query time: the search for its `n` neighbours among
/// the DBA rows, the expansion, and the search with the expanded query (DBA is offline).
pub fn aqe_ms(space: &Space, rows: &[Row], n: usize, alpha: f32) -> Result<f64> {
    let (_, flat) = train_matrix(space, rows);
    let index = FlatIndex::new(crate::rerank::dba(&flat, space.dim, n, alpha), space.dim);
    let qv = test_vectors(space, rows);
    let t = std::time::Instant::now();
    for q in &qv {
        let hs = index
            .search(&[q], n.max(1), None)?
            .pop()
            .unwrap_or_default();
        let nb: Vec<(&[f32], f32)> = hs
            .iter()
            .map(|h| (index.row(h.row as usize), h.score))
            .collect();
        let e = crate::rerank::alpha_qe(q, &nb, n, alpha);
        index.search(&[&e], 100, None)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / qv.len().max(1) as f64)
}

/// Milliseconds per test query of k-reciprocal re-ranking: the top-100 search and the
/// re-ranking of that shortlist.
pub fn kr_ms(space: &Space, rows: &[Row], kr: Kr) -> Result<f64> {
    let (_, flat) = train_matrix(space, rows);
    let index = FlatIndex::new(flat, space.dim);
    let qv = test_vectors(space, rows);
    let t = std::time::Instant::now();
    for q in &qv {
        let hs = index.search(&[q], 100, None)?.pop().unwrap_or_default();
        let short: Vec<&[f32]> = hs.iter().map(|h| index.row(h.row as usize)).collect();
        std::hint::black_box(kr.rerank(q, &short));
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / qv.len().max(1) as f64)
}

/// The re-ranking cost table, Markdown.
pub fn rerank_markdown(records: &[Value]) -> String {
    let mut s = String::from(
        "\nRe-ranking (knobs tuned on val), query latency on this machine, exact search of the \
         train rows:\n\n| space | knobs | plain ms/query | re-ranked ms/query | ratio |\n\
         |---|---|---:|---:|---:|\n",
    );
    for r in records {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.1}x |\n",
            r["space"].as_str().unwrap_or("?"),
            r["knobs"].as_str().unwrap_or(""),
            r["search_ms"].as_f64().unwrap_or(0.0),
            r["ms"].as_f64().unwrap_or(0.0),
            r["ms"].as_f64().unwrap_or(0.0) / r["search_ms"].as_f64().unwrap_or(1.0).max(1e-9)
        ));
    }
    s
}

/// The leave-classes-out table, Markdown.
pub fn unseen_markdown(records: &[Value]) -> String {
    let mut s = String::from(
        "\nLeave classes out: adapters learned without the held-out classes, P@1 (micro, \
         full label) on those classes' test queries, the index holding every train row:\n\n\
         | space | held-out classes | queries | frozen P@1 | adapted P@1 | change |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for r in records {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:+.3}{} |\n",
            r["space"].as_str().unwrap_or("?"),
            r["held_out_classes"].as_array().map_or(0, Vec::len),
            r["queries"],
            r["frozen_P@1"].as_f64().unwrap_or(0.0),
            r["adapted_P@1"].as_f64().unwrap_or(0.0),
            r["delta"].as_f64().unwrap_or(0.0),
            if r["hurts_unseen"] == true {
                " (hurts)"
            } else {
                ""
            }
        ));
    }
    s
}

/// How much P@1 on unseen classes an adapter may lose before it says so.
pub const HURT: f64 = 0.02;

/// The level of the label an adapter learns (the full label).
pub fn learned_level(label: &str) -> String {
    at_level(label, LEVELS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Three classes in 4-D, 12 train, 6 val and 6 test rows, with distinct ids per split.
    fn toy() -> (Vec<Row>, Space) {
        let mut rows = Vec::new();
        let mut vectors = HashMap::new();
        let mut id = 0u64;
        for (split, n) in [("train", 4), ("val", 2), ("test", 2)] {
            for c in 0..3usize {
                for k in 0..n {
                    let mut v = vec![0.1f32; 4];
                    v[c] = 1.0;
                    v[3] = 0.3 * k as f32 - 0.2 + 0.05 * c as f32;
                    simcase_models::l2_normalize_in_place(&mut v);
                    vectors.insert(id, v);
                    let label = format!("XR/chest/c{c}");
                    rows.push(Row::new(
                        rows.len(),
                        PathBuf::from(format!("{split}{id}.png")),
                        &label,
                        split,
                        id,
                        &format!("p{id}"),
                    ));
                    id += 1;
                }
            }
        }
        let space = Space {
            name: "toy".into(),
            dim: 4,
            vectors,
        };
        (rows, space)
    }

    #[test]
    fn the_trainer_sees_train_and_val_rows_only_and_never_a_test_row() {
        let (rows, space) = toy();
        let ids = |s: &str| -> HashSet<u64> {
            rows.iter()
                .filter(|r| r.split() == s)
                .map(|r| r.id())
                .collect()
        };
        let (train, val, test) = (ids("train"), ids("val"), ids("test"));
        for m in Method::ALL {
            let (adapted, fitted) = adapt(&space, &rows, m, &HashSet::new()).unwrap();
            let seen: HashSet<u64> = fitted.seen_train.iter().copied().collect();
            assert_eq!(seen, train, "{m}");
            let tuned: HashSet<u64> = fitted.seen_val.iter().copied().collect();
            assert!(tuned.is_subset(&val) && !tuned.is_empty(), "{m}");
            assert!(seen.is_disjoint(&test) && tuned.is_disjoint(&test), "{m}");
            // Every row, test included, is mapped into the adapted space (it is searched).
            assert_eq!(adapted.vectors.len(), rows.len());
            assert_eq!(adapted.name, format!("toy:{m}"));
        }
        // Held-out classes are kept from the trainer too.
        let held: HashSet<String> = ["XR/chest/c1".to_string()].into();
        let (_, fitted) = adapt(&space, &rows, Method::Lw, &held).unwrap();
        let c1: HashSet<u64> = rows
            .iter()
            .filter(|r| r.label() == "XR/chest/c1")
            .map(|r| r.id())
            .collect();
        assert!(fitted.seen_train.iter().all(|id| !c1.contains(id)));
        assert!(fitted.seen_val.iter().all(|id| !c1.contains(id)));
    }

    #[test]
    fn fusion_concatenates_weighted_normalised_vectors_row_by_row() {
        let (rows, a) = toy();
        // A second "model": 2-D vectors, its rows with other ids (offset 1000).
        let mut rows_b = Vec::new();
        let mut vb = HashMap::new();
        for r in &rows {
            let id = r.id() + 1000;
            let mut v = vec![r.line() as f32 + 1.0, 1.0];
            simcase_models::l2_normalize_in_place(&mut v);
            vb.insert(id, v);
            rows_b.push(Row::new(
                r.line(),
                r.path().into(),
                r.label(),
                r.split(),
                id,
                r.group(),
            ));
        }
        let b = Space {
            name: "two".into(),
            dim: 2,
            vectors: vb.clone(),
        };
        let (fused_rows, fused, w) = fuse(&[(a, rows.clone()), (b, rows_b)]).unwrap();
        assert_eq!(fused.dim, 6);
        assert_eq!(fused.name, "toy+two");
        assert_eq!(fused_rows.len(), rows.len());
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let (_, a) = toy();
        for r in &rows {
            let v = &fused.vectors[&r.id()];
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
            // Each part is its model's vector times its weight, up to the common norm.
            let s = v[0] / (a.vectors[&r.id()][0] * w[0] as f32);
            for (j, x) in a.vectors[&r.id()].iter().enumerate() {
                assert!((v[j] - x * w[0] as f32 * s).abs() < 1e-5);
            }
            for (j, x) in vb[&(r.id() + 1000)].iter().enumerate() {
                assert!((v[4 + j] - x * w[1] as f32 * s).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn held_out_classes_are_a_share_of_those_with_train_and_test_rows() {
        let (rows, _) = toy();
        let h = held_out_classes(&rows, 0.2);
        assert_eq!(h.len(), 1, "ceil(0.2 × 3)");
        assert_eq!(h, held_out_classes(&rows, 0.2), "stable");
        assert_eq!(held_out_classes(&rows, 1.0).len(), 3);
    }
}
