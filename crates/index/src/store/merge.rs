//! Joining index folders into one ([`merge`]): the shares of a sharded ingest (`simcase index
//! --shard I/N`), or any indexes of one model. Vectors and every stored field are copied as
//! they are, never re-embedded; an item already in the target (the same content key: file
//! hash plus part, the `hash` column the writer's known-file lookups use) is not added again.
//!
//! It goes through the target's [`Writer`], so it is crash-safe the way ingest is (each batch's
//! vectors are appended and fsynced before its rows commit, and the next open cuts an
//! uncommitted tail) and resumable: a re-run after a kill skips what was committed and adds
//! the rest, and a finished merge run again adds nothing. The target keeps its own precision
//! and search settings (compact rows and graph kept up to date by the writer); a new (or
//! empty) target takes those of the first input.
//!
//! Patient keys are salted per index and raw patient ids are never stored, so keys made with
//! two salts can never be joined: an input with patient keys under another salt than the
//! target's is refused. The shares of one archive get one salt from `SIMCASE_PATIENT_SALT`
//! ([`SALT_ENV`]), set for every job; without it a new target takes the salt of the first
//! input with patient keys, and inputs without any keys merge whatever their salt.

use super::columns::{row_to_item, select_list};
use super::settings::{env_salt, Settings, SALT_ENV};
use super::writer::Writer;
use super::{connect, connect_reader, errors, Reader, Snapshot, DB};
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows per commit unless told otherwise.
pub const DEFAULT_BATCH: usize = 1024;

/// What merging one input did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputReport {
    /// The input folder.
    pub dir: PathBuf,
    /// Its committed items.
    pub rows: usize,
    /// Items added to the target.
    pub added: usize,
    /// Items whose content key the target held already.
    pub present: usize,
    /// Rows of its `errors` table (files it could not index) added to the target's.
    pub errors: usize,
}

/// What [`merge`] did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Whether the target was created by this merge.
    pub created: bool,
    /// One report per input, in order (an input named twice counts once).
    pub inputs: Vec<InputReport>,
    /// The target's items after the merge.
    pub rows: usize,
}

/// An input, checked and locked against writers for the merge's duration.
struct Input {
    dir: PathBuf,
    reader: Reader,
    has_keys: bool,
    _lock: Option<File>,
}

/// Take an input's writer lock so that no ingest writes it while it is read (shared: an
/// exclusive lock on a read-only descriptor is all `flock` needs); refuse an index that a
/// writer holds. A folder without a lock file has no writer.
fn lock_input(dir: &Path) -> Result<Option<File>> {
    let lock = match File::open(dir.join(super::writer::LOCK)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: writer lock", dir.display())),
    };
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is being written by another simcase process (an ingest still running?); \
             merge it once that run has ended",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("{}: writer lock", dir.display()))
        }
    }
}

/// Whether any item of the index in `dir` has a patient key.
fn has_patient_keys(dir: &Path) -> Result<bool> {
    let conn = connect_reader(dir)?;
    conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM items WHERE patient_key IS NOT NULL)",
        [],
        |r| r.get(0),
    )
    .with_context(|| format!("{}: reading patient keys", dir.display()))
}

fn describe(s: &Settings) -> String {
    format!("{}-d {}", s.dim, s.model)
}

/// Merge the indexes in `inputs` into the one in `into` (created if missing), in order,
/// `batch` rows per commit; `progress` runs after each input. Every input is checked (an
/// index, not `into` itself, not being written, of the target's model and dimension, patient
/// keys under the target's salt) before anything is written; errors are one line naming the
/// folder and the reason.
pub fn merge(
    into: &Path,
    inputs: &[PathBuf],
    batch: usize,
    mut progress: impl FnMut(&InputReport),
) -> Result<Report> {
    ensure!(
        !inputs.is_empty(),
        "nothing to merge: name the index folders"
    );
    let batch = batch.max(1);
    let target = std::fs::canonicalize(into).ok();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut checked: Vec<Input> = Vec::new();
    for dir in inputs {
        ensure!(
            dir.join(DB).is_file(),
            "{} is not a simcase index (no {DB})",
            dir.display()
        );
        let canonical = std::fs::canonicalize(dir)
            .with_context(|| format!("{}: cannot resolve the folder", dir.display()))?;
        ensure!(
            target.as_ref() != Some(&canonical),
            "{} is the --into folder itself",
            dir.display()
        );
        if seen.contains(&canonical) {
            continue;
        }
        seen.push(canonical);
        let lock = lock_input(dir)?;
        let reader = Reader::open(dir)?;
        let has_keys = has_patient_keys(dir)?;
        checked.push(Input {
            dir: dir.clone(),
            reader,
            has_keys,
            _lock: lock,
        });
    }
    // What the target holds or will hold: its own settings, or the first input's.
    let existing = if into.join(DB).is_file() {
        Some(Reader::open(into)?)
    } else {
        None
    };
    let first = &checked[0];
    let (model_of, name_of) = match &existing {
        Some(r) => (r.settings().clone(), into.display().to_string()),
        None => (
            first.reader.settings().clone(),
            first.dir.display().to_string(),
        ),
    };
    // The salt the target's keys are (or will be) made with, and where it comes from.
    let env = env_salt()?;
    let salt_source = match (&existing, &env) {
        (Some(r), _) => SaltOf::Index(r.settings().clone(), into.display().to_string()),
        (None, Some(s)) => SaltOf::Env(s.clone()),
        (None, None) => {
            let i = checked.iter().find(|i| i.has_keys).unwrap_or(first);
            SaltOf::Index(i.reader.settings().clone(), i.dir.display().to_string())
        }
    };
    for i in &checked {
        let s = i.reader.settings();
        ensure!(
            s.model == model_of.model && s.dim == model_of.dim,
            "{} holds {} embeddings, not {} as {name_of}: merge only indexes of one model",
            i.dir.display(),
            describe(s),
            describe(&model_of)
        );
        if i.has_keys && !salt_source.matches(s) {
            bail!(
                "{} makes patient keys with another salt than {}, so one patient would have \
                 two keys (group-by patient would split them) and raw ids are not stored to \
                 re-key them: index every share with the same {SALT_ENV} set",
                i.dir.display(),
                salt_source.describe()
            );
        }
    }
    drop(existing);
    let like = match &salt_source {
        SaltOf::Index(s, _) => Some(s),
        SaltOf::Env(_) => None,
    };
    let created = !into.join(DB).is_file();
    let mut w = Writer::open_like(into, &model_of.model, model_of.dim, like)?;
    if w.is_empty() {
        // A new target searches as its shares did.
        let r = &first.reader;
        w.set_precision(r.precision())?;
        let ann = r.ann_settings();
        w.set_ann(ann.index_type, ann.params)?;
    }
    let mut report = Report {
        created,
        ..Default::default()
    };
    for i in &checked {
        let r = merge_one(&mut w, into, i, batch)?;
        progress(&r);
        report.inputs.push(r);
    }
    w.checkpoint_graph()?;
    report.rows = w.len();
    drop(w);
    // Bring the metadata cache up to date, as ingest does, so that the next search opens fast.
    if let Err(e) = Snapshot::open(into) {
        tracing::warn!("{}: metadata cache not refreshed: {e:#}", into.display());
    }
    Ok(report)
}

/// Where the target's patient-key salt comes from.
enum SaltOf {
    /// An index's settings (the target's, or an input's for a new target), with its folder.
    Index(Settings, String),
    /// [`SALT_ENV`].
    Env(String),
}

impl SaltOf {
    fn matches(&self, s: &Settings) -> bool {
        match self {
            Self::Index(t, _) => t.same_salt(s),
            Self::Env(salt) => s.salt() == salt,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Index(_, dir) => format!("{dir}'s"),
            Self::Env(_) => format!("the one {SALT_ENV} gives"),
        }
    }
}

/// Copy one input's items and failures into the target.
fn merge_one(w: &mut Writer, into: &Path, input: &Input, batch: usize) -> Result<InputReport> {
    let (dir, r) = (&input.dir, &input.reader);
    let mut out = InputReport {
        dir: dir.clone(),
        rows: r.len(),
        ..Default::default()
    };
    let conn = connect_reader(dir)?;
    let mut st = conn.prepare(&format!(
        "SELECT {} FROM items WHERE row >= ?1 AND row < ?2 ORDER BY row",
        select_list()
    ))?;
    let mut start = 0;
    while start < r.len() {
        let end = (start + batch).min(r.len());
        let items = st
            .query_map([start as i64, end as i64], row_to_item)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| format!("{}: reading items", dir.display()))?;
        ensure!(
            items.len() == end - start,
            "{}: rows {start}..{end} are not all there; the index is damaged",
            dir.display()
        );
        let mut add = Vec::with_capacity(items.len());
        for it in items {
            if w.contains_hash(&it.meta.hash)? {
                out.present += 1;
                continue;
            }
            let v = r.vector(it.id).with_context(|| {
                format!(
                    "{}: no vector for item {}; the index is damaged",
                    dir.display(),
                    it.id
                )
            })?;
            add.push((it.meta, v.to_vec()));
        }
        w.add(&add)?;
        out.added += add.len();
        start = end;
    }
    out.errors = copy_errors(dir, into)?;
    Ok(out)
}

/// Add the input's failed files to the target's `errors` table (keeping their reason, kind
/// and time), except paths the target has already, as a failure or as an indexed item. One
/// transaction; returns how many were added.
fn copy_errors(dir: &Path, into: &Path) -> Result<usize> {
    let failures = errors::failures(dir)?;
    if failures.is_empty() {
        return Ok(0);
    }
    let mut conn = connect(into)?;
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut ins = tx.prepare(
            "INSERT OR IGNORE INTO errors(path, reason, at, kind)
             SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM items WHERE path = ?1)",
        )?;
        for f in &failures {
            n += ins.execute(rusqlite::params![f.path, f.reason, f.at, f.kind])?;
        }
    }
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HnswParams, IndexType, ItemMeta, Precision};

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("simcase-merge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// An item with every kind of field set, its vector derived from `i`.
    fn item(i: usize, patient: Option<&str>, s: &Settings) -> (ItemMeta, Vec<f32>) {
        let mut m = ItemMeta {
            path: format!("/arch/p{}/IM{i}.dcm", i % 5),
            hash: format!("{:064x}#{}", i / 3, i % 3),
            format: "dicom".into(),
            modality: Some(["CT", "MR"][i % 2].into()),
            label: Some(format!("CT/chest/l{}", i % 4)),
            split: Some("train".into()),
            study_uid: Some(format!("1.2.3.{}", i / 7)),
            series_uid: Some(format!("1.2.3.{}.1", i / 7)),
            sop_uid: Some(format!("1.2.3.{}.1.{i}", i / 7)),
            patient_key: patient.map(|p| s.patient_key(p)),
            ..Default::default()
        };
        m.extra.insert("frame".into(), (i % 3).into());
        m.extra.insert("view".into(), "PA".into());
        let v: Vec<f32> = (0..4).map(|j| ((i * 7 + j) as f32).sin()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        (m, v.iter().map(|x| x / norm).collect())
    }

    /// An index of items `range` (patient keys when `keys`), salted like `like` when given.
    fn index(dir: &Path, range: std::ops::Range<usize>, keys: bool, like: Option<&Settings>) {
        let mut w = Writer::open_like(dir, "m", 4, like).unwrap();
        let s = w.settings().clone();
        let items: Vec<_> = range
            .map(|i| item(i, keys.then_some(&*format!("P{}", i % 9)), &s))
            .collect();
        for chunk in items.chunks(7) {
            w.add(chunk).unwrap();
        }
        w.record_error("/arch/bad.png", "corrupt png", "corrupt png data")
            .unwrap();
        w.record_error(
            &format!("/arch/{}.txt", dir.display()),
            "not an image",
            "not an image",
        )
        .unwrap();
    }

    fn settings(dir: &Path) -> Settings {
        Reader::open(dir).unwrap().settings().clone()
    }

    /// Every item of `dir` by content key: its metadata and vector bits.
    fn contents(dir: &Path) -> std::collections::BTreeMap<String, (ItemMeta, Vec<u32>)> {
        let r = Reader::open(dir).unwrap();
        r.items()
            .unwrap()
            .into_iter()
            .map(|it| {
                let v = r
                    .vector(it.id)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                (it.meta.hash.clone(), (it.meta, v))
            })
            .collect()
    }

    #[test]
    fn inputs_join_without_duplicates_with_every_field_and_vector_bit() {
        let (a, b, c) = (tmp("a"), tmp("b"), tmp("c"));
        index(&a, 0..40, true, None);
        // Overlapping content (30..40) and the same salt, as shares of one archive would have.
        index(&b, 30..70, true, Some(&settings(&a)));
        let rep = merge(&c, &[a.clone(), b.clone()], 16, |_| {}).unwrap();
        assert!(rep.created);
        assert_eq!(rep.rows, 70);
        let got: Vec<_> = rep
            .inputs
            .iter()
            .map(|r| (r.rows, r.added, r.present))
            .collect();
        assert_eq!(got, [(40, 40, 0), (40, 30, 10)]);
        // Failures: `bad.png` once, each input's own `.txt`.
        assert_eq!((rep.inputs[0].errors, rep.inputs[1].errors), (2, 1));
        let merged = contents(&c);
        let mut want = contents(&a);
        want.extend(contents(&b));
        assert_eq!(merged.len(), 70);
        for (k, (m, v)) in &want {
            let (gm, gv) = &merged[k];
            assert_eq!(gm, m, "{k}");
            assert_eq!(gv, v, "{k}: vector bits");
        }
        assert!(
            settings(&c).same_salt(&settings(&a)),
            "the target takes the shares' salt"
        );
        let fails = errors::failures(&c).unwrap();
        assert_eq!(fails.len(), 3, "{fails:?}");
        // Merging again adds nothing (and no failure twice).
        let again = merge(&c, &[b.clone(), a.clone()], 16, |_| {}).unwrap();
        assert!(!again.created);
        assert!(
            again.inputs.iter().all(|r| r.added == 0 && r.errors == 0),
            "{again:?}"
        );
        assert_eq!(Reader::open(&c).unwrap().len(), 70);
        // The target answers searches with its merged rows.
        let r = Reader::open(&c).unwrap();
        let q = item(55, None, r.settings()).1;
        let hit = &r.search(&[&q], 1, None)[0][0];
        assert_eq!(
            r.item(hit.row).unwrap().unwrap().meta.hash,
            item(55, None, r.settings()).0.hash
        );
        for d in [a, b, c] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn another_model_dim_or_salt_is_refused_before_anything_is_written() {
        let (a, other, c) = (tmp("ra"), tmp("rother"), tmp("rc"));
        index(&a, 0..10, true, None);
        drop(Writer::open(&other, "m2", 4).unwrap());
        let e = format!(
            "{:#}",
            merge(&c, &[a.clone(), other.clone()], 8, |_| {}).unwrap_err()
        );
        assert_eq!(
            e,
            format!(
                "{} holds 4-d m2 embeddings, not 4-d m as {}: merge only indexes of one model",
                other.display(),
                a.display()
            )
        );
        assert!(!c.exists(), "nothing written");
        std::fs::remove_dir_all(&other).unwrap();
        drop(Writer::open(&other, "m", 8).unwrap());
        let e = format!(
            "{:#}",
            merge(&c, &[a.clone(), other.clone()], 8, |_| {}).unwrap_err()
        );
        assert!(e.contains("holds 8-d m embeddings, not 4-d m"), "{e}");
        // Patient keys under another salt: refused, naming the folder; no keys: merged.
        let (salted, bare) = (tmp("rsalted"), tmp("rbare"));
        index(&salted, 10..20, true, None);
        index(&bare, 20..30, false, None);
        assert!(!settings(&bare).same_salt(&settings(&a)));
        let e = format!(
            "{:#}",
            merge(&c, &[a.clone(), salted.clone()], 8, |_| {}).unwrap_err()
        );
        assert!(
            e.starts_with(&format!(
                "{} makes patient keys with another salt than {}'s",
                salted.display(),
                a.display()
            )),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(!c.exists(), "nothing written");
        // The first input with keys sets a new target's salt, whatever comes first.
        let rep = merge(&c, &[bare.clone(), a.clone()], 8, |_| {}).unwrap();
        assert_eq!(rep.rows, 20);
        assert!(settings(&c).same_salt(&settings(&a)));
        // An existing target's salt rules.
        let e = format!(
            "{:#}",
            merge(&c, std::slice::from_ref(&salted), 8, |_| {}).unwrap_err()
        );
        assert!(
            e.contains(&format!("another salt than {}'s", c.display())),
            "{e}"
        );
        // Itself, a non-index, a folder being written.
        let e = format!(
            "{:#}",
            merge(&c, std::slice::from_ref(&c), 8, |_| {}).unwrap_err()
        );
        assert_eq!(e, format!("{} is the --into folder itself", c.display()));
        let e = format!("{:#}", merge(&c, &[tmp("none")], 8, |_| {}).unwrap_err());
        assert!(
            e.ends_with("is not a simcase index (no index.sqlite)"),
            "{e}"
        );
        let busy = Writer::open(&a, "m", 4).unwrap();
        let e = format!(
            "{:#}",
            merge(&c, std::slice::from_ref(&a), 8, |_| {}).unwrap_err()
        );
        assert_eq!(
            e,
            format!(
                "{} is being written by another simcase process (an ingest still running?); \
                 merge it once that run has ended",
                a.display()
            )
        );
        drop(busy);
        assert_eq!(
            merge(&c, &[a.clone(), a.clone()], 8, |_| {})
                .unwrap()
                .inputs
                .len(),
            1
        );
        for d in [a, other, c, salted, bare] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    /// A merge stopped after some batches, with a batch's vectors appended but not committed
    /// (what a kill leaves), is completed by running it again.
    #[test]
    fn a_stopped_merge_resumes_where_it_stopped() {
        let (a, b, c, whole) = (tmp("sa"), tmp("sb"), tmp("sc"), tmp("swhole"));
        index(&a, 0..50, true, None);
        index(&b, 50..90, true, Some(&settings(&a)));
        let inputs = [a.clone(), b.clone()];
        let stopped = std::panic::catch_unwind(|| {
            let mut batches = 0;
            merge(&c, &inputs, 10, |_| {
                batches += 1;
                panic!("stopped after input {batches}");
            })
        });
        assert!(stopped.is_err());
        assert_eq!(Reader::open(&c).unwrap().len(), 50);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(c.join(super::super::VECTORS))
                .unwrap();
            f.write_all(&[7u8; 4 * 4 * 3]).unwrap();
        }
        let rep = merge(&c, &inputs, 10, |_| {}).unwrap();
        assert!(!rep.created);
        assert_eq!((rep.inputs[0].added, rep.inputs[1].added), (0, 40));
        merge(&whole, &inputs, 10, |_| {}).unwrap();
        assert_eq!(contents(&c), contents(&whole));
        for d in [a, b, c, whole] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_new_target_searches_as_its_first_input_an_existing_one_as_before() {
        let (a, c, flat) = (tmp("pa"), tmp("pc"), tmp("pflat"));
        index(&a, 0..60, false, None);
        {
            let mut w = Writer::open(&a, "m", 4).unwrap();
            w.set_precision(Precision::I8).unwrap();
            let params = HnswParams {
                m: 8,
                ef_construction: 32,
                ef_search: 20,
            };
            w.set_ann(IndexType::Hnsw, params).unwrap();
            w.sync_graph(|_, _| {}).unwrap();
        }
        merge(&c, std::slice::from_ref(&a), 16, |_| {}).unwrap();
        let r = Reader::open(&c).unwrap();
        assert_eq!(r.precision(), Precision::I8);
        assert_eq!(r.ann_settings().index_type, IndexType::Hnsw);
        assert_eq!(r.ann_settings().params.m, 8);
        assert_eq!(r.compact().map(|c| c.precision()), Some(Precision::I8));
        assert_eq!(
            super::super::ann::check_saved(&c).unwrap(),
            60,
            "graph covers every row"
        );
        // An existing flat f32 target stays so.
        index(&flat, 100..110, false, None);
        merge(&flat, std::slice::from_ref(&a), 16, |_| {}).unwrap();
        let r = Reader::open(&flat).unwrap();
        assert_eq!((r.len(), r.precision()), (70, Precision::F32));
        assert_eq!(r.ann_settings().index_type, IndexType::Auto);
        for d in [a, c, flat] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
