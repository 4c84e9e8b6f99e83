//! `simcase search`: embed the query with the index's own model, exact cosine top-k.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use simcase_imaging::{decode_path, DecodeOptions, WindowPreset};
use simcase_index::{FlatIndex, Reader, VectorIndex};
use simcase_models::{default_device, Encoder};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SearchArgs {
    /// An image or DICOM file, or `id:N` for an indexed item.
    query: String,
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

/// One ranked neighbour, as printed and served. No raw patient identifiers: only the salted key.
#[derive(Debug, Serialize)]
pub struct Result_ {
    pub rank: usize,
    pub score: f32,
    pub id: u64,
    pub path: String,
    pub label: Option<String>,
    pub modality: Option<String>,
    pub anatomy: Option<String>,
    pub pathology: Option<String>,
    pub split: Option<String>,
    pub patient_key: Option<String>,
}

/// What a query resolved to: a vector, and the item it came from when it was `id:N`.
pub struct Query {
    pub vector: Vec<f32>,
    pub exclude: Option<u64>,
}

pub fn resolve(
    reader: &Reader,
    query: &str,
    enc: Option<&dyn Encoder>,
    window: Option<WindowPreset>,
) -> Result<Query> {
    if let Some(id) = query.strip_prefix("id:") {
        let id: u64 = id.parse().with_context(|| format!("bad item id {id:?}"))?;
        let v = reader
            .vector(id)
            .with_context(|| format!("no item {id} in the index ({} items)", reader.len()))?;
        return Ok(Query {
            vector: v.to_vec(),
            exclude: Some(id),
        });
    }
    let enc = enc.context("a model is needed to embed the query")?;
    let img = decode_path(std::path::Path::new(query), &DecodeOptions { window })
        .map_err(|e| anyhow::anyhow!("{query}: {e}"))?;
    let v = enc.embed_images(&[&img.image])?.remove(0);
    Ok(Query {
        vector: v,
        exclude: None,
    })
}

/// Top-`k` neighbours of `q` in `reader`, with their metadata.
pub fn neighbours(reader: &Reader, q: &Query, k: usize) -> Result<Vec<Result_>> {
    let idx = FlatIndex::new(reader.vectors(), reader.settings().dim);
    let skip = q.exclude;
    let keep = move |r: u64| Some(r) != skip;
    let hits = idx.search(&[&q.vector], k, Some(&keep)).remove(0);
    hits.into_iter()
        .enumerate()
        .map(|(i, h)| {
            let it = reader.item(h.row)?.context("item vanished")?;
            Ok(Result_ {
                rank: i + 1,
                score: h.score,
                id: h.row,
                path: it.meta.path,
                label: it.meta.label,
                modality: it.meta.modality,
                anatomy: it.meta.anatomy,
                pathology: it.meta.pathology,
                split: it.meta.split,
                patient_key: it.meta.patient_key,
            })
        })
        .collect()
}

pub fn print_table(results: &[Result_]) {
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
    let model = reader.settings().model.clone();
    let enc = if a.query.starts_with("id:") {
        None
    } else {
        crate::ensure_model(&model)?;
        Some(simcase_models::load(&model, &default_device())?)
    };
    let q = resolve(&reader, &a.query, enc.as_deref(), a.window)?;
    let res = neighbours(&reader, &q, a.k)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res)?);
    } else {
        print_table(&res);
    }
    Ok(())
}
