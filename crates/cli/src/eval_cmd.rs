//! `simcase eval`: the flags, and the printing and writing of the reports; the protocol itself
//! (embedding, P@N, the kNN vote) is `simcase_eval::protocol`. With `--index milvus://…` the
//! manifest is scored against a Milvus collection instead of a local per-model index: its
//! train rows are searched through Milvus, with the same protocol and the same tables.

use anyhow::{Context, Result};
use serde_json::json;
use simcase_eval::adapted::{self, Space};
use simcase_eval::protocol::{self, embed_manifest, evaluate, markdown};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Labelled manifest with a `split` column (train = index, val = tuning, test = queries).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Model(s) to score; repeat for a side-by-side table (default: dinov2-s, or with a
    /// Milvus --index the collection's model, the only one it can score). `a+b` fuses models:
    /// their L2-normalised embeddings concatenated, weights tuned on val (each model's
    /// embeddings are computed once, whatever the combinations).
    #[arg(long = "model")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub embed: crate::EmbedPrecision,
    /// Also score each model adapted with METHOD, learned from the train split and tuned on
    /// val (whiten, lw, lda, mlp; repeatable, or `all`); see `simcase adapt`.
    #[arg(long = "adapt", value_name = "METHOD")]
    pub adapt: Vec<String>,
    /// With --adapt: hold 20% of the full-label classes out of adaptation and compare P@1 on
    /// their test queries, adapted against frozen (an adapter must not hurt classes it never
    /// saw; a loss over 0.02 is flagged).
    #[arg(long, requires = "adapt")]
    pub leave_classes_out: bool,
    /// Also score each model (or fusion) re-ranked: `aqe` (α-query expansion with
    /// database-side augmentation) or `kr` (k-reciprocal re-ranking of the top 100); knobs
    /// tuned on val, query latency reported against plain search.
    #[arg(long = "rerank", value_name = "METHOD", value_parser = ["aqe", "kr"])]
    pub rerank: Vec<String>,
    /// Score a Milvus collection (`milvus://HOST:PORT/COLLECTION`) that holds the manifest's
    /// files (`simcase index --manifest … --index milvus://…`), searching it through Milvus,
    /// instead of embedding the manifest into a local index.
    #[arg(long)]
    pub index: Option<String>,
    /// With a milvus:// --index, how its searches see the latest writes (strong, bounded or
    /// eventually; see `simcase search --help`).
    #[arg(
        long,
        default_value = "strong",
        value_name = "LEVEL",
        requires = "index"
    )]
    pub consistency: simcase_milvus::Consistency,
    /// Write the report as JSON (one model: the report; several: {"models": {name: report}}).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the tables as Markdown.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Folder for the per-model embedding indexes (default $SIMCASE_HOME/eval).
    #[arg(long)]
    pub work: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Largest k tried for the kNN vote.
    #[arg(long, default_value_t = 50)]
    pub max_k: usize,
    #[arg(long)]
    pub quiet: bool,
    /// Also score distinct groups (each scored by its best image), as `search --group-by`:
    /// patient, study, series, volume, or none.
    #[arg(long, default_value = "patient")]
    pub group_by: String,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let group_by: Option<simcase_query::GroupBy> = match a.group_by.as_str() {
        "none" => None,
        g => Some(g.parse()?),
    };
    let opts = protocol::Options {
        manifest: a.manifest.clone(),
        work: a.work.clone(),
        batch: a.batch,
        quiet: a.quiet,
    };
    // Before any model is installed or loaded: a manifest eval cannot score fails now.
    protocol::check_manifest(&a.manifest)?;
    let precision = a.embed.apply();
    let specs: Vec<Vec<simcase_models::ModelId>> = a
        .models
        .iter()
        .map(|m| {
            m.split('+')
                .map(|p| {
                    p.parse::<simcase_models::ModelId>()
                        .map_err(anyhow::Error::from)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let methods: Vec<simcase_adapt::Method> = if a.adapt.iter().any(|m| m == "all") {
        simcase_adapt::Method::ALL.to_vec()
    } else {
        a.adapt.iter().map(|m| m.parse()).collect::<Result<_>>()?
    };
    let mut reports = Vec::new();
    let mut unseen = Vec::new();
    let mut reranked = Vec::new();
    if let Some(index) = &a.index {
        anyhow::ensure!(
            methods.is_empty() && a.rerank.is_empty() && specs.iter().all(|s| s.len() == 1),
            "--adapt, --rerank and fused models (a+b) score local indexes; leave out --index"
        );
        let url = simcase_milvus::MilvusUrl::parse(index)?;
        let mut coll = simcase_milvus::Collection::open(&url)?;
        coll.set_consistency(a.consistency);
        let model = &coll.info().model;
        if let Some(other) = specs.iter().flatten().find(|m| m.name() != model.as_str()) {
            anyhow::bail!(
                "{url} was embedded with {model}; --model {other} cannot be scored on it \
                 (leave --model out, or give {model})"
            );
        }
        reports.push(protocol::evaluate_remote(
            &coll,
            &a.manifest,
            a.max_k,
            group_by,
        )?);
    } else {
        let specs = if specs.is_empty() {
            vec![vec![simcase_models::DEFAULT_MODEL]]
        } else {
            specs
        };
        // Each model embedded once, whatever the combinations it appears in.
        let mut embedded: Vec<(
            simcase_models::ModelId,
            simcase_index::Reader,
            Vec<protocol::Row>,
            usize,
        )> = Vec::new();
        for m in specs.iter().flatten() {
            if embedded.iter().any(|e| e.0 == *m) {
                continue;
            }
            crate::ensure_model(*m)?;
            let (reader, rows, missing) = embed_manifest(&opts, *m, group_by)?;
            embedded.push((*m, reader, rows, missing));
        }
        let get =
            |m: &simcase_models::ModelId| embedded.iter().find(|e| e.0 == *m).expect("embedded");
        for spec in &specs {
            let (space, rows, missing) = if let [m] = spec.as_slice() {
                let (_, reader, rows, missing) = get(m);
                reports.push(evaluate(reader, rows, *missing, a.max_k, group_by)?);
                (Space::frozen(reader, rows)?, rows.clone(), *missing)
            } else {
                let parts = spec
                    .iter()
                    .map(|m| {
                        let (_, reader, rows, _) = get(m);
                        Ok((Space::frozen(reader, rows)?, rows.clone()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (rows, space, weights) = adapted::fuse(&parts)?;
                // Rows another model could not embed are left out of the fusion too.
                let missing = get(&spec[0]).3 + (parts[0].1.len() - rows.len());
                let mut r = space.score(&rows, missing, a.max_k, group_by)?;
                r["fusion_weights"] = json!(spec
                    .iter()
                    .zip(&weights)
                    .map(|(m, w)| (m.name().to_string(), *w))
                    .collect::<std::collections::BTreeMap<_, _>>());
                reports.push(r);
                (space, rows, missing)
            };
            for rr in &a.rerank {
                let plain = adapted::search_ms(&space, &rows)?;
                let (r, rec) = if rr == "aqe" {
                    let (s, n, alpha) = adapted::tune_expand(&space, &rows)?;
                    let ms = adapted::aqe_ms(&space, &rows, n, alpha)?;
                    let r = s.score(&rows, missing, a.max_k, group_by)?;
                    (
                        r,
                        json!({ "space": s.name, "knobs": format!("n {n}, alpha {alpha}"),
                                "search_ms": plain, "ms": ms }),
                    )
                } else {
                    let (kr, _) = adapted::tune_kr(&space, &rows)?;
                    let f = |q: &[f32], short: &[&[f32]]| kr.rerank(q, short);
                    let name = format!("{}+kr", space.name);
                    let r = protocol::evaluate_reranked(
                        &name,
                        space.dim,
                        &rows,
                        &|id| space.vectors.get(&id).map(Vec::as_slice),
                        Some(&f),
                        missing,
                        a.max_k,
                        group_by,
                    )?;
                    let ms = adapted::kr_ms(&space, &rows, kr)?;
                    (
                        r,
                        json!({ "space": name,
                                "knobs": format!("k1 {}, k2 {}, lambda {}", kr.k1, kr.k2, kr.lambda),
                                "search_ms": plain, "ms": ms }),
                    )
                };
                let mut r = r;
                r["rerank"] = rec.clone();
                reports.push(r);
                reranked.push(rec);
            }
            let held: Vec<String> = if a.leave_classes_out {
                adapted::held_out_classes(&rows, 0.2)
            } else {
                Vec::new()
            };
            let held_set: std::collections::HashSet<String> = held.iter().cloned().collect();
            let frozen_unseen = if a.leave_classes_out {
                Some(adapted::unseen_p1(&space, &rows, &held_set)?)
            } else {
                None
            };
            for &method in &methods {
                let (adapted, fitted) = adapted::adapt(&space, &rows, method, &Default::default())?;
                let mut r = adapted.score(&rows, missing, a.max_k, group_by)?;
                r["adapter"] = json!({
                    "method": method.name(),
                    "tuned": fitted.adapter.tuned,
                    "train_rows": fitted.seen_train.len(),
                    "val_rows": fitted.seen_val.len(),
                    "dim": fitted.adapter.dim_out,
                });
                reports.push(r);
                if let Some(fu) = frozen_unseen {
                    let (lco, _) = adapted::adapt(&space, &rows, method, &held_set)?;
                    let (p, _) = adapted::unseen_p1(&lco, &rows, &held_set)?;
                    let rec = adapted::unseen_record(&adapted.name, fu, p, &held);
                    if rec["hurts_unseen"] == true {
                        eprintln!(
                            "warning: {} hurts classes it never saw: P@1 {:.3} against {:.3} \
                             frozen on {} queries of {} held-out classes (a loss over {})",
                            adapted.name,
                            p,
                            fu.0,
                            fu.1,
                            held.len(),
                            adapted::HURT
                        );
                    }
                    unseen.push(rec);
                }
            }
        }
    }
    let mut md = markdown(&reports);
    md.push_str(&format!(
        "\nEmbedding precision: {precision} (the models' linear layers; `--embed-precision`).\n"
    ));
    if !unseen.is_empty() {
        md.push_str(&adapted::unseen_markdown(&unseen));
    }
    if !reranked.is_empty() {
        md.push_str(&adapted::rerank_markdown(&reranked));
    }
    println!("{md}");
    if let Some(p) = &a.markdown {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.json {
        for r in reports.iter_mut() {
            r["embedding_precision"] = json!(precision.name());
        }
        let v = if reports.len() == 1 && unseen.is_empty() {
            reports.remove(0)
        } else {
            let mut o = serde_json::Map::new();
            for r in reports {
                o.insert(r["model"].as_str().unwrap_or("?").to_string(), r);
            }
            if unseen.is_empty() {
                json!({ "models": o })
            } else {
                json!({ "models": o, "leave_classes_out": unseen })
            }
        };
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
