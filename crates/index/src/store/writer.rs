//! The single writer of an index folder. Opening it takes the folder's lock, creates the
//! schema and settings of a new index, and truncates vectors that a killed run appended but
//! never committed; `add` appends and fsyncs a batch's vectors *before* committing its rows.

use super::columns::{create_items_sql, insert_sql, insert_values, ItemMeta};
use super::settings::Settings;
use super::{connect, durable, item_count, VECTORS};
use anyhow::{bail, ensure, Result};
use rusqlite::{Connection, OptionalExtension};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const LOCK: &str = "writer.lock";

/// The single writer of an index folder (an exclusive lock on `writer.lock` enforces it).
pub struct Writer {
    dir: PathBuf,
    conn: Connection,
    settings: Settings,
    vectors: File,
    rows: usize,
    _lock: File,
}

/// Take the folder's writer lock, or say who holds it.
fn lock(dir: &Path) -> Result<File> {
    let lock = durable::open_or_create(dir, LOCK)?;
    if lock.try_lock().is_err() {
        bail!(
            "{} is being written by another simcase process",
            dir.display()
        );
    }
    Ok(lock)
}

fn create_schema(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
         {}
         CREATE INDEX IF NOT EXISTS items_path ON items(path);",
        create_items_sql()
    ))?;
    super::errors::create(conn)
}

/// The stored settings, checked against `model`/`dim`, or new ones for a new index.
fn settings_for(conn: &Connection, dir: &Path, model: &str, dim: usize) -> Result<Settings> {
    match Settings::read(conn)? {
        Some(s) => {
            ensure!(
                s.model == model && s.dim == dim,
                "{} holds {}-d {} embeddings, not {dim}-d {model}; use another --index",
                dir.display(),
                s.dim,
                s.model
            );
            Ok(s)
        }
        None => {
            let s = Settings::new(model, dim)?;
            s.write(conn)?;
            Ok(s)
        }
    }
}

/// Cut the vectors file back to the committed `rows` (a killed batch leaves a tail); a file
/// shorter than the committed rows is damage, not a tail.
fn truncate_tail(dir: &Path, vectors: &File, rows: usize, dim: usize) -> Result<()> {
    let want = (rows * dim * 4) as u64;
    let have = vectors.metadata()?.len();
    if have < want {
        bail!(
            "{}: {have} bytes of vectors for {rows} committed items; the index is damaged",
            dir.join(VECTORS).display()
        );
    }
    if have > want {
        vectors.set_len(want)?;
        vectors.sync_all()?;
    }
    Ok(())
}

impl Writer {
    /// Open `dir` for appending, creating it for `model`/`dim` if new. Refuses an index built
    /// with another model, since mixing embedding spaces would make scores meaningless.
    pub fn open(dir: &Path, model: &str, dim: usize) -> Result<Self> {
        durable::create_dir_synced(dir)?;
        let lock = lock(dir)?;
        let conn = connect(dir)?;
        create_schema(&conn)?;
        let settings = settings_for(&conn, dir, model, dim)?;
        let rows = item_count(&conn)?;
        let vectors = durable::open_or_create(dir, VECTORS)?;
        truncate_tail(dir, &vectors, rows, dim)?;
        // index.sqlite and its WAL were created by SQLite; make their entries durable too.
        durable::sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            conn,
            settings,
            vectors,
            rows,
            _lock: lock,
        })
    }

    /// The index's model, dimension and salt.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Committed items.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether nothing is committed yet.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an item with this content hash is committed.
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
        self.vectors
            .seek(SeekFrom::Start((self.rows * dim * 4) as u64))?;
        self.vectors.write_all(&bytes)?;
        self.vectors.sync_data()?;
        let tx = self.conn.unchecked_transaction()?;
        let mut ids = Vec::with_capacity(batch.len());
        {
            let mut ins = tx.prepare_cached(&insert_sql())?;
            for (i, (m, _)) in batch.iter().enumerate() {
                let row = (self.rows + i) as i64;
                ins.execute(rusqlite::params_from_iter(insert_values(row, m)))?;
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

    /// Remember a file that could not be indexed (replacing an older failure of it): `kind`
    /// is a short class of the reason, for grouping failures (no path in it).
    pub fn record_error(&self, path: &str, kind: &str, reason: &str) -> Result<()> {
        super::errors::record(&self.conn, path, kind, reason)
    }

    /// Forget a file's failure: its content turned out to be indexed already.
    pub fn clear_error(&self, path: &str) -> Result<()> {
        super::errors::clear(&self.conn, path)
    }
}
