//! `simcase eval`: the flags, and the printing and writing of the reports; the protocol itself
//! (embedding, P@N, the kNN vote) is `simcase_eval::protocol`. With `--index milvus://…` the
//! manifest is scored against a Milvus collection instead of a local per-model index: its
//! train rows are searched through Milvus, with the same protocol and the same tables.

use anyhow::{Context, Result};
use serde_json::json;
use simcase_eval::protocol::{self, embed_manifest, evaluate, markdown};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Labelled manifest with a `split` column (train = index, val = tuning, test = queries).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Model(s) to score; repeat for a side-by-side table (default: dinov2-s, or with a
    /// Milvus --index the collection's model, the only one it can score).
    #[arg(long = "model")]
    pub models: Vec<simcase_models::ModelId>,
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
    let mut reports = Vec::new();
    if let Some(index) = &a.index {
        let url = simcase_milvus::MilvusUrl::parse(index)?;
        let mut coll = simcase_milvus::Collection::open(&url)?;
        coll.set_consistency(a.consistency);
        let model = &coll.info().model;
        if let Some(other) = a.models.iter().find(|m| m.name() != model.as_str()) {
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
        let models = match a.models.as_slice() {
            [] => &[simcase_models::DEFAULT_MODEL][..],
            m => m,
        };
        for m in models {
            crate::ensure_model(*m)?;
            let (reader, rows, missing) = embed_manifest(&opts, *m, group_by)?;
            reports.push(evaluate(&reader, &rows, missing, a.max_k, group_by)?);
        }
    }
    let md = markdown(&reports);
    println!("{md}");
    if let Some(p) = &a.markdown {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.json {
        let v = if reports.len() == 1 {
            reports.remove(0)
        } else {
            let mut o = serde_json::Map::new();
            for r in reports {
                o.insert(r["model"].as_str().unwrap_or("?").to_string(), r);
            }
            json!({ "models": o })
        };
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
