//! `simcase adapt --index DIR [--method whiten|lw|lda|mlp] [--name NAME]`: learn an adapter from
//! the index's own rows (train to learn, val to tune; test never) and store it with the index as
//! a named view ([`simcase_adapt::view`]). `simcase eval --adapt` scores the same methods with
//! the paper's protocol, leave-classes-out included.

use anyhow::{Context, Result};
use serde_json::json;
use simcase_adapt::{Method, Sample};
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct AdaptArgs {
    /// Index folder whose rows (with a `split`, and labels for the supervised methods) the
    /// adapter learns from.
    #[arg(long)]
    index: PathBuf,
    /// whiten (unsupervised, the default: on dev.csv it helps classes it never saw), lw
    /// (within-class whitening), lda, or mlp (a residual head).
    #[arg(long, default_value = "whiten")]
    method: String,
    /// The view's name (default: the method's); an existing view of that name is replaced.
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(a: &AdaptArgs) -> Result<()> {
    let method: Method = a.method.parse()?;
    let name = a.name.clone().unwrap_or_else(|| method.name().to_string());
    simcase_adapt::view::check_name(&name)?;
    let reader = simcase_index::Reader::open(&a.index)?;
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
    anyhow::ensure!(
        has_splits || !method.supervised(),
        "{}: no row has a split; {method} learns from `train` rows and tunes on `val` rows \
         (index with a manifest's `split` column), and only `whiten` works without",
        a.index.display()
    );
    let shown = a.index.display();
    let fitted = simcase_adapt::fit(method, &train, &val).with_context(|| format!("{shown}"))?;
    let classes: std::collections::BTreeSet<&str> = train.iter().filter_map(|s| s.label).collect();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kr = tune_kr(&train, &val, &fitted.adapter);
    let s = reader.settings();
    simcase_adapt::view::save(
        &a.index,
        &name,
        &s.model,
        &fitted.adapter,
        json!({
            "train_rows": fitted.seen_train.len(),
            "val_rows": fitted.seen_val.len(),
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
        let tuned: Vec<String> = fitted
            .adapter
            .tuned
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        eprintln!(
            "view {name}: {method} of {} ({}-d to {}-d), learned from {} train rows ({} \
             classes), tuned on {} val rows: {}; stored in {}",
            s.model,
            fitted.adapter.dim_in,
            fitted.adapter.dim_out,
            fitted.seen_train.len(),
            classes.len(),
            fitted.seen_val.len(),
            if tuned.is_empty() {
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
    if val.iter().filter(labelled).count() < 4 || train.iter().filter(labelled).count() < 2 {
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
