//! Similar-case queries, shared by the CLI and the HTTP server: resolve a query (an image, an
//! indexed item, or text for CLIP-family models) to a vector in the index's space, then rank
//! the index by exact cosine and attach each hit's metadata.

use anyhow::{Context, Result};
use serde::Serialize;
use simcase_imaging::{decode_path, DecodeOptions, Image, WindowPreset};
use simcase_index::{FlatIndex, Reader, VectorIndex};
use simcase_models::{Encoder, TextEncoder};
use std::path::Path;

/// One ranked neighbour, as printed and served. No raw patient identifiers: only the salted key.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
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

/// A query resolved to a vector, and the item it came from when it was one.
pub struct Query {
    pub vector: Vec<f32>,
    pub exclude: Option<u64>,
}

impl Query {
    /// "More like this": item `id`'s stored vector; the item itself is left out of the results.
    pub fn item(reader: &Reader, id: u64) -> Result<Self> {
        let v = reader
            .vector(id)
            .with_context(|| format!("no item {id} in the index ({} items)", reader.len()))?;
        Ok(Self {
            vector: v.to_vec(),
            exclude: Some(id),
        })
    }

    /// A decoded image, embedded with the index's model.
    pub fn image(enc: &dyn Encoder, img: &Image) -> Result<Self> {
        Ok(Self {
            vector: enc.embed_images(&[img])?.remove(0),
            exclude: None,
        })
    }

    /// An image or DICOM file.
    pub fn file(enc: &dyn Encoder, path: &Path, window: Option<WindowPreset>) -> Result<Self> {
        let img = decode_path(path, &DecodeOptions { window })
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::image(enc, &img.image)
    }

    /// Free text, through the text tower that shares the index model's space.
    pub fn text(enc: &dyn TextEncoder, text: &str) -> Result<Self> {
        anyhow::ensure!(!text.trim().is_empty(), "the text query is empty");
        Ok(Self {
            vector: enc.embed_texts(&[text])?.remove(0),
            exclude: None,
        })
    }
}

/// Top-`k` neighbours of `q` in `reader`, with their metadata.
pub fn neighbours(reader: &Reader, q: &Query, k: usize) -> Result<Vec<Hit>> {
    let dim = reader.settings().dim;
    anyhow::ensure!(
        q.vector.len() == dim,
        "the query has {} dimensions, the index {dim}",
        q.vector.len()
    );
    let idx = FlatIndex::new(reader.vectors(), dim);
    let skip = q.exclude;
    let keep = move |r: u64| Some(r) != skip;
    let hits = idx.search(&[&q.vector], k, Some(&keep)).remove(0);
    hits.into_iter()
        .enumerate()
        .map(|(i, h)| {
            let it = reader.item(h.row)?.context("item vanished")?;
            Ok(Hit {
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
