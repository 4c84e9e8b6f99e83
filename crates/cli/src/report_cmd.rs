//! `simcase report --manifest CSV --model M [--model M2 …] --out DIR`: the paper's analyses as
//! one self-contained page with its figures and numbers ([`simcase_report`]).

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    /// Manifest: labelled with a `split` column for the protocol's figures; without labels or
    /// splits the report draws what needs none (the embedding map, nearest neighbours).
    #[arg(long)]
    manifest: PathBuf,
    /// Model(s), side by side in every figure (default: dinov2-s).
    #[arg(long = "model")]
    models: Vec<simcase_models::ModelId>,
    /// Report folder (index.html, figures/, report.json); refused if it exists.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing report folder (only an earlier report's, or an empty one).
    #[arg(long)]
    force: bool,
    /// Folder for the per-model embedding indexes, shared with `simcase eval` (default
    /// $SIMCASE_HOME/eval).
    #[arg(long)]
    work: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Largest k of the kNN vote (tuned on val).
    #[arg(long, default_value_t = 50)]
    max_k: usize,
    /// Seeds per point of the scaling curve.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Retrieval examples per modality.
    #[arg(long, default_value_t = 2)]
    examples: usize,
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(a: &ReportArgs) -> Result<()> {
    let models = match a.models.as_slice() {
        [] => vec![simcase_models::DEFAULT_MODEL],
        m => m.to_vec(),
    };
    // Refusals that need no model come first (an existing --out, an unreadable manifest).
    simcase_report::check_out(&a.out, a.force)?;
    simcase_ingest::read_manifest(&a.manifest)?;
    for m in &models {
        crate::ensure_model(*m)?;
    }
    let s = simcase_report::run(&simcase_report::Options {
        manifest: a.manifest.clone(),
        models,
        out: a.out.clone(),
        force: a.force,
        work: a.work.clone(),
        batch: a.batch,
        knobs: simcase_report::analysis::Knobs {
            max_k: a.max_k,
            seeds: a.seeds,
            examples: a.examples,
            quiet: a.quiet,
        },
    })?;
    if let Some(why) = &s.skipped {
        eprintln!("{why}");
    }
    if !a.quiet {
        eprintln!(
            "report: {} ({} figures, SVG and PNG, in {})",
            s.index.display(),
            s.figures.len(),
            a.out.join("figures").display()
        );
    }
    Ok(())
}
