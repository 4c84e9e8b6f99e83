//! An index folder: `vectors.f32` (row-major f32, append-only, memory-mappable) plus
//! `index.sqlite` (metadata, errors, settings).
//!
//! Crash safety comes from ordering: a batch's vectors are appended and fsynced *before* its
//! rows are committed to SQLite, and SQLite's row count is the truth. A kill between the two
//! leaves a tail of uncommitted vectors that the next writer truncates and readers never see.

use anyhow::{bail, ensure, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const VECTORS: &str = "vectors.f32";
pub const DB: &str = "index.sqlite";
const SCHEMA_VERSION: &str = "1";

/// Labels and provenance of one indexed image.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ItemMeta {
    pub path: String,
    pub hash: String,
    pub format: String,
    pub modality: Option<String>,
    pub anatomy: Option<String>,
    pub pathology: Option<String>,
    pub label: Option<String>,
    pub split: Option<String>,
    pub source: Option<String>,
    /// Salted hash of the patient id; never the raw value.
    pub patient_key: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub sop_uid: Option<String>,
    pub body_part: Option<String>,
    /// Other manifest columns, as a JSON object.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Keys in [`ItemMeta::extra`] that place an item inside its file: written at ingest, read by
/// whatever re-decodes the item (thumbnails) or groups by volume.
pub mod part_keys {
    /// Frame number of a multi-frame DICOM object, and how many frames it has.
    pub const FRAME: &str = "frame";
    pub const FRAMES: &str = "frames";
    /// Content id shared by a volume's slices.
    pub const VOLUME: &str = "volume";
    /// Slice number across `AXIS`, and how many slices that axis has.
    pub const SLICE: &str = "slice";
    pub const SLICES: &str = "slices";
    pub const AXIS: &str = "axis";
}

impl ItemMeta {
    fn extra_u32(&self, key: &str) -> Option<u32> {
        self.extra.get(key)?.as_u64()?.try_into().ok()
    }

    /// The frame or slice this item is, if it is one of several in its file.
    pub fn part_index(&self) -> Option<u32> {
        self.extra_u32(part_keys::FRAME)
            .or_else(|| self.extra_u32(part_keys::SLICE))
    }

    /// The slicing axis of a volume slice (`axial`, `coronal`, `sagittal`).
    pub fn slice_axis(&self) -> Option<&str> {
        self.extra.get(part_keys::AXIS)?.as_str()
    }

    /// The volume a slice belongs to.
    pub fn volume(&self) -> Option<&str> {
        self.extra.get(part_keys::VOLUME)?.as_str()
    }
}

/// A stored item: its row in `vectors.f32` and its metadata.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Item {
    pub id: u64,
    #[serde(flatten)]
    pub meta: ItemMeta,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub model: String,
    pub dim: usize,
    salt: String,
}

impl Settings {
    /// A stable pseudonym for a patient id, unique to this index.
    pub fn patient_key(&self, raw: &str) -> String {
        let d = Sha256::digest(format!("{}:{}", self.salt, raw.trim()).as_bytes());
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

fn connect(dir: &Path) -> Result<Connection> {
    let conn = Connection::open(dir.join(DB))
        .with_context(|| format!("opening {}", dir.join(DB).display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn random_salt(dir: &Path) -> String {
    let mut seed = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut seed);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d = Sha256::digest(format!(
        "{seed:?}{now}{}{}",
        std::process::id(),
        dir.display()
    ));
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn read_settings(conn: &Connection) -> Result<Option<Settings>> {
    let get = |k: &str| -> Result<Option<String>> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .optional()?)
    };
    let (Some(model), Some(dim), Some(salt)) = (get("model")?, get("dim")?, get("salt")?) else {
        return Ok(None);
    };
    Ok(Some(Settings {
        model,
        dim: dim.parse().context("bad dim in index settings")?,
        salt,
    }))
}

const COLUMNS: &str = "path, hash, format, modality, anatomy, pathology, label, split, source, \
                       patient_key, study_uid, series_uid, sop_uid, body_part, extra";

fn row_to_item(r: &rusqlite::Row) -> rusqlite::Result<Item> {
    let extra: Option<String> = r.get(15)?;
    Ok(Item {
        id: r.get::<_, i64>(0)? as u64,
        meta: ItemMeta {
            path: r.get(1)?,
            hash: r.get(2)?,
            format: r.get(3)?,
            modality: r.get(4)?,
            anatomy: r.get(5)?,
            pathology: r.get(6)?,
            label: r.get(7)?,
            split: r.get(8)?,
            source: r.get(9)?,
            patient_key: r.get(10)?,
            study_uid: r.get(11)?,
            series_uid: r.get(12)?,
            sop_uid: r.get(13)?,
            body_part: r.get(14)?,
            extra: extra
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
        },
    })
}

fn item_count(conn: &Connection) -> Result<usize> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
    Ok(n as usize)
}

/// The single writer of an index folder (an exclusive lock on `writer.lock` enforces it).
pub struct Writer {
    dir: PathBuf,
    conn: Connection,
    settings: Settings,
    vectors: File,
    rows: usize,
    _lock: File,
}

impl Writer {
    /// Open `dir` for appending, creating it for `model`/`dim` if new. Refuses an index built
    /// with another model, since mixing embedding spaces would make scores meaningless.
    pub fn open(dir: &Path, model: &str, dim: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("writer.lock"))?;
        if lock.try_lock().is_err() {
            bail!(
                "{} is being written by another simcase process",
                dir.display()
            );
        }
        let conn = connect(dir)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS items(
                row INTEGER PRIMARY KEY, path TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
                format TEXT NOT NULL, modality TEXT, anatomy TEXT, pathology TEXT, label TEXT,
                split TEXT, source TEXT, patient_key TEXT, study_uid TEXT, series_uid TEXT,
                sop_uid TEXT, body_part TEXT, extra TEXT,
                added_at TEXT NOT NULL DEFAULT (datetime('now')));
             CREATE INDEX IF NOT EXISTS items_path ON items(path);
             CREATE TABLE IF NOT EXISTS errors(
                path TEXT PRIMARY KEY, reason TEXT NOT NULL,
                at TEXT NOT NULL DEFAULT (datetime('now')));",
        )?;
        let settings = match read_settings(&conn)? {
            Some(s) => {
                ensure!(
                    s.model == model && s.dim == dim,
                    "{} holds {}-d {} embeddings, not {dim}-d {model}; use another --index",
                    dir.display(),
                    s.dim,
                    s.model
                );
                s
            }
            None => {
                let s = Settings {
                    model: model.into(),
                    dim,
                    salt: random_salt(dir),
                };
                let tx = conn.unchecked_transaction()?;
                for (k, v) in [
                    ("model", s.model.clone()),
                    ("dim", dim.to_string()),
                    ("salt", s.salt.clone()),
                    ("schema", SCHEMA_VERSION.into()),
                ] {
                    tx.execute(
                        "INSERT INTO meta(key, value) VALUES (?1, ?2)",
                        params![k, v],
                    )?;
                }
                tx.commit()?;
                s
            }
        };
        let rows = item_count(&conn)?;
        let vectors = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(VECTORS))?;
        let want = (rows * dim * 4) as u64;
        let have = vectors.metadata()?.len();
        if have < want {
            bail!(
                "{}: {have} bytes of vectors for {rows} committed items; the index is damaged",
                dir.join(VECTORS).display()
            );
        }
        if have > want {
            // Vectors of a batch that was killed before its commit.
            vectors.set_len(want)?;
            vectors.sync_all()?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            conn,
            settings,
            vectors,
            rows,
            _lock: lock,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains_hash(&self, hash: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM items WHERE hash = ?1", [hash], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Content hashes of every committed item, for skipping known files up front.
    pub fn hashes(&self) -> Result<std::collections::HashSet<String>> {
        let mut st = self.conn.prepare("SELECT hash FROM items")?;
        let v = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// Append a batch atomically: all of it is visible after return, or none after a crash.
    pub fn add(&mut self, batch: &[(ItemMeta, Vec<f32>)]) -> Result<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let dim = self.settings.dim;
        let mut bytes = Vec::with_capacity(batch.len() * dim * 4);
        for (m, v) in batch {
            ensure!(
                v.len() == dim,
                "{}: embedding has {} values, not {dim}",
                m.path,
                v.len()
            );
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        use std::io::Seek;
        self.vectors
            .seek(std::io::SeekFrom::Start((self.rows * dim * 4) as u64))?;
        self.vectors.write_all(&bytes)?;
        self.vectors.sync_data()?;
        let tx = self.conn.unchecked_transaction()?;
        let mut ids = Vec::with_capacity(batch.len());
        {
            let mut ins = tx.prepare_cached(&format!(
                "INSERT INTO items(row, {COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
            ))?;
            for (i, (m, _)) in batch.iter().enumerate() {
                let row = (self.rows + i) as i64;
                let extra = (!m.extra.is_empty()).then(|| serde_json::to_string(&m.extra).ok());
                ins.execute(params![
                    row,
                    m.path,
                    m.hash,
                    m.format,
                    m.modality,
                    m.anatomy,
                    m.pathology,
                    m.label,
                    m.split,
                    m.source,
                    m.patient_key,
                    m.study_uid,
                    m.series_uid,
                    m.sop_uid,
                    m.body_part,
                    extra.flatten(),
                ])?;
                ids.push(row as u64);
            }
            let mut del = tx.prepare_cached("DELETE FROM errors WHERE path = ?1")?;
            for (m, _) in batch {
                del.execute([&m.path])?;
            }
        }
        tx.commit()?;
        self.rows += batch.len();
        Ok(ids)
    }

    /// Remember a file that could not be indexed (replacing an older reason for it).
    pub fn record_error(&self, path: &str, reason: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO errors(path, reason) VALUES (?1, ?2)
             ON CONFLICT(path) DO UPDATE SET reason = excluded.reason, at = datetime('now')",
            params![path, reason],
        )?;
        Ok(())
    }
}

/// A read-only view: the committed rows, memory-mapped, plus metadata lookups.
pub struct Reader {
    dir: PathBuf,
    conn: Connection,
    view: Rows,
}

/// The committed vectors of an index, memory-mapped: what [`Reader`] and [`Snapshot`] share
/// (both dereference to it).
pub struct Rows {
    settings: Settings,
    map: Option<memmap2::Mmap>,
    rows: usize,
}

impl Rows {
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// All committed vectors, row-major.
    pub fn vectors(&self) -> &[f32] {
        match &self.map {
            Some(m) => {
                // SAFETY: any bit pattern is a valid f32; alignment is checked.
                let (pre, v, _) = unsafe { m.align_to::<f32>() };
                assert!(pre.is_empty(), "mmap is page-aligned");
                &v[..self.rows * self.settings.dim]
            }
            None => &[],
        }
    }

    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        let (d, i) = (self.settings.dim, usize::try_from(id).ok()?);
        self.vectors()
            .get(i.checked_mul(d)?..(i + 1).checked_mul(d)?)
    }
}

impl std::ops::Deref for Reader {
    type Target = Rows;
    fn deref(&self) -> &Rows {
        &self.view
    }
}

impl std::ops::Deref for Snapshot {
    type Target = Rows;
    fn deref(&self) -> &Rows {
        &self.view
    }
}

impl Reader {
    pub fn open(dir: &Path) -> Result<Self> {
        ensure!(
            dir.join(DB).is_file(),
            "{} is not a simcase index (no {DB}); build one with `simcase index`",
            dir.display()
        );
        let conn = connect(dir)?;
        let settings = read_settings(&conn)?
            .with_context(|| format!("{} has no index settings", dir.display()))?;
        let rows = item_count(&conn)?;
        let file = File::open(dir.join(VECTORS))?;
        let need = rows * settings.dim * 4;
        ensure!(
            file.metadata()?.len() as usize >= need,
            "{}: vectors file shorter than its {rows} committed items",
            dir.display()
        );
        // SAFETY: the file is only ever appended to (or truncated past the committed rows,
        // which this view never reads).
        let map = if need > 0 {
            Some(unsafe { memmap2::MmapOptions::new().len(need).map(&file)? })
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            conn,
            view: Rows {
                settings,
                map,
                rows,
            },
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn item(&self, id: u64) -> Result<Option<Item>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT row, {COLUMNS} FROM items WHERE row = ?1"),
                [id as i64],
                row_to_item,
            )
            .optional()?)
    }

    pub fn items(&self) -> Result<Vec<Item>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT row, {COLUMNS} FROM items WHERE row < ?1 ORDER BY row"
        ))?;
        let v = st
            .query_map([self.view.rows as i64], row_to_item)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    pub fn errors(&self) -> Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT path, reason FROM errors ORDER BY path")?;
        let v = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    pub fn id_by_hash(&self, hash: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT row FROM items WHERE hash = ?1 AND row < ?2",
                params![hash, self.view.rows as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|r| r as u64))
    }
}

/// An immutable, thread-safe view of an index at one committed row count: the vectors stay
/// memory-mapped (shared by every request, never copied) and the metadata is held in memory
/// for filtering. A server swaps in a fresh snapshot when a writer has committed more rows.
pub struct Snapshot {
    view: Rows,
    items: Vec<Item>,
}

impl Reader {
    /// Freeze this reader's committed rows into a [`Snapshot`].
    pub fn snapshot(self) -> Result<Snapshot> {
        let items = self.items()?;
        ensure!(
            items.len() == self.view.rows
                && items.iter().enumerate().all(|(i, it)| it.id == i as u64),
            "{}: item rows are not contiguous",
            self.dir.display()
        );
        Ok(Snapshot {
            view: self.view,
            items,
        })
    }
}

impl Snapshot {
    /// Open `dir` and snapshot it.
    pub fn open(dir: &Path) -> Result<Self> {
        Reader::open(dir)?.snapshot()
    }

    /// Committed rows in `dir` right now (cheap: one SQLite count), to decide on a refresh.
    pub fn committed_rows(dir: &Path) -> Result<usize> {
        item_count(&connect(dir)?)
    }

    pub fn item(&self, id: u64) -> Option<&Item> {
        self.items.get(usize::try_from(id).ok()?)
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str, hash: &str) -> ItemMeta {
        ItemMeta {
            path: path.into(),
            hash: hash.into(),
            format: "png".into(),
            label: Some("CT/chest/normal".into()),
            ..Default::default()
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("simcase-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn add_then_read_back_and_reopen() {
        let d = tmpdir("roundtrip");
        {
            let mut w = Writer::open(&d, "m", 2).unwrap();
            w.add(&[
                (meta("a.png", "h1"), vec![1.0, 0.0]),
                (meta("b.png", "h2"), vec![0.0, 1.0]),
            ])
            .unwrap();
            assert!(w.contains_hash("h1").unwrap());
            w.record_error("bad.png", "corrupt png data").unwrap();
        }
        let r = Reader::open(&d).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.vector(1).unwrap(), &[0.0, 1.0]);
        assert_eq!(r.item(0).unwrap().unwrap().meta.path, "a.png");
        assert_eq!(
            r.errors().unwrap(),
            vec![("bad.png".into(), "corrupt png data".into())]
        );
        assert_eq!(r.id_by_hash("h2").unwrap(), Some(1));
        let mut w = Writer::open(&d, "m", 2).unwrap();
        assert_eq!(w.len(), 2);
        w.add(&[(meta("c.png", "h3"), vec![0.6, 0.8])]).unwrap();
        drop(w);
        assert_eq!(Reader::open(&d).unwrap().vector(2).unwrap(), &[0.6, 0.8]);
        assert!(
            Writer::open(&d, "other", 2).is_err(),
            "model mismatch must be refused"
        );
    }

    #[test]
    fn uncommitted_vector_tail_is_truncated_on_open() {
        let d = tmpdir("tail");
        {
            let mut w = Writer::open(&d, "m", 2).unwrap();
            w.add(&[(meta("a.png", "h1"), vec![1.0, 0.0])]).unwrap();
        }
        // Simulate a kill after the vectors were written but before the SQLite commit.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join(VECTORS))
            .unwrap();
        f.write_all(&[0u8; 12]).unwrap();
        drop(f);
        let r = Reader::open(&d).unwrap();
        assert_eq!(r.len(), 1, "readers ignore the tail");
        let mut w = Writer::open(&d, "m", 2).unwrap();
        assert_eq!(std::fs::metadata(d.join(VECTORS)).unwrap().len(), 8);
        w.add(&[(meta("b.png", "h2"), vec![0.0, 1.0])]).unwrap();
        assert_eq!(Reader::open(&d).unwrap().vector(1).unwrap(), &[0.0, 1.0]);
    }

    #[test]
    fn duplicate_hash_rolls_back_the_whole_batch() {
        let d = tmpdir("dup");
        let mut w = Writer::open(&d, "m", 1).unwrap();
        w.add(&[(meta("a.png", "h1"), vec![1.0])]).unwrap();
        assert!(w
            .add(&[
                (meta("b.png", "h2"), vec![1.0]),
                (meta("c.png", "h1"), vec![1.0])
            ])
            .is_err());
        drop(w);
        let w = Writer::open(&d, "m", 1).unwrap();
        assert_eq!(w.len(), 1);
        assert!(!w.contains_hash("h2").unwrap());
    }

    #[test]
    fn second_writer_is_refused_and_patient_keys_are_salted() {
        let d = tmpdir("lock");
        let w = Writer::open(&d, "m", 1).unwrap();
        assert!(Writer::open(&d, "m", 1).is_err());
        let k = w.settings().patient_key("PAT-001");
        assert_eq!(k.len(), 16);
        assert!(!k.contains("PAT"));
        assert_eq!(k, w.settings().patient_key("PAT-001"));
        let other = Writer::open(&tmpdir("lock2"), "m", 1).unwrap();
        assert_ne!(
            k,
            other.settings().patient_key("PAT-001"),
            "salt differs per index"
        );
    }
}
