//! Reading an index: [`Reader`] (the committed rows, memory-mapped, plus SQLite lookups) and
//! [`Snapshot`] (the same rows with the metadata that searches filter and group on in memory,
//! coded, immutable and shared by a server's requests). Both only ever see committed rows: SQLite's row count bounds the mapped vectors.
//! Each remembers the [`Version`] it was opened at (rows and metadata generation), so that a
//! cache can tell when new rows *or* rewritten labels make it stale.

use super::ann::{self, AnnSettings};
use super::columns::{row_to_item, select_list, Column, Item};
use super::settings::Settings;
use super::table::{Codes, CodesBuilder, Table, TableBuilder, CODED};
use super::{cache, connect_reader, generation, item_count, version, Version, DB, VECTORS};
use crate::compact::{self, CompactRows, Precision};
use crate::hnsw::{search_graph, Hnsw, IndexType};
use crate::{search_rows, Hit};
use anyhow::{ensure, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};

/// One item by row id.
pub(super) fn item_sql() -> String {
    format!("SELECT {} FROM items WHERE row = ?1", select_list())
}

/// Every item below a row count, by id.
pub(super) fn items_sql() -> String {
    format!(
        "SELECT {} FROM items WHERE row < ?1 ORDER BY row",
        select_list()
    )
}

/// The committed item of a content hash.
pub(super) const ID_BY_HASH_SQL: &str = "SELECT row FROM items WHERE hash = ?1 AND row < ?2";

/// What a snapshot codes, by id, for rows `?1..?2`.
pub(super) fn table_sql() -> String {
    let cols: Vec<&str> = CODED.iter().map(|c| c.name()).collect();
    format!(
        "SELECT row, format, {}, extra FROM items WHERE row >= ?1 AND row < ?2 ORDER BY row",
        cols.join(", ")
    )
}

/// Every item's `extra`, by id (an `extra` column that the snapshot does not code).
pub(super) const EXTRA_SQL: &str = "SELECT row, extra FROM items WHERE row < ?1 ORDER BY row";

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
    generation: u64,
    /// The compact rows scanned first when there is no graph (None: f32, exact scan).
    compact: Option<CompactRows>,
    dir: PathBuf,
    ann: AnnSettings,
    /// Candidates per graph search; 0: the index's stored `hnsw_ef_search`.
    ef_search: AtomicUsize,
    /// Loaded on the first search that needs it (`None`: it could not be, scan instead).
    graph: OnceLock<Option<Arc<Hnsw>>>,
}

impl Rows {
    /// The precision searched first (f32: exact scan only).
    pub fn precision(&self) -> Precision {
        self.compact
            .as_ref()
            .map_or(Precision::F32, |c| c.precision())
    }

    /// The compact rows, for an index that has them.
    pub fn compact(&self) -> Option<&CompactRows> {
        self.compact.as_ref()
    }

    /// The index's model, dimension and salt.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Committed rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether nothing is committed.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows and metadata generation this view was opened at.
    pub fn version(&self) -> Version {
        Version {
            rows: self.rows,
            generation: self.generation,
        }
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

    /// How this index searches (type, HNSW parameters), from its `meta` table.
    pub fn ann_settings(&self) -> AnnSettings {
        self.ann
    }

    /// Candidates fetched per graph search from now on (0: the index's stored default).
    pub fn set_ef_search(&self, ef: usize) {
        self.ef_search.store(ef, Ordering::Relaxed);
    }

    /// The graph searches go through, loading (or building in memory) it on first use; `None`
    /// for a flat index, one too small for `auto`, or one whose graph could not be made (the
    /// reason is logged once: searches scan exactly instead).
    ///
    /// `auto` uses a graph only once a writer has saved one (`simcase index` builds it when the
    /// index reaches the threshold), so that a reader never spends minutes building one for
    /// an index nobody asked to convert; `hnsw` builds a missing one in memory.
    pub fn graph(&self) -> Option<&Arc<Hnsw>> {
        if !self.ann.index_type.uses_graph(self.rows)
            || (self.ann.index_type == IndexType::Auto && !self.dir.join(ann::GRAPH_META).exists())
        {
            return None;
        }
        self.graph
            .get_or_init(|| {
                let dim = self.settings.dim;
                match ann::shared_graph(
                    &self.dir,
                    &self.settings,
                    &self.ann,
                    self.vectors(),
                    self.rows,
                ) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        tracing::warn!(
                            "{}: no graph ({e:#}); searching {}-d rows exactly",
                            self.dir.display(),
                            dim
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Top-`k` rows by inner product for each query, best first, ties by ascending row (the
    /// contract of [`VectorIndex::search`](crate::VectorIndex::search)): through the HNSW
    /// graph with an exact f32 re-rank when the index type says so, else a scan: of the
    /// compact rows, re-ranked exactly with the f32 rows, on a compact index, else exact.
    /// `keep` restricts the rows (applied during the graph walk).
    pub fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Vec<Vec<Hit>> {
        let dim = self.settings.dim;
        match self.graph() {
            Some(g) => {
                let ef = match self.ef_search.load(Ordering::Relaxed) {
                    0 => self.ann.params.ef_search,
                    n => n,
                };
                search_graph(g, self.vectors(), self.rows, queries, k, ef, keep)
            }
            None => match &self.compact {
                Some(c) => c.search(self.vectors(), queries, k, keep),
                None => search_rows(self.vectors(), dim, queries, k, keep),
            },
        }
    }

    /// The vector of item `id`, if committed.
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        let (d, i) = (self.settings.dim, usize::try_from(id).ok()?);
        self.vectors()
            .get(i.checked_mul(d)?..(i + 1).checked_mul(d)?)
    }
}

/// The compact rows of `dir`, mapped; a file that is missing or fails its checks is rebuilt
/// from the f32 rows (one warning): on disk when no writer holds the folder, else in memory
/// for this reader (the writer's next open repairs the file).
fn open_compact(dir: &Path, view: &Rows, p: Precision) -> Result<CompactRows> {
    let dim = view.settings.dim;
    let why = match compact::map(dir, p, dim, view.rows) {
        Ok(c) => return Ok(c),
        Err(why) => why,
    };
    let name = p.file_name().unwrap_or_default();
    tracing::warn!(
        "{}: {why}; rebuilding it from {VECTORS}",
        dir.join(name).display()
    );
    if let Some(_lock) = super::writer::try_lock(dir) {
        let built = compact::CompactFile::build(dir, p, dim, view.vectors());
        if let Ok(c) = built
            .map_err(|e| e.to_string())
            .and_then(|_| compact::map(dir, p, dim, view.rows))
        {
            return Ok(c);
        }
    }
    CompactRows::from_rows(p, view.vectors(), dim)
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
    /// Open the index folder `dir` read-only (any number of readers, alongside a writer).
    pub fn open(dir: &Path) -> Result<Self> {
        ensure!(
            dir.join(DB).is_file(),
            "{} is not a simcase index (no {DB}); build one with `simcase index`",
            dir.display()
        );
        let mut conn = connect_reader(dir)?;
        let settings = Settings::read(&conn)?
            .with_context(|| format!("{} has no index settings", dir.display()))?;
        let ann = AnnSettings::read(&conn)
            .with_context(|| format!("{}: search settings", dir.display()))?;
        // Read before any metadata: labels rewritten after this make the version stale.
        let v = version(&mut conn)?;
        let view = map_rows(dir, &conn, settings, ann, v)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            conn,
            view,
        })
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Item `id`'s metadata, if it exists.
    pub fn item(&self, id: u64) -> Result<Option<Item>> {
        Ok(self
            .conn
            .query_row(&item_sql(), [id as i64], row_to_item)
            .optional()?)
    }

    /// Every committed item, by id.
    pub fn items(&self) -> Result<Vec<Item>> {
        let mut st = self.conn.prepare(&items_sql())?;
        let v = st
            .query_map([self.view.rows as i64], row_to_item)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// Files that could not be indexed, with their reasons, by path.
    pub fn errors(&self) -> Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT path, reason FROM errors ORDER BY path")?;
        let v = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    /// The committed item with this content hash.
    pub fn id_by_hash(&self, hash: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_row(ID_BY_HASH_SQL, params![hash, self.view.rows as i64], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|r| r as u64))
    }
}

/// An immutable, thread-safe view of an index at one committed row count: the vectors stay
/// memory-mapped (shared by every request, never copied), the fields that searches filter and
/// group on are held in memory as dictionary codes (a few bytes per row: see [`Codes`]), and
/// the rest of an item (path, UIDs, `extra`) is read from SQLite by row id when a page shows
/// it, inside one read transaction held for the snapshot's life, so that every read sees the
/// index as it was when the snapshot was taken. A server swaps in a fresh snapshot when a
/// writer has committed more rows or rewritten labels.
pub struct Snapshot {
    view: Rows,
    dir: PathBuf,
    table: Table,
    opened: MetadataOpen,
    /// In a read transaction begun when the snapshot was taken.
    conn: Mutex<Connection>,
}

impl Reader {
    /// Freeze this reader's committed rows into a [`Snapshot`]: its metadata codes are read
    /// in one read transaction, which the snapshot keeps (rows committed or labels rewritten
    /// since the reader was opened are included, and the vectors mapped to match).
    pub fn snapshot(self) -> Result<Snapshot> {
        let Reader {
            dir,
            conn,
            mut view,
        } = self;
        conn.execute_batch("BEGIN DEFERRED")?;
        // The first read starts the transaction: everything below belongs to this moment.
        let v = Version {
            generation: generation(&conn)?,
            rows: item_count(&conn)?,
        };
        if v != view.version() {
            let ann = view.ann;
            view = map_rows(&dir, &conn, view.settings, ann, v)?;
        }
        let id = cache::identity(&view.settings);
        let (table, opened) = open_table(&dir, &conn, id, v)?;
        Ok(Snapshot {
            view,
            dir,
            table,
            opened,
            conn: Mutex::new(conn),
        })
    }
}

/// How a snapshot got its coded metadata: from the cache file, from SQLite, or both (for
/// logs, benchmarks and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataOpen {
    /// Rows whose metadata came from the cache file (`columns.cache`).
    pub cached_rows: usize,
    /// Rows read from SQLite (all of them when there was no usable cache).
    pub read_rows: usize,
    /// Bytes of the cache file this open wrote (0: none written).
    pub wrote_cache: u64,
    /// Time spent writing it.
    pub write_time: std::time::Duration,
}

/// The coded metadata of rows `0..v.rows`, from the cache file where it is valid, the rest
/// from SQLite (in `conn`'s read transaction); writes a fresh cache when that is worth it and
/// the folder is writable (see [`super::cache`]).
fn open_table(dir: &Path, conn: &Connection, id: u64, v: Version) -> Result<(Table, MetadataOpen)> {
    let path = dir.join(cache::FILE);
    let (base, newer) = match cache::load(dir, id, v.generation, v.rows) {
        Ok(t) => (Some(t), false),
        Err(cache::Miss::Absent) => {
            if v.rows > 0 {
                tracing::debug!(
                    "{}: no metadata cache yet; reading {} rows from {DB}",
                    dir.display(),
                    v.rows
                );
            }
            (None, false)
        }
        Err(cache::Miss::Newer(n)) => {
            tracing::debug!(
                "{}: covers {n} rows, this snapshot {}; reading {DB}",
                path.display(),
                v.rows
            );
            (None, true)
        }
        Err(cache::Miss::Bad(why)) => {
            tracing::warn!("{}: {why}; rebuilding it from {DB}", path.display());
            (None, false)
        }
    };
    let cached = base.as_ref().map(|t| t.rows);
    let mut opened = MetadataOpen {
        cached_rows: cached.unwrap_or(0),
        read_rows: v.rows - cached.unwrap_or(0),
        wrote_cache: 0,
        write_time: std::time::Duration::ZERO,
    };
    let mut table = read_table(conn, base, v.rows)
        .with_context(|| format!("{}: reading item metadata", dir.join(DB).display()))?;
    let read_only = std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly());
    if !newer && cache::worth_rewriting(cached, v.rows) {
        if read_only {
            tracing::debug!(
                "{}: read-only folder; not writing {}",
                dir.display(),
                cache::FILE
            );
        } else {
            let t = std::time::Instant::now();
            match cache::write(dir, id, &table, v.generation) {
                Ok(bytes) => {
                    opened.wrote_cache = bytes;
                    opened.write_time = t.elapsed();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::PermissionDenied
                            | std::io::ErrorKind::ReadOnlyFilesystem
                    ) =>
                {
                    tracing::debug!("{}: not writable ({e}); not cached", path.display())
                }
                Err(e) => {
                    tracing::warn!("{}: could not write it ({e}); not cached", path.display())
                }
            }
        }
    }
    // The pixel keys only serve writing the cache and extending a mapped one: drop a copy
    // held in memory.
    if !matches!(table.pixels, super::table::Pixels::Mapped { .. }) {
        table.pixels = super::table::Pixels::Empty;
    }
    Ok((table, opened))
}

/// The coded metadata of rows `0..rows`: `base`'s rows, then the rest read from SQLite
/// (which must be rows `base.rows..rows`, in order).
fn read_table(conn: &Connection, base: Option<Table>, rows: usize) -> Result<Table> {
    let mut b = match base {
        Some(t) => TableBuilder::extend(t),
        None => TableBuilder::new(),
    };
    let mut st = conn.prepare(&table_sql())?;
    let mut q = st.query([b.rows() as i64, rows as i64])?;
    let mut extra = serde_json::Map::new();
    while let Some(r) = q.next()? {
        let id: i64 = r.get(0)?;
        ensure!(
            id == b.rows() as i64,
            "item rows are not contiguous (row {id} where {} was expected)",
            b.rows()
        );
        let mut values: [Option<&str>; CODED.len()] = [None; CODED.len()];
        for (i, v) in values.iter_mut().enumerate() {
            *v = r.get_ref(2 + i)?.as_str_or_null()?;
        }
        extra.clear();
        if let Some(e) = r.get_ref(2 + CODED.len())?.as_str_or_null()? {
            // As Reader::items: unreadable extra metadata reads as none.
            if let Ok(m) = serde_json::from_str(e) {
                extra = m;
            }
        }
        b.push(r.get_ref(1)?.as_str()?, &values, &extra);
    }
    ensure!(
        b.rows() == rows,
        "item rows are not contiguous ({} of {rows} rows)",
        b.rows()
    );
    Ok(b.finish())
}

/// Map the first `v.rows` vectors of `dir`.
fn map_rows(
    dir: &Path,
    conn: &Connection,
    settings: Settings,
    ann: AnnSettings,
    v: Version,
) -> Result<Rows> {
    let file = File::open(dir.join(VECTORS))?;
    let need = v.rows * settings.dim * 4;
    ensure!(
        file.metadata()?.len() as usize >= need,
        "{}: vectors file shorter than its {} committed items",
        dir.display(),
        v.rows
    );
    let map = if need > 0 {
        // SAFETY: the file is only ever appended to (or truncated past the committed rows,
        // which this view never reads), so the mapped bytes never change under us.
        Some(unsafe { memmap2::MmapOptions::new().len(need).map(&file)? })
    } else {
        None
    };
    let mut view = Rows {
        settings,
        map,
        rows: v.rows,
        generation: v.generation,
        compact: None,
        dir: dir.to_path_buf(),
        ann,
        ef_search: AtomicUsize::new(0),
        graph: OnceLock::new(),
    };
    let precision =
        compact::stored(conn).map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(DB).display()))?;
    if precision != Precision::F32 {
        view.compact = Some(open_compact(dir, &view, precision)?);
    }
    Ok(view)
}

impl Snapshot {
    /// Open `dir` and snapshot it.
    pub fn open(dir: &Path) -> Result<Self> {
        Reader::open(dir)?.snapshot()
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version of `dir` right now (cheap: two lookups); a snapshot whose
    /// [`version`](Rows::version) differs is stale (new rows, or labels rewritten).
    pub fn committed_version(dir: &Path) -> Result<Version> {
        version(&mut connect_reader(dir)?)
    }

    /// Item `id`, if it is in the snapshot, read from SQLite as the snapshot saw it.
    pub fn item(&self, id: u64) -> Result<Option<Item>> {
        if id >= self.view.rows as u64 {
            return Ok(None);
        }
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("a reader of {} panicked", self.dir.display()))?;
        let mut st = conn.prepare_cached(&item_sql())?;
        Ok(st.query_row([id as i64], row_to_item).optional()?)
    }

    /// The snapshot's first item of this SOP Instance UID (an archived instance; its frames
    /// share it). A scan of the items table: UIDs are not held in memory.
    pub fn id_by_sop_uid(&self, uid: &str) -> Result<Option<u64>> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("a reader of {} panicked", self.dir.display()))?;
        let mut st =
            conn.prepare_cached("SELECT min(row) FROM items WHERE sop_uid = ?1 AND row < ?2")?;
        Ok(st
            .query_row(params![uid, self.view.rows as i64], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .map(|r| r as u64))
    }

    /// The snapshot's codes of `column` (every column but [`Column::SopUid`], which is unique
    /// per item and neither filtered nor grouped on).
    pub fn column(&self, column: Column) -> Option<&Codes> {
        self.table.columns.get(&column)
    }

    /// The snapshot's codes of the items' formats.
    pub fn formats(&self) -> &Codes {
        &self.table.format
    }

    /// The codes of the string values of `extra` column `key` (values that are not strings
    /// count as none): held for `study_date`, `volume` and up to [`MAX_EXTRA_COLUMNS`](crate::store::MAX_EXTRA_COLUMNS) others
    /// of at most [`MAX_EXTRA_VALUES`](crate::store::MAX_EXTRA_VALUES) values each; any other key is read from SQLite (a pass
    /// over the rows, for this call only). A key no item has gives an empty column.
    pub fn extra(&self, key: &str) -> Result<Cow<'_, Codes>> {
        if let Some(c) = self.table.extra.get(key) {
            return Ok(Cow::Borrowed(c));
        }
        if !self.table.uncoded.contains(key) {
            return Ok(Cow::Owned(Codes::empty()));
        }
        let conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("a reader of {} panicked", self.dir.display()))?;
        let mut st = conn.prepare(EXTRA_SQL)?;
        let mut q = st.query([self.view.rows as i64])?;
        let mut b = CodesBuilder::default();
        while let Some(r) = q.next()? {
            let row: i64 = r.get(0)?;
            let Some(e) = r.get_ref(1)?.as_str_or_null()? else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(e)
            else {
                continue;
            };
            if let Some(v) = m.get(key).and_then(|v| v.as_str()) {
                b.set(row as usize, Some(v));
            }
        }
        Ok(Cow::Owned(b.finish(self.view.rows)))
    }

    /// Every key of any item's `extra` metadata.
    pub fn extra_keys(&self) -> &BTreeSet<String> {
        &self.table.extra_keys
    }

    /// Heap bytes of the in-memory metadata (codes, dictionaries and copy groups; not what
    /// is mapped from the cache file), for benchmarks.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    /// How this snapshot got its coded metadata (cache file, SQLite, both).
    pub fn metadata_open(&self) -> MetadataOpen {
        self.opened
    }

    /// The items holding the same decoded pixels as item `id` (its pixel hash), `id`
    /// included, ids ascending; empty when it has no copy (or no pixel hash). Built once per
    /// snapshot, so that a search looks copies up instead of scanning every item.
    pub fn copies_of(&self, id: u64) -> &[u64] {
        self.table.copies.of(id)
    }
}
