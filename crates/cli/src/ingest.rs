//! `simcase index`: files or a manifest → decoded in parallel → embedded in batches →
//! committed batch by batch, so a kill loses at most the batch in flight.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use simcase_imaging::{content_hash, decode_bytes, DecodeOptions};
use simcase_index::{ItemMeta, Writer};
use simcase_models::Encoder;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One file to index, with whatever labels its manifest row gives.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub path: PathBuf,
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

pub struct Options {
    pub batch: usize,
    pub decode: DecodeOptions,
    pub progress: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub added: usize,
    pub skipped: usize,
    pub failed: usize,
}

enum Prepared {
    Ready(Box<ItemMeta>, Vec<f32>),
    Known,
    Failed(String, String),
}

fn prepare(
    src: &Source,
    enc: &dyn Encoder,
    known: &HashSet<String>,
    writer_settings: &simcase_index::Settings,
    opts: &DecodeOptions,
) -> Prepared {
    let shown = src.path.display().to_string();
    let bytes = match std::fs::read(&src.path) {
        Ok(b) => b,
        Err(e) => return Prepared::Failed(shown, format!("cannot read file: {e}")),
    };
    let hash = content_hash(&bytes);
    if known.contains(&hash) {
        return Prepared::Known;
    }
    let decoded = match decode_bytes(&bytes, opts) {
        Ok(d) => d,
        Err(e) => return Prepared::Failed(shown, e.to_string()),
    };
    let mut meta = src.meta.clone();
    meta.path = std::fs::canonicalize(&src.path)
        .unwrap_or_else(|_| src.path.clone())
        .display()
        .to_string();
    meta.hash = hash;
    meta.format = decoded.format.name().to_string();
    let mut patient = src.patient_id.clone();
    if let Some(d) = &decoded.dicom {
        meta.modality = meta.modality.or_else(|| d.modality.clone());
        meta.body_part = d.body_part.clone();
        meta.study_uid = d.study_uid.clone();
        meta.series_uid = d.series_uid.clone();
        meta.sop_uid = d.sop_uid.clone();
        meta.extra
            .insert("transfer_syntax".into(), d.transfer_syntax.clone().into());
        patient = patient.or_else(|| d.patient_id.clone());
    }
    meta.patient_key = patient.map(|p| writer_settings.patient_key(&p));
    Prepared::Ready(Box::new(meta), enc.preprocess().apply(&decoded.image))
}

/// Index `sources` into `writer` with `enc`. Returns counts; per-file failures are logged,
/// recorded in the index's errors table, and never stop the run.
pub fn run(
    writer: &mut Writer,
    enc: &dyn Encoder,
    sources: Vec<Source>,
    opts: &Options,
) -> Result<Summary> {
    let known: HashSet<String> = writer.hashes()?;
    let settings = writer.settings().clone();
    let pb = if opts.progress {
        ProgressBar::new(sources.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    let (tx, rx) = crossbeam_channel::bounded::<Prepared>(opts.batch * 4);
    let decoders = std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(decoders)
        .thread_name(|i| format!("simcase-decode-{i}"))
        .build()?;
    let mut summary = Summary::default();
    std::thread::scope(|scope| -> Result<()> {
        let (known, settings, decode) = (&known, &settings, &opts.decode);
        scope.spawn(move || {
            use rayon::prelude::*;
            pool.install(|| {
                sources.par_iter().for_each_with(tx, |tx, s| {
                    let _ = tx.send(prepare(s, enc, known, settings, decode));
                })
            });
        });
        let mut batch: Vec<(ItemMeta, Vec<f32>)> = Vec::with_capacity(opts.batch);
        let mut seen: HashSet<String> = HashSet::new();
        let flush = |batch: &mut Vec<(ItemMeta, Vec<f32>)>, writer: &mut Writer| -> Result<usize> {
            if batch.is_empty() {
                return Ok(0);
            }
            let inputs: Vec<Vec<f32>> = batch.iter_mut().map(|(_, x)| std::mem::take(x)).collect();
            let embs = enc.embed(&inputs)?;
            for ((_, slot), e) in batch.iter_mut().zip(embs) {
                *slot = e;
            }
            writer.add(batch)?;
            let n = batch.len();
            batch.clear();
            Ok(n)
        };
        for item in rx.iter() {
            match item {
                Prepared::Known => summary.skipped += 1,
                Prepared::Failed(path, reason) => {
                    tracing::warn!("{path}: {reason}");
                    writer.record_error(&path, &reason)?;
                    summary.failed += 1;
                }
                Prepared::Ready(meta, x) => {
                    if !seen.insert(meta.hash.clone()) {
                        summary.skipped += 1; // same content twice in this run
                    } else {
                        batch.push((*meta, x));
                        if batch.len() >= opts.batch {
                            summary.added += flush(&mut batch, writer)?;
                        }
                    }
                }
            }
            pb.inc(1);
        }
        summary.added += flush(&mut batch, writer)?;
        Ok(())
    })?;
    pb.finish_and_clear();
    Ok(summary)
}
