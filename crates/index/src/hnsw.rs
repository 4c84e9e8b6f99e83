//! Approximate search: an HNSW graph (usearch, C++ built by `cc`/cxx) over compact copies of
//! the vectors, whose candidates are re-ranked exactly with the f32 rows. The graph only
//! proposes rows; every returned score is the exact f32 inner product, so the answer differs
//! from exact search only when a true neighbour was never proposed.
//!
//! The graph stores i8 vectors by default. usearch's own f32→i8 cast rescales each vector to
//! norm 127 and truncates, which leaves unit vectors in 384 dimensions (components ≈ 0.05)
//! only a handful of levels; here one global scale, from a quantile of the magnitudes of the
//! first rows, maps the data onto [-127, 127] with rounding. A single scale keeps the order of
//! inner products, so the graph's neighbourhoods are those of the f32 vectors, up to rounding.
//!
//! Filters are a predicate inside the graph walk (usearch's filtered search). A selective
//! filter makes the walk visit about `candidates / selectivity` nodes to find enough passing
//! rows, while an exact scan of the passing rows costs one filter call per row plus one dot
//! product per passing row; [`exact_is_cheaper`] compares the two with costs measured here
//! (selectivity estimated by sampling rows through the filter) and scans when that is
//! cheaper: below about 30% of 20k rows, 10% of 100k (measured crossovers: 10–30% and 5–10%),
//! 4% of 1M and 1% of 10M (the model's). So is any request for a
//! large share of the rows (a `--group-by` pool grown to every candidate).

use crate::{search_rows, Hit, VectorIndex};
use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;
use std::sync::{Condvar, Mutex, RwLock};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// How an index answers searches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexType {
    /// Exact scan of every row.
    Flat,
    /// HNSW graph, candidates re-ranked exactly.
    Hnsw,
    /// Flat below [`AUTO_MIN_ROWS`] rows, HNSW from there on (readers: once a writer has
    /// saved the graph).
    #[default]
    Auto,
}

impl IndexType {
    /// The names accepted by [`FromStr`].
    pub const NAMES: [&'static str; 3] = ["flat", "hnsw", "auto"];

    /// Whether an index of `rows` rows searches through a graph.
    pub fn uses_graph(self, rows: usize) -> bool {
        match self {
            IndexType::Flat => false,
            IndexType::Hnsw => true,
            IndexType::Auto => rows >= AUTO_MIN_ROWS,
        }
    }
}

impl FromStr for IndexType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "flat" => Ok(IndexType::Flat),
            "hnsw" => Ok(IndexType::Hnsw),
            "auto" => Ok(IndexType::Auto),
            _ => bail!(
                "unknown index type {s:?}; choose one of {}",
                Self::NAMES.join(", ")
            ),
        }
    }
}

impl fmt::Display for IndexType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IndexType::Flat => "flat",
            IndexType::Hnsw => "hnsw",
            IndexType::Auto => "auto",
        })
    }
}

/// From this many rows on, [`IndexType::Auto`] searches through the graph. Measured with
/// `hnsw_bench` on a busy 2-core AVX2 EPYC, 384-d clustered vectors: the exact scan took
/// 8.9 ms a query at 20k rows and 92 ms at 100k (linear in rows), HNSW (M 16, ef 64,
/// re-ranked) 0.3–0.5 ms; below 20k the scan stays around 10 ms or less and is exact, so the
/// graph's build (~15 s at 20k) and memory (~0.7–0.85 KB a vector) are not worth it.
pub const AUTO_MIN_ROWS: usize = 20_000;

/// Nanoseconds per graph distance and per value of the vector (i8, with the filtered walk's
/// queue overhead): ~880 ns a distance at 384-d on a busy 2-core AVX2 EPYC (`hnsw_bench`'s
/// filtered walks at 100k rows; 180 ns at 20k).
const WALK_NS_PER_VALUE: f64 = 2.3;
/// Nanoseconds per f32 value of an exact dot product of a passing row (the same runs: ~0.9 µs
/// a 384-d row in a full scan, more for scattered rows).
const DOT_NS_PER_VALUE: f64 = 2.4;
/// Nanoseconds per filter call of a scan (a metadata lookup and comparison).
const KEEP_NS: f64 = 10.0;

/// Whether scanning the rows that pass a filter (`sel` of `rows`) is cheaper than a graph
/// walk that must find `fetch` of them, in a graph of `m` links per node over `dim`-d rows.
pub fn exact_is_cheaper(rows: usize, sel: f64, fetch: usize, m: usize, dim: usize) -> bool {
    let walk = fetch as f64 / sel.max(1e-9) * (2 * m) as f64 * WALK_NS_PER_VALUE * dim as f64;
    let scan = rows as f64 * (KEEP_NS + sel * DOT_NS_PER_VALUE * dim as f64);
    scan <= walk
}

/// Rows a filter's selectivity is estimated from (strided through the index).
const SELECTIVITY_SAMPLE: usize = 1024;

/// Candidates the graph proposes per result wanted, before the exact re-rank.
const REFINE: usize = 2;

/// HNSW parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node (usearch's connectivity; level 0 keeps twice as many).
    pub m: usize,
    /// Candidate list while inserting.
    pub ef_construction: usize,
    /// Candidate list while searching (at least `k` × 2 are always fetched).
    pub ef_search: usize,
}

impl Default for HnswParams {
    /// M 16, ef_construction 128, ef_search 64: recall@10 ≥ 0.99 after re-rank on 100k×384
    /// clustered vectors (see the report of `simcase-index`'s `hnsw_bench` example).
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 128,
            ef_search: 64,
        }
    }
}

impl HnswParams {
    /// Refuse values the graph cannot use.
    pub fn check(&self) -> Result<()> {
        ensure!(
            (2..=256).contains(&self.m),
            "HNSW M must be 2..=256, not {}",
            self.m
        );
        ensure!(
            (1..=4096).contains(&self.ef_construction),
            "HNSW ef_construction must be 1..=4096, not {}",
            self.ef_construction
        );
        ensure!(
            (1..=4096).contains(&self.ef_search),
            "HNSW ef_search must be 1..=4096, not {}",
            self.ef_search
        );
        Ok(())
    }
}

/// How the graph stores its copy of each vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quant {
    /// One byte a value, scaled by one global factor (the default).
    #[default]
    I8,
    /// IEEE half precision.
    F16,
    /// Full precision (4 B a value).
    F32,
}

impl Quant {
    fn scalar(self) -> ScalarKind {
        match self {
            Quant::I8 => ScalarKind::I8,
            Quant::F16 => ScalarKind::F16,
            Quant::F32 => ScalarKind::F32,
        }
    }
}

impl FromStr for Quant {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "i8" => Ok(Quant::I8),
            "f16" => Ok(Quant::F16),
            "f32" => Ok(Quant::F32),
            _ => bail!("unknown graph precision {s:?}; choose one of i8, f16, f32"),
        }
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quant::I8 => "i8",
            Quant::F16 => "f16",
            Quant::F32 => "f32",
        })
    }
}

/// Concurrent searches or inserts the graph has contexts for; more wait (usearch fails a call
/// that finds no free context instead of waiting, so [`Slots`] waits for it).
const SLOTS: usize = 64;

/// A counting semaphore over usearch's per-thread contexts.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }
    fn take(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.cv.notify_one();
    }
}

/// The graph and how many rows (0..covered) it holds.
struct Inner {
    index: Index,
    covered: usize,
}

/// An HNSW graph over rows `0..covered()` of some f32 rows (keys are row numbers). It knows
/// nothing of files: [`crate::store`] persists it, [`HnswIndex`] pairs it with its rows.
pub struct Hnsw {
    inner: RwLock<Inner>,
    dim: usize,
    quant: Quant,
    params: HnswParams,
    /// i8 only: stored value = round(x × scale), clamped to ±127.
    scale: f32,
    slots: Slots,
}

fn options(dim: usize, quant: Quant, params: &HnswParams) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: quant.scalar(),
        connectivity: params.m,
        expansion_add: params.ef_construction,
        // Each search asks for max(ef, 2k) results, which usearch uses as its list size.
        expansion_search: 1,
        multi: false,
    }
}

/// The i8 scale for rows like `data`'s (`dim` values each): 127 over the 99.99th percentile
/// of the magnitudes of up to 256 rows strided through them (a rare larger value is clamped).
fn i8_scale(data: &[f32], dim: usize) -> f32 {
    let rows = data.len() / dim.max(1);
    let step = rows.div_ceil(256).max(1);
    let mut mags: Vec<f32> = (0..rows)
        .step_by(step)
        .flat_map(|r| &data[r * dim..(r + 1) * dim])
        .map(|x| x.abs())
        .filter(|x| x.is_finite())
        .collect();
    if mags.is_empty() {
        return 127.0;
    }
    let at = ((mags.len() as f64 * 0.9999) as usize).min(mags.len() - 1);
    let (_, q, _) = mags.select_nth_unstable_by(at, |a, b| a.total_cmp(b));
    if *q > 0.0 {
        127.0 / *q
    } else {
        127.0
    }
}

fn quantize(v: &[f32], scale: f32, out: &mut Vec<i8>) {
    out.clear();
    out.extend(
        v.iter()
            .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8),
    );
}

/// Rows added per parallel step of a build (progress and checkpoints come between steps).
pub const BUILD_STEP: usize = 16_384;

impl Hnsw {
    /// An empty graph for `dim`-d rows; `scale_from`: rows the i8 scale is taken from (the
    /// first rows the graph will hold; ignored for f16 and f32).
    pub fn new(dim: usize, params: HnswParams, quant: Quant, scale_from: &[f32]) -> Result<Self> {
        params.check()?;
        ensure!(dim > 0, "HNSW over 0-d vectors");
        let index = Index::new(&options(dim, quant, &params))
            .map_err(|e| anyhow::anyhow!("creating the HNSW graph: {e}"))?;
        let scale = match quant {
            Quant::I8 => i8_scale(scale_from, dim),
            _ => 1.0,
        };
        Ok(Self {
            inner: RwLock::new(Inner { index, covered: 0 }),
            dim,
            quant,
            params,
            scale,
            slots: Slots::new(SLOTS),
        })
    }

    /// A graph over every row of `data` (`dim` values each), built on the current rayon pool's
    /// threads (on one thread, rows are added in row order: the same rows, the same graph).
    pub fn build(data: &[f32], dim: usize, params: HnswParams, quant: Quant) -> Result<Self> {
        let g = Self::new(dim, params, quant, data)?;
        g.extend(0, data, |_, _| Ok(()))?;
        Ok(g)
    }

    /// Values per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The parameters it was built with.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// How it stores vectors.
    pub fn quant(&self) -> Quant {
        self.quant
    }

    /// The i8 scale (1 for f16 and f32).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Rows `0..covered()` are in the graph.
    pub fn covered(&self) -> usize {
        self.read().covered
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes usearch holds for the graph and its vectors.
    pub fn memory_bytes(&self) -> usize {
        self.read().index.memory_usage()
    }

    /// Add the rows of `data` (rows `first..`, `dim` values each) that the graph does not hold
    /// yet (`first` ≤ [`covered`](Self::covered)), in steps of [`BUILD_STEP`] rows, each step in
    /// parallel on the current rayon pool (in row order when it has one thread); after each
    /// step `after(covered, total)` runs (progress, checkpoints) and may stop the build with an
    /// error. Safe to call from several threads: a row is added once.
    pub fn extend(
        &self,
        first: usize,
        data: &[f32],
        mut after: impl FnMut(usize, usize) -> Result<()>,
    ) -> Result<()> {
        let total = first + data.len() / self.dim;
        loop {
            let start = self.covered();
            if start >= total {
                return Ok(());
            }
            ensure!(
                first <= start,
                "graph holds {start} rows, cannot add rows from {first}"
            );
            let end = (start + BUILD_STEP).min(total);
            self.add_range(first, data, end, total)?;
            after(end, total)?;
        }
    }

    /// Add rows `covered()..end` of `data` (which holds rows `first..`), with room for
    /// `total` rows (a build reserves its size once; small appends grow by doubling).
    fn add_range(&self, first: usize, data: &[f32], end: usize, total: usize) -> Result<()> {
        let mut g = self.write();
        let start = g.covered;
        if start >= end {
            return Ok(());
        }
        ensure!(
            first <= start,
            "graph holds {start} rows, cannot add rows from {first}"
        );
        let threads = rayon::current_num_threads().max(1);
        if g.index.capacity() < end {
            let cap = if total - start > BUILD_STEP {
                total
            } else {
                total.max(g.index.capacity().saturating_mul(2)).max(1024)
            };
            g.index
                .reserve_capacity_and_threads(cap, threads.max(SLOTS))
                .map_err(|e| anyhow::anyhow!("reserving graph room for {cap} rows: {e}"))?;
        }
        let (dim, scale, quant) = (self.dim, self.scale, self.quant);
        let index = &g.index;
        let add_rows = |rows: std::ops::Range<usize>| -> Result<()> {
            let mut q = Vec::with_capacity(dim);
            for r in rows {
                let v = &data[(r - first) * dim..(r - first + 1) * dim];
                let res = match quant {
                    Quant::I8 => {
                        quantize(v, scale, &mut q);
                        index.add(r as u64, q.as_slice())
                    }
                    _ => index.add(r as u64, v),
                };
                res.map_err(|e| anyhow::anyhow!("adding row {r} to the graph: {e}"))?;
            }
            Ok(())
        };
        if threads == 1 {
            // In row order: each row's level and links follow from the rows before it, so the
            // same rows always give the same graph.
            add_rows(start..end)?;
        } else {
            let chunk = (end - start).div_ceil(threads * 4).max(1);
            (start..end)
                .step_by(chunk)
                .collect::<Vec<_>>()
                .into_par_iter()
                .try_for_each(|s| add_rows(s..(s + chunk).min(end)))?;
        }
        g.covered = end;
        Ok(())
    }

    /// Up to `n` candidate rows for `query`, nearest first by the graph's metric, among rows
    /// `< below` that pass `keep` (applied during the walk).
    pub fn candidates(
        &self,
        query: &[f32],
        n: usize,
        below: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<u64>> {
        let g = self.read();
        if g.covered == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let _slot = self.slots.take();
        let limit = below < g.covered;
        let pred = |key: u64| (!limit || key < below as u64) && keep.is_none_or(|f| f(key));
        let filtered = limit || keep.is_some();
        let m = match self.quant {
            Quant::I8 => {
                // The query's own scale does not change the order: use all of i8's range.
                let peak = query.iter().fold(0f32, |a, x| a.max(x.abs()));
                let s = if peak > 0.0 { 127.0 / peak } else { 1.0 };
                let mut q = Vec::with_capacity(self.dim);
                quantize(query, s, &mut q);
                if filtered {
                    g.index.filtered_search(q.as_slice(), n, pred)
                } else {
                    g.index.search(q.as_slice(), n)
                }
            }
            _ => {
                if filtered {
                    g.index.filtered_search(query, n, pred)
                } else {
                    g.index.search(query, n)
                }
            }
        }
        .map_err(|e| anyhow::anyhow!("graph search: {e}"))?;
        Ok(m.keys)
    }

    /// Write the graph to `path` (usearch's format), holding off inserts meanwhile.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let g = self.read();
        let p = path
            .to_str()
            .with_context(|| format!("{}: graph paths must be UTF-8", path.display()))?;
        g.index
            .save(p)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }

    /// Read a graph saved by [`save`](Self::save) that holds rows `0..covered`. The caller has
    /// checked the file (length and checksum): usearch trusts what it reads.
    pub fn load(
        path: &std::path::Path,
        dim: usize,
        params: HnswParams,
        quant: Quant,
        scale: f32,
        covered: usize,
    ) -> Result<Self> {
        params.check()?;
        let p = path
            .to_str()
            .with_context(|| format!("{}: graph paths must be UTF-8", path.display()))?;
        let index = Index::new(&options(dim, quant, &params))
            .map_err(|e| anyhow::anyhow!("creating the HNSW graph: {e}"))?;
        index
            .load(p)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        ensure!(
            index.size() == covered && index.dimensions() == dim,
            "{}: holds {} {}-d rows, its sidecar says {covered} {dim}-d",
            path.display(),
            index.size(),
            index.dimensions()
        );
        index.change_expansion_search(1);
        index.change_expansion_add(params.ef_construction);
        let threads = rayon::current_num_threads().max(1).max(SLOTS);
        index
            .reserve_capacity_and_threads(covered.max(1024), threads)
            .map_err(|e| anyhow::anyhow!("reserving graph contexts: {e}"))?;
        Ok(Self {
            inner: RwLock::new(Inner { index, covered }),
            dim,
            quant,
            params,
            scale,
            slots: Slots::new(SLOTS),
        })
    }
}

type Keep<'a> = Option<&'a (dyn Fn(u64) -> bool + Sync)>;

/// Share of rows `0..rows` that pass `keep`, from [`SELECTIVITY_SAMPLE`] strided rows.
pub fn estimate_selectivity(rows: usize, keep: &(dyn Fn(u64) -> bool + Sync)) -> f64 {
    if rows == 0 {
        return 0.0;
    }
    let n = rows.min(SELECTIVITY_SAMPLE);
    let step = rows as f64 / n as f64;
    let pass = (0..n)
        .filter(|&i| keep(((i as f64 + 0.5) * step) as u64))
        .count();
    pass as f64 / n as f64
}

/// Top-`k` of rows `0..rows` of `data` for each query through `graph` (which must cover the
/// rows; rows it holds past `rows` are ignored), re-ranked with exact f32 inner products;
/// `ef`: candidates fetched per query (at least 2k). Falls back to an exact scan when `keep`
/// passes few rows or `k` asks for a large share of them. Same contract as
/// [`VectorIndex::search`]; a graph failure (never expected) also falls back to the scan.
pub fn search_graph(
    graph: &Hnsw,
    data: &[f32],
    rows: usize,
    queries: &[&[f32]],
    k: usize,
    ef: usize,
    keep: Keep,
) -> Vec<Vec<Hit>> {
    let dim = graph.dim;
    let data = &data[..rows * dim];
    if k == 0 || rows == 0 || queries.is_empty() {
        return vec![Vec::new(); queries.len()];
    }
    let sel = keep.map_or(1.0, |f| estimate_selectivity(rows, f));
    let fetch = k.saturating_mul(REFINE).max(ef);
    let passing = sel * rows as f64;
    // A graph asked for a quarter or more of the rows it may return walks most of it: the
    // scan is exact and no slower (a `--group-by` pool grown to every candidate ends here).
    let filtered_scan = keep.is_some() && exact_is_cheaper(rows, sel, fetch, graph.params.m, dim);
    if graph.covered() < rows || filtered_scan || fetch as f64 * 4.0 >= passing {
        tracing::debug!(
            "search: exact scan of {rows} rows (filter passes ~{:.1}%, {fetch} candidates wanted)",
            sel * 100.0
        );
        return search_rows(data, dim, queries, k, keep);
    }
    tracing::debug!("search: graph walk, {fetch} candidates re-ranked exactly");
    queries
        .par_iter()
        .map(|q| {
            let cand = match graph.candidates(q, fetch, rows, keep) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("{e:#}; answering with an exact scan");
                    return search_rows(data, dim, &[*q], k, keep).remove(0);
                }
            };
            let mut hits: Vec<Hit> = cand
                .into_iter()
                .filter(|&r| (r as usize) < rows && keep.is_none_or(|f| f(r)))
                .map(|r| Hit {
                    row: r,
                    score: crate::dot(q, &data[r as usize * dim..(r as usize + 1) * dim]),
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
            hits.dedup_by_key(|h| h.row);
            hits.truncate(k);
            hits
        })
        .collect()
}

/// Rows (in memory or memory-mapped) with an HNSW graph over them: what a benchmark or a
/// caller without an index folder searches.
pub struct HnswIndex<D: AsRef<[f32]> + Send + Sync> {
    data: D,
    dim: usize,
    graph: Hnsw,
    ef_search: usize,
}

impl<D: AsRef<[f32]> + Send + Sync> HnswIndex<D> {
    /// Build a graph over every row of `data` (`dim` values each, row-major) in parallel.
    pub fn build(data: D, dim: usize, params: HnswParams, quant: Quant) -> Result<Self> {
        ensure!(
            dim > 0 && data.as_ref().len() % dim == 0,
            "rows must be whole"
        );
        let graph = Hnsw::build(data.as_ref(), dim, params, quant)?;
        Ok(Self {
            data,
            dim,
            graph,
            ef_search: params.ef_search,
        })
    }

    /// Change the candidates fetched per query.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.ef_search = ef.max(1);
    }

    /// The graph.
    pub fn graph(&self) -> &Hnsw {
        &self.graph
    }
}

impl<D: AsRef<[f32]> + Send + Sync> VectorIndex for HnswIndex<D> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.data.as_ref().len() / self.dim
    }

    fn search(&self, queries: &[&[f32]], k: usize, keep: Keep) -> anyhow::Result<Vec<Vec<Hit>>> {
        Ok(search_graph(
            &self.graph,
            self.data.as_ref(),
            self.len(),
            queries,
            k,
            self.ef_search,
            keep,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_list_the_choices() {
        assert_eq!("HNSW".parse::<IndexType>().unwrap(), IndexType::Hnsw);
        assert_eq!(IndexType::Auto.to_string(), "auto");
        let e = "ivf".parse::<IndexType>().unwrap_err().to_string();
        assert!(e.contains("flat, hnsw, auto"), "{e}");
        assert!(IndexType::Auto.uses_graph(AUTO_MIN_ROWS));
        assert!(!IndexType::Auto.uses_graph(AUTO_MIN_ROWS - 1));
        assert!("i4".parse::<Quant>().is_err());
    }

    #[test]
    fn i8_scale_uses_the_range_and_rounds() {
        let v = [0.05f32, -0.1, 0.02, 0.0];
        let s = i8_scale(&v, 4);
        let mut q = Vec::new();
        quantize(&v, s, &mut q);
        assert_eq!(q, vec![64, -127, 25, 0]);
    }

    /// `n` values in [-0.5, 0.5) from a linear congruential generator seeded with `seed`.
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn tiny_graph_finds_exact_neighbours() {
        let dim = 8;
        let mut data = uniform(dim * 500, 7);
        for r in data.chunks_mut(dim) {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter_mut().for_each(|v| *v /= n);
        }
        let idx = HnswIndex::build(data.clone(), dim, HnswParams::default(), Quant::I8).unwrap();
        assert_eq!(idx.graph().covered(), 500);
        let q = &data[3 * dim..4 * dim];
        let got = idx.search(&[q], 5, None).unwrap().remove(0);
        let want = search_rows(&data, dim, &[q], 5, None).remove(0);
        assert_eq!(got, want);
    }

    /// On one thread a build is a function of its rows: two builds save the same bytes (the
    /// graph's levels and links included), so an index rebuilt from the same vectors answers
    /// its approximate searches the same way.
    #[test]
    fn one_thread_builds_the_same_graph_every_time() {
        let dim = 16;
        let data = uniform(dim * 3000, 5);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("simcase-hnsw-seq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let saved: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let g = pool
                    .install(|| Hnsw::build(&data, dim, HnswParams::default(), Quant::F32))
                    .unwrap();
                assert_eq!(g.covered(), 3000);
                let path = dir.join(format!("g{i}"));
                g.save(&path).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(saved[0].len() > 3000 * dim * 4);
        assert!(saved[0] == saved[1], "two one-thread builds differ");
    }

    /// A batch (its queries walked in parallel) answers each query exactly as a call with
    /// that query alone: same rows, order, ties and scores, filtered or not.
    #[test]
    fn a_batch_answers_as_its_queries_one_by_one() {
        let dim = 16;
        let mut x = 11u64;
        let mut data: Vec<f32> = (0..dim * 4000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                // Few levels, so that equal scores (ties) occur.
                (((x >> 33) % 9) as f32) - 4.0
            })
            .collect();
        for r in data.chunks_mut(dim) {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1.0);
            r.iter_mut().for_each(|v| *v /= n);
        }
        let params = HnswParams {
            m: 8,
            ef_construction: 64,
            ef_search: 32,
        };
        let idx = HnswIndex::build(data.clone(), dim, params, Quant::I8).unwrap();
        let qs: Vec<&[f32]> = data.chunks(dim).step_by(37).take(64).collect();
        let keep = |r: u64| !r.is_multiple_of(3);
        for k in [1, 10, 40] {
            for filter in [None, Some(&keep as &(dyn Fn(u64) -> bool + Sync))] {
                let batch = idx.search(&qs, k, filter).unwrap();
                assert_eq!(batch.len(), qs.len());
                for (q, b) in qs.iter().zip(&batch) {
                    assert_eq!(b, &idx.search(&[q], k, filter).unwrap().remove(0), "k {k}");
                    assert_eq!(b.len(), k);
                    assert!(b.iter().all(|h| filter.is_none_or(|f| f(h.row))));
                }
            }
        }
    }
}
