//! `simcase bench`: throughput measured side by side with the reference runtimes, in one run.
//! The peers (PyTorch, onnxruntime, FAISS) run from `tools/bench_peers.py` on the same cores;
//! results are printed as ratios. Not part of the tests: timings belong here, not in asserts.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use simcase_imaging::decode_path;
use simcase_index::{FlatIndex, VectorIndex};
use simcase_models::default_device;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Embedding throughput (img/s) at the given batch sizes, against PyTorch / onnxruntime.
    Embed {
        #[arg(long, default_value_t = simcase_models::DEFAULT_MODEL)]
        model: simcase_models::ModelId,
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        batch: Vec<usize>,
        /// Images timed per batch size (real images from --data, cycled).
        #[arg(long, default_value_t = 32)]
        images: usize,
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// Skip the Python peers.
        #[arg(long)]
        no_peer: bool,
    },
    /// Exact search latency on random unit vectors, single query and batched, against FAISS.
    Search {
        #[arg(long, value_delimiter = ',', default_value = "100000,1600000")]
        rows: Vec<usize>,
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(short, long, default_value_t = 100)]
        k: usize,
        #[arg(long)]
        no_peer: bool,
    },
    /// End-to-end ingest (decode + embed + commit) of a manifest against the embed-only rate.
    Ingest {
        #[arg(long, default_value = "../shared/data/dev.csv")]
        manifest: PathBuf,
        #[arg(long, default_value_t = simcase_models::DEFAULT_MODEL)]
        model: simcase_models::ModelId,
        /// Images ingested (the first N rows of the manifest).
        #[arg(long, default_value_t = 200)]
        images: usize,
    },
    /// HTTP load on a running `simcase serve`: search-by-id and search-by-upload, N
    /// keep-alive connections for a fixed time; req/s, p50, p99 and errors.
    Serve {
        /// host:port of the server.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Image uploaded by the upload phase.
        #[arg(long, default_value = "../shared/data/images/busi/benign_136.png")]
        upload: PathBuf,
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        #[arg(long, env = "SIMCASE_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

fn serve_load(
    addr: &str,
    seconds: u64,
    connections: usize,
    upload: &std::path::Path,
    k: usize,
    token: Option<&str>,
) -> Result<()> {
    use simcase_server::{client, load};
    let mut c = client::Client::new(addr);
    if let Some(t) = token {
        c = c.with_token(t);
    }
    let stats = c.get("/api/stats")?.json()?;
    let items = stats["items"]
        .as_u64()
        .context("no item count in /api/stats")? as usize;
    anyhow::ensure!(items > 0, "the served index is empty");
    let bytes = std::fs::read(upload).with_context(|| format!("reading {}", upload.display()))?;
    let (ty, body) = client::multipart_file("query.png", &bytes);
    let dur = std::time::Duration::from_secs(seconds);
    println!(
        "{connections} connections x {seconds} s against http://{addr} ({items} items, model {}, k={k})",
        stats["model"]
    );
    println!("| endpoint | requests | req/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let by_id = move |conn: usize, i: usize| -> load::Request {
        let id = (conn * 7919 + i * 104_729) % items;
        ("GET", format!("/api/search?id={id}&k={k}"), None)
    };
    let by_upload = |_: usize, _: usize| -> load::Request {
        (
            "POST",
            format!("/api/search?k={k}"),
            Some((ty.clone(), body.clone())),
        )
    };
    let phases: [(&str, load::MakeRequest); 2] = [
        ("search by id (GET)", &by_id),
        ("search by upload (POST)", &by_upload),
    ];
    for (name, make) in phases {
        let r = load::run(addr, token, connections, dur, make);
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.requests,
            r.per_second(),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors
        );
    }
    let after = c.get("/api/stats")?.json()?;
    println!("embedding batches: {}", after["embedding"]);
    Ok(())
}

fn peers(args: &[String]) -> Result<serde_json::Value> {
    let python = std::env::var("SIMCASE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/bench_peers.py");
    eprintln!(
        "running peers: {python} tools/bench_peers.py {}",
        args.join(" ")
    );
    let out = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !out.status.success() {
        bail!(
            "bench_peers.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn sample_images(data: &std::path::Path, n: usize) -> Result<Vec<simcase_imaging::Image>> {
    let sources = simcase_ingest::read_manifest(&data.join("dev.csv"))?;
    let mut imgs = Vec::new();
    for s in sources.iter().take(n.max(1)) {
        imgs.push(decode_path(&s.path, &Default::default())?.image);
    }
    Ok(imgs)
}

/// Repeats per measurement; the best is reported (for the peers too), since on a shared VM
/// the noise only ever slows a run down.
const REPEATS: usize = 3;

fn embed_rate(enc: &dyn simcase_models::Encoder, inputs: &[Vec<f32>], batch: usize) -> Result<f64> {
    enc.embed(&inputs[..batch.min(inputs.len())])?; // warm-up
    let mut best = 0f64;
    for _ in 0..REPEATS {
        let t = Instant::now();
        for chunk in inputs.chunks(batch) {
            enc.embed(chunk)?;
        }
        best = best.max(inputs.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn lcg_unit_vectors(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed;
    let mut v: Vec<f32> = (0..rows * dim)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    for r in v.chunks_mut(dim) {
        let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
        r.iter_mut().for_each(|a| *a /= n);
    }
    v
}

pub fn run(cmd: &BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Serve {
            addr,
            seconds,
            connections,
            upload,
            k,
            token,
        } => serve_load(addr, *seconds, *connections, upload, *k, token.as_deref())?,
        BenchCmd::Embed {
            model,
            batch,
            images,
            data,
            no_peer,
        } => {
            crate::ensure_model(*model)?;
            let enc = simcase_models::load(*model, &default_device())?;
            let imgs = sample_images(data, *images)?;
            let inputs: Vec<Vec<f32>> = (0..*images)
                .map(|i| enc.preprocess().apply(&imgs[i % imgs.len()]))
                .collect();
            let peer = if *no_peer {
                serde_json::Value::Null
            } else {
                let b: Vec<String> = batch.iter().map(|b| b.to_string()).collect();
                peers(&[
                    "embed".into(),
                    "--model".into(),
                    model.to_string(),
                    "--images".into(),
                    images.to_string(),
                    "--batch".into(),
                    b.join(","),
                ])?
            };
            println!("| model | batch | simcase img/s | peer | peer img/s | ratio |");
            println!("|---|---:|---:|---|---:|---:|");
            for &b in batch {
                let ours = embed_rate(enc.as_ref(), &inputs, b)?;
                let mut printed = false;
                if let Some(p) = peer.as_object() {
                    for (name, rates) in p {
                        if let Some(r) = rates[b.to_string()].as_f64() {
                            println!(
                                "| {model} | {b} | {ours:.2} | {name} | {r:.2} | {:.2}x |",
                                ours / r
                            );
                            printed = true;
                        }
                    }
                }
                if !printed {
                    println!("| {model} | {b} | {ours:.2} | - | - | - |");
                }
            }
        }
        BenchCmd::Search {
            rows,
            dim,
            batch,
            k,
            no_peer,
        } => {
            let peer = if *no_peer {
                serde_json::Value::Null
            } else {
                let r: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
                peers(&[
                    "search".into(),
                    "--rows".into(),
                    r.join(","),
                    "--dim".into(),
                    dim.to_string(),
                    "--batch".into(),
                    batch.to_string(),
                    "--k".into(),
                    k.to_string(),
                ])?
            };
            println!("| rows | dim | queries | simcase ms/query | FAISS ms/query | ratio (time) |");
            println!("|---:|---:|---:|---:|---:|---:|");
            for &n in rows {
                let data = lcg_unit_vectors(n, *dim, 42);
                let qs = lcg_unit_vectors(*batch, *dim, 7);
                let idx = FlatIndex::new(data, *dim);
                for nq in [1usize, *batch] {
                    let qrefs: Vec<&[f32]> = qs.chunks(*dim).take(nq).collect();
                    idx.search(&qrefs, *k, None); // warm-up (page-in)
                    let reps = if nq == 1 { 20 } else { 3 };
                    let t = Instant::now();
                    for _ in 0..reps {
                        std::hint::black_box(idx.search(&qrefs, *k, None));
                    }
                    let ours = t.elapsed().as_secs_f64() * 1e3 / (reps * nq) as f64;
                    let theirs = peer[n.to_string()][nq.to_string()].as_f64();
                    match theirs {
                        Some(f) => println!(
                            "| {n} | {dim} | {nq} | {ours:.3} | {f:.3} | {:.2} |",
                            ours / f
                        ),
                        None => println!("| {n} | {dim} | {nq} | {ours:.3} | - | - |"),
                    }
                }
            }
        }
        BenchCmd::Ingest {
            manifest,
            model,
            images,
        } => {
            crate::ensure_model(*model)?;
            let enc = simcase_models::load(*model, &default_device())?;
            let mut sources = simcase_ingest::read_manifest(manifest)?;
            sources.truncate(*images);
            let decoded: Vec<_> = sources
                .iter()
                .filter_map(|s| decode_path(&s.path, &Default::default()).ok())
                .collect();
            let inputs: Vec<Vec<f32>> = decoded
                .iter()
                .map(|d| enc.preprocess().apply(&d.image))
                .collect();
            let embed_only = embed_rate(enc.as_ref(), &inputs, 16)?;
            let dir =
                std::env::temp_dir().join(format!("simcase-bench-ingest-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut w = simcase_index::Writer::open(&dir, model.name(), enc.dim())?;
            let opts = simcase_ingest::Options {
                batch: 16,
                decode: Default::default(),
                decode_threads: 0,
                progress: false,
            };
            let t = Instant::now();
            let s = simcase_ingest::run(&mut w, enc.as_ref(), sources, &opts)?;
            let rate = s.added as f64 / t.elapsed().as_secs_f64();
            drop(w);
            let _ = std::fs::remove_dir_all(&dir);
            println!("| model | images | embed-only img/s | ingest img/s | ingest / embed |");
            println!("|---|---:|---:|---:|---:|");
            println!(
                "| {model} | {} | {embed_only:.2} | {rate:.2} | {:.0}% |",
                s.added,
                100.0 * rate / embed_only
            );
        }
    }
    Ok(())
}
