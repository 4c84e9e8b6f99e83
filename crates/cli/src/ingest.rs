//! `simcase index`: files or a manifest → decoded in parallel → embedded in batches →
//! committed batch by batch, so a kill loses at most the batch in flight.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use simcase_imaging::{content_hash, decode_items, DecodeOptions, Decoded, Part, PartKind};
use simcase_index::{part_keys, ItemMeta, Writer};
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
    /// One file's items: a single image, DICOM frames, or volume slices.
    Ready(Vec<(ItemMeta, Vec<f32>)>),
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
    // Volumes are keyed per slicing axis, so another `--axis` adds that view.
    let axis_key = format!("{hash}@{}", opts.axis.name());
    if known.contains(&hash) || known.contains(&axis_key) {
        return Prepared::Known;
    }
    let decoded = match decode_items(&bytes, opts) {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => return Prepared::Failed(shown, "no images selected".into()),
        Err(e) => return Prepared::Failed(shown, e.to_string()),
    };
    let path = std::fs::canonicalize(&src.path)
        .unwrap_or_else(|_| src.path.clone())
        .display()
        .to_string();
    let items = decoded
        .iter()
        .map(|d| {
            let meta = item_meta(src, d, &path, &hash, writer_settings, opts.keep_phi);
            (meta, enc.preprocess().apply(&d.image))
        })
        .collect();
    Prepared::Ready(items)
}

/// The stored metadata of one decoded image. Patient ids are salted-hashed; names and birth
/// dates are kept only with `--keep-phi`.
fn item_meta(
    src: &Source,
    d: &Decoded,
    path: &str,
    hash: &str,
    settings: &simcase_index::Settings,
    keep_phi: bool,
) -> ItemMeta {
    let mut meta = src.meta.clone();
    meta.path = path.to_string();
    meta.format = d.format.name().to_string();
    meta.hash = match d.part {
        Some(Part {
            index,
            kind: PartKind::Slice(axis),
            ..
        }) => format!("{hash}@{}#{index}", axis.name()),
        Some(p) => format!("{hash}#{}", p.index),
        None => hash.to_string(),
    };
    let mut patient = src.patient_id.clone();
    if let Some(m) = &d.dicom {
        meta.modality = meta.modality.or_else(|| m.modality.clone());
        meta.body_part = m.body_part.clone();
        meta.study_uid = m.study_uid.clone();
        meta.series_uid = m.series_uid.clone();
        meta.sop_uid = m.sop_uid.clone();
        let extra = [
            ("transfer_syntax", Some(m.transfer_syntax.clone())),
            ("instance_number", m.instance_number.clone()),
            ("slice_location", m.slice_location.clone()),
            ("study_date", m.study_date.clone()),
        ];
        for (k, v) in extra {
            if let Some(v) = v {
                meta.extra.insert(k.into(), v.into());
            }
        }
        patient = patient.or_else(|| m.patient_id.clone());
        if keep_phi {
            let phi = m.phi.clone().unwrap_or_default();
            for (k, v) in [
                ("patient_id", patient.clone()),
                ("patient_name", phi.patient_name),
                ("birth_date", phi.birth_date),
            ] {
                if let Some(v) = v {
                    meta.extra.insert(k.into(), v.into());
                }
            }
        }
    }
    if let Some(p) = d.part {
        match p.kind {
            PartKind::Frame => {
                meta.extra.insert(part_keys::FRAME.into(), p.index.into());
                meta.extra.insert(part_keys::FRAMES.into(), p.count.into());
            }
            PartKind::Slice(axis) => {
                // A volume id shared by its slices: what `--group-by volume` groups on.
                let volume = &hash[..16.min(hash.len())];
                meta.extra.insert(part_keys::VOLUME.into(), volume.into());
                meta.extra.insert(part_keys::SLICE.into(), p.index.into());
                meta.extra.insert(part_keys::SLICES.into(), p.count.into());
                meta.extra
                    .insert(part_keys::AXIS.into(), axis.name().into());
            }
        }
    }
    meta.patient_key = patient.map(|p| settings.patient_key(&p));
    meta
}

/// Index `sources` into `writer` with `enc`. Returns counts; per-file failures are logged,
/// recorded in the index's errors table, and never stop the run.
pub fn run(
    writer: &mut Writer,
    enc: &dyn Encoder,
    sources: Vec<Source>,
    opts: &Options,
) -> Result<Summary> {
    // Files already indexed, by content (a multi-image file's items carry `HASH#PART`).
    let known: HashSet<String> = writer
        .hashes()?
        .into_iter()
        .map(|h| h.split('#').next().unwrap_or_default().to_string())
        .collect();
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
    // Few files in flight: one volume can hold hundreds of preprocessed slices.
    let (tx, rx) = crossbeam_channel::bounded::<Prepared>(4);
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
            // A non-finite embedding would poison every cosine against it: never store one.
            let (good, bad): (Vec<_>, Vec<_>) = std::mem::take(batch)
                .into_iter()
                .partition(|(_, e)| e.iter().all(|x| x.is_finite()));
            for (m, _) in &bad {
                tracing::warn!("{}: embedding is not finite; not indexed", m.path);
                writer.record_error(&m.path, "embedding is not finite (NaN/inf)")?;
            }
            writer.add(&good)?;
            Ok(good.len())
        };
        for item in rx.iter() {
            match item {
                Prepared::Known => summary.skipped += 1,
                Prepared::Failed(path, reason) => {
                    tracing::warn!("{path}: {reason}");
                    writer.record_error(&path, &reason)?;
                    summary.failed += 1;
                }
                Prepared::Ready(items) => {
                    for (meta, x) in items {
                        if !seen.insert(meta.hash.clone()) {
                            summary.skipped += 1; // same content twice in this run
                            continue;
                        }
                        batch.push((meta, x));
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
