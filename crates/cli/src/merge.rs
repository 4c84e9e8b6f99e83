//! `simcase merge A B … --into C`: the last step of a sharded ingest (`simcase index --shard
//! I/N` into one folder per share), joining the shares' indexes into one without re-embedding
//! (the logic, its checks and its crash safety are `simcase_index::store::merge`'s).

use anyhow::Result;
use simcase_index::store::merge;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct MergeArgs {
    /// Index folders to merge (e.g. the shares of `simcase index --shard I/N`), in order.
    #[arg(required = true, value_name = "INDEX")]
    inputs: Vec<PathBuf>,
    /// The index to merge into: created if missing (with the first input's precision and
    /// index type), else appended to. Content it holds already is not added twice, so
    /// merging again (or after a kill) adds only what is missing.
    #[arg(long, value_name = "INDEX")]
    into: PathBuf,
    /// Items per commit.
    #[arg(long, default_value_t = merge::DEFAULT_BATCH)]
    batch: usize,
    /// Print only the final line.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(a: &MergeArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let quiet = a.quiet;
    let report = merge::merge(&a.into, &a.inputs, a.batch, |r| {
        if !quiet {
            eprintln!(
                "{}: {} items, {} added, {} already present, {} failed files recorded",
                r.dir.display(),
                r.rows,
                r.added,
                r.present,
                r.errors
            );
        }
    })?;
    let added: usize = report.inputs.iter().map(|r| r.added).sum();
    let present: usize = report.inputs.iter().map(|r| r.present).sum();
    let r = simcase_index::Reader::open(&a.into)?;
    eprintln!(
        "merged {} indexes: {added} added, {present} already present in {:.1}s; {} items in {} \
         ({}{}, precision {}, index type {})",
        report.inputs.len(),
        t.elapsed().as_secs_f64(),
        report.rows,
        a.into.display(),
        if report.created { "new, " } else { "" },
        r.settings().model,
        r.precision(),
        r.ann_settings().index_type
    );
    Ok(())
}
