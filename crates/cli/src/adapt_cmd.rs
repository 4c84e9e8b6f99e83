//! `simcase adapt --index DIR [--model a+b] [--method whiten|lw|lda|mlp|none] [--name NAME]`:
//! learn an adapter from the index's own rows (train to learn, val to tune; test never) and
//! store it with the index as a named view ([`simcase_adapt::view`]). On an index of fused
//! models (`index --model a+b`), `--model` picks the models the view keeps (all by default)
//! and their weights are tuned on val first, with nothing embedded again. `simcase eval
//! --adapt` scores the same methods with the paper's protocol, leave-classes-out included.

use anyhow::{Context, Result};
use serde_json::json;
use simcase_adapt::{Adapter, Block, Method, Sample};
use simcase_models::ModelSet;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct AdaptArgs {
    /// Index folder whose rows (with a `split`, and labels for the supervised methods) the
    /// adapter learns from.
    #[arg(long)]
    index: PathBuf,
    /// whiten (unsupervised, the default: on dev.csv it helps classes it never saw), lw
    /// (within-class whitening), lda, mlp (a residual head), or none (only the fused models'
    /// weights, with --model).
    #[arg(long, default_value = "whiten")]
    method: String,
    /// On an index of fused models (`index --model a+b+c`): the models the view keeps, e.g.
    /// `a+b` or `a` (default: all of them). With two or more, their weights are tuned on val.
    #[arg(long)]
    model: Option<ModelSet>,
    /// The view's name (default: the method's, after the models' with --model); an existing
    /// view of that name is replaced.
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(a: &AdaptArgs) -> Result<()> {
    let method: Option<Method> = match a.method.as_str() {
        "none" => None,
        m => Some(m.parse()?),
    };
    let method_name = method.map_or("none", Method::name);
    let name = a.name.clone().unwrap_or_else(|| match &a.model {
        None => method_name.to_string(),
        Some(m) => {
            let models = m.to_string().replace('+', "_");
            match method {
                None => models,
                Some(method) => format!("{models}-{method}"),
            }
        }
    });
    simcase_adapt::view::check_name(&name)?;
    anyhow::ensure!(
        method.is_some() || a.model.is_some(),
        "--method none keeps the rows as they are; give --model to weigh or pick the models of \
         a fused index"
    );
    let reader = simcase_index::Reader::open(&a.index)?;
    let blocks = match &a.model {
        Some(m) => Some(blocks_of(&reader, m).with_context(|| format!("{}", a.index.display()))?),
        None => None,
    };
    let items = reader.items()?;
    let split = |it: &simcase_index::Item| {
        it.meta
            .split
            .as_deref()
            .map(simcase_eval::protocol::split_name)
    };
    let has_splits = items.iter().any(|it| split(it).is_some());
    fn sample<'a>(
        reader: &'a simcase_index::Reader,
        it: &'a simcase_index::Item,
    ) -> Result<Sample<'a>> {
        Ok(Sample {
            id: it.id,
            vector: reader.vector(it.id).context("a row's vector is missing")?,
            label: it.meta.label.as_deref(),
        })
    }
    // Without splits, the unsupervised method learns from every row; the others need them.
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for it in &items {
        match (has_splits, split(it).as_deref()) {
            (false, _) | (true, Some("train")) => train.push(sample(&reader, it)?),
            (true, Some("val")) => val.push(sample(&reader, it)?),
            _ => {}
        }
    }
    let shown = a.index.display();
    anyhow::ensure!(
        has_splits || method.is_some_and(|m| !m.supervised()),
        "{shown}: no row has a split; {method_name} learns from `train` rows and tunes on \
         `val` rows (index with a manifest's `split` column), and only `whiten` works without",
    );
    // The fused models' weights first (tuned on val when there are several), then the method
    // learns on the rows as they weigh them.
    let (weights, fusion) = match &blocks {
        None => (None, None),
        Some((set, b)) => {
            let (w, p) = fusion_weights(set, b, &train, &val, reader.settings().dim);
            (Some(w), Some((set.clone(), p)))
        }
    };
    let mapped = weights.as_ref().map(|w| {
        let map = |set: &[Sample]| set.iter().map(|s| w.apply(s.vector)).collect::<Vec<_>>();
        (map(&train), map(&val))
    });
    let (train_in, val_in) = match &mapped {
        None => (train.clone(), val.clone()),
        Some((t, v)) => (relabel(&train, t), relabel(&val, v)),
    };
    let fitted = match method {
        Some(m) => {
            Some(simcase_adapt::fit(m, &train_in, &val_in).with_context(|| format!("{shown}"))?)
        }
        None => None,
    };
    let adapter = match (&fitted, weights) {
        (Some(f), None) => f.adapter.clone(),
        (Some(f), Some(w)) => Adapter {
            dim_in: w.dim_in,
            blocks: w.blocks,
            ..f.adapter.clone()
        },
        (None, Some(w)) => w,
        (None, None) => anyhow::bail!("--method none needs --model"),
    };
    let (seen_train, seen_val) = match &fitted {
        Some(f) => (f.seen_train.len(), f.seen_val.len()),
        None => (train.len(), val.len()),
    };
    let classes: std::collections::BTreeSet<&str> = train.iter().filter_map(|s| s.label).collect();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kr = tune_kr(&train, &val, &adapter);
    let s = reader.settings();
    simcase_adapt::view::save(
        &a.index,
        &name,
        &s.model,
        &adapter,
        json!({
            "train_rows": seen_train,
            "val_rows": seen_val,
            "fusion": fusion.as_ref().map(|(set, p)| json!({
                "models": set.parts().iter().map(|m| m.name()).collect::<Vec<_>>(),
                "weights": adapter.blocks.iter().map(|b| b.weight).collect::<Vec<_>>(),
                "val_P@1": p,
            })),
            "classes": classes.len(),
            "index_rows": reader.len(),
            "created_unix": created,
            // What `search --view NAME --rerank kr` uses; absent when val is too small.
            "rerank": kr.map(|(kr, p)| json!({
                "kr": { "k1": kr.k1, "k2": kr.k2, "lambda": (f64::from(kr.lambda) * 1e6).round() / 1e6, "val_P@1": p }
            })),
        }),
    )?;
    if !a.quiet {
        if let Some((set, p)) = &fusion {
            let w: Vec<String> = set
                .parts()
                .iter()
                .zip(&adapter.blocks)
                .map(|(m, b)| format!("{m} {:.3}", b.weight))
                .collect();
            eprintln!(
                "models of {} kept, with their weights: {}{}",
                s.model,
                w.join(", "),
                match p {
                    Some(p) => format!(" (tuned on val: P@1 {p:.3})"),
                    None if set.parts().len() > 1 => {
                        " (equal: val has too few labelled rows to tune on)".to_string()
                    }
                    None => String::new(),
                }
            );
        }
        let tuned: Vec<String> = adapter
            .tuned
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        eprintln!(
            "view {name}: {method_name} of {} ({}-d to {}-d), learned from {seen_train} train \
             rows ({} classes), tuned on {seen_val} val rows: {}; stored in {}",
            fusion
                .as_ref()
                .map_or(s.model.clone(), |(set, _)| set.to_string()),
            adapter.dim_in,
            adapter.dim_out,
            classes.len(),
            if adapter.method.is_none() {
                "the weights above".to_string()
            } else if tuned.is_empty() {
                "defaults".to_string()
            } else {
                tuned.join(", ")
            },
            a.index.join("views").display()
        );
        if let Some((kr, p)) = kr {
            eprintln!(
                "k-reciprocal re-ranking in this view tuned on val: k1 {}, k2 {}, lambda {} \
                 (val P@1 {p:.3}); `search --view {name} --rerank kr` uses it",
                kr.k1, kr.k2, kr.lambda
            );
        }
    }
    Ok(())
}

/// k-reciprocal knobs tuned on the val rows' P@1 in the adapter's space (eval's
/// [`simcase_eval::adapted::tune_kr`]), when val holds at least 4 labelled rows.
fn tune_kr(
    train: &[Sample],
    val: &[Sample],
    adapter: &simcase_adapt::Adapter,
) -> Option<(simcase_query::rerank::Kr, f64)> {
    use simcase_eval::adapted::Space;
    use simcase_eval::protocol::Row;
    let labelled = |s: &&Sample| s.label.is_some();
    if val.iter().filter(labelled).count() < simcase_adapt::MIN_TUNE
        || train.iter().filter(labelled).count() < 2
    {
        return None;
    }
    let mut rows = Vec::new();
    let mut vectors = std::collections::HashMap::new();
    for (split, set) in [("train", train), ("val", val)] {
        for s in set.iter().filter(labelled) {
            let label = s.label.unwrap_or_default();
            rows.push(Row::new(rows.len(), PathBuf::new(), label, split, s.id, ""));
            vectors.insert(s.id, adapter.apply(s.vector));
        }
    }
    let space = Space {
        name: "view".into(),
        dim: adapter.dim_out,
        vectors,
    };
    simcase_eval::adapted::tune_kr(&space, &rows).ok()
}

/// The blocks of `reader`'s fused rows that hold the models of `set`, in `set`'s order; an
/// error names the index's models when `set` asks for one it does not hold.
fn blocks_of(reader: &simcase_index::Reader, set: &ModelSet) -> Result<(ModelSet, Vec<Block>)> {
    let held: ModelSet = reader.settings().model.parse()?;
    let at = held.blocks();
    let blocks = set
        .parts()
        .iter()
        .map(|m| {
            at.iter()
                .find(|(h, _, _)| h == m)
                .map(|&(_, start, len)| Block {
                    start,
                    len,
                    weight: 1.0,
                })
                .with_context(|| {
                    format!(
                        "the index holds {held}; --model {set} names {m}, which it does not \
                         (index with --model {held}+{m} to add it)"
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((set.clone(), blocks))
}

/// The weights of the fused models `blocks`, tuned on the val rows' P@1 against the train rows
/// ([`simcase_adapt::tune_weights`], as `eval --model a+b` tunes them) when there are several
/// models and val holds at least 4 labelled rows of classes train holds; else equal. Returns
/// the weighing adapter and the val P@1 it was tuned to.
fn fusion_weights(
    set: &ModelSet,
    blocks: &[Block],
    train: &[Sample],
    val: &[Sample],
    dim: usize,
) -> (Adapter, Option<f64>) {
    let with = |w: &[f64]| {
        let b = blocks
            .iter()
            .zip(w)
            .map(|(b, &w)| Block {
                weight: w as f32,
                ..*b
            })
            .collect();
        Adapter::weights(dim, b)
    };
    let simcase_adapt::Tuning {
        labelled,
        classes,
        tune,
    } = simcase_adapt::Tuning::of(train, val);
    let n = set.parts().len();
    if n < 2 || tune.len() < simcase_adapt::MIN_TUNE || classes.len() < 2 {
        return (with(&vec![1.0 / n as f64; n]), None);
    }
    let (w, p) =
        simcase_adapt::tune_weights(n, |w| simcase_adapt::p1(Some(&with(w)), &labelled, &tune));
    (with(&w), Some(p))
}

/// `samples` with their vectors replaced by `vectors` (same order), for a fit on fused rows.
fn relabel<'a>(samples: &[Sample<'a>], vectors: &'a [Vec<f32>]) -> Vec<Sample<'a>> {
    samples
        .iter()
        .zip(vectors)
        .map(|(s, v)| Sample { vector: v, ..*s })
        .collect()
}
