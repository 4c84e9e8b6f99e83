//! The retrieval protocol of Denner et al. (2025), as ../shared/data/README.md fixes it.
//!
//! *Modified* P@N: N' = min(N, number of index items of the query's class); P = hits in the
//! top N' / N'. A query whose class has no index item is skipped (and counted). Micro = mean
//! over queries; macro = mean over classes of each class's mean. The kNN vote classifies a
//! query by its top-k neighbours' labels, with k tuned on the validation split.

pub mod adapted;
pub mod protocol;
pub use simcase_query::rerank;

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Label levels, coarse to fine.
pub const LEVELS: [&str; 3] = ["modality", "modality/anatomy", "modality/anatomy/pathology"];
/// The N of P@N.
pub const NS: [usize; 4] = [1, 3, 5, 10];

/// A label cut to `level` (0 = modality, 1 = modality/anatomy, 2 = full label).
pub fn at_level(label: &str, level: usize) -> String {
    label
        .split('/')
        .take(level + 1)
        .collect::<Vec<_>>()
        .join("/")
}

/// A metric averaged two ways: over queries (micro) and over classes of per-class means (macro).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MicroMacro {
    /// Mean over queries.
    pub micro: f64,
    /// Mean over classes of each class's mean.
    pub macro_: f64,
}

// JSON wants the key "macro", a Rust keyword.
impl MicroMacro {
    /// `{"micro": …, "macro": …}`.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({ "micro": self.micro, "macro": self.macro_ })
    }
}

/// P@N of one level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LevelReport {
    /// Keyed by N.
    pub p: BTreeMap<usize, MicroMacro>,
    /// Queries, the skipped ones included.
    pub queries: usize,
    /// Queries skipped because their class has no item in the index.
    pub skipped: usize,
}

impl LevelReport {
    /// `{"P@N": {"micro", "macro"}, …, "queries", "skipped"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        for (n, mm) in &self.p {
            o.insert(format!("P@{n}"), mm.to_json());
        }
        o.insert("queries".into(), self.queries.into());
        o.insert("skipped".into(), self.skipped.into());
        serde_json::Value::Object(o)
    }
}

/// Modified precision of one ranking; `None` when the class is absent from the index.
pub fn modified_precision(
    query: &str,
    ranked: &[&str],
    n: usize,
    class_size: usize,
) -> Option<f64> {
    let n = n.min(class_size);
    if n == 0 {
        return None;
    }
    let hits = ranked.iter().take(n).filter(|c| **c == query).count();
    Some(hits as f64 / n as f64)
}

/// P@N for the paper's N ([`NS`]) over queries. Each query is its class and the classes of its
/// ranked neighbours (best first); `index_counts` counts index items per class.
pub fn precision_report(
    queries: &[(String, Vec<String>)],
    index_counts: &HashMap<String, usize>,
) -> LevelReport {
    precision_at(queries, index_counts, &NS)
}

/// P@N as [`precision_report`], for any N (the report's curve takes N = 1…100).
pub fn precision_at(
    queries: &[(String, Vec<String>)],
    index_counts: &HashMap<String, usize>,
    ns: &[usize],
) -> LevelReport {
    let mut rep = LevelReport {
        queries: queries.len(),
        ..Default::default()
    };
    let mut per_class: BTreeMap<usize, BTreeMap<&str, (f64, usize)>> = BTreeMap::new();
    let mut micro: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for (class, ranked) in queries {
        let size = index_counts.get(class).copied().unwrap_or(0);
        if size == 0 {
            rep.skipped += 1;
            continue;
        }
        let ranked: Vec<&str> = ranked.iter().map(|s| s.as_str()).collect();
        for &n in ns {
            let p = modified_precision(class, &ranked, n, size).expect("size > 0");
            let m = micro.entry(n).or_default();
            m.0 += p;
            m.1 += 1;
            let c = per_class.entry(n).or_default().entry(class).or_default();
            c.0 += p;
            c.1 += 1;
        }
    }
    for &n in ns {
        let (sum, cnt) = micro.get(&n).copied().unwrap_or_default();
        let classes = per_class.get(&n);
        // No query scored (every one skipped): no score, NaN (`null` in JSON, `n/a` in
        // tables), not a precision of 0.
        let macro_ = classes
            .map(|cs| cs.values().map(|(s, c)| s / *c as f64).sum::<f64>() / cs.len() as f64)
            .unwrap_or(f64::NAN);
        rep.p.insert(
            n,
            MicroMacro {
                micro: if cnt > 0 { sum / cnt as f64 } else { f64::NAN },
                macro_,
            },
        );
    }
    rep
}

/// The label vote of the top-`k` neighbours `(label, score)`, best first. Ties between labels
/// go to the larger summed score, then to the label of the nearer neighbour.
pub fn knn_vote(neighbours: &[(String, f32)], k: usize) -> Option<String> {
    let mut tally: HashMap<&str, (usize, f64, usize)> = HashMap::new();
    for (rank, (label, score)) in neighbours.iter().take(k).enumerate() {
        let t = tally.entry(label).or_insert((0, 0.0, rank));
        t.0 += 1;
        t.1 += *score as f64;
    }
    tally
        .into_iter()
        .max_by(|a, b| {
            (a.1 .0)
                .cmp(&b.1 .0)
                .then(a.1 .1.total_cmp(&b.1 .1))
                .then(b.1 .2.cmp(&a.1 .2))
        })
        .map(|(l, _)| l.to_string())
}

/// The kNN label vote as a classifier: `k` tuned on `val`, then scored on `test`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    /// The number of neighbours that vote, tuned on `val`.
    pub k: usize,
    /// Accuracy on `val` at that `k`.
    pub val_accuracy: f64,
    /// Accuracy on `test`.
    pub accuracy: f64,
    /// Macro-averaged F1 on `test`.
    pub macro_f1: f64,
}

/// Accuracy of the vote with `k` over `(true label, neighbours)`.
pub fn vote_accuracy(queries: &[(String, Vec<(String, f32)>)], k: usize) -> f64 {
    if queries.is_empty() {
        return 0.0;
    }
    let right = queries
        .iter()
        .filter(|(t, nb)| knn_vote(nb, k).as_deref() == Some(t.as_str()))
        .count();
    right as f64 / queries.len() as f64
}

/// F1 of each label over the union of true and predicted labels.
pub fn f1_per_class(pairs: &[(String, String)]) -> BTreeMap<String, f64> {
    let mut stats: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new(); // tp, fp, fn
    for (t, p) in pairs {
        if t == p {
            stats.entry(t).or_default().0 += 1;
        } else {
            stats.entry(p).or_default().1 += 1;
            stats.entry(t).or_default().2 += 1;
        }
    }
    stats
        .into_iter()
        .map(|(label, (tp, fp, fn_))| {
            let denom = 2 * tp + fp + fn_;
            let f1 = if denom == 0 {
                0.0
            } else {
                2.0 * tp as f64 / denom as f64
            };
            (label.to_string(), f1)
        })
        .collect()
}

/// Macro F1 over the union of true and predicted labels (as scikit-learn's `average="macro"`).
pub fn macro_f1(pairs: &[(String, String)]) -> f64 {
    let f1s = f1_per_class(pairs);
    if f1s.is_empty() {
        return 0.0;
    }
    f1s.values().sum::<f64>() / f1s.len() as f64
}

/// Tune k on `val` (1..=max_k, first best wins), then score `test`.
pub fn knn_classification(
    val: &[(String, Vec<(String, f32)>)],
    test: &[(String, Vec<(String, f32)>)],
    max_k: usize,
) -> Classification {
    let (mut best_k, mut best) = (1, f64::NEG_INFINITY);
    for k in 1..=max_k.max(1) {
        let a = vote_accuracy(val, k);
        if a > best {
            (best_k, best) = (k, a);
        }
    }
    let pairs: Vec<(String, String)> = test
        .iter()
        .map(|(t, nb)| (t.clone(), knn_vote(nb, best_k).unwrap_or_default()))
        .collect();
    Classification {
        k: best_k,
        val_accuracy: best.max(0.0),
        accuracy: vote_accuracy(test, best_k),
        macro_f1: macro_f1(&pairs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn levels_cut_labels() {
        assert_eq!(at_level("CT/chest/normal", 0), "CT");
        assert_eq!(at_level("CT/chest/normal", 1), "CT/chest");
        assert_eq!(at_level("CT/chest/normal", 2), "CT/chest/normal");
    }

    #[test]
    fn class_size_caps_n() {
        // Only 2 index items of class A: P@5 looks at the top 2.
        assert_eq!(
            modified_precision("A", &["A", "A", "B", "B", "B"], 5, 2),
            Some(1.0)
        );
        assert_eq!(
            modified_precision("A", &["B", "A", "A"], 3, 10),
            Some(2.0 / 3.0)
        );
        assert_eq!(modified_precision("A", &["A"], 1, 0), None);
    }

    #[test]
    fn micro_and_macro_by_hand() {
        let counts: HashMap<String, usize> = [("A".to_string(), 10), ("B".to_string(), 1)]
            .into_iter()
            .collect();
        let q = vec![
            ("A".to_string(), s(&["A", "B", "A"])), // P@1 1, P@3 2/3
            ("A".to_string(), s(&["B", "B", "B"])), // P@1 0, P@3 0
            ("B".to_string(), s(&["B", "A", "A"])), // cap 1: P@1 = P@3 = 1
            ("C".to_string(), s(&["A"])),           // absent from index: skipped
        ];
        let r = precision_report(&q, &counts);
        assert_eq!((r.queries, r.skipped), (4, 1));
        let p1 = r.p[&1];
        assert!((p1.micro - 2.0 / 3.0).abs() < 1e-12);
        assert!((p1.macro_ - (0.5 + 1.0) / 2.0).abs() < 1e-12);
        let p3 = r.p[&3];
        assert!((p3.micro - (2.0 / 3.0 + 0.0 + 1.0) / 3.0).abs() < 1e-12);
        assert!((p3.macro_ - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        let j = r.to_json();
        assert!(j["P@3"]["macro"].is_number() && j["skipped"] == 1);
        // Every query skipped: no score (`null`), not a precision of 0.
        let r = precision_report(&q[3..], &counts);
        assert_eq!((r.queries, r.skipped), (1, 1));
        assert!(r.p[&1].micro.is_nan() && r.p[&1].macro_.is_nan());
        let j = r.to_json();
        assert!(
            j["P@1"]["micro"].is_null() && j["P@1"]["macro"].is_null(),
            "{j}"
        );
    }

    #[test]
    fn vote_majority_then_score_then_rank() {
        let nb = |v: &[(&str, f32)]| {
            v.iter()
                .map(|(l, s)| (l.to_string(), *s))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            knn_vote(&nb(&[("A", 0.9), ("B", 0.8), ("B", 0.7)]), 3).unwrap(),
            "B"
        );
        // 1-1 tie: B's summed score is larger.
        assert_eq!(knn_vote(&nb(&[("A", 0.5), ("B", 0.9)]), 2).unwrap(), "B");
        // Exact tie on count and score: the nearer neighbour's label.
        assert_eq!(knn_vote(&nb(&[("A", 0.5), ("B", 0.5)]), 2).unwrap(), "A");
        assert_eq!(
            knn_vote(&nb(&[("A", 0.9), ("B", 0.8), ("B", 0.7)]), 1).unwrap(),
            "A"
        );
        assert_eq!(knn_vote(&[], 3), None);
    }

    #[test]
    fn macro_f1_matches_sklearn() {
        // sklearn f1_score(["A","A","B","C"], ["A","B","B","A"], average="macro") = 0.3889
        let pairs = vec![
            ("A".into(), "A".into()),
            ("A".into(), "B".into()),
            ("B".into(), "B".into()),
            ("C".into(), "A".into()),
        ];
        assert!((macro_f1(&pairs) - (0.5 + 2.0 / 3.0 + 0.0) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn k_is_tuned_on_val() {
        let q = |t: &str, v: &[&str]| {
            (
                t.to_string(),
                v.iter()
                    .map(|l| (l.to_string(), 1.0f32))
                    .collect::<Vec<_>>(),
            )
        };
        // k=1 is wrong on val; k=3 is right.
        let val = vec![q("A", &["B", "A", "A"]), q("B", &["A", "B", "B"])];
        let test = vec![q("A", &["B", "A", "A"]), q("B", &["B", "B", "A"])];
        let c = knn_classification(&val, &test, 3);
        assert_eq!(c.k, 3);
        assert_eq!(c.val_accuracy, 1.0);
        assert_eq!(c.accuracy, 1.0);
        assert_eq!(c.macro_f1, 1.0);
    }
}
