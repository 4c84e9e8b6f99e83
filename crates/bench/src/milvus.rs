//! `simcase bench milvus`: the Milvus backend against the local index in one run (issue 13,
//! point 5). For each size, one seeded clustered data set (unit vectors shaped like embeddings:
//! [`simcase_index::testdata::Clustered`]) is written once, then:
//! - ingest: the same rows (vector plus item metadata) into a local index folder through the
//!   [`simcase_index::Writer`] and into a fresh Milvus collection in committed batches, as
//!   rows per second (embedding is not counted: it is the same work on both sides; the CLI
//!   adds an end-to-end row with images);
//! - search: single-query p50/p99 at k = 10 for local exact (f32 scan), local HNSW (the
//!   engine `simcase index --index-type hnsw` builds) and Milvus HNSW, and recall@10 of both
//!   graphs against local exact, on the same queries.
//!
//! Timings are measured here and reported as ratios, never asserted in tests.

use crate::scale::{self, Params, Rows};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use simcase_index::testdata::Clustered;
use simcase_index::{FlatIndex, Hit, ItemMeta, VectorIndex};
use simcase_milvus::{Collection, IndexSpec, MilvusUrl};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Everything `bench milvus` is asked.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server: `milvus://HOST:PORT/PREFIX`; collections `PREFIX_<rows>` are created and
    /// dropped.
    pub url: String,
    /// Index sizes.
    pub rows: Vec<usize>,
    /// Dimension.
    pub dim: usize,
    /// Queries timed one by one (drawn from the same classes, not in the index).
    pub queries: usize,
    /// HNSW M (both sides).
    pub m: usize,
    /// HNSW efConstruction (both sides).
    pub ef_construction: usize,
    /// HNSW ef while searching (both sides).
    pub ef_search: usize,
    /// Rows per committed ingest batch (both sides).
    pub batch: usize,
    /// Seed of the data set.
    pub seed: u64,
    /// Working folder (data file, the local index).
    pub work: PathBuf,
    /// Keep the Milvus collections afterwards.
    pub keep: bool,
}

/// A synthetic row's metadata: what a labelled manifest row carries.
fn meta(i: usize, classes: usize) -> ItemMeta {
    let class = i % classes.max(1);
    ItemMeta {
        path: format!("synthetic/{i:08}.png"),
        hash: format!("{:064x}", i as u128 * 0x9E37_79B9_7F4A_7C15),
        format: "png".into(),
        label: Some(format!("CT/class{class}")),
        modality: Some("CT".into()),
        split: Some(
            if i.is_multiple_of(10) {
                "test"
            } else {
                "train"
            }
            .into(),
        ),
        patient_key: Some(format!("p{:06}", i / 4)),
        ..Default::default()
    }
}

/// Rows per second writing `n` rows in batches of `batch` through `commit`.
fn ingest_rate(
    data: &[f32],
    dim: usize,
    batch: usize,
    classes: usize,
    mut commit: impl FnMut(&[(ItemMeta, Vec<f32>)]) -> Result<()>,
) -> Result<f64> {
    let n = data.len() / dim;
    let t = Instant::now();
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let b: Vec<(ItemMeta, Vec<f32>)> = (start..end)
            .map(|i| (meta(i, classes), data[i * dim..(i + 1) * dim].to_vec()))
            .collect();
        commit(&b)?;
        start = end;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Milvus searched with one ef, as a [`VectorIndex`] (rows are the positions the rows were
/// written at, mapped back from the item ids).
struct MilvusAt<'a> {
    c: &'a Collection,
    ef: usize,
    rows: &'a std::collections::HashMap<u64, u64>,
}

impl VectorIndex for MilvusAt<'_> {
    fn dim(&self) -> usize {
        self.c.info().dim
    }
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Vec<Hit>>> {
        anyhow::ensure!(keep.is_none(), "the Milvus bench searches unfiltered");
        let res = self.c.search_ids_ef(queries, k, Some(self.ef))?;
        Ok(res
            .into_iter()
            .map(|hs| {
                hs.into_iter()
                    .filter_map(|h| {
                        self.rows.get(&h.row).map(|&row| Hit {
                            row,
                            score: h.score,
                        })
                    })
                    .collect()
            })
            .collect())
    }
}

/// Run the benchmark; the JSON report ([`render`] prints it).
pub fn run(o: &Options) -> Result<Value> {
    let base = MilvusUrl::parse(&o.url)?;
    std::fs::create_dir_all(&o.work).with_context(|| format!("creating {}", o.work.display()))?;
    let shape = Clustered::BENCH.with_dim(o.dim);
    let params = Params {
        m: o.m,
        ef_construction: o.ef_construction,
    };
    let mut sizes = Vec::new();
    for &n in &o.rows {
        eprintln!("bench milvus: {n} rows × {} …", o.dim);
        let data = shape.rows(n, o.seed);
        let queries = shape.rows(o.queries, o.seed ^ 0x5151);
        let qs: Vec<&[f32]> = queries.chunks(o.dim).collect();
        let path = o.work.join("milvus-base.f32");
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            for x in &data {
                f.write_all(&x.to_le_bytes())?;
            }
            f.flush()?;
        }
        let rows = Rows::open(&path)?;

        // Ingest: local index folder against a fresh collection, the same rows and batches.
        let local_dir = o.work.join(format!("milvus-local-{n}"));
        let _ = std::fs::remove_dir_all(&local_dir);
        let mut w = simcase_index::Writer::open(&local_dir, "bench", o.dim)?;
        let local_rate = ingest_rate(&data, o.dim, o.batch, shape.classes, |b| {
            w.add(b).map(|_| ())
        })?;
        drop(w);
        let _ = std::fs::remove_dir_all(&local_dir);

        let url = base.with_collection(&format!("{}_{n}", base.collection))?;
        Collection::drop_collection(&url)?;
        let spec = IndexSpec::Hnsw {
            m: o.m,
            ef_construction: o.ef_construction,
        };
        let mut c = Collection::create_or_open(&url, "bench", o.dim, &spec)?;
        // Committed batches, as `simcase index` writes them (each flushed before the next).
        let milvus_rate = ingest_rate(&data, o.dim, o.batch, shape.classes, |b| c.upsert(b))?;
        eprintln!(
            "bench milvus: {n} rows ingested: local {local_rate:.0} rows/s, Milvus \
             {milvus_rate:.0} rows/s; waiting for Milvus's index"
        );
        let t = Instant::now();
        c.wait_indexed()?;
        let milvus_index_s = t.elapsed().as_secs_f64();
        eprintln!(
            "bench milvus: Milvus indexed every row {milvus_index_s:.0} s after the last flush"
        );
        // Searches as `serve` runs them: bounded staleness, not a wait for the next time tick
        // per query (strong consistency adds up to ~200 ms; the rows are all flushed here).
        c.set_consistency(simcase_milvus::Consistency::Bounded);
        let ids: std::collections::HashMap<u64, u64> = (0..n)
            .map(|i| {
                (
                    simcase_milvus::item_id(&meta(i, shape.classes).hash),
                    i as u64,
                )
            })
            .collect();

        // Search: the same queries through each engine, k = 10, one at a time.
        let exact = FlatIndex::new(rows.clone(), o.dim);
        let (e50, e99, truth) = scale::single(&exact, &qs, 10, None)?;
        let t = Instant::now();
        let engines = scale::engines();
        let hnsw = engines
            .iter()
            .find(|e| e.sweeps_ef)
            .context("no HNSW engine")?;
        let built = (hnsw.build)(rows.clone(), o.dim, params)?;
        let local_build_s = t.elapsed().as_secs_f64();
        let local = built.at(o.ef_search);
        let (h50, h99, hres) = scale::single(local.as_ref(), &qs, 10, None)?;
        let remote = MilvusAt {
            c: &c,
            ef: o.ef_search,
            rows: &ids,
        };
        let _ = remote.search(&qs[..qs.len().min(10)], 10, None)?; // warm-up
        let (m50, m99, mres) = scale::single(&remote, &qs, 10, None)?;
        sizes.push(json!({
            "rows": n,
            "ingest_rows_per_s": {"local": local_rate, "milvus": milvus_rate},
            "build_s": {"local_hnsw": local_build_s, "milvus_index_wait": milvus_index_s},
            "p50_ms": {"exact": e50, "hnsw": h50, "milvus": m50},
            "p99_ms": {"exact": e99, "hnsw": h99, "milvus": m99},
            "recall10": {"hnsw": scale::recall(&hres, &truth, 10), "milvus": scale::recall(&mres, &truth, 10)},
        }));
        drop(local);
        drop(built);
        if !o.keep {
            Collection::drop_collection(&url)?;
        }
        let _ = std::fs::remove_file(&path);
    }
    Ok(json!({
        "cpu": scale::cpu_model(),
        "server": base.endpoint(),
        "dim": o.dim,
        "queries": o.queries,
        "m": o.m, "ef_construction": o.ef_construction, "ef_search": o.ef_search,
        "batch": o.batch,
        "sizes": sizes,
    }))
}

/// The report as Markdown tables, ratios against the local index.
pub fn render(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut s = format!(
        "CPU: {}; Milvus {} (2.3 standalone, same machine); {}-d clustered unit vectors, \
         {} queries one at a time, k = 10, HNSW M {} efConstruction {} ef {} on both sides.\n\n",
        r["cpu"].as_str().unwrap_or("?"),
        r["server"].as_str().unwrap_or("?"),
        r["dim"],
        r["queries"],
        r["m"],
        r["ef_construction"],
        r["ef_search"],
    );
    s.push_str(&format!(
        "Ingest (vectors + metadata, committed batches of {} rows; embedding not counted):\n\n",
        r["batch"]
    ));
    s.push_str("| rows | local rows/s | Milvus rows/s | Milvus / local | Milvus index wait s | local HNSW build s |\n|---:|---:|---:|---:|---:|---:|\n");
    let sizes = r["sizes"].as_array().cloned().unwrap_or_default();
    for z in &sizes {
        let (l, m) = (
            f(&z["ingest_rows_per_s"]["local"]),
            f(&z["ingest_rows_per_s"]["milvus"]),
        );
        s.push_str(&format!(
            "| {} | {l:.0} | {m:.0} | {:.2}× | {:.1} | {:.1} |\n",
            z["rows"],
            m / l,
            f(&z["build_s"]["milvus_index_wait"]),
            f(&z["build_s"]["local_hnsw"]),
        ));
    }
    if let Some(e) = r.get("end_to_end") {
        let (l, m) = (f(&e["local_img_per_s"]), f(&e["milvus_img_per_s"]));
        s.push_str(&format!(
            "\nEnd to end (`simcase index` of {} images, {}, decode + embed + commit): local \
             {l:.1} img/s, Milvus {m:.1} img/s, Milvus / local {:.2}×.\n",
            e["images"],
            e["model"].as_str().unwrap_or("?"),
            m / l
        ));
    }
    s.push_str("\nSearch (single query, ms; recall@10 against local exact):\n\n");
    s.push_str("| rows | engine | p50 | p99 | p50 / Milvus | recall@10 |\n|---:|---|---:|---:|---:|---:|\n");
    for z in &sizes {
        let m50 = f(&z["p50_ms"]["milvus"]);
        for (name, key, rec) in [
            ("local exact", "exact", None),
            ("local HNSW", "hnsw", Some("hnsw")),
            ("Milvus HNSW", "milvus", Some("milvus")),
        ] {
            let p50 = f(&z["p50_ms"][key]);
            s.push_str(&format!(
                "| {} | {name} | {p50:.3} | {:.3} | {:.2} | {} |\n",
                z["rows"],
                f(&z["p99_ms"][key]),
                p50 / m50,
                rec.map_or("1 (truth)".to_string(), |k| format!(
                    "{:.3}",
                    f(&z["recall10"][k])
                )),
            ));
        }
    }
    s
}
