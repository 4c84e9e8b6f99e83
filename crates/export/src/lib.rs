//! `simcase export`: an index's vectors with the columns an analysis needs (id, labels, split,
//! salted patient key, UIDs and, when asked, the path) written to one file that numpy or
//! pandas/pyarrow reads without simcase:
//!
//! - `.npy`: one structured array (`np.load(f)["vector"]` is `n × dim` float32, each text
//!   column a fixed-width unicode field, `""` where the index has no value), see [`npy`];
//! - `.parquet`: `id` (uint64), the text columns (nullable strings) and `vector` (a list of
//!   float32 per row), see [`parquet`].
//!
//! Rows are in id order, vectors exactly as stored (L2-normalised f32). Paths stay out unless
//! the operator asks: they can carry names from the archive's layout. The file is written to a
//! temporary name beside the target, synced, and renamed into place, so a crash never leaves a
//! half-written export under the name asked for.

pub mod npy;
pub mod parquet;

use anyhow::{bail, Context, Result};
use simcase_index::{Column, Reader};
use std::path::Path;

/// The export's file format, from the output file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A numpy structured array.
    Npy,
    /// An Apache Parquet file.
    Parquet,
}

impl Format {
    /// The format `path`'s extension names.
    pub fn of(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
        {
            Some(e) if e == "npy" => Ok(Self::Npy),
            Some(e) if e == "parquet" => Ok(Self::Parquet),
            _ => bail!(
                "{}: the output must end in .npy or .parquet",
                path.display()
            ),
        }
    }
}

/// The columns of an export, one entry per row.
pub struct Table {
    /// Item ids (the index's row numbers, as searches and the API give them).
    pub ids: Vec<u64>,
    /// Text columns, by name: `None` where the item has no value.
    pub text: Vec<(&'static str, Vec<Option<String>>)>,
    /// Values per vector.
    pub dim: usize,
    /// The vectors, row-major (`ids.len() × dim`).
    pub vectors: Vec<f32>,
}

impl Table {
    /// Every committed item of `reader`, in id order, with [`Column::ALL`] and, with
    /// `paths`, the file path.
    pub fn from_index(reader: &Reader, paths: bool) -> Result<Self> {
        let items = reader.items()?;
        let dim = reader.settings().dim;
        let mut text: Vec<(&'static str, Vec<Option<String>>)> = Column::ALL
            .iter()
            .map(|c| (c.name(), Vec::with_capacity(items.len())))
            .collect();
        if paths {
            text.push(("path", Vec::with_capacity(items.len())));
        }
        let mut ids = Vec::with_capacity(items.len());
        let mut vectors = Vec::with_capacity(items.len() * dim);
        for it in &items {
            let v = reader
                .vector(it.id)
                .with_context(|| format!("item {} has no stored vector", it.id))?;
            ids.push(it.id);
            vectors.extend_from_slice(v);
            for (i, c) in Column::ALL.iter().enumerate() {
                text[i].1.push(c.get(&it.meta).map(String::from));
            }
            if paths {
                text[Column::ALL.len()].1.push(Some(it.meta.path.clone()));
            }
        }
        Ok(Self {
            ids,
            text,
            dim,
            vectors,
        })
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Write `table` to `out` in `format`, atomically: a temporary file beside it, synced, then
/// renamed over it and the folder synced. Returns the bytes written.
pub fn write(table: &Table, out: &Path, format: Format) -> Result<u64> {
    simcase_index::store::durable::write_atomic(out, |f| match format {
        Format::Npy => npy::write(table, f),
        Format::Parquet => parquet::write(table, f),
    })
}
