//! The HNSW graph of an index folder: a rebuildable cache of `vectors.f32`, never the truth.
//!
//! `graph.usearch` (usearch's format) holds rows `0..rows` of the index; `graph.json` (the
//! sidecar) says which rows, the dimension, storage, parameters and i8 scale it was built
//! with, and the graph file's length and CRC32. Both are written to temporary files, fsynced,
//! renamed into place (graph first) and the folder synced, so a kill leaves either the last
//! checkpoint or a pair whose checksum disagrees. On open a missing, short, corrupt or
//! mismatched graph is rebuilt from the vectors (one `warn!`), and rows committed after its
//! `rows` are added; only the writer ever writes it. Readers in one process share one
//! in-memory graph per index (grown as snapshots see more rows), so a server's snapshot
//! swaps do not reload it.

use super::settings::Settings;
use super::{durable, VECTORS};
use crate::hnsw::{Hnsw, HnswParams, IndexType, Quant};
use anyhow::{bail, ensure, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// The graph file of an index folder.
pub const GRAPH: &str = "graph.usearch";
/// Its sidecar.
pub const GRAPH_META: &str = "graph.json";

/// How an index searches: stored in its `meta` table (absent: auto and the defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnnSettings {
    /// Flat, HNSW or auto by size.
    pub index_type: IndexType,
    /// Graph parameters (`ef_search` is the default of searches).
    pub params: HnswParams,
    /// How the graph stores vectors (from the index's `precision`: f16 for f16, else i8).
    pub quant: Quant,
}

fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

impl AnnSettings {
    /// The stored settings (defaults for absent keys).
    pub fn read(conn: &Connection) -> Result<Self> {
        let mut s = Self::default();
        if let Some(v) = get(conn, "index_type")? {
            s.index_type = v.parse().context("index settings")?;
        }
        let num = |key: &str, dflt: usize| -> Result<usize> {
            match get(conn, key)? {
                Some(v) => v
                    .parse()
                    .with_context(|| format!("bad {key} {v:?} in index settings")),
                None => Ok(dflt),
            }
        };
        s.params = HnswParams {
            m: num("hnsw_m", s.params.m)?,
            ef_construction: num("hnsw_ef_construction", s.params.ef_construction)?,
            ef_search: num("hnsw_ef_search", s.params.ef_search)?,
        };
        s.params.check()?;
        s.quant = match get(conn, "precision")?.as_deref() {
            Some("f16") => Quant::F16,
            _ => Quant::I8,
        };
        Ok(s)
    }

    /// Store them (one transaction).
    pub fn write(&self, conn: &Connection) -> Result<()> {
        self.params.check()?;
        let tx = conn.unchecked_transaction()?;
        for (k, v) in [
            ("index_type", self.index_type.to_string()),
            ("hnsw_m", self.params.m.to_string()),
            (
                "hnsw_ef_construction",
                self.params.ef_construction.to_string(),
            ),
            ("hnsw_ef_search", self.params.ef_search.to_string()),
        ] {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// What `graph.json` records.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sidecar {
    format: u32,
    rows: usize,
    dim: usize,
    quant: String,
    m: usize,
    ef_construction: usize,
    scale: f32,
    bytes: u64,
    crc32: u32,
}

const FORMAT: u32 = 1;

fn crc_of(path: &Path) -> Result<(u64, u32)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((n, h.finalize()))
}

/// Write `g` as the folder's graph, atomically (temp, fsync, rename, folder sync).
pub fn checkpoint(dir: &Path, g: &Hnsw) -> Result<()> {
    let tmp = dir.join(format!("{GRAPH}.tmp"));
    let tmp_meta = dir.join(format!("{GRAPH_META}.tmp"));
    let rows = g.covered();
    g.save(&tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    let (bytes, crc32) = crc_of(&tmp)?;
    let p = g.params();
    let side = Sidecar {
        format: FORMAT,
        rows,
        dim: g.dim(),
        quant: g.quant().to_string(),
        m: p.m,
        ef_construction: p.ef_construction,
        scale: g.scale(),
        bytes,
        crc32,
    };
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp_meta)
            .with_context(|| format!("writing {}", tmp_meta.display()))?;
        f.write_all(&serde_json::to_vec_pretty(&side)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(GRAPH))
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    std::fs::rename(&tmp_meta, dir.join(GRAPH_META))
        .with_context(|| format!("renaming {} into place", tmp_meta.display()))?;
    durable::sync_dir(dir)
}

/// Why the saved graph cannot be used, or the graph (covering `rows ≤ committed` rows).
fn try_load(dir: &Path, dim: usize, want: &AnnSettings, committed: usize) -> Result<Hnsw> {
    let side_path = dir.join(GRAPH_META);
    let path = dir.join(GRAPH);
    let side: Sidecar = serde_json::from_slice(
        &std::fs::read(&side_path).with_context(|| format!("reading {}", side_path.display()))?,
    )
    .with_context(|| format!("{}: not a graph sidecar", side_path.display()))?;
    ensure!(side.format == FORMAT, "unknown format {}", side.format);
    ensure!(
        side.dim == dim
            && side.quant == want.quant.to_string()
            && side.m == want.params.m
            && side.ef_construction == want.params.ef_construction,
        "built as {}-d {} M {} ef_construction {}, the index wants {dim}-d {} M {} \
         ef_construction {}",
        side.dim,
        side.quant,
        side.m,
        side.ef_construction,
        want.quant,
        want.params.m,
        want.params.ef_construction
    );
    ensure!(
        side.rows <= committed,
        "covers {} rows, only {committed} are committed",
        side.rows
    );
    let len = std::fs::metadata(&path)
        .with_context(|| format!("{} is missing", path.display()))?
        .len();
    ensure!(
        len == side.bytes,
        "{} has {len} bytes, its sidecar says {}",
        path.display(),
        side.bytes
    );
    let (_, crc) = crc_of(&path)?;
    ensure!(
        crc == side.crc32,
        "{}: checksum {crc:08x}, its sidecar says {:08x}",
        path.display(),
        side.crc32
    );
    let quant: Quant = side.quant.parse()?;
    Hnsw::load(&path, dim, want.params, quant, side.scale, side.rows)
}

/// The rows the folder's saved graph covers, if its sidecar, length and checksum agree
/// (without loading it); else why not.
pub fn check_saved(dir: &Path) -> Result<usize> {
    let side_path = dir.join(GRAPH_META);
    let side: Sidecar = serde_json::from_slice(
        &std::fs::read(&side_path).with_context(|| format!("reading {}", side_path.display()))?,
    )
    .with_context(|| format!("{}: not a graph sidecar", side_path.display()))?;
    let (bytes, crc) = crc_of(&dir.join(GRAPH))?;
    ensure!(
        bytes == side.bytes && crc == side.crc32,
        "{}: {bytes} bytes, checksum {crc:08x}; its sidecar says {} bytes, {:08x}",
        dir.join(GRAPH).display(),
        side.bytes,
        side.crc32
    );
    Ok(side.rows)
}

/// The saved graph if it is sound and matches `want`, else a new empty one (one `warn!` that
/// says why, unless there was none to find); rows past its coverage are the caller's to add.
pub fn load_or_new(
    dir: &Path,
    dim: usize,
    want: &AnnSettings,
    committed: usize,
    sample: &[f32],
) -> Result<Hnsw> {
    let exists = dir.join(GRAPH).exists() || dir.join(GRAPH_META).exists();
    match try_load(dir, dim, want, committed) {
        Ok(g) => return Ok(g),
        Err(e) if exists => tracing::warn!(
            "{}: graph not usable ({e:#}); rebuilding it from the vectors",
            dir.join(GRAPH).display()
        ),
        Err(_) if committed > 0 => tracing::warn!(
            "{}: no graph yet; building it over {committed} rows",
            dir.display()
        ),
        Err(_) => {}
    }
    Hnsw::new(dim, want.params, want.quant, sample)
}

/// Remove the folder's graph files (parameters changed: the next open rebuilds).
pub fn remove(dir: &Path) -> Result<()> {
    for f in [GRAPH, GRAPH_META] {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("removing {}: {e}", dir.join(f).display()),
        }
    }
    durable::sync_dir(dir)
}

/// One in-memory graph per index folder and process, shared by its readers' snapshots.
struct Shared {
    salt: String,
    settings: AnnSettings,
    graph: Weak<Hnsw>,
}

static SHARED: Mutex<Option<HashMap<PathBuf, Shared>>> = Mutex::new(None);

/// Whether graphs made for `a` and `b` are the same (`ef_search` and the type do not matter).
fn same_graph(a: &AnnSettings, b: &AnnSettings) -> bool {
    a.quant == b.quant
        && a.params.m == b.params.m
        && a.params.ef_construction == b.params.ef_construction
}

/// The graph a reader searches for rows `0..rows` of `data`: the process's shared one for
/// this folder when it was made with the same settings, else the saved one (or a new one),
/// grown in memory to cover the rows. Readers never write the folder.
pub fn shared_graph(
    dir: &Path,
    settings: &Settings,
    want: &AnnSettings,
    data: &[f32],
    rows: usize,
) -> Result<Arc<Hnsw>> {
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let salt = settings.patient_key("graph-identity");
    // Held while loading, so that two snapshots never load the same graph twice.
    let mut cache = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    map.retain(|_, s| s.graph.strong_count() > 0);
    let found = map
        .get(&key)
        .filter(|s| s.salt == salt && same_graph(&s.settings, want))
        .and_then(|s| s.graph.upgrade());
    let g = match found {
        Some(g) => g,
        None => {
            let g = Arc::new(load_or_new(
                dir,
                settings.dim,
                want,
                rows,
                &data[..rows * settings.dim],
            )?);
            map.insert(
                key,
                Shared {
                    salt,
                    settings: *want,
                    graph: Arc::downgrade(&g),
                },
            );
            g
        }
    };
    drop(cache);
    g.extend(0, &data[..rows * settings.dim], |_, _| Ok(()))?;
    Ok(g)
}

/// The committed vectors of `dir` (`rows` of `dim`), memory-mapped, for a writer's build.
pub(super) fn map_vectors(dir: &Path, rows: usize, dim: usize) -> Result<Option<memmap2::Mmap>> {
    let need = rows * dim * 4;
    if need == 0 {
        return Ok(None);
    }
    let f = std::fs::File::open(dir.join(VECTORS))?;
    // SAFETY: the committed prefix of the vectors file is never rewritten while the writer
    // (the only one that could truncate it) holds the folder's lock, as our caller does.
    Ok(Some(unsafe {
        memmap2::MmapOptions::new().len(need).map(&f)?
    }))
}

/// The f32 values of a mapped vectors file.
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
