//! The single writer of an index folder. Opening it takes the folder's lock, creates the
//! schema and settings of a new index, and truncates vectors that a killed run appended but
//! never committed; `add` appends and fsyncs a batch's vectors *before* committing its rows;
//! `update_labels` rewrites the labels of committed rows (never their vectors), a batch per
//! transaction that also bumps the metadata generation, so that snapshots notice.

use super::columns::{
    create_items_sql, insert_sql, insert_values, row_to_item, select_list, update_sql,
    update_values, Disagreement, ItemMeta,
};
use super::settings::Settings;
use super::{bump_generation, connect, durable, item_count, VECTORS};
use anyhow::{bail, ensure, Result};
use rusqlite::{Connection, OptionalExtension};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const LOCK: &str = "writer.lock";

/// Whether a content hash is committed (the unique index on `hash`).
pub(super) const CONTAINS_HASH_SQL: &str = "SELECT 1 FROM items WHERE hash = ?1";

/// A file's failure, forgotten when it indexes (the primary key of `errors`).
pub(super) const DELETE_ERROR_SQL: &str = "DELETE FROM errors WHERE path = ?1";

/// The items of one file: `HASH`, `HASH#…` and `HASH@…`: two range scans and a lookup on the
/// unique hash index (`$` and `A` follow `#` and `@` in ASCII).
pub(super) fn file_items_sql() -> String {
    format!(
        "SELECT {} FROM items WHERE hash = ?1
           OR (hash >= ?1 || '#' AND hash < ?1 || '$')
           OR (hash >= ?1 || '@' AND hash < ?1 || 'A') ORDER BY row",
        select_list()
    )
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

/// What a manifest row says about a file whose content may already be indexed.
#[derive(Clone, Debug, Default)]
pub struct LabelUpdate {
    /// The file's content hash, without a part suffix: every item of the file (`HASH`,
    /// frames `HASH#i`, slices `HASH@axis#i`) gets the labels.
    pub hash: String,
    /// The labels: the [`Column::MANIFEST`](super::Column::MANIFEST) values and `extra`
    /// columns; the rest is ignored.
    pub labels: ItemMeta,
}

/// What [`Writer::update_labels`] did for one [`LabelUpdate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelOutcome {
    /// Stored items of the file.
    pub items: usize,
    /// Items whose labels were rewritten.
    pub changed: usize,
    /// The stored path of the file's first item (for messages).
    pub path: String,
    /// Stored values that differ from the manifest's, once per field (kept, unless relabel).
    pub disagreements: Vec<Disagreement>,
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
            .query_row(CONTAINS_HASH_SQL, [hash], |_| Ok(()))
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
            let mut del = tx.prepare_cached(DELETE_ERROR_SQL)?;
            for (m, _) in batch {
                del.execute([&m.path])?;
            }
        }
        tx.commit()?;
        self.rows += batch.len();
        Ok(ids)
    }

    /// Merge each update's labels into the stored items of its file (see
    /// [`ItemMeta::merge_labels`]; `relabel`: the manifest wins where they differ). One
    /// transaction for the batch, which also bumps the metadata generation when anything
    /// changed: all of it is visible after return, or none after a crash. Vectors are never
    /// touched. Outcomes are in the order of `updates`.
    pub fn update_labels(
        &mut self,
        updates: &[LabelUpdate],
        relabel: bool,
    ) -> Result<Vec<LabelOutcome>> {
        let mut out = Vec::with_capacity(updates.len());
        if updates.is_empty() {
            return Ok(out);
        }
        let tx = self.conn.unchecked_transaction()?;
        let mut any = false;
        {
            let mut sel = tx.prepare_cached(&file_items_sql())?;
            let mut upd = tx.prepare_cached(&update_sql())?;
            for u in updates {
                let mut o = LabelOutcome::default();
                if u.hash.is_empty() {
                    out.push(o);
                    continue;
                }
                let items = sel
                    .query_map([&u.hash], row_to_item)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for mut it in items {
                    o.items += 1;
                    if o.path.is_empty() {
                        o.path = it.meta.path.clone();
                    }
                    let mut d = Vec::new();
                    if it.meta.merge_labels(&u.labels, relabel, &mut d) {
                        upd.execute(rusqlite::params_from_iter(update_values(
                            it.id as i64,
                            &it.meta,
                        )))?;
                        o.changed += 1;
                    }
                    for x in d {
                        if !o.disagreements.iter().any(|y| y.field == x.field) {
                            o.disagreements.push(x);
                        }
                    }
                }
                any |= o.changed > 0;
                out.push(o);
            }
        }
        if any {
            bump_generation(&tx)?;
        }
        tx.commit()?;
        Ok(out)
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
