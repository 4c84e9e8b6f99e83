//! Label-aware adaptation of frozen embeddings: cheap maps learned on the CPU from an index's
//! own labelled rows, applied to queries and rows alike before the cosine search.
//!
//! - `whiten`: PCA whitening (unsupervised; needs no labels). The map is the inverse Cholesky
//!   factor of the regularised covariance, which whitens exactly as the PCA form does up to a
//!   rotation, and a rotation changes no dot product.
//! - `lw`: within-class whitening ("learned whitening", Radenović et al., TPAMI 2018): the same
//!   with the within-class scatter, so directions that vary inside a class shrink. Linear,
//!   full rank: no direction is dropped, so classes it never saw keep their geometry.
//! - `lda`: `lw` followed by the projection on the between-class directions (at most
//!   classes − 1 of them): LDA. Strong on the classes it saw; it can collapse the others,
//!   which the leave-classes-out evaluation measures.
//! - `mlp`: a residual MLP head, `x + W₂ relu(W₁ x + b₁) + b₂` with `W₂` starting at zero (so
//!   it starts as the frozen model), trained with a normalised-softmax proxy loss (candle).
//!
//! - fusion (an index of `a+b`): the parts of each row a view keeps, with weights tuned on
//!   val ([`tune_weights`]); applied before any of the above, which then learn on the fused
//!   rows ([`Adapter::blocks`]).
//!
//! Only the rows handed to [`fit`] are seen: the caller passes `train` for learning and `val`
//! for choosing the regularisation or the epochs; `test` never reaches this crate.

pub mod linalg;
mod mlp;

use anyhow::{bail, Context, Result};
use linalg::{cholesky, invert_lower, symmetric_eigen, Square};
use std::collections::BTreeMap;
use std::path::Path;

/// The adaptation methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// Unsupervised PCA whitening.
    Whiten,
    /// Within-class whitening (supervised, linear, full rank).
    Lw,
    /// Within-class whitening then the between-class projection (LDA).
    Lda,
    /// A residual MLP head trained with a proxy loss.
    Mlp,
}

impl Method {
    /// Every method, in the order tables list them.
    pub const ALL: [Method; 4] = [Method::Whiten, Method::Lw, Method::Lda, Method::Mlp];

    /// The method's name on the command line and in views.
    pub fn name(self) -> &'static str {
        match self {
            Method::Whiten => "whiten",
            Method::Lw => "lw",
            Method::Lda => "lda",
            Method::Mlp => "mlp",
        }
    }

    /// Whether it learns from labels.
    pub fn supervised(self) -> bool {
        self != Method::Whiten
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .with_context(|| {
                format!(
                    "unknown adaptation method {s:?} (known: {})",
                    Method::ALL.map(|m| m.name()).join(", ")
                )
            })
    }
}

/// A residual MLP: `x + W₂ relu(W₁ x + b₁) + b₂`.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    /// Hidden width.
    pub hidden: usize,
    /// `hidden × dim`, row-major.
    pub w1: Vec<f32>,
    /// `hidden`.
    pub b1: Vec<f32>,
    /// `dim × hidden`, row-major.
    pub w2: Vec<f32>,
    /// `dim`.
    pub b2: Vec<f32>,
}

/// One model's values in a fused row that a view keeps: `start..start + len`, times `weight`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Block {
    /// The first value.
    pub start: usize,
    /// How many.
    pub len: usize,
    /// Their weight.
    pub weight: f32,
}

/// A learned map from a model's embedding to the adapted space.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    /// How it was learned; `None` for a view that only weighs (or picks) a fused index's
    /// models.
    pub method: Option<Method>,
    /// Input width (the index's rows).
    pub dim_in: usize,
    /// The parts of a fused row kept and weighted, first of all (the result is L2-normalised
    /// again); empty: the row as it is. The maps below take [`Adapter::dim_mid`] values.
    pub blocks: Vec<Block>,
    /// Output width.
    pub dim_out: usize,
    /// The residual head, applied after the blocks (`mlp`).
    pub residual: Option<Residual>,
    /// The mean subtracted before the linear map.
    pub mean: Vec<f32>,
    /// `dim_out × dim_mid`, row-major; empty for none (`mlp`).
    pub linear: Vec<f32>,
    /// What was chosen on val (`shrinkage` or `epochs`), and its val P@1.
    pub tuned: BTreeMap<String, f64>,
}

impl Adapter {
    /// A view that only keeps and weighs `blocks` of rows of width `dim_in`.
    pub fn weights(dim_in: usize, blocks: Vec<Block>) -> Adapter {
        let dim_out = blocks.iter().map(|b| b.len).sum();
        Adapter {
            method: None,
            dim_in,
            blocks,
            dim_out,
            residual: None,
            mean: Vec::new(),
            linear: Vec::new(),
            tuned: BTreeMap::new(),
        }
    }

    /// The width the learned maps see: the kept blocks', or the input's.
    pub fn dim_mid(&self) -> usize {
        if self.blocks.is_empty() {
            self.dim_in
        } else {
            self.blocks.iter().map(|b| b.len).sum()
        }
    }

    /// What the method name is in tables and views: the method's, or `none`.
    pub fn method_name(&self) -> &'static str {
        self.method.map_or("none", Method::name)
    }

    /// The adapted, L2-normalised vector of `x` (a row of width `dim_in`).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let picked;
        let x = if self.blocks.is_empty() {
            x
        } else {
            let mut v = Vec::with_capacity(self.dim_mid());
            for b in &self.blocks {
                v.extend(x[b.start..b.start + b.len].iter().map(|a| a * b.weight));
            }
            simcase_models::l2_normalize_in_place(&mut v);
            picked = v;
            &picked
        };
        let mut y = x.to_vec();
        if let Some(r) = &self.residual {
            let d = self.dim_mid();
            let h: Vec<f32> = (0..r.hidden)
                .map(|i| {
                    let row = &r.w1[i * d..(i + 1) * d];
                    (dot(row, x) + r.b1[i]).max(0.0)
                })
                .collect();
            for (j, yj) in y.iter_mut().enumerate() {
                *yj += dot(&r.w2[j * r.hidden..(j + 1) * r.hidden], &h) + r.b2[j];
            }
        }
        if !self.linear.is_empty() {
            let c: Vec<f32> = y.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
            let d = self.dim_mid();
            y = (0..self.dim_out)
                .map(|i| dot(&self.linear[i * d..(i + 1) * d], &c))
                .collect();
        }
        simcase_models::l2_normalize_in_place(&mut y);
        y
    }
}

/// The index's SIMD inner product (dispatched at run time).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    simcase_index::dot(a, b)
}

/// One labelled (or unlabelled) row handed to [`fit`]: its id (for the record of what the
/// trainer saw), its vector and its label.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// The row's id in its index.
    pub id: u64,
    /// Its embedding.
    pub vector: &'a [f32],
    /// Its label, if any.
    pub label: Option<&'a str>,
}

/// What [`fit`] learned, and which rows it looked at.
pub struct Fitted {
    /// The map.
    pub adapter: Adapter,
    /// The ids the trainer learned from (train) and tuned on (val), as it saw them.
    pub seen_train: Vec<u64>,
    /// The val ids used for tuning.
    pub seen_val: Vec<u64>,
}

/// The fewest val rows (labelled, of a class the train rows hold) that anything is tuned on.
pub const MIN_TUNE: usize = 4;

/// The rows tuning looks at: the labelled train rows, their classes, and the val rows of those
/// classes (what [`fit`] and the fused models' weights are tuned on).
pub struct Tuning<'s, 'a> {
    /// Train rows with a label.
    pub labelled: Vec<&'s Sample<'a>>,
    /// Their labels.
    pub classes: std::collections::BTreeSet<&'a str>,
    /// Val rows labelled with one of `classes`.
    pub tune: Vec<&'s Sample<'a>>,
}

impl<'s, 'a> Tuning<'s, 'a> {
    /// The tuning rows of `train` and `val`.
    pub fn of(train: &'s [Sample<'a>], val: &'s [Sample<'a>]) -> Self {
        let labelled: Vec<&Sample> = train.iter().filter(|s| s.label.is_some()).collect();
        let classes: std::collections::BTreeSet<&str> =
            labelled.iter().filter_map(|s| s.label).collect();
        let tune = val
            .iter()
            .filter(|s| s.label.is_some_and(|l| classes.contains(l)))
            .collect();
        Self {
            labelled,
            classes,
            tune,
        }
    }
}

/// The shrinkage values tried on val, as a share of the mean variance.
const SHRINKAGE: [f64; 5] = [0.001, 0.01, 0.1, 0.3, 1.0];

/// Learn `method` from `train` (the map) and `val` (its one knob). Supervised methods need
/// labelled train rows of at least 2 classes and a val split with at least 4 labelled rows
/// whose classes the train rows hold; `whiten` tunes on val when it can and otherwise uses a
/// shrinkage of 0.1.
pub fn fit(method: Method, train: &[Sample], val: &[Sample]) -> Result<Fitted> {
    let dim = train
        .first()
        .map(|s| s.vector.len())
        .context("no train rows to learn from")?;
    anyhow::ensure!(
        train.iter().chain(val).all(|s| s.vector.len() == dim),
        "rows of different widths"
    );
    let Tuning {
        labelled,
        classes,
        tune,
    } = Tuning::of(train, val);
    if method.supervised() && classes.len() < 2 {
        bail!(
            "{method} learns from labels, and the train rows hold {} labelled row(s) of {} \
             class(es); only `whiten` works without labels",
            labelled.len(),
            classes.len()
        );
    }
    let can_tune = tune.len() >= MIN_TUNE;
    if method.supervised() && !can_tune {
        bail!(
            "the val split is too small to tune {method} on: {} labelled val row(s) of a class \
             the train rows hold, and at least {MIN_TUNE} are needed",
            tune.len()
        );
    }
    let score = |a: &Adapter| p1(Some(a), &labelled, &tune);
    let mut tuned = BTreeMap::new();
    let adapter = match method {
        Method::Mlp => mlp::fit(&labelled, &tune, &mut tuned)?,
        _ => {
            let mut best: Option<(f64, f64, Adapter)> = None;
            let tries: &[f64] = if can_tune { &SHRINKAGE } else { &[0.1] };
            let prep = Prep::new(method, train, &labelled);
            for &eps in tries {
                let a = prep.adapter(eps)?;
                let p = if can_tune { score(&a) } else { f64::NAN };
                if best.as_ref().is_none_or(|b| p > b.0) {
                    best = Some((p, eps, a));
                }
            }
            let (p, eps, a) = best.context("nothing was fitted")?;
            tuned.insert("shrinkage".into(), eps);
            if can_tune {
                tuned.insert("val_P@1".into(), p);
            }
            a
        }
    };
    Ok(Fitted {
        adapter: Adapter { tuned, ..adapter },
        seen_train: train.iter().map(|s| s.id).collect(),
        seen_val: tune.iter().map(|s| s.id).collect(),
    })
}

/// P@1 of `queries` against `train` (the label of the nearest train row), both mapped through
/// `a` when one is given, else as they are: the rows mapped in parallel and ranked by the
/// index's exact scan (GEMM for the query batch). What tuning maximises on val, and what
/// `simcase bench adapt` reports on test.
pub fn p1(a: Option<&Adapter>, train: &[&Sample], queries: &[&Sample]) -> f64 {
    use rayon::prelude::*;
    let d = match a {
        Some(a) => a.dim_out,
        None => train.first().map_or(0, |s| s.vector.len()),
    }
    .max(1);
    let map = |rows: &[&Sample]| -> Vec<f32> {
        let mut out = vec![0f32; rows.len() * d];
        out.par_chunks_mut(d)
            .zip(rows.par_iter())
            .for_each(|(o, s)| match a {
                Some(a) => o.copy_from_slice(&a.apply(s.vector)),
                None => o.copy_from_slice(s.vector),
            });
        out
    };
    let (index, mapped) = (map(train), map(queries));
    let q: Vec<&[f32]> = mapped.chunks(d).collect();
    let hits = simcase_index::search_rows(&index, d, &q, 1, None);
    let right = hits
        .iter()
        .zip(queries)
        .filter(|(h, q)| {
            h.first()
                .is_some_and(|h| train[h.row as usize].label == q.label)
        })
        .count();
    right as f64 / queries.len().max(1) as f64
}

fn mean_of(rows: &[&[f32]], dim: usize) -> Vec<f64> {
    let mut m = vec![0f64; dim];
    for r in rows {
        for (a, b) in m.iter_mut().zip(*r) {
            *a += *b as f64;
        }
    }
    m.iter_mut().for_each(|a| *a /= rows.len().max(1) as f64);
    m
}

/// The whitening map of `scatter` with `eps` of its mean variance added: `L⁻¹`.
fn whitener(mut scatter: Square, eps: f64) -> Result<Square> {
    let md = scatter.mean_diag().max(1e-12);
    scatter.add_diag(eps * md);
    let l = cholesky(&scatter).context("the covariance is not positive definite")?;
    Ok(invert_lower(&l))
}

/// What the linear methods share across the shrinkage values tried: the mean, the scatter
/// matrix (computed once) and, for LDA, the class means and sizes.
struct Prep {
    method: Method,
    dim: usize,
    mean: Vec<f64>,
    scatter: Square,
    classes: Vec<(usize, Vec<f64>)>,
    labelled: usize,
}

impl Prep {
    fn new(method: Method, all: &[Sample], labelled: &[&Sample]) -> Prep {
        let dim = all[0].vector.len();
        let rows: Vec<&[f32]> = match method {
            Method::Whiten => all.iter().map(|s| s.vector).collect(),
            _ => labelled.iter().map(|s| s.vector).collect(),
        };
        let mean = mean_of(&rows, dim);
        let mut scatter = Square::zeros(dim);
        let w = 1.0 / rows.len().max(1) as f64;
        // Per-class means (supervised) or the global mean (whiten) are subtracted.
        let mut by_class: BTreeMap<&str, Vec<&[f32]>> = BTreeMap::new();
        for s in labelled {
            by_class
                .entry(s.label.unwrap_or(""))
                .or_default()
                .push(s.vector);
        }
        let mut classes = Vec::new();
        match method {
            Method::Whiten => {
                for r in &rows {
                    let c: Vec<f64> = r.iter().zip(&mean).map(|(a, m)| *a as f64 - m).collect();
                    scatter.add_outer(&c, w);
                }
            }
            _ => {
                for members in by_class.values() {
                    let m = mean_of(members, dim);
                    for r in members {
                        let c: Vec<f64> = r.iter().zip(&m).map(|(a, m)| *a as f64 - m).collect();
                        scatter.add_outer(&c, w);
                    }
                    classes.push((members.len(), m));
                }
            }
        }
        Prep {
            method,
            dim,
            mean,
            scatter,
            classes,
            labelled: labelled.len(),
        }
    }

    fn adapter(&self, eps: f64) -> Result<Adapter> {
        let (method, dim, mean) = (self.method, self.dim, &self.mean);
        let white = whitener(self.scatter.clone(), eps)?;
        let mut linear: Vec<f64> = white.a.clone();
        let mut dim_out = dim;
        if method == Method::Lda {
            // Class means in the whitened space, weighted by √(share); their Gram matrix's eigen
            // pairs give the between-class directions.
            let n = self.labelled as f64;
            let centred: Vec<Vec<f64>> = self
                .classes
                .iter()
                .map(|(size, m)| {
                    let c: Vec<f64> = m.iter().zip(mean).map(|(a, b)| a - b).collect();
                    let wc: Vec<f64> = (0..dim)
                        .map(|i| (0..=i).map(|k| white.at(i, k) * c[k]).sum())
                        .collect();
                    let s = (*size as f64 / n).sqrt();
                    wc.into_iter().map(|x| x * s).collect()
                })
                .collect();
            let k = centred.len();
            let mut gram = Square::zeros(k);
            for i in 0..k {
                for j in 0..k {
                    gram.a[i * k + j] =
                        centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum();
                }
            }
            let (vals, vecs) = symmetric_eigen(&gram);
            let mut dirs: Vec<Vec<f64>> = Vec::new();
            for (val, u) in vals.iter().zip(&vecs) {
                if *val <= 1e-12 * vals[0].max(1e-300) || dirs.len() + 1 >= k {
                    break;
                }
                let mut d: Vec<f64> = (0..dim)
                    .map(|i| centred.iter().zip(u).map(|(c, ui)| c[i] * ui).sum())
                    .collect();
                let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
                d.iter_mut().for_each(|x| *x /= norm);
                dirs.push(d);
            }
            // One direction would map every row to ±1: all scores tie.
            anyhow::ensure!(
                dirs.len() >= 2,
                "lda needs at least 3 classes whose means differ (it keeps classes − 1 \
             directions); this train split gives {}",
                dirs.len()
            );
            dim_out = dirs.len();
            linear = dirs
                .iter()
                .flat_map(|d| {
                    let white = &white;
                    (0..dim).map(move |j| (j..dim).map(|i| d[i] * white.at(i, j)).sum())
                })
                .collect();
        }
        Ok(Adapter {
            method: Some(method),
            dim_in: dim,
            blocks: Vec::new(),
            dim_out,
            residual: None,
            mean: mean.iter().map(|&m| m as f32).collect(),
            linear: linear.iter().map(|&x| x as f32).collect(),
            tuned: BTreeMap::new(),
        })
    }
}

/// The weights of `n` fused models, tuned on val by coordinate search: each weight times 0.5,
/// 0.75, 1.5 or 2 in turn, kept when `score` (val P@1) rises, two rounds, starting equal.
/// Returns the weights normalised to sum 1 and the best score.
pub fn tune_weights(n: usize, score: impl Fn(&[f64]) -> f64) -> (Vec<f64>, f64) {
    let mut w = vec![1.0; n];
    let mut best = score(&w);
    for _round in 0..2 {
        for i in 0..n {
            for f in [0.5, 0.75, 1.5, 2.0] {
                let mut t = w.clone();
                t[i] *= f;
                let p = score(&t);
                if p > best + 1e-12 {
                    (best, w) = (p, t);
                }
            }
        }
    }
    let sum: f64 = w.iter().sum();
    (w.iter().map(|x| x / sum).collect(), best)
}

/// A named, versioned adapter stored with its index (`views/NAME.json`).
pub mod view;

/// Reject an adapter built for another model or width, by name, before it is applied.
pub fn check_compatible(
    adapter_model: &str,
    adapter_dim: usize,
    model: &str,
    dim: usize,
    what: &Path,
) -> Result<()> {
    anyhow::ensure!(
        adapter_model == model && adapter_dim == dim,
        "{}: the view was built for {adapter_model} ({adapter_dim}-d) and this index holds \
         {model} ({dim}-d)",
        what.display()
    );
    Ok(())
}
