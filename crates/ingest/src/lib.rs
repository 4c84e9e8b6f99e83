//! Ingest, the pipeline's writing half, shared by `simcase index`, `eval` and `bench` (and
//! whatever else indexes: a server, a DICOM listener): files or a manifest → decoded in parallel
//! → embedded in batches → committed batch by batch, so a kill loses at most the batch in flight.
//! A manifest row whose file is already indexed is not decoded again: its labels are merged
//! into the stored items ([`simcase_index::Writer::update_labels`]).

pub mod demo;
pub mod failure;
mod source;

pub use failure::Failure;
pub use source::{
    manifest_root, read_manifest, read_manifest_full, shard_key, split_label, walk, Fetch,
    Manifest, Shard, Source, Walk, SHARD_INDEX_VARS,
};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use simcase_imaging::{content_hash, decode_items_with, DecodeOptions, Decoded, Part, PartKind};
use simcase_index::{part_keys, ItemMeta, LabelOutcome, LabelUpdate, Writer};
use simcase_models::Encoder;
use std::collections::HashSet;

/// Lookups by content key of what a [`Sink`] held when a run started (owned, and safe to
/// share between the decode threads).
pub struct Known {
    key: Lookup,
    file: Lookup,
}

/// One kind of lookup of [`Known`].
type Lookup = Box<dyn Fn(&str) -> Result<bool> + Send + Sync>;

impl Known {
    /// Lookups from two functions: `has_key` and `has_file` below.
    pub fn new(
        key: impl Fn(&str) -> Result<bool> + Send + Sync + 'static,
        file: impl Fn(&str) -> Result<bool> + Send + Sync + 'static,
    ) -> Self {
        Self {
            key: Box::new(key),
            file: Box::new(file),
        }
    }

    /// Whether an item keyed `key` was held: a content hash (its items `HASH` or `HASH#frame`),
    /// or `HASH@axis` (the slices `HASH@axis#i` of one slicing of a volume).
    pub fn has_key(&self, key: &str) -> Result<bool> {
        (self.key)(key)
    }

    /// Whether any item of the file with content hash `hash` was held (any frame, slice or
    /// slicing axis).
    pub fn has_file(&self, hash: &str) -> Result<bool> {
        (self.file)(hash)
    }
}

/// Where [`run`] writes: a local index folder ([`Writer`]) or a remote collection. `add` and
/// `update_labels` return only once what they were given is durable: a run reports nothing as
/// committed that a crash (of simcase or of the store) could lose.
pub trait Sink {
    /// What the sink holds now, for skipping known content.
    fn known_files(&self) -> Result<Known>;
    /// Model, dimension and patient-key salt.
    fn settings(&self) -> &simcase_index::Settings;
    /// Store a batch of items with their embeddings, all or nothing.
    fn add(&mut self, batch: &[(ItemMeta, Vec<f32>)]) -> Result<()>;
    /// Remember a file that could not be indexed (`kind`: a short class of the reason).
    fn record_error(&self, path: &str, kind: &str, reason: &str) -> Result<()>;
    /// Forget a file's failure: its content turned out to be indexed already.
    fn clear_error(&self, path: &str) -> Result<()>;
    /// Merge manifest labels into the stored items of each update's file (see
    /// [`Writer::update_labels`]).
    fn update_labels(
        &mut self,
        updates: &[LabelUpdate],
        relabel: bool,
    ) -> Result<Vec<LabelOutcome>>;
}

/// A local index folder, as it always was.
impl Sink for Writer {
    fn known_files(&self) -> Result<Known> {
        let k = std::sync::Arc::new(Writer::known_files(self)?);
        let k2 = k.clone();
        Ok(Known::new(
            move |key| k.has_key(key),
            move |hash| k2.has_file(hash),
        ))
    }
    fn settings(&self) -> &simcase_index::Settings {
        Writer::settings(self)
    }
    fn add(&mut self, batch: &[(ItemMeta, Vec<f32>)]) -> Result<()> {
        Writer::add(self, batch).map(|_| ())
    }
    fn record_error(&self, path: &str, kind: &str, reason: &str) -> Result<()> {
        Writer::record_error(self, path, kind, reason)
    }
    fn clear_error(&self, path: &str) -> Result<()> {
        Writer::clear_error(self, path)
    }
    fn update_labels(
        &mut self,
        updates: &[LabelUpdate],
        relabel: bool,
    ) -> Result<Vec<LabelOutcome>> {
        Writer::update_labels(self, updates, relabel)
    }
}

/// Label updates merged per transaction.
const LABEL_BATCH: usize = 256;

/// How [`run`] works: batch size, decoding options, and whether to draw a progress bar.
pub struct Options {
    /// Images embedded (and committed) together.
    pub batch: usize,
    /// How files are decoded (window, frames, slices, pixel limits, and the decode byte
    /// budget the decode threads share: `decode.budget`).
    pub decode: DecodeOptions,
    /// Decode threads; 0: half the cores (at least one).
    pub decode_threads: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Where a manifest row's labels differ from those stored for its file, the manifest's
    /// replace them (off: the stored ones are kept and the difference is reported).
    pub relabel: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Items committed.
    pub added: usize,
    /// Files or items already in the index (or seen twice in this run) whose labels did not
    /// change.
    pub skipped: usize,
    /// Stored items whose labels or manifest columns a manifest row updated.
    pub updated: usize,
    /// Manifest rows whose values differ from those stored for their file (kept unless
    /// [`Options::relabel`]; a warning gives examples).
    pub disagreed: usize,
    /// Files (or items, for a non-finite embedding) that could not be indexed: each logged
    /// and kept in the `errors` table.
    pub failed: usize,
    /// What failed and why, in the order met (`failed` of them).
    pub failures: Vec<Failure>,
}

enum Prepared {
    /// One file's items: a single image, DICOM frames, or volume slices; and its manifest
    /// labels, for items of the file already stored (another axis, or the same content seen
    /// earlier in this run).
    Ready(Vec<(ItemMeta, Vec<f32>)>, Option<LabelUpdate>),
    /// Content already indexed, read from this (canonical) path: not decoded; its manifest
    /// labels, if the row has any.
    Known(String, Option<LabelUpdate>),
    /// The index could not say whether the file is known (a SQLite failure): stops the run.
    Lookup(anyhow::Error),
    /// Shown path, stored (canonical) path, and the failure.
    Failed(String, String, Failure),
}

impl Prepared {
    /// Decoded images it holds.
    fn images(&self) -> usize {
        match self {
            Prepared::Ready(items, _) => items.len(),
            _ => 0,
        }
    }
}

/// Decoded images sent to the embedder and not yet taken, bounded: [`InFlight::enter`] waits
/// for room, [`InFlight::leave`] makes it. One file larger than the bound still goes when
/// nothing else is waiting, so a large volume cannot stall the run.
struct InFlight {
    state: std::sync::Mutex<(usize, bool)>,
    room: std::sync::Condvar,
    cap: usize,
}

impl InFlight {
    fn new(cap: usize) -> Self {
        Self {
            state: std::sync::Mutex::new((0, false)),
            room: std::sync::Condvar::new(),
            cap,
        }
    }

    /// Waits until `n` more images fit; false once the run has ended (see [`Closing`]).
    fn enter(&self, n: usize) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !st.1 && st.0 > 0 && st.0 + n > self.cap {
            st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.0 += n;
        !st.1
    }

    fn leave(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = st.0.saturating_sub(n);
        self.room.notify_all();
    }
}

/// Ends the run for the decoders when the consumer stops, however it stops.
struct Closing<'a>(&'a InFlight);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.0.room.notify_all();
    }
}

/// What a manifest row says about its file, for merging into stored items; `None` for a
/// walked file or a row with nothing but a path.
fn label_update(
    src: &Source,
    hash: &str,
    settings: &simcase_index::Settings,
) -> Option<LabelUpdate> {
    let mut labels = src.meta.clone();
    labels.patient_key = src.patient_id.as_deref().map(|p| settings.patient_key(p));
    let has_any = simcase_index::Column::MANIFEST
        .iter()
        .any(|c| c.get(&labels).is_some_and(|v| !v.is_empty()))
        || !labels.extra.is_empty();
    has_any.then(|| LabelUpdate {
        hash: hash.to_string(),
        labels,
    })
}

/// Counts the outcomes of label updates into `summary`, keeping a few disagreements as
/// examples. `counted`: the files were already counted (as skipped items of this run).
fn tally(
    summary: &mut Summary,
    examples: &mut Vec<String>,
    outcomes: &[LabelOutcome],
    counted: bool,
) {
    for o in outcomes {
        summary.updated += o.changed;
        if o.changed == 0 && !counted {
            summary.skipped += 1;
        }
        if o.disagreements.is_empty() {
            continue;
        }
        summary.disagreed += 1;
        if examples.len() < 3 {
            let fields: Vec<String> = o
                .disagreements
                .iter()
                .take(2)
                .map(|d| {
                    format!(
                        "{} stored `{}`, manifest `{}`",
                        d.field,
                        simcase_index::shorten(&d.stored, 48),
                        simcase_index::shorten(&d.manifest, 48)
                    )
                })
                .collect();
            examples.push(format!("{}: {}", o.path, fields.join(", ")));
        }
    }
}

fn prepare(
    src: &Source,
    enc: &dyn Encoder,
    known: &(dyn Fn(&str) -> Result<bool> + Sync),
    writer_settings: &simcase_index::Settings,
    opts: &DecodeOptions,
) -> Prepared {
    // As logs and summaries show it: one line, whatever the file's name holds.
    let shown = failure::printable(&src.path.display().to_string());
    // The errors table is keyed by the stored (canonical) path, as items are, so that a file
    // that indexes later clears its failure.
    let path = match (&src.fetch, &src.unreadable) {
        (Some(_), _) => src.path.display().to_string(),
        // What a walk could not read is keyed by where it is met, its last link not followed
        // (a loop resolves to the folder above it), so that a later walk finds it again.
        (None, Some(_)) => match (src.path.parent(), src.path.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| src.path.clone()),
            _ => src.path.clone(),
        }
        .display()
        .to_string(),
        (None, None) => std::fs::canonicalize(&src.path)
            .unwrap_or_else(|_| src.path.clone())
            .display()
            .to_string(),
    };
    let failed = |kind: &str, reason: String| {
        let f = Failure {
            path: shown.clone(),
            kind: kind.into(),
            reason: failure::one_line(&reason),
        };
        Prepared::Failed(shown.clone(), path.clone(), f)
    };
    if let Some((kind, reason)) = &src.unreadable {
        return failed(kind, reason.clone());
    }
    // Content already indexed; volumes are keyed per slicing axis too, so that another
    // `--axis` adds that view.
    let indexed = |hash: &str| -> Result<bool> {
        Ok(known(hash)? || known(&format!("{hash}@{}", opts.axis.name()))?)
    };
    let bytes = match &src.fetch {
        Some(fetch) => match (fetch.0)() {
            Ok(b) => b,
            Err(e) => return failed(failure::UNREADABLE, format!("cannot fetch: {e:#}")),
        },
        // Never more than the decode budget's whole (it bounds what one decode holds, the
        // file's bytes included), and never a device or a pipe. A larger file is only hashed,
        // a block at a time: it may be indexed already (under a larger budget).
        None => {
            match simcase_imaging::read_file(&src.path, opts.budget.as_ref().map(|b| b.total())) {
                Ok(b) => b,
                Err(e @ simcase_imaging::DecodeError::OverBudget { .. }) => {
                    return match simcase_imaging::file_content_hash(&src.path) {
                        Ok(h) => match indexed(&h) {
                            Ok(true) => {
                                Prepared::Known(path, label_update(src, &h, writer_settings))
                            }
                            Ok(false) => failed(&failure::kind_of(&e), e.to_string()),
                            Err(l) => Prepared::Lookup(
                                l.context(format!("{shown}: looking up its content")),
                            ),
                        },
                        Err(io) => failed(failure::UNREADABLE, format!("cannot read file: {io}")),
                    };
                }
                Err(e) => return failed(&failure::kind_of(&e), e.to_string()),
            }
        }
    };
    let hash = content_hash(&bytes);
    match indexed(&hash) {
        Ok(true) => return Prepared::Known(path, label_update(src, &hash, writer_settings)),
        Ok(false) => {}
        Err(e) => return Prepared::Lookup(e.context(format!("{shown}: looking up its content"))),
    }
    // Preprocessed while the decode budget's bytes are held: full-size pixels never outlive
    // them (the model inputs are small).
    let items = decode_items_with(&bytes, opts, |decoded| {
        decoded
            .iter()
            .map(|d| {
                let meta = item_meta(src, d, &path, &hash, writer_settings, opts.keep_phi);
                (meta, enc.preprocess().apply(&d.image))
            })
            .collect::<Vec<_>>()
    });
    let items = match items {
        Ok(items) if !items.is_empty() => items,
        Ok(_) => return failed(failure::NO_IMAGES, "no images selected".into()),
        Err(e) => return failed(&failure::kind_of(&e), e.to_string()),
    };
    Prepared::Ready(items, label_update(src, &hash, writer_settings))
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
    // Copies of one image in other encodings (transfer syntaxes) share it: search shows one.
    meta.set_pixel_hash(d.image.width, d.image.height, &d.image.data);
    let mut patient = src.patient_id.clone();
    if let Some(m) = &d.dicom {
        meta.modality = meta.modality.or_else(|| m.modality.clone());
        meta.body_part = m.body_part.clone();
        meta.study_uid = m.study_uid.clone();
        meta.series_uid = m.series_uid.clone();
        meta.sop_uid = m.sop_uid.clone();
        let extra = [
            ("transfer_syntax", Some(m.transfer_syntax.clone())),
            ("sop_class_uid", m.sop_class_uid.clone()),
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

/// Index `sources` into `writer` (a local [`Writer`] or another [`Sink`]) with `enc`. Returns
/// counts; per-file failures are logged, recorded in the index's errors table, and never stop
/// the run.
pub fn run(
    writer: &mut dyn Sink,
    enc: &dyn Encoder,
    sources: Vec<Source>,
    opts: &Options,
) -> Result<Summary> {
    // What was indexed before this run, asked per file through the index on content hash
    // (content first stored in this run is caught by `seen` below): `has_key(HASH)` for a
    // file (a multi-image file's items carry `HASH#PART`), `has_key(HASH@axis)` for one
    // slicing of a volume, and `has_file(HASH)` for any item of the file, so that a new axis
    // of a known volume also updates the labels of the slices already stored.
    let lookups = writer.known_files()?;
    let known = |key: &str| lookups.has_key(key);
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
    // Decoded images wait for the embedder up to two batches' worth, so that the next batch is
    // ready when one is embedded (with 4 files in flight and batches of 16, the embedder
    // waited for 12 decodes every batch: ingest ran at 76–79% of the embed-only rate at int8,
    // 84–85% with this). Counted in images, not files: one volume can hold hundreds of slices.
    let room = 2 * opts.batch.max(2);
    let in_flight = InFlight::new(room);
    let (tx, rx) = crossbeam_channel::bounded::<Prepared>(room);
    let decoders = match opts.decode_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2)),
        n => n,
    };
    let mut summary = Summary::default();
    let mut examples: Vec<String> = Vec::new();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        // Owned here, so that an early return stops the decoders (their sends fail, and their
        // waits for room end).
        let rx = rx;
        let _close = Closing(&in_flight);
        let in_flight = &in_flight;
        let (known, settings, decode, sources) = (&known, &settings, &opts.decode, &sources);
        let lookups = &lookups;
        // Plain threads, not a rayon pool: a rayon worker waiting inside a codec's parallel
        // loop can steal another file's decode, which would then wait for decode budget
        // while this thread holds some.
        for i in 0..decoders {
            let (tx, next) = (tx.clone(), &next);
            std::thread::Builder::new()
                .name(format!("simcase-decode-{i}"))
                .spawn_scoped(scope, move || {
                    while let Some(s) =
                        sources.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        let item = prepare(s, enc, known, settings, decode);
                        if !in_flight.enter(item.images()) || tx.send(item).is_err() {
                            break;
                        }
                    }
                })?;
        }
        drop(tx);
        let mut batch: Vec<(ItemMeta, Vec<f32>)> = Vec::with_capacity(opts.batch);
        let mut seen: HashSet<String> = HashSet::new();
        // Label updates of files stored before this run (applied in batches as they come), and
        // of content first seen in this run (applied at the end, once its items are committed).
        let mut pending: Vec<LabelUpdate> = Vec::new();
        let mut deferred: Vec<LabelUpdate> = Vec::new();
        let flush = |batch: &mut Vec<(ItemMeta, Vec<f32>)>,
                     writer: &mut dyn Sink,
                     summary: &mut Summary|
         -> Result<usize> {
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
                let reason = "embedding is not finite (NaN/inf)";
                tracing::warn!("{}: {reason}; not indexed", failure::printable(&m.path));
                writer.record_error(&m.path, failure::NOT_FINITE, reason)?;
                summary.failed += 1;
                summary.failures.push(Failure {
                    path: m.path.clone(),
                    kind: failure::NOT_FINITE.into(),
                    reason: reason.into(),
                });
            }
            writer.add(&good)?;
            Ok(good.len())
        };
        for item in rx.iter() {
            in_flight.leave(item.images());
            match item {
                Prepared::Known(path, None) => {
                    // Whatever failed at this path before is indexed now.
                    writer.clear_error(&path)?;
                    summary.skipped += 1;
                }
                Prepared::Known(path, Some(u)) => {
                    writer.clear_error(&path)?;
                    pending.push(u);
                    if pending.len() >= LABEL_BATCH {
                        let out = writer.update_labels(&pending, opts.relabel)?;
                        tally(&mut summary, &mut examples, &out, false);
                        pending.clear();
                    }
                }
                Prepared::Lookup(e) => return Err(e),
                Prepared::Failed(shown, path, f) => {
                    tracing::warn!("{shown}: {}", f.reason);
                    writer.record_error(&path, &f.kind, &f.reason)?;
                    summary.failed += 1;
                    summary.failures.push(f);
                }
                Prepared::Ready(items, update) => {
                    let mut dup = false;
                    for (meta, x) in items {
                        if !seen.insert(meta.hash.clone()) {
                            summary.skipped += 1; // same content twice in this run
                            dup = true;
                            continue;
                        }
                        batch.push((meta, x));
                        if batch.len() >= opts.batch {
                            let n = flush(&mut batch, writer, &mut summary)?;
                            summary.added += n;
                        }
                    }
                    match update {
                        Some(u) if dup => deferred.push(u),
                        Some(u) if lookups.has_file(&u.hash)? => pending.push(u),
                        _ => {}
                    }
                }
            }
            pb.inc(1);
        }
        let n = flush(&mut batch, writer, &mut summary)?;
        summary.added += n;
        let out = writer.update_labels(&pending, opts.relabel)?;
        tally(&mut summary, &mut examples, &out, false);
        for chunk in deferred.chunks(LABEL_BATCH) {
            let out = writer.update_labels(chunk, opts.relabel)?;
            tally(&mut summary, &mut examples, &out, true);
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    if summary.disagreed > 0 {
        let what = if opts.relabel {
            "the manifest's values replaced them (--relabel)"
        } else {
            "kept the stored values; re-run with --relabel to let the manifest win"
        };
        tracing::warn!(
            "{} manifest row(s) disagree with the labels stored for their file; {what}; e.g. {}",
            summary.disagreed,
            examples.join("; ")
        );
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound holds images back until the embedder takes some, lets one oversized file
    /// through when nothing waits, and frees every waiting decoder when the run ends.
    #[test]
    fn images_in_flight_wait_for_room_and_stop_with_the_run() {
        let f = InFlight::new(4);
        assert!(f.enter(3));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| f.enter(2));
            f.leave(3);
            assert!(waiter.join().unwrap());
        });
        assert_eq!(f.state.lock().unwrap().0, 2);
        f.leave(2);
        assert!(f.enter(100), "a volume larger than the bound goes alone");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| f.enter(1));
            drop(Closing(&f));
            assert!(!waiter.join().unwrap(), "the run ended while it waited");
        });
        assert!(!f.enter(0));
    }

    #[test]
    fn only_rows_with_something_to_say_update_labels() {
        let dir = std::env::temp_dir().join(format!("simcase-ingest-lu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = Writer::open(&dir, "m", 1).unwrap();
        let s = w.settings();
        let walked = Source {
            path: "a.png".into(),
            ..Default::default()
        };
        assert!(label_update(&walked, "h", s).is_none());
        let mut row = walked.clone();
        row.meta.split = Some(String::new());
        assert!(
            label_update(&row, "h", s).is_none(),
            "an empty value says nothing"
        );
        row.patient_id = Some("P-7".into());
        let u = label_update(&row, "h", s).unwrap();
        assert_eq!(u.hash, "h");
        assert_eq!(u.labels.patient_key, Some(s.patient_key("P-7")));
        let mut extra = walked.clone();
        extra.meta.extra.insert("view".into(), "PA".into());
        assert!(label_update(&extra, "h", s).is_some());
    }

    #[test]
    fn tally_counts_updates_presence_and_disagreements() {
        let mut s = Summary::default();
        let mut ex = Vec::new();
        let d = simcase_index::Disagreement {
            field: "modality".into(),
            stored: "MR".into(),
            manifest: "US".into(),
        };
        let outs = [
            LabelOutcome {
                items: 3,
                changed: 3,
                path: "/v.nii".into(),
                disagreements: vec![],
            },
            LabelOutcome {
                items: 1,
                changed: 0,
                path: "/a.png".into(),
                disagreements: vec![d],
            },
            LabelOutcome {
                items: 1,
                changed: 0,
                path: "/b.png".into(),
                disagreements: vec![],
            },
        ];
        tally(&mut s, &mut ex, &outs, false);
        assert_eq!((s.updated, s.skipped, s.disagreed), (3, 2, 1));
        assert_eq!(ex, ["/a.png: modality stored `MR`, manifest `US`"]);
        // Items of this run were counted when they were seen twice.
        tally(&mut s, &mut ex, &outs, true);
        assert_eq!((s.updated, s.skipped, s.disagreed), (6, 2, 2));
    }
}
