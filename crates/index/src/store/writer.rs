//! The single writer of an index folder. Opening it takes the folder's lock, creates the
//! schema and settings of a new index, and truncates vectors that a killed run appended but
//! never committed; `add` appends and fsyncs a batch's vectors *before* committing its rows;
//! `update_labels` rewrites the labels of committed rows (never their vectors), a batch per
//! transaction that also bumps the metadata generation, so that snapshots notice.

use super::ann::{self, AnnSettings};
use super::columns::{
    create_items_sql, insert_sql, insert_values, row_to_item, select_list, update_sql,
    update_values, Disagreement, ItemMeta,
};
use super::settings::Settings;
use super::{bump_generation, connect, durable, item_count, VECTORS};
use crate::compact::{self, CompactFile, Precision};
use crate::hnsw::{Hnsw, HnswParams, IndexType};
use anyhow::{bail, ensure, Context, Result};
use rusqlite::{Connection, OptionalExtension};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(super) const LOCK: &str = "writer.lock";

/// Whether a content hash is committed (the unique index on `hash`).
pub(super) const CONTAINS_HASH_SQL: &str = "SELECT 1 FROM items WHERE hash = ?1";

/// Whether an item keyed `KEY` (?1: a content hash, or `HASH@axis` for one slicing of a
/// volume) was committed below row ?2: `KEY` itself or `KEY#…` (frames, slices), one lookup
/// and one range on the unique hash index. `+row` keeps SQLite from walking the primary key
/// instead; the few items of one file are checked against the row after the index finds them.
pub(super) const KEY_KNOWN_SQL: &str = "SELECT 1 FROM items
    WHERE (hash = ?1 OR (hash >= ?1 || '#' AND hash < ?1 || '$')) AND +row < ?2 LIMIT 1";

/// Whether any item of the file with content hash ?1 (`HASH`, `HASH#…`, `HASH@…`) was
/// committed below row ?2, through the unique hash index (as [`file_items_sql`]).
pub(super) const FILE_KNOWN_SQL: &str = "SELECT 1 FROM items
    WHERE (hash = ?1 OR (hash >= ?1 || '#' AND hash < ?1 || '$')
           OR (hash >= ?1 || '@' AND hash < ?1 || 'A')) AND +row < ?2 LIMIT 1";

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
    /// The compact copy of the committed rows, kept in step with each batch (None for f32).
    compact: Option<CompactFile>,
    precision: Precision,
    /// Search settings and the in-memory graph the writer keeps up to date (see [`super::ann`]).
    ann: AnnSettings,
    graph: Option<Hnsw>,
    /// Rows in the graph not yet in a checkpoint on disk.
    graph_unsaved: usize,
    last_checkpoint: Instant,
    checkpoint_every: Duration,
    /// Where graph builds run (None: rayon's global pool, every core).
    build_pool: Option<rayon::ThreadPool>,
    _lock: File,
}

/// Lookups by content hash of the items an index held when [`Writer::known_files`] made it
/// (one indexed `SELECT` each; safe to share between threads).
pub struct KnownFiles {
    conn: std::sync::Mutex<Connection>,
    /// Rows `0..below` were committed when it was made.
    below: i64,
}

impl KnownFiles {
    fn ask(&self, sql: &str, hash: &str) -> Result<bool> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = conn.prepare_cached(sql)?;
        Ok(st.exists(rusqlite::params![hash, self.below])?)
    }

    /// Whether an item keyed `key` was committed: a content hash (its items `HASH` or
    /// `HASH#frame`), or `HASH@axis` (the slices `HASH@axis#i` of one slicing of a volume).
    pub fn has_key(&self, key: &str) -> Result<bool> {
        self.ask(KEY_KNOWN_SQL, key)
    }

    /// Whether any item of the file with content hash `hash` was committed (any frame, slice
    /// or slicing axis).
    pub fn has_file(&self, hash: &str) -> Result<bool> {
        self.ask(FILE_KNOWN_SQL, hash)
    }
}

/// How often, at most, a writer checkpoints its graph while building or ingesting.
pub const GRAPH_CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

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

/// The folder's writer lock if nobody holds it (for a reader that repairs a cache file).
pub(super) fn try_lock(dir: &Path) -> Option<File> {
    let lock = OpenOptions::new().write(true).open(dir.join(LOCK)).ok()?;
    lock.try_lock().ok().map(|_| lock)
}

/// The first `rows` rows of `dim` of a vectors file, mapped read-only (`None` when empty).
pub(super) fn map_rows(file: &File, rows: usize, dim: usize) -> Result<Option<memmap2::Mmap>> {
    let need = rows * dim * 4;
    if need == 0 {
        return Ok(None);
    }
    // SAFETY: the committed rows of a vectors file are never rewritten, and nothing truncates
    // them while the map lives (the caller holds the writer lock).
    Ok(Some(unsafe {
        memmap2::MmapOptions::new().len(need).map(file)?
    }))
}

/// The f32 values of a map from [`map_rows`].
pub(super) fn as_f32(map: &Option<memmap2::Mmap>) -> &[f32] {
    match map {
        Some(m) => {
            // SAFETY: any bit pattern is a valid f32; the map is page-aligned (checked).
            let (pre, v, _) = unsafe { m.align_to::<f32>() };
            assert!(pre.is_empty(), "mmap is page-aligned");
            v
        }
        None => &[],
    }
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

/// The stored settings, checked against `model`/`dim` (and the salt [`super::settings::SALT_ENV`] gives, when
/// set), or new ones for a new index (with the salt of `like`, when given).
fn settings_for(
    conn: &Connection,
    dir: &Path,
    model: &str,
    dim: usize,
    like: Option<&Settings>,
) -> Result<Settings> {
    match Settings::read(conn)? {
        Some(s) => {
            ensure!(
                s.model == model && s.dim == dim,
                "{} holds {}-d {} embeddings, not {dim}-d {model}; use another --index",
                dir.display(),
                s.dim,
                s.model
            );
            s.check_env_salt(&dir.display())?;
            Ok(s)
        }
        None => {
            let s = Settings::new(model, dim, like)?;
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
        Self::open_like(dir, model, dim, None)
    }

    /// [`Writer::open`]; a new index takes the patient-key salt of `like` when given (the
    /// index a merge copies from), so that their keys join.
    pub(super) fn open_like(
        dir: &Path,
        model: &str,
        dim: usize,
        like: Option<&Settings>,
    ) -> Result<Self> {
        // A bad salt setting is refused before anything is created.
        super::settings::env_salt()?;
        durable::create_dir_synced(dir)?;
        let lock = lock(dir)?;
        let conn = connect(dir)?;
        create_schema(&conn)?;
        let settings = settings_for(&conn, dir, model, dim, like)?;
        let rows = item_count(&conn)?;
        let vectors = durable::open_or_create(dir, VECTORS)?;
        truncate_tail(dir, &vectors, rows, dim)?;
        let precision = compact::stored(&conn)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(super::DB).display()))?;
        compact::clean(dir, precision)?;
        let compact = match precision {
            Precision::F32 => None,
            p => {
                let map = map_rows(&vectors, rows, dim)?;
                Some(CompactFile::open(dir, p, dim, as_f32(&map))?)
            }
        };
        // index.sqlite and its WAL were created by SQLite; make their entries durable too.
        durable::sync_dir(dir)?;
        let ann = AnnSettings::read(&conn)
            .with_context(|| format!("{}: search settings", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            conn,
            settings,
            vectors,
            rows,
            compact,
            precision,
            ann,
            graph: None,
            graph_unsaved: 0,
            last_checkpoint: Instant::now(),
            checkpoint_every: GRAPH_CHECKPOINT_EVERY,
            build_pool: None,
            _lock: lock,
        })
    }

    /// The precision of the index's compact vectors (f32: none).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Convert the index to precision `p`, crash-safe: the new compact file is built from the
    /// committed f32 rows under a temporary name, fsynced and renamed into place, and only
    /// then is `p` recorded in `meta` (one transaction); the old compact file is removed
    /// after. A kill at any point leaves the index at the old precision or at `p`; leftovers
    /// are removed by the next [`Writer::open`]. Returns whether anything changed.
    pub fn set_precision(&mut self, p: Precision) -> Result<bool> {
        if p == self.precision {
            return Ok(false);
        }
        let dim = self.settings.dim;
        let built = match p {
            Precision::F32 => None,
            p => {
                let map = map_rows(&self.vectors, self.rows, dim)?;
                Some(CompactFile::build(&self.dir, p, dim, as_f32(&map))?)
            }
        };
        compact::record(&self.conn, p)?;
        self.compact = built;
        self.precision = p;
        compact::clean(&self.dir, p)?;
        Ok(true)
    }

    /// How this index searches.
    pub fn ann_settings(&self) -> AnnSettings {
        self.ann
    }

    /// Store a new index type and HNSW parameters. When the graph's own parameters (M,
    /// ef_construction) change, the saved graph is removed, to be rebuilt by
    /// [`sync_graph`](Self::sync_graph). Returns whether anything changed.
    pub fn set_ann(&mut self, index_type: IndexType, params: HnswParams) -> Result<bool> {
        params.check()?;
        let old = self.ann;
        let new = AnnSettings {
            index_type,
            params,
            quant: old.quant,
        };
        if new == old {
            return Ok(false);
        }
        new.write(&self.conn)?;
        self.ann = new;
        if old.params.m != params.m || old.params.ef_construction != params.ef_construction {
            self.graph = None;
            self.graph_unsaved = 0;
            ann::remove(&self.dir)?;
        }
        Ok(true)
    }

    /// Checkpoint the graph at most this often during builds and ingest (default
    /// [`GRAPH_CHECKPOINT_EVERY`]); a kill loses at most the rows added since, which the next
    /// open adds again from the vectors.
    pub fn set_graph_checkpoint_every(&mut self, every: Duration) {
        self.checkpoint_every = every;
    }

    /// Build the graph on `threads` threads (0: every core, the default). With 1, rows join
    /// the graph one at a time in row order, so the same rows always give the same graph, and
    /// searches the same approximate hits; with more, the graph depends on how the threads
    /// interleave (as good, not identical).
    pub fn set_graph_build_threads(&mut self, threads: usize) -> Result<()> {
        self.build_pool = match threads {
            0 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("graph-build-{i}"))
                    .build()
                    .context("starting the graph's build threads")?,
            ),
        };
        Ok(())
    }

    /// Run `f` (a graph build step) on the build threads.
    fn on_build_threads<T: Send>(
        pool: &Option<rayon::ThreadPool>,
        f: impl FnOnce() -> T + Send,
    ) -> T {
        match pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Rows the in-memory graph covers (`None`: no graph loaded).
    pub fn graph_rows(&self) -> Option<usize> {
        self.graph.as_ref().map(|g| g.covered())
    }

    /// When the index type calls for a graph: load the saved one (or start a new one if it is
    /// missing or unsound, with a `warn!`), add every committed row it lacks in parallel
    /// steps, checkpointing at most every [`set_graph_checkpoint_every`]
    /// (Self::set_graph_checkpoint_every) and at the end. `progress(covered, total)` runs after
    /// each step. A no-op for a flat index (or an `auto` one below the threshold).
    pub fn sync_graph(&mut self, mut progress: impl FnMut(usize, usize) + Send) -> Result<()> {
        if !self.ann.index_type.uses_graph(self.rows) {
            return Ok(());
        }
        let (dir, dim, rows) = (self.dir.clone(), self.settings.dim, self.rows);
        let map = ann::map_vectors(&dir, rows, dim)?;
        let data = ann::as_f32(&map);
        let graph = match self.graph.take() {
            Some(g) => g,
            None => ann::load_or_new(&dir, dim, &self.ann, rows, data)?,
        };
        let before = graph.covered();
        let every = self.checkpoint_every;
        let mut last = self.last_checkpoint;
        let res = Self::on_build_threads(&self.build_pool, || {
            graph.extend(0, data, |covered, total| {
                progress(covered, total);
                if last.elapsed() >= every && covered < total {
                    ann::checkpoint(&dir, &graph)?;
                    last = Instant::now();
                }
                Ok(())
            })
        });
        self.last_checkpoint = last;
        // Whatever was added stays: the next checkpoint saves it.
        self.graph_unsaved += graph.covered().saturating_sub(before);
        self.graph = Some(graph);
        res?;
        if self.graph_unsaved > 0 || !dir.join(ann::GRAPH).exists() {
            self.checkpoint_graph()?;
        }
        Ok(())
    }

    /// Write the in-memory graph to the folder now (atomically), if there is one.
    pub fn checkpoint_graph(&mut self) -> Result<()> {
        if let Some(g) = &self.graph {
            ann::checkpoint(&self.dir, g)?;
            self.graph_unsaved = 0;
            self.last_checkpoint = Instant::now();
        }
        Ok(())
    }

    /// After a commit: add the batch to the graph (building it first if the index has just
    /// grown into needing one), checkpointing when one is due. A graph failure is logged and
    /// the graph dropped (the next open rebuilds it): it never undoes a commit.
    fn graph_after_commit(&mut self, first: usize, vectors: &[f32]) {
        if !self.ann.index_type.uses_graph(self.rows) {
            return;
        }
        let res = match &self.graph {
            Some(g) => {
                Self::on_build_threads(&self.build_pool, || g.extend(first, vectors, |_, _| Ok(())))
                    .map(|()| {
                        self.graph_unsaved += vectors.len() / self.settings.dim;
                    })
            }
            None => self.sync_graph(|_, _| {}),
        }
        .and_then(|()| {
            if self.graph_unsaved > 0 && self.last_checkpoint.elapsed() >= self.checkpoint_every {
                self.checkpoint_graph()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            tracing::warn!(
                "{}: graph not updated ({e:#}); it is rebuilt on the next open",
                self.dir.display()
            );
            self.graph = None;
        }
    }

    /// The index's model, dimension and salt.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Record the arithmetic the vectors about to be added are embedded in (`f32`, `bf16`):
    /// an empty index takes it, an index of another precision becomes `mixed`
    /// ([`Settings::embedding_precision`]). Returns the new record when it changed.
    pub fn record_embedding_precision(&mut self, precision: &str) -> Result<Option<String>> {
        let rows = self.len();
        self.settings.record_precision(&self.conn, precision, rows)
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

    /// Per-file lookups of what is committed now, for skipping known files: on a connection
    /// of their own, so that decoding threads can ask while this writer commits, and fixed at
    /// this moment (rows committed later are not seen), as a set of every hash taken now would
    /// be, without loading one.
    pub fn known_files(&self) -> Result<KnownFiles> {
        Ok(KnownFiles {
            conn: std::sync::Mutex::new(connect(&self.dir)?),
            below: self.rows as i64,
        })
    }

    /// The SOP Instance UIDs of the committed items: what an incremental ingest from a PACS
    /// does not fetch again.
    pub fn sop_uids(&self) -> Result<std::collections::HashSet<String>> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT sop_uid FROM items WHERE sop_uid IS NOT NULL")?;
        let v = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// Content hashes of every committed item. Ingest asks [`known_files`](Self::known_files)
    /// per file instead (this loads every hash: 13.9 s and hundreds of MB at 1.6M rows); kept
    /// for `simcase bench open`, which times it.
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
        // Named, since what fails here is the disk (full, gone, read-only), not the data.
        let vectors = || format!("{}: appending to it", self.dir.join(VECTORS).display());
        self.vectors
            .seek(SeekFrom::Start((self.rows * dim * 4) as u64))
            .with_context(vectors)?;
        self.vectors.write_all(&bytes).with_context(vectors)?;
        self.vectors.sync_data().with_context(vectors)?;
        if let Some(c) = &mut self.compact {
            // After the f32 rows are durable and before the commit: a kill in between leaves
            // compact rows past the committed ones, which the next open cuts off.
            let values: Vec<f32> = batch.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            c.append(self.rows, &values)?;
        }
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
        tx.commit().with_context(|| {
            format!(
                "{}: committing {} items",
                self.dir.join(super::DB).display(),
                batch.len()
            )
        })?;
        let first = self.rows;
        self.rows += batch.len();
        if let Some(c) = &mut self.compact {
            if c.needs_refit(self.rows) {
                let map = map_rows(&self.vectors, self.rows, dim)?;
                c.refit_if_grown(&self.dir, as_f32(&map))?;
            }
        }
        if self.ann.index_type.uses_graph(self.rows) {
            let flat: Vec<f32> = batch.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            self.graph_after_commit(first, &flat);
        }
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

    /// Forget the failures of `kind` at the folder `root` and below it (before a walk of
    /// `root` records what still fails); returns how many.
    pub fn clear_errors_under(&self, kind: &str, root: &str) -> Result<usize> {
        super::errors::clear_under(&self.conn, kind, root)
    }
}

impl Drop for Writer {
    /// Save the graph's unsaved rows (a kill skips this: the periodic checkpoints and the
    /// next open's catch-up cover that).
    fn drop(&mut self) {
        if self.graph_unsaved > 0 {
            if let Err(e) = self.checkpoint_graph() {
                tracing::warn!("{}: graph not saved ({e:#})", self.dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(hash: &str) -> (ItemMeta, Vec<f32>) {
        let m = ItemMeta {
            path: format!("/a/{hash}.png"),
            hash: hash.into(),
            format: "png".into(),
            ..Default::default()
        };
        (m, vec![1.0])
    }

    /// The lookups answer what the set of every stored hash (with `#part` cut, the way ingest
    /// used it) answers, for plain files, frames, the slices of one axis and unknown content,
    /// and do not see rows committed after they were made.
    #[test]
    fn known_files_answer_as_the_set_of_every_hash() {
        let d = std::env::temp_dir().join(format!("simcase-known-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut w = Writer::open(&d, "m", 1).unwrap();
        let stored = [
            "aa",
            "bb#0",
            "bb#1",
            "cc@axial#0",
            "cc@axial#7",
            "dd@sagittal#2",
        ];
        w.add(&stored.map(item)).unwrap();
        let known = w.known_files().unwrap();
        // Committed after the lookups were made: invisible to them, as to a set taken before.
        w.add(&["ee".to_string(), "ff#3".into()].map(|h| item(&h)))
            .unwrap();
        let set: std::collections::HashSet<String> = stored
            .iter()
            .map(|h| h.split('#').next().unwrap().to_string())
            .collect();
        let files: std::collections::HashSet<&str> = set
            .iter()
            .map(|h| h.split(['#', '@']).next().unwrap())
            .collect();
        let keys = [
            "aa",
            "a",
            "aaa",
            "bb",
            "b",
            "cc",
            "cc@axial",
            "cc@coronal",
            "cc@axia",
            "dd",
            "dd@sagittal",
            "ee",
            "ff",
            "zz",
            "",
        ];
        for key in keys {
            assert_eq!(
                known.has_key(key).unwrap(),
                set.contains(key),
                "key {key:?}"
            );
            if !key.contains('@') {
                // Ingest asks by file content hash (no axis).
                assert_eq!(
                    known.has_file(key).unwrap(),
                    files.contains(key),
                    "file {key:?}"
                );
            }
        }
        assert!(w.known_files().unwrap().has_key("ff").unwrap());
        assert!(w.known_files().unwrap().has_file("ee").unwrap());
        drop((known, w));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Both lookups search the unique hash index (no `SCAN`, and not the primary key).
    #[test]
    fn known_file_lookups_use_the_hash_index() {
        let d = std::env::temp_dir().join(format!("simcase-known-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut w = Writer::open(&d, "m", 1).unwrap();
        w.add(&[item("aa")]).unwrap();
        for sql in [KEY_KNOWN_SQL, FILE_KNOWN_SQL] {
            let mut st = w
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let plan: Vec<String> = st
                .query_map(rusqlite::params!["aa", 1], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            eprintln!("{plan:?}");
            assert!(
                plan.iter().all(|p| !p.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
            let searches: Vec<&String> = plan.iter().filter(|p| p.starts_with("SEARCH")).collect();
            assert!(!searches.is_empty(), "{sql}: {plan:?}");
            assert!(
                searches.iter().all(|p| p.contains("(hash")),
                "{sql}: not through the hash index: {plan:?}"
            );
        }
        drop(w);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Start-up cost of skipping known files, at `SIMCASE_KNOWN_ROWS` rows (default 400k,
    /// 64-hex hashes like ingest's): loading every hash into a set against making the
    /// per-file lookups, and the cost of one lookup.
    /// `cargo test --release -p simcase-index --lib -- --ignored --nocapture measure_known`
    #[test]
    #[ignore]
    fn measure_known_file_lookups() {
        let n: usize = std::env::var("SIMCASE_KNOWN_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400_000);
        let d = std::env::temp_dir().join(format!("simcase-known-m-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut w = Writer::open(&d, "m", 1).unwrap();
        let hash = |i: usize| format!("{:064x}", (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for start in (0..n).step_by(20_000) {
            let batch: Vec<_> = (start..(start + 20_000).min(n))
                .map(|i| item(&hash(i)))
                .collect();
            w.add(&batch).unwrap();
        }
        let t = std::time::Instant::now();
        let set = w.hashes().unwrap();
        let load = t.elapsed().as_secs_f64();
        assert_eq!(set.len(), n);
        drop(set);
        let t = std::time::Instant::now();
        let known = w.known_files().unwrap();
        let open = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let m = 20_000;
        let mut found = 0;
        for i in 0..m {
            // Half known, half unknown; both lookups ingest makes for a new file.
            let h = if i % 2 == 0 {
                hash(i * n / m)
            } else {
                hash(n + i)
            };
            found += known.has_key(&h).unwrap() as usize;
            found += known.has_key(&format!("{h}@axial")).unwrap() as usize;
        }
        let per = t.elapsed().as_secs_f64() / m as f64;
        assert_eq!(found, m / 2);
        eprintln!(
            "{n} rows: hashes() {load:.2} s; known_files() {:.1} ms, then {:.1} µs per file \
             (two lookups)",
            open * 1e3,
            per * 1e6
        );
        drop((known, w));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
