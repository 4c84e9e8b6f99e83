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

/// What [`walk`] found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The files to index, in order.
    pub sources: Vec<Source>,
    /// One line per folder given that held no image file, e.g. `FOLDER: no image files
    /// found (skipped 3 non-image files: csv, txt)`.
    pub empty: Vec<String>,
}

/// Whether `dir` holds a simcase index (its `index.sqlite` beside its `vectors.f32`).
fn is_index_dir(dir: &Path) -> bool {
    dir.join(simcase_index::store::DB).is_file()
        && dir.join(simcase_index::store::VECTORS).is_file()
}

/// Every regular, non-hidden file under `paths`, sorted, except files that are never images
/// (by extension) and the folders of indexes: any folder holding an index, and `skip` (the
/// index being written), so that an index kept inside the image folder is not read as
/// images. A file named directly is always taken, except a CSV: that is a manifest, and
/// the error says to use `--manifest`. A folder given that is an index (or `skip`) is an
/// error.
pub fn walk(paths: &[PathBuf], skip: &[PathBuf]) -> Result<Walk> {
    let skip: Vec<PathBuf> = skip
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let mut out = Walk::default();
    for p in paths {
        anyhow::ensure!(p.exists(), "{}: no such file or folder", p.display());
        if p.is_file() {
            let ext = p
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase());
            anyhow::ensure!(
                ext.as_deref() != Some("csv"),
                "{0} is a CSV file: to index a manifest use --manifest {0}",
                p.display()
            );
            out.sources.push(Source {
                path: p.clone(),
                ..Default::default()
            });
            continue;
        }
        let canonical = std::fs::canonicalize(p).ok();
        anyhow::ensure!(
            !canonical.as_ref().is_some_and(|c| skip.contains(c)),
            "{} is also the --index folder: give the index a folder of its own",
            p.display()
        );
        anyhow::ensure!(
            !is_index_dir(p),
            "{} holds a simcase index ({}, {}), not images",
            p.display(),
            simcase_index::store::DB,
            simcase_index::store::VECTORS
        );
        let before = out.sources.len();
        // Extensions of the files skipped as never images, with their counts.
        let mut skipped: std::collections::BTreeMap<String, usize> = Default::default();
        let mut indexes = 0;
        let walker = walkdir::WalkDir::new(p)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let is_index = e.file_type().is_dir()
                    && (is_index_dir(e.path())
                        || (!skip.is_empty()
                            && std::fs::canonicalize(e.path()).is_ok_and(|c| skip.contains(&c))));
                if is_index {
                    tracing::info!("{}: an index folder; not walked", e.path().display());
                    indexes += 1;
                }
                !is_index
            });
        for e in walker {
            let e = e.with_context(|| format!("walking {}", p.display()))?;
            let name = e.file_name().to_string_lossy();
            if !e.file_type().is_file() || name.starts_with('.') {
                continue;
            }
            let ext = e
                .path()
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase());
            if let Some(x) = ext.filter(|x| NOT_IMAGES.contains(&x.as_str())) {
                *skipped.entry(x).or_insert(0) += 1;
                continue;
            }
            out.sources.push(Source {
                path: e.path().to_path_buf(),
                ..Default::default()
            });
        }
        if out.sources.len() == before {
            out.empty.push(no_images(p, &skipped, indexes));
        }
    }
    Ok(out)
}

/// `FOLDER: no image files found (skipped 3 non-image files: csv, txt; 1 index folder)`.
fn no_images(
    dir: &Path,
    skipped: &std::collections::BTreeMap<String, usize>,
    indexes: usize,
) -> String {
    let mut why = Vec::new();
    let n: usize = skipped.values().sum();
    if n > 0 {
        let mut exts: Vec<(&String, &usize)> = skipped.iter().collect();
        exts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut names: Vec<&str> = exts.iter().take(4).map(|(x, _)| x.as_str()).collect();
        if exts.len() > 4 {
            names.push("…");
        }
        let s = if n == 1 { "" } else { "s" };
        why.push(format!(
            "skipped {n} non-image file{s}: {}",
            names.join(", ")
        ));
    }
    if indexes > 0 {
        let s = if indexes == 1 { "" } else { "s" };
        why.push(format!("skipped {indexes} index folder{s}"));
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({})", why.join("; "))
    };
    format!("{}: no image files found{why}", dir.display())
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
