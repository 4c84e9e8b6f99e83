//! Reading an index: [`Reader`] (the committed rows, memory-mapped, plus SQLite lookups) and
//! [`Snapshot`] (the same rows with all metadata in memory, immutable and shared by a server's
//! requests). Both only ever see committed rows: SQLite's row count bounds the mapped vectors.
//! Each remembers the [`Version`] it was opened at (rows and metadata generation), so that a
//! cache can tell when new rows *or* rewritten labels make it stale.

use super::ann::{self, AnnSettings};
use super::columns::{row_to_item, select_list, Item};
use super::settings::Settings;
use super::{connect, version, Version, DB, VECTORS};
use crate::hnsw::{search_graph, Hnsw, IndexType};
use crate::{search_rows, Hit};
use anyhow::{ensure, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

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
    dir: PathBuf,
    ann: AnnSettings,
    /// Candidates per graph search; 0: the index's stored `hnsw_ef_search`.
    ef_search: AtomicUsize,
    /// Loaded on the first search that needs it (`None`: it could not be, scan instead).
    graph: OnceLock<Option<Arc<Hnsw>>>,
}

impl Rows {
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
    /// graph with an exact f32 re-rank when the index type says so, else an exact scan.
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
            None => search_rows(self.vectors(), dim, queries, k, keep),
        }
    }

    /// The vector of item `id`, if committed.
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
    /// Open the index folder `dir` read-only (any number of readers, alongside a writer).
    pub fn open(dir: &Path) -> Result<Self> {
        ensure!(
            dir.join(DB).is_file(),
            "{} is not a simcase index (no {DB}); build one with `simcase index`",
            dir.display()
        );
        let mut conn = connect(dir)?;
        let settings = Settings::read(&conn)?
            .with_context(|| format!("{} has no index settings", dir.display()))?;
        let ann = AnnSettings::read(&conn)
            .with_context(|| format!("{}: search settings", dir.display()))?;
        // Read before any metadata: labels rewritten after this make the version stale.
        let Version { rows, generation } = version(&mut conn)?;
        let file = File::open(dir.join(VECTORS))?;
        let need = rows * settings.dim * 4;
        ensure!(
            file.metadata()?.len() as usize >= need,
            "{}: vectors file shorter than its {rows} committed items",
            dir.display()
        );
        let map = if need > 0 {
            // SAFETY: the file is only ever appended to (or truncated past the committed rows,
            // which this view never reads), so the mapped bytes never change under us.
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
                generation,
                dir: dir.to_path_buf(),
                ann,
                ef_search: AtomicUsize::new(0),
                graph: OnceLock::new(),
            },
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
            .query_row(
                &format!("SELECT {} FROM items WHERE row = ?1", select_list()),
                [id as i64],
                row_to_item,
            )
            .optional()?)
    }

    /// Every committed item, by id.
    pub fn items(&self) -> Result<Vec<Item>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM items WHERE row < ?1 ORDER BY row",
            select_list()
        ))?;
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
    /// Items that share their pixel hash with others: each id's group, ids ascending
    /// (unique images and items without a hash are not kept).
    copies: std::collections::HashMap<u64, std::sync::Arc<[u64]>>,
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
        let mut by_hash: std::collections::HashMap<&str, Vec<u64>> = Default::default();
        for it in &items {
            if let Some(h) = it.meta.pixel_hash() {
                by_hash.entry(h).or_default().push(it.id);
            }
        }
        let mut copies = std::collections::HashMap::new();
        for ids in by_hash.into_values().filter(|ids| ids.len() > 1) {
            let ids: std::sync::Arc<[u64]> = ids.into();
            copies.extend(ids.iter().map(|&id| (id, ids.clone())));
        }
        Ok(Snapshot {
            view: self.view,
            items,
            copies,
        })
    }
}

impl Snapshot {
    /// Open `dir` and snapshot it.
    pub fn open(dir: &Path) -> Result<Self> {
        Reader::open(dir)?.snapshot()
    }

    /// The version of `dir` right now (cheap: one count and one lookup); a snapshot whose
    /// [`version`](Rows::version) differs is stale (new rows, or labels rewritten).
    pub fn committed_version(dir: &Path) -> Result<Version> {
        version(&mut connect(dir)?)
    }

    /// Item `id`, if it is in the snapshot.
    pub fn item(&self, id: u64) -> Option<&Item> {
        self.items.get(usize::try_from(id).ok()?)
    }

    /// Every item, by id.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The items holding the same decoded pixels as item `id` (its pixel hash), `id`
    /// included, ids ascending; empty when it has no copy (or no pixel hash). Built once per
    /// snapshot, so that a search looks copies up instead of scanning every item.
    pub fn copies_of(&self, id: u64) -> &[u64] {
        self.copies.get(&id).map_or(&[], |ids| ids)
    }
}
