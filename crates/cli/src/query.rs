//! `simcase search`: embed the query with the index's own model, exact cosine top-k.

use anyhow::{bail, Context, Result};
use simcase_imaging::WindowPreset;
use simcase_index::Reader;
use simcase_models::default_device;
use simcase_query::{neighbours, Hit, Query};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct SearchArgs {
    /// An image or DICOM file, or `id:N` for an indexed item ("more like this").
    #[arg(required_unless_present = "text", conflicts_with = "text")]
    query: Option<String>,
    /// Search by text, e.g. "pneumothorax" (CLIP-family models: biomedclip, clip-vit-*).
    #[arg(long)]
    text: Option<String>,
    #[arg(long)]
    index: PathBuf,
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// DICOM window override for the query: lung, mediastinum, abdomen, bone, brain, or C,W.
    #[arg(long)]
    window: Option<WindowPreset>,
}

/// `id:N`, or a file embedded with the index's model.
pub fn resolve(reader: &Reader, query: &str, window: Option<WindowPreset>) -> Result<Query> {
    if let Some(id) = query.strip_prefix("id:") {
        let id: u64 = id.parse().with_context(|| format!("bad item id {id:?}"))?;
        return Query::item(reader, id);
    }
    let model = &reader.settings().model;
    crate::ensure_model(model)?;
    let enc = simcase_models::load(model, &default_device())?;
    Query::file(enc.as_ref(), Path::new(query), window)
}

pub fn print_table(results: &[Hit]) {
    println!(
        "{:>4}  {:>6}  {:>6}  {:<34} {:<16} PATH",
        "RANK", "SCORE", "ID", "LABEL", "PATIENT"
    );
    for r in results {
        println!(
            "{:>4}  {:>6.4}  {:>6}  {:<34} {:<16} {}",
            r.rank,
            r.score,
            r.id,
            r.label.as_deref().or(r.modality.as_deref()).unwrap_or("-"),
            r.patient_key.as_deref().unwrap_or("-"),
            r.path
        );
    }
}

pub fn search_cmd(a: &SearchArgs) -> Result<()> {
    let reader = Reader::open(&a.index)?;
    if reader.is_empty() {
        bail!("{} is empty", a.index.display());
    }
    let q = match (&a.text, &a.query) {
        (Some(text), _) => {
            let model = &reader.settings().model;
            let enc = simcase_models::load_text(model, &default_device())
                .with_context(|| format!("text search on an index built with {model}"))?;
            Query::text(enc.as_ref(), text)?
        }
        (None, Some(q)) => resolve(&reader, q, a.window)?,
        (None, None) => bail!("give a query file, id:N or --text"),
    };
    let res = neighbours(&reader, &q, a.k)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res)?);
    } else {
        print_table(&res);
    }
    Ok(())
}
