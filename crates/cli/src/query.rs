//! `simcase search`: embed the query with the index's own model, exact cosine top-k.

use anyhow::{bail, Context, Result};
use simcase_imaging::WindowPreset;
use simcase_index::Snapshot;
use simcase_models::default_device;
use simcase_query::{search, Field, Filters, GroupBy, Hit, Query, Request};
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
    /// Return the top-k distinct patients (studies, series, volumes), each scored by its best
    /// image, instead of k images.
    #[arg(long)]
    group_by: Option<GroupBy>,
    /// Only items whose FIELD is VALUE (repeatable; fields: modality, anatomy, pathology,
    /// label, source, split, body_part, format, meta.COLUMN).
    #[arg(long = "filter", value_name = "FIELD=VALUE", value_parser = parse_filter)]
    filters: Vec<(Field, String)>,
}

fn parse_filter(s: &str) -> Result<(Field, String)> {
    let (f, v) = s.split_once('=').context("expected FIELD=VALUE")?;
    Ok((f.parse()?, v.to_string()))
}

/// `id:N`, or a file embedded with the index's model.
pub fn resolve(reader: &Snapshot, query: &str, window: Option<WindowPreset>) -> Result<Query> {
    if let Some(id) = query.strip_prefix("id:") {
        let id: u64 = id.parse().with_context(|| format!("bad item id {id:?}"))?;
        return Ok(Query::item(reader, id)?);
    }
    let model: simcase_models::ModelId = reader.settings().model.parse()?;
    crate::ensure_model(model)?;
    let enc = simcase_models::load(model, &default_device())?;
    Ok(Query::file(enc.as_ref(), Path::new(query), window)?)
}

pub fn print_table(results: &[Hit]) {
    println!(
        "{:>4}  {:>6}  {:>6}  {:<34} {:<16} PATH",
        "RANK", "SCORE", "ID", "LABEL", "PATIENT/GROUP"
    );
    for r in results {
        println!(
            "{:>4}  {:>6.4}  {:>6}  {:<34} {:<16} {}",
            r.rank,
            r.score,
            r.id,
            r.label.as_deref().or(r.modality.as_deref()).unwrap_or("-"),
            r.group
                .as_deref()
                .or(r.patient_key.as_deref())
                .unwrap_or("-"),
            r.path.as_deref().unwrap_or("-")
        );
    }
}

pub fn search_cmd(a: &SearchArgs) -> Result<()> {
    let reader = Snapshot::open(&a.index)?;
    if reader.is_empty() {
        bail!("{} is empty", a.index.display());
    }
    let q = match (&a.text, &a.query) {
        (Some(text), _) => {
            let model: simcase_models::ModelId = reader.settings().model.parse()?;
            let enc = simcase_models::load_text(model, &default_device())
                .with_context(|| format!("text search on an index built with {model}"))?;
            Query::text(enc.as_ref(), text)?
        }
        (None, Some(q)) => resolve(&reader, q, a.window)?,
        (None, None) => bail!("give a query file, id:N or --text"),
    };
    let mut filters = Filters::default();
    for (f, v) in &a.filters {
        filters.fields.entry(f.clone()).or_default().push(v.clone());
    }
    let req = Request {
        k: a.k,
        offset: 0,
        filters,
        group_by: a.group_by,
    };
    let res = search(&reader, &q, &req)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res.hits)?);
    } else {
        print_table(&res.hits);
        if let Some(groups) = &res.groups {
            let counts: Vec<String> = groups.iter().map(|g| g.matched.to_string()).collect();
            println!(
                "(grouped by {:?}; matched items per group: {})",
                req.group_by.unwrap(),
                counts.join(", ")
            );
        }
    }
    Ok(())
}
