//! What ingest reads: [`Source`]s, from a walk of files and folders or from a manifest CSV
//! (paths relative to the CSV, plus labels, split and patient id).

use anyhow::{Context, Result};
use simcase_index::ItemMeta;
use std::path::{Path, PathBuf};

/// One file to index, with whatever labels its manifest row gives.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Labels and columns from the manifest row (empty for walked files).
    pub meta: ItemMeta,
    /// Raw patient id from the manifest; hashed before storage.
    pub patient_id: Option<String>,
}

/// Files that are never images; skipped quietly when walking folders.
const NOT_IMAGES: &[&str] = &[
    "csv", "md", "txt", "json", "py", "pyc", "html", "yml", "yaml", "toml",
];

/// Every regular, non-hidden file under `paths`, sorted.
pub fn walk(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for p in paths {
        anyhow::ensure!(p.exists(), "{}: no such file or folder", p.display());
        for e in walkdir::WalkDir::new(p).sort_by_file_name() {
            let e = e.with_context(|| format!("walking {}", p.display()))?;
            let name = e.file_name().to_string_lossy();
            if !e.file_type().is_file() || name.starts_with('.') {
                continue;
            }
            let ext = e
                .path()
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase());
            if ext.is_some_and(|x| NOT_IMAGES.contains(&x.as_str())) {
                continue;
            }
            out.push(Source {
                path: e.path().to_path_buf(),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

/// Rows of a manifest in the format of shared/data/dev.csv; `path` is relative to the CSV.
pub fn read_manifest(csv_path: &Path) -> Result<Vec<Source>> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut rdr = csv::Reader::from_path(csv_path)
        .with_context(|| format!("reading manifest {}", csv_path.display()))?;
    let headers = rdr.headers()?.clone();
    anyhow::ensure!(
        headers.iter().any(|h| h == "path"),
        "{}: manifest has no `path` column",
        csv_path.display()
    );
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", csv_path.display(), i + 2))?;
        let mut s = Source::default();
        let mut modality_parts = [None, None, None];
        for (h, v) in headers.iter().zip(rec.iter()) {
            let val = (!v.is_empty()).then(|| v.to_string());
            match h {
                "path" => s.path = base.join(v),
                "modality" => modality_parts[0] = val,
                "anatomy" => modality_parts[1] = val,
                "pathology" => modality_parts[2] = val,
                "label" => s.meta.label = val,
                "split" => s.meta.split = val,
                "source" => s.meta.source = val,
                "patient_id" => s.patient_id = val,
                _ => {
                    if let Some(v) = val {
                        s.meta.extra.insert(h.to_string(), v.into());
                    }
                }
            }
        }
        let [m, a, p] = modality_parts;
        if s.meta.label.is_none() {
            if let (Some(m), Some(a), Some(p)) = (&m, &a, &p) {
                s.meta.label = Some(format!("{m}/{a}/{p}"));
            }
        }
        (s.meta.modality, s.meta.anatomy, s.meta.pathology) = (m, a, p);
        out.push(s);
    }
    Ok(out)
}
