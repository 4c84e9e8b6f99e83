//! `simcase bench scale`: search at archive scale (issue 12, point 5). Writes a data set
//! (random unit vectors, or a synthetic labelled archive from [`crate::synth`]) to raw f32
//! files, computes the exact ground truth, runs each of simcase's engines ([`engines`]) and,
//! with `peers`, FAISS (`tools/bench_peers.py scale`) on the same files in the same run, and
//! prints one table: build time, resident and on-disk bytes per vector, recall@10/@100 against
//! exact f32, single-query p50/p99, batch throughput, filtered (1% / 10%) recall and latency,
//! and on synthetic data P@1 under exact versus each engine. Timings are measured here, never
//! asserted in tests.

use crate::synth::{self, Generator, Model, Rng};
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use simcase_index::hnsw::{search_graph, Hnsw, Quant};
use simcase_index::{CompactRows, FlatIndex, Hit, HnswParams, IndexType, Precision, VectorIndex};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Which data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// Random unit vectors (no neighbourhood structure).
    Random,
    /// The synthetic labelled archive.
    Synthetic,
}

impl std::str::FromStr for DataKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "random" => Ok(Self::Random),
            "synthetic" => Ok(Self::Synthetic),
            o => bail!("unknown data set `{o}` (random, synthetic)"),
        }
    }
}

/// Everything `bench scale` is asked.
#[derive(Clone, Debug)]
pub struct Options {
    /// The data set.
    pub data: DataKind,
    /// Base rows.
    pub rows: usize,
    /// Dimension (random data; synthetic takes the model's).
    pub dim: usize,
    /// Queries (a labelled test split on synthetic data).
    pub queries: usize,
    /// Of those, how many are timed one by one (p50/p99).
    pub latency_queries: usize,
    /// HNSW M.
    pub m: usize,
    /// HNSW efConstruction.
    pub ef_construction: usize,
    /// HNSW efSearch values swept.
    pub ef_search: Vec<usize>,
    /// Seed of the data set.
    pub seed: u64,
    /// Run FAISS too.
    pub peers: bool,
    /// Working folder (data files, cached embeddings and model).
    pub work: PathBuf,
    /// Embedding model of the synthetic archive.
    pub model: simcase_models::ModelId,
    /// Labelled manifest the synthetic model is fitted on.
    pub manifest: PathBuf,
    /// Keep the data files afterwards.
    pub keep: bool,
}

/// Rows as the engines see them: the base file, memory-mapped (page-aligned, so the `f32`
/// view is aligned).
#[derive(Clone)]
pub struct Rows(Arc<memmap2::Mmap>);

impl AsRef<[f32]> for Rows {
    fn as_ref(&self) -> &[f32] {
        let b: &[u8] = &self.0;
        // SAFETY: the map is page-aligned (so aligned for f32), `b.len() / 4` whole f32 fit in
        // it, every bit pattern is a valid f32, and the map lives as long as `self`.
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, b.len() / 4) }
    }
}

impl Rows {
    /// Map `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the file is this run's own, written before and never modified while mapped.
        let m = unsafe { memmap2::Mmap::map(&f) }
            .with_context(|| format!("mapping {}", path.display()))?;
        Ok(Self(Arc::new(m)))
    }

    /// Drop the mapped pages from this process's resident set (they stay in the page cache
    /// and fault back in when read), so an engine's resident memory is measured from zero.
    pub fn evict(&self) {
        // SAFETY: a read-only, file-backed private map: after MADV_DONTNEED the pages are
        // re-read from the unchanged file, so no reader ever sees other contents.
        let _ = unsafe { self.0.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }
}

/// HNSW-style parameters handed to every engine (engines without a graph ignore them).
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// M.
    pub m: usize,
    /// efConstruction.
    pub ef_construction: usize,
}

/// An engine built over the rows.
pub trait Built: Send + Sync {
    /// The index searched with `ef_search` (engines without one ignore it).
    fn at(&self, ef_search: usize) -> Box<dyn VectorIndex + '_>;
    /// Bytes the engine keeps on disk beyond the f32 rows (a graph, compact vectors); `work`
    /// is a folder it may write a file to, to measure it.
    fn disk_bytes(&self, _work: &Path) -> Result<u64> {
        Ok(0)
    }
}

/// One of simcase's engines: its name, whether efSearch is swept, and how it is built over
/// in-memory (mapped) rows.
pub struct Engine {
    /// Shown in the tables.
    pub name: &'static str,
    /// Whether `--ef-search` values are swept (a graph); else one row.
    pub sweeps_ef: bool,
    /// Build over `rows` of `dim`.
    pub build: fn(rows: Rows, dim: usize, p: Params) -> Result<Box<dyn Built>>,
}

struct Exact(FlatIndex<Rows>);

impl Built for Exact {
    fn at(&self, _ef: usize) -> Box<dyn VectorIndex + '_> {
        Box::new(&self.0)
    }
}

/// simcase's engines, in table order.
///
/// Each returns a [`Built`] whose `at(ef)` searches with that efSearch and whose `disk_bytes`
/// counts its graph or compact file.
pub fn engines() -> Vec<Engine> {
    vec![
        Engine {
            name: "exact-f32",
            sweeps_ef: false,
            build: |rows, dim, _p| Ok(Box::new(Exact(FlatIndex::new(rows, dim)))),
        },
        Engine {
            name: "flat-f16",
            sweeps_ef: false,
            build: |rows, dim, _p| Compact::build(Precision::F16, rows, dim),
        },
        Engine {
            name: "flat-i8",
            sweeps_ef: false,
            build: |rows, dim, _p| Compact::build(Precision::I8, rows, dim),
        },
        Engine {
            name: "hnsw-i8",
            sweeps_ef: true,
            build: |rows, dim, p| Graph::build(Quant::I8, rows, dim, p),
        },
    ]
}

/// simcase's HNSW (usearch over i8 vectors with one global scale), candidates re-ranked with
/// the f32 rows, exactly as `Rows::search` runs it on an index.
struct Graph {
    rows: Rows,
    graph: Hnsw,
}

impl Graph {
    fn build(quant: Quant, rows: Rows, dim: usize, p: Params) -> Result<Box<dyn Built>> {
        let params = HnswParams {
            m: p.m,
            ef_construction: p.ef_construction,
            ..HnswParams::default()
        };
        let graph = Hnsw::build(rows.as_ref(), dim, params, quant)?;
        Ok(Box::new(Self { rows, graph }))
    }
}

impl Built for Graph {
    fn at(&self, ef_search: usize) -> Box<dyn VectorIndex + '_> {
        Box::new(GraphAt {
            g: self,
            ef: ef_search,
        })
    }
    /// The graph as `simcase index` saves it (`graph.usearch`: i8 vectors and links), written
    /// to `work`, measured and removed.
    fn disk_bytes(&self, work: &Path) -> Result<u64> {
        let path = work.join("bench-graph.usearch");
        self.graph.save(&path)?;
        let len = std::fs::metadata(&path).map(|m| m.len());
        let _ = std::fs::remove_file(&path);
        len.with_context(|| format!("measuring {}", path.display()))
    }
}

/// A [`Graph`] searched with one efSearch.
struct GraphAt<'a> {
    g: &'a Graph,
    ef: usize,
}

impl VectorIndex for GraphAt<'_> {
    fn dim(&self) -> usize {
        self.g.graph.dim()
    }
    fn len(&self) -> usize {
        self.g.rows.as_ref().len() / self.dim()
    }
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> anyhow::Result<Vec<Vec<Hit>>> {
        let data = self.g.rows.as_ref();
        Ok(search_graph(
            &self.g.graph,
            data,
            self.len(),
            queries,
            k,
            self.ef,
            keep,
        ))
    }
}

/// A compact scan (f16 or i8 rows) whose candidates are re-ranked with the f32 rows.
struct Compact {
    rows: Rows,
    dim: usize,
    compact: CompactRows,
}

impl Compact {
    fn build(p: Precision, rows: Rows, dim: usize) -> Result<Box<dyn Built>> {
        let compact = CompactRows::from_rows(p, rows.as_ref(), dim)?;
        Ok(Box::new(Self { rows, dim, compact }))
    }
}

impl Built for Compact {
    fn at(&self, _ef: usize) -> Box<dyn VectorIndex + '_> {
        Box::new(self)
    }
    fn disk_bytes(&self, _work: &Path) -> Result<u64> {
        Ok(self.compact.bytes() as u64)
    }
}

impl VectorIndex for Compact {
    fn dim(&self) -> usize {
        self.dim
    }
    fn len(&self) -> usize {
        self.compact.len()
    }
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> anyhow::Result<Vec<Vec<Hit>>> {
        Ok(self.compact.search(self.rows.as_ref(), queries, k, keep))
    }
}

/// Top `k` for `queries` from the exact f32 scan (the ground truth).
fn exact(
    rows: &[f32],
    dim: usize,
    qs: &[&[f32]],
    k: usize,
    keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
) -> Vec<Vec<Hit>> {
    simcase_index::search_rows(rows, dim, qs, k, keep)
}

/// Mean over queries of |found ∩ truth| / |truth| in the top `k`.
pub fn recall(found: &[Vec<Hit>], truth: &[Vec<Hit>], k: usize) -> f64 {
    let mut sum = 0.0;
    let mut n = 0;
    for (f, t) in found.iter().zip(truth) {
        let t: std::collections::HashSet<u64> = t.iter().take(k).map(|h| h.row).collect();
        if t.is_empty() {
            continue;
        }
        let hit = f.iter().take(k).filter(|h| t.contains(&h.row)).count();
        sum += hit as f64 / t.len() as f64;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Single-query latencies (ms) of the first `n` queries: (p50, p99, results).
pub(crate) fn single(
    idx: &dyn VectorIndex,
    qs: &[&[f32]],
    k: usize,
    keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
) -> anyhow::Result<(f64, f64, Vec<Vec<Hit>>)> {
    let mut ms = Vec::with_capacity(qs.len());
    let mut res = Vec::with_capacity(qs.len());
    for q in qs {
        let t = Instant::now();
        let mut h = idx.search(&[*q], k, keep)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        res.push(h.pop().unwrap_or_default());
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99), res))
}

fn rss() -> u64 {
    crate::rss::of(None).map_or(0, |r| r.0)
}

/// The CPU model from /proc/cpuinfo, and the thread count searches run on.
pub fn cpu_model() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{name}, {} threads", rayon::current_num_threads())
}

fn write_f32(f: &mut impl Write, v: &[f32]) -> Result<()> {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    Ok(f.write_all(&bytes)?)
}

/// A written data set: files, shapes and labels.
struct DataSet {
    dim: usize,
    base: PathBuf,
    queries: Vec<f32>,
    queries_path: PathBuf,
    buckets: Vec<u8>,
    buckets_path: PathBuf,
    /// Synthetic: class of each base row and each query, and the model.
    labels: Option<(Vec<u32>, Vec<u32>, Model)>,
}

fn random_block(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
    for r in v.chunks_mut(dim) {
        let norm = r.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-30);
        r.iter_mut().for_each(|a| *a /= norm);
    }
    v
}

const BLOCK: usize = 65_536;

fn write_data(o: &Options) -> Result<DataSet> {
    std::fs::create_dir_all(&o.work).with_context(|| format!("creating {}", o.work.display()))?;
    let base = o.work.join("base.f32");
    let queries_path = o.work.join("queries.f32");
    let buckets_path = o.work.join("buckets.u8");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&base).with_context(|| format!("creating {}", base.display()))?,
    );
    let mut buckets = Vec::with_capacity(o.rows);
    let t = Instant::now();
    let (dim, queries, labels) = match o.data {
        DataKind::Random => {
            let mut rng = Rng::new(o.seed);
            let mut left = o.rows;
            while left > 0 {
                let n = left.min(BLOCK);
                write_f32(&mut out, &random_block(&mut rng, n, o.dim))?;
                left -= n;
            }
            for r in 0..o.rows as u64 {
                buckets.push(
                    (synth::splitmix64(o.seed ^ 0x3C6E_F372 ^ synth::splitmix64(r)) % 100) as u8,
                );
            }
            let q = random_block(
                &mut Rng::new(synth::splitmix64(o.seed ^ 0x9)),
                o.queries,
                o.dim,
            );
            (o.dim, q, None)
        }
        DataKind::Synthetic => {
            let (model, samples) =
                synth::fit_from_manifest(&o.manifest, o.model, &o.work, Default::default())?;
            eprintln!(
                "synthetic: model fitted on {} embeddings ({}, {} classes, {}-d)",
                samples.len(),
                o.model,
                model.classes.len(),
                model.dim
            );
            let mut classes = Vec::with_capacity(o.rows);
            let mut g = Generator::archive(&model, o.rows, o.seed);
            while let Some((meta, v)) = g.next_block(BLOCK) {
                write_f32(&mut out, &v)?;
                classes.extend(meta.iter().map(|m| m.class));
                buckets.extend(meta.iter().map(|m| m.bucket));
            }
            let mut g = Generator::archive(&model, o.queries, synth::splitmix64(o.seed ^ 0x7E57));
            let (mut q, mut qc) = (Vec::new(), Vec::new());
            while let Some((meta, v)) = g.next_block(BLOCK) {
                q.extend(v);
                qc.extend(meta.iter().map(|m| m.class));
            }
            (model.dim, q, Some((classes, qc, model)))
        }
    };
    out.flush()?;
    drop(out);
    std::fs::write(&buckets_path, &buckets)
        .with_context(|| format!("writing {}", buckets_path.display()))?;
    let mut qf = std::io::BufWriter::new(std::fs::File::create(&queries_path)?);
    write_f32(&mut qf, &queries)?;
    qf.flush()?;
    eprintln!(
        "data: {} × {dim} written in {:.1} s ({})",
        o.rows,
        t.elapsed().as_secs_f64(),
        base.display()
    );
    Ok(DataSet {
        dim,
        base,
        queries,
        queries_path,
        buckets,
        buckets_path,
        labels,
    })
}

/// Run the benchmark; returns the JSON of the results (also printed as tables).
pub fn run(o: &Options) -> Result<Value> {
    ensure!(
        o.rows > 0 && o.queries > 0,
        "--rows and --queries must be > 0"
    );
    ensure!(
        o.dim > 0 || o.data == DataKind::Synthetic,
        "--dim must be > 0"
    );
    let ds = write_data(o)?;
    let dim = ds.dim;
    let rows = Rows::open(&ds.base)?;
    let data: &[f32] = rows.as_ref();
    ensure!(
        data.len() == o.rows * dim,
        "{}: short file",
        ds.base.display()
    );
    let qs: Vec<&[f32]> = ds.queries.chunks_exact(dim).collect();
    let nlat = o.latency_queries.min(qs.len()).max(1);
    let k = 100usize.min(o.rows);
    let buckets = Arc::new(ds.buckets.clone());
    let b1 = buckets.clone();
    let b10 = buckets.clone();
    let sel1 = move |r: u64| b1[r as usize] == 0;
    let sel10 = move |r: u64| b10[r as usize] < 10;
    let filters: [(&str, &(dyn Fn(u64) -> bool + Sync)); 2] = [("1%", &sel1), ("10%", &sel10)];
    let t = Instant::now();
    let truth = exact(data, dim, &qs, k, None);
    let truth_f: Vec<Vec<Vec<Hit>>> = filters
        .iter()
        .map(|(_, f)| exact(data, dim, &qs[..nlat], 10, Some(*f)))
        .collect();
    eprintln!("ground truth: {:.1} s", t.elapsed().as_secs_f64());
    // P@1 on synthetic data: queries are a labelled test split, the base the index.
    let label_names: Option<(Vec<&str>, Vec<&str>)> = ds.labels.as_ref().map(|(bc, qc, m)| {
        (
            bc.iter()
                .map(|&c| m.classes[c as usize].label.as_str())
                .collect(),
            qc.iter()
                .map(|&c| m.classes[c as usize].label.as_str())
                .collect(),
        )
    });
    let p1 = |hits: &[Vec<Hit>]| -> Option<[f64; 3]> {
        label_names.as_ref().map(|(b, q)| synth::p_at_1(b, q, hits))
    };
    let exact_p1 = p1(&truth);
    let params = Params {
        m: o.m,
        ef_construction: o.ef_construction,
    };
    let mut results = Vec::new();
    for e in engines() {
        rows.evict();
        let before = rss();
        let t = Instant::now();
        let built = (e.build)(rows.clone(), dim, params)?;
        let build_s = t.elapsed().as_secs_f64();
        let disk = built.disk_bytes(&o.work)?;
        let efs: Vec<usize> = if e.sweeps_ef {
            o.ef_search.clone()
        } else {
            vec![0]
        };
        let mut settings = Vec::new();
        for &ef in &efs {
            let idx = built.at(ef);
            let t = Instant::now();
            let batch = idx.search(&qs, k, None)?;
            let qps = qs.len() as f64 / t.elapsed().as_secs_f64();
            // The same batch asking only the top-10 (a viewer's page): the k = 100 batch
            // above walks and re-ranks a list of at least 2k rows.
            let t = Instant::now();
            idx.search(&qs, 10, None)?;
            let qps10 = qs.len() as f64 / t.elapsed().as_secs_f64();
            let resident = rss().saturating_sub(before) as f64 / o.rows as f64;
            let (p50, p99, _) = single(idx.as_ref(), &qs[..nlat], 10, None)?;
            let mut filt = serde_json::Map::new();
            for ((name, f), tf) in filters.iter().zip(&truth_f) {
                let (fp50, fp99, fres) = single(idx.as_ref(), &qs[..nlat], 10, Some(*f))?;
                filt.insert(
                    name.to_string(),
                    json!({"recall@10": recall(&fres, tf, 10), "p50_ms": fp50, "p99_ms": fp99}),
                );
            }
            settings.push(json!({
                "ef_search": if e.sweeps_ef { json!(ef) } else { Value::Null },
                "recall@10": recall(&batch, &truth, 10),
                "recall@100": recall(&batch, &truth, 100),
                "p50_ms": p50, "p99_ms": p99, "qps": qps, "qps@10": qps10,
                "resident_bytes_per_vector": resident,
                "p_at_1": p1(&batch),
                "filtered": filt,
            }));
        }
        results.push(json!({
            "engine": e.name,
            "build_s": build_s,
            "disk_bytes_per_vector": (o.rows * dim * 4) as f64 / o.rows as f64 + disk as f64 / o.rows as f64,
            "settings": settings,
        }));
    }
    let mut peers = if o.peers {
        let efs: Vec<String> = o.ef_search.iter().map(|e| e.to_string()).collect();
        Some(crate::peers::run(&[
            "scale".into(),
            "--base".into(),
            ds.base.display().to_string(),
            "--rows".into(),
            o.rows.to_string(),
            "--dim".into(),
            dim.to_string(),
            "--queries".into(),
            ds.queries_path.display().to_string(),
            "--nq".into(),
            qs.len().to_string(),
            "--buckets".into(),
            ds.buckets_path.display().to_string(),
            "--latency-queries".into(),
            nlat.to_string(),
            "--m".into(),
            o.m.to_string(),
            "--ef-construction".into(),
            o.ef_construction.to_string(),
            "--ef-search".into(),
            efs.join(","),
            "--k".into(),
            k.to_string(),
        ])?)
    } else {
        None
    };
    // FAISS returns each query's best row; P@1 is scored here, with the labels.
    for idx in peers
        .as_mut()
        .and_then(|p| p["indexes"].as_array_mut())
        .into_iter()
        .flatten()
    {
        for st in idx["settings"].as_array_mut().into_iter().flatten() {
            let Some(top1) = st.as_object_mut().and_then(|o| o.remove("top1")) else {
                continue;
            };
            let hits: Vec<Vec<Hit>> = top1
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| match r.as_u64() {
                    Some(row) if (row as usize) < o.rows => vec![Hit { row, score: 0.0 }],
                    _ => Vec::new(),
                })
                .collect();
            if hits.len() == qs.len() {
                st["p_at_1"] = json!(p1(&hits));
            }
        }
    }
    let report = json!({
        "cpu": cpu_model(),
        "data": match o.data { DataKind::Random => "random", DataKind::Synthetic => "synthetic" },
        "model": ds.labels.as_ref().map(|l| l.2.source.clone()),
        "rows": o.rows, "dim": dim, "queries": qs.len(), "latency_queries": nlat,
        "m": o.m, "ef_construction": o.ef_construction, "seed": o.seed,
        "exact_p_at_1": exact_p1,
        "simcase": results,
        "faiss": peers,
    });
    print!("{}", render(&report));
    if !o.keep {
        for p in [&ds.base, &ds.queries_path, &ds.buckets_path] {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(report)
}

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
        None => "-".into(),
    }
}

fn p1_cell(v: &Value) -> String {
    match v.as_array() {
        Some(a) => a
            .iter()
            .map(|x| format!("{:.3}", x.as_f64().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(" / "),
        None => "-".into(),
    }
}

/// Every engine setting of a result, simcase's first then FAISS's: (table label, the engine,
/// the setting), in the order the tables list them.
fn setting_rows(r: &Value) -> Vec<(String, &Value, &Value)> {
    let mut out = Vec::new();
    for (side, name_key, engines) in [
        ("simcase", "engine", r["simcase"].as_array()),
        ("FAISS", "name", r["faiss"]["indexes"].as_array()),
    ] {
        for e in engines.into_iter().flatten() {
            for st in e["settings"].as_array().into_iter().flatten() {
                out.push((
                    format!("{side} {}", e[name_key].as_str().unwrap_or("?")),
                    e,
                    st,
                ));
            }
        }
    }
    out
}

/// A setting's efSearch as a table cell (`-` for engines without one).
fn ef_cell(st: &Value) -> String {
    st["ef_search"]
        .as_u64()
        .map_or("-".into(), |e| e.to_string())
}

/// The report as Markdown tables.
pub fn render(r: &Value) -> String {
    let mut s = format!(
        "\n## bench scale: {} {} × {}, {} queries ({} timed one by one), M={} efConstruction={}, seed {}\nCPU: {}\n\n",
        r["data"].as_str().unwrap_or("?"),
        r["rows"], r["dim"], r["queries"], r["latency_queries"], r["m"], r["ef_construction"], r["seed"],
        r["cpu"].as_str().unwrap_or("?")
    );
    s += "| engine | efSearch | build s | resident B/vec | disk B/vec | recall@10 | recall@100 | p50 ms | p99 ms | batch q/s k=100 | batch q/s k=10 | P@1 (mod / anat / full) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
    let mut row = |name: &str, build: &Value, disk: &Value, st: &Value| {
        s += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            ef_cell(st),
            f(build),
            f(&st["resident_bytes_per_vector"]),
            f(disk),
            f(&st["recall@10"]),
            f(&st["recall@100"]),
            f(&st["p50_ms"]),
            f(&st["p99_ms"]),
            f(&st["qps"]),
            f(&st["qps@10"]),
            p1_cell(&st["p_at_1"]),
        );
    };
    for (name, e, st) in setting_rows(r) {
        row(&name, &e["build_s"], &e["disk_bytes_per_vector"], st);
    }
    if r["exact_p_at_1"].is_array() {
        s += &format!(
            "\nP@1 under exact f32 search (modality / anatomy / full label): {}\n",
            p1_cell(&r["exact_p_at_1"])
        );
    }
    s += "\nFiltered search (rows with bucket 0 = 1%, bucket < 10 = 10%; recall@10 against the exact filtered top-10; single queries):\n\n| engine | efSearch | 1% recall@10 | 1% p50 ms | 1% p99 ms | 10% recall@10 | 10% p50 ms | 10% p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
    let mut frow = |name: &str, st: &Value| {
        let a = &st["filtered"]["1%"];
        let b = &st["filtered"]["10%"];
        s += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            ef_cell(st),
            f(&a["recall@10"]),
            f(&a["p50_ms"]),
            f(&a["p99_ms"]),
            f(&b["recall@10"]),
            f(&b["p50_ms"]),
            f(&b["p99_ms"]),
        );
    };
    for (name, _, st) in setting_rows(r) {
        frow(&name, st);
    }
    // Ratios: simcase exact against FAISS Flat; each swept engine against FAISS HNSWFlat at
    // the same efSearch.
    let faiss = |name: &str| -> Option<&Value> {
        r["faiss"]["indexes"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
    };
    if r["faiss"].is_object() {
        // Each ratio stands beside both sides' recall: at one efSearch the two graphs do not
        // answer equally well (simcase re-ranks 2k candidates exactly), so a q/s ratio alone
        // would compare unequal work.
        s += "\nRatios against FAISS (simcase / FAISS; q/s above 1 = simcase faster, latency and build below 1 = simcase faster; recall as simcase / FAISS, at the same efSearch):\n\n| simcase engine | efSearch | FAISS index | recall@10 | recall@100 | batch q/s k=100 | batch q/s k=10 | p50 | p99 | build |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for e in r["simcase"].as_array().into_iter().flatten() {
            for st in e["settings"].as_array().into_iter().flatten() {
                let (peer, pst) = match st["ef_search"].as_u64() {
                    None => ("Flat", faiss("Flat").and_then(|p| p["settings"].get(0))),
                    Some(ef) => (
                        "HNSWFlat",
                        faiss("HNSWFlat").and_then(|p| {
                            p["settings"]
                                .as_array()?
                                .iter()
                                .find(|x| x["ef_search"].as_u64() == Some(ef))
                        }),
                    ),
                };
                let Some(pst) = pst else { continue };
                let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "-".into(),
                };
                let pbuild = faiss(peer)
                    .map(|p| p["build_s"].clone())
                    .unwrap_or(Value::Null);
                let both = |key: &str| format!("{} / {}", f(&st[key]), f(&pst[key]));
                s += &format!(
                    "| {} | {} | {peer} | {} | {} | {} | {} | {} | {} | {} |\n",
                    e["engine"].as_str().unwrap_or("?"),
                    ef_cell(st),
                    both("recall@10"),
                    both("recall@100"),
                    ratio(&st["qps"], &pst["qps"]),
                    ratio(&st["qps@10"], &pst["qps@10"]),
                    ratio(&st["p50_ms"], &pst["p50_ms"]),
                    ratio(&st["p99_ms"], &pst["p99_ms"]),
                    ratio(&e["build_s"], &pbuild),
                );
            }
        }
    }
    s
}

/// How [`write_index`] lays out the index it writes; `None` keeps what the folder's index has
/// (a new one: f32, `auto`).
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexLayout {
    /// Compact vectors searched first (f16 / i8), f32 rows kept on disk for the re-rank.
    pub precision: Option<Precision>,
    /// Flat (no graph), hnsw, or auto (a graph from 20,000 rows on).
    pub index_type: Option<IndexType>,
    /// Threads that build the graph (0: every core; 1: the same graph on every run, as
    /// `simcase index --hnsw-build-threads 1`).
    pub build_threads: usize,
}

/// Write a synthetic archive of `rows` rows as a simcase index in `dir` (f32 vectors + SQLite
/// rows with labels, split `train`, salted-looking patient keys, `source` = `site-D` with
/// D = bucket / 10, so `--filter source=site-0` keeps 10%, and `meta.bucket` = `BB`, so
/// `--filter meta.bucket=00` keeps 1%), streamed in blocks of `batch`.
///
/// `layout` is applied before any row is added (an existing index is converted in place, as
/// `simcase index --precision/--index-type` does), so compact rows are appended with each
/// batch and a graph, if the index type calls for one, grows with them (checkpointed as
/// `simcase index` does; HNSW parameters are the index's own). `flat` with `i8` writes a 10M
/// archive without building any graph. Rerun with the same `rows` and `seed`, it resumes an
/// interrupted write; at the end the graph, if any, is brought up to date and saved.
pub fn write_index(
    model: &Model,
    rows: usize,
    seed: u64,
    dir: &Path,
    batch: usize,
    layout: IndexLayout,
) -> Result<()> {
    let mut w = simcase_index::Writer::open(dir, &model.source, model.dim)?;
    w.set_graph_build_threads(layout.build_threads)?;
    if let Some(p) = layout.precision {
        w.set_precision(p)?;
    }
    if let Some(t) = layout.index_type {
        let old = w.ann_settings();
        w.set_ann(t, old.params)?;
    }
    let start = w.len();
    ensure!(
        start <= rows,
        "{}: already holds {start} rows, more than the {rows} asked",
        dir.display()
    );
    let mut g = Generator::archive(model, rows, seed);
    let mut row = 0usize;
    let t = Instant::now();
    while let Some((meta, v)) = g.next_block(batch.max(1)) {
        let n = meta.len();
        if row + n <= start {
            // Committed by an earlier, interrupted run: the draw is the same, skip it.
            row += n;
            continue;
        }
        let items: Vec<(simcase_index::ItemMeta, Vec<f32>)> = meta
            .iter()
            .zip(v.chunks_exact(model.dim))
            .enumerate()
            .filter(|(i, _)| row + i >= start)
            .map(|(i, (m, vec))| {
                let c = &model.classes[m.class as usize];
                let mut parts = c.label.splitn(3, '/');
                let mut it = simcase_index::ItemMeta {
                    path: format!("synthetic://{seed}/{}", row + i),
                    hash: format!("synthetic-{seed}-{}", row + i),
                    format: "synthetic".into(),
                    modality: parts.next().map(str::to_string),
                    anatomy: parts.next().map(str::to_string),
                    pathology: parts.next().map(str::to_string),
                    label: Some(c.label.clone()),
                    split: Some("train".into()),
                    source: Some(format!("site-{}", m.bucket / 10)),
                    patient_key: Some(format!("{:016x}", synth::splitmix64(seed ^ m.group))),
                    ..Default::default()
                };
                it.extra
                    .insert("bucket".into(), format!("{:02}", m.bucket).into());
                (it, vec.to_vec())
            })
            .collect();
        w.add(&items)?;
        row += n;
        eprint!(
            "\rwrote {row} / {rows} rows ({:.0} rows/s)",
            (row - start) as f64 / t.elapsed().as_secs_f64().max(1e-9)
        );
    }
    eprintln!();
    // Rows committed by an interrupted run past the graph's last checkpoint, or a graph asked
    // for only now: add them and save it (a no-op for a flat index).
    w.sync_graph(|_, _| {})?;
    w.checkpoint_graph()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio table pairs each simcase graph setting with FAISS HNSWFlat at the same
    /// efSearch and shows both sides' recall beside the speed ratios.
    #[test]
    fn ratios_stand_beside_both_sides_recall() {
        let r = json!({
            "data": "random", "rows": 1000, "dim": 8, "queries": 10, "latency_queries": 10,
            "m": 16, "ef_construction": 64, "seed": 1, "cpu": "test",
            "simcase": [{"engine": "hnsw-i8", "build_s": 2.0, "settings": [
                {"ef_search": 16, "recall@10": 1.0, "recall@100": 0.998,
                 "qps": 500.0, "qps@10": 3000.0, "p50_ms": 0.04, "p99_ms": 0.1}
            ]}],
            "faiss": {"indexes": [{"name": "HNSWFlat", "build_s": 4.0, "settings": [
                {"ef_search": 16, "recall@10": 0.902, "recall@100": 0.693,
                 "qps": 1000.0, "qps@10": 2000.0, "p50_ms": 0.05, "p99_ms": 0.2}
            ]}]}
        });
        let md = render(&r);
        let row = md
            .lines()
            .find(|l| l.starts_with("| hnsw-i8 | 16 | HNSWFlat |"))
            .unwrap_or_else(|| panic!("no ratio row in\n{md}"));
        assert_eq!(
            row,
            "| hnsw-i8 | 16 | HNSWFlat | 1.000 / 0.902 | 0.998 / 0.693 | 0.50 | 1.50 | 0.80 | 0.50 | 0.50 |"
        );
    }
}
