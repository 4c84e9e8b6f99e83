//! `simcase export --index DIR --out FILE.npy|FILE.parquet`: the index's vectors with ids,
//! labels, split, salted patient keys and UIDs (paths only with `--show-paths`), for numpy or
//! pandas ([`simcase_export`]).

use anyhow::{bail, Result};
use simcase_export::{Format, Table};
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// Index folder.
    #[arg(long)]
    index: PathBuf,
    /// Output file: `.npy` (one numpy structured array) or `.parquet`.
    #[arg(long)]
    out: PathBuf,
    /// Include each item's file path (off: paths can carry names from the archive layout).
    #[arg(long)]
    show_paths: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
    /// Print nothing on success.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(a: &ExportArgs) -> Result<()> {
    let format = Format::of(&a.out)?;
    if a.out.exists() && !a.force {
        bail!("{} exists: give --force to replace it", a.out.display());
    }
    if a.out.is_dir() {
        bail!("{} is a folder: give a file name", a.out.display());
    }
    let reader = simcase_index::Reader::open(&a.index)?;
    let table = Table::from_index(&reader, a.show_paths)?;
    let bytes = simcase_export::write(&table, &a.out, format)?;
    if !a.quiet {
        eprintln!(
            "exported {} items ({}-d {}) to {} ({:.1} MB){}",
            table.len(),
            table.dim,
            reader.settings().model,
            a.out.display(),
            bytes as f64 / 1e6,
            if a.show_paths {
                ""
            } else {
                "; paths left out (--show-paths)"
            }
        );
    }
    Ok(())
}
