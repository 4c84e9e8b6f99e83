//! `simcase bench`: the flags. The benchmarks, the API fuzzer and the soak are the
//! `simcase_bench` crate; this file parses, installs the model where one is needed, and calls.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};

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
        /// Precisions measured, each beside its peers (bf16: PyTorch under autocast) and with
        /// its cosine to f32 on the same images.
        #[arg(long, value_delimiter = ',', default_value = "f32")]
        precision: Vec<simcase_models::Precision>,
        /// Skip the Python peers.
        #[arg(long)]
        no_peer: bool,
        /// Run the peers under glibc's default malloc policy instead of simcase's (one arena,
        /// freed blocks kept; `GLIBC_TUNABLES`). PyTorch's `litemedsam` rate then drops and
        /// varies between runs, as its large tensors are mapped and faulted in afresh.
        #[arg(long)]
        peers_default_heap: bool,
        /// Rounds; each times one pass of every peer and of simcase at each precision, back to
        /// back, so that a VM's drift over minutes lands on both sides. Ratios: best over best,
        /// and the median over the rounds of the two passes' ratio.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    /// `simcase adapt`'s learning time per method on a synthetic labelled archive (80/10/10
    /// train/val/test), the time to map every row and the per-query cost of a view, and the
    /// test P@1 before and after; whitening against numpy doing the same work.
    Adapt {
        /// Rows in all.
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Their width.
        #[arg(long, default_value_t = 512)]
        dim: usize,
        /// Classes.
        #[arg(long, default_value_t = 50)]
        classes: usize,
        /// Methods (comma-separated).
        #[arg(long, default_value = "whiten,lw,lda,mlp", value_delimiter = ',')]
        methods: Vec<String>,
        /// Skip numpy.
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
    /// Search at archive scale: writes a data set (random unit vectors, or a synthetic labelled
    /// archive drawn from a model fitted to --model's embeddings of --manifest), computes the
    /// exact ground truth and measures each of simcase's engines (and FAISS with --peers):
    /// build time, bytes/vector, recall@10/@100, p50/p99, batch q/s, filtered 1%/10%, P@1.
    /// --validate: only check the generator against the real data. --write-index DIR: only
    /// write the synthetic archive (--rows rows) as a simcase index.
    Scale {
        /// random | synthetic
        #[arg(long, default_value = "synthetic")]
        data: simcase_bench::scale::DataKind,
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        /// Dimension of random data (synthetic data takes the model's).
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Queries timed one by one (p50/p99, filtered rows).
        #[arg(long, default_value_t = 200)]
        latency_queries: usize,
        #[arg(long, default_value_t = 32)]
        m: usize,
        #[arg(long, default_value_t = 100)]
        ef_construction: usize,
        #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
        ef_search: Vec<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also run FAISS (tools/bench_peers.py scale; needs faiss-cpu and numpy).
        #[arg(long)]
        peers: bool,
        /// Working folder: data files, the cached embeddings and the fitted model
        /// (default $SIMCASE_HOME/bench-scale).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Embedding model the synthetic archive imitates.
        #[arg(long, default_value_t = simcase_models::DEFAULT_MODEL)]
        model: simcase_models::ModelId,
        /// Labelled manifest (with splits and patient ids) the model is fitted on.
        #[arg(long, default_value = "../shared/data/dev.csv")]
        manifest: PathBuf,
        /// Write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Keep the data files in the working folder.
        #[arg(long)]
        keep: bool,
        /// Only validate the generator: draws the size of the manifest, P@1 against the real.
        #[arg(long, conflicts_with = "write_index")]
        validate: bool,
        /// Draws scored by --validate (seeds 0..N).
        #[arg(long, default_value_t = 5)]
        draws: u64,
        /// Only write --rows synthetic rows as a simcase index in DIR (rerun with the same --rows
        /// and --seed, it resumes an interrupted write).
        #[arg(long)]
        write_index: Option<PathBuf>,
        /// With --write-index: f32, f16 or i8 vectors searched first (default: the index's;
        /// f32 for a new one).
        #[arg(long, requires = "write_index")]
        precision: Option<simcase_index::Precision>,
        /// With --write-index: flat, hnsw or auto (default: the index's; auto for a new one,
        /// which builds a graph from 20,000 rows on).
        #[arg(long, requires = "write_index")]
        index_type: Option<simcase_index::IndexType>,
        /// With --write-index: threads that build the HNSW graph (0: every core; 1: the same
        /// graph on every run).
        #[arg(long, default_value_t = 0, value_name = "N", requires = "write_index")]
        hnsw_build_threads: usize,
    },
    /// The Milvus backend against the local index, in one run: ingest rows/s (the same rows
    /// and committed batches; with --images, also `simcase index` end to end on real images),
    /// single-query p50/p99 of local exact, local HNSW and Milvus HNSW, and recall@10 of both
    /// graphs against local exact, per --rows size. Needs a running Milvus 2.3.
    Milvus {
        /// The server and a collection-name prefix (`PREFIX_ROWS` collections are created and
        /// dropped); credentials as for `index`.
        #[arg(long, default_value = "milvus://127.0.0.1:19530/simcase_bench")]
        url: String,
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        rows: Vec<usize>,
        #[arg(long, default_value_t = 384)]
        dim: usize,
        /// Queries timed one by one.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 16)]
        m: usize,
        #[arg(long, default_value_t = 128)]
        ef_construction: usize,
        #[arg(long, default_value_t = 64)]
        ef_search: usize,
        /// Rows per committed ingest batch (both sides).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// End to end: index the first N images of --manifest locally and into Milvus with
        /// `simcase index` (0: skip).
        #[arg(long, default_value_t = 100)]
        images: usize,
        #[arg(long, default_value = "../shared/data/dev.csv")]
        manifest: PathBuf,
        #[arg(long, default_value_t = simcase_models::DEFAULT_MODEL)]
        model: simcase_models::ModelId,
        /// Working folder (default $SIMCASE_HOME/bench-milvus).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Keep the Milvus collections afterwards.
        #[arg(long)]
        keep: bool,
        /// Write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
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
        /// Precisions measured, each ingest against its own embed-only rate.
        #[arg(long, value_delimiter = ',', default_value = "f32")]
        precision: Vec<simcase_models::Precision>,
    },
    /// HTTP load on a running `simcase serve`: search-by-id and search-by-upload, N
    /// keep-alive connections for a fixed time; req/s, p50, p99 and errors. With --chaos: a
    /// soak of a server this command starts (--index), mixing valid searches, hostile
    /// parameters, bomb uploads and slow clients; fails on a crash, a 5xx other than 503, or
    /// a peak RSS past --rss-bound-mb.
    Serve {
        /// host:port of the server (without --chaos).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Seconds per phase (with --chaos: of the whole soak).
        #[arg(long, visible_alias = "secs", default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Image uploaded by the upload searches.
        #[arg(long, default_value = "../shared/data/images/busi/benign_136.png")]
        upload: PathBuf,
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        #[arg(long, env = "SIMCASE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Start `simcase serve --index INDEX` on loopback and soak it with hostile traffic.
        #[arg(long, requires = "index")]
        chaos: bool,
        /// The index the chaos soak serves.
        #[arg(long)]
        index: Option<PathBuf>,
        /// Chaos: the server's peak RSS (VmHWM) must stay under this many MiB.
        #[arg(long, default_value_t = 2048)]
        rss_bound_mb: u64,
        /// Chaos: connections held open with half-sent headers.
        #[arg(long, default_value_t = 8)]
        slow_clients: usize,
        /// Chaos: most bomb uploads in flight at once.
        #[arg(long, default_value_t = 4)]
        max_bombs: usize,
        /// Chaos: the RNG's seed (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Fuzz the HTTP API in process (no socket): generated requests from the API's real
    /// parameters, valid and hostile, for --secs; kept cases (--keep) are replayed first and
    /// new findings appended. Fails on a panic, a 5xx other than 503, an answer slower than
    /// --max-secs, a request growing the peak RSS past --rss-growth-mb, or a 2xx for an
    /// invalid parameter.
    Fuzz {
        #[arg(long)]
        index: PathBuf,
        #[arg(long, env = "SIMCASE_FUZZ_SECS", default_value_t = 20.0)]
        secs: f64,
        /// The RNG's seed (default: from the clock, printed).
        #[arg(long, env = "SIMCASE_FUZZ_SEED")]
        seed: Option<u64>,
        /// Regression cases (one JSON case a line): replayed first, new findings appended.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Each case is written here before it is sent (to name the case if the process dies).
        #[arg(long)]
        pending: Option<PathBuf>,
        /// The valid upload.
        #[arg(long, default_value = "../shared/data/images/busi/benign_136.png")]
        upload: PathBuf,
        #[arg(long, default_value_t = 10.0)]
        max_secs: f64,
        #[arg(long, default_value_t = 512)]
        rss_growth_mb: u64,
        /// Stop after this many new findings.
        #[arg(long, default_value_t = 20)]
        max_findings: usize,
        /// Skip generated cases whose path and query contain this (repeatable): explore past
        /// a known finding that kills the process.
        #[arg(long)]
        exclude: Vec<String>,
    },
    /// Open time and resident memory of an index of N rows (synthetic metadata, sparse 384-d
    /// vectors, made in --dir when missing), and the metadata side of a filtered and a grouped
    /// search, of `/api/stats`' counts and of the writer's known-hash set at that size.
    Open {
        #[arg(long, default_value_t = 1_600_000)]
        rows: usize,
        #[arg(long, default_value_t = 384)]
        dim: usize,
        /// Where the synthetic index is kept (default: a folder in the temp dir, per size).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 12)]
        seed: u64,
        /// Delete the index afterwards.
        #[arg(long)]
        clean: bool,
    },
}

fn seed_or_clock(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

fn index_model(index: &std::path::Path) -> Result<simcase_models::ModelSet> {
    simcase_index::Reader::open(index)?.settings().model.parse()
}

pub fn run(cmd: &BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Embed {
            model,
            batch,
            images,
            data,
            precision,
            no_peer,
            peers_default_heap,
            rounds,
        } => {
            crate::ensure_model(*model)?;
            let peers = match (*no_peer, *peers_default_heap) {
                (true, _) => None,
                (false, true) => Some(simcase_bench::peers::PeerHeap::Default),
                (false, false) => Some(simcase_bench::peers::PeerHeap::Same),
            };
            simcase_bench::throughput::embed(
                *model, batch, *images, data, precision, peers, *rounds,
            )
        }
        BenchCmd::Adapt {
            rows,
            dim,
            classes,
            methods,
            no_peer,
        } => simcase_bench::adapt::run(&simcase_bench::adapt::Opts {
            rows: *rows,
            dim: *dim,
            classes: *classes,
            methods: methods.iter().map(|m| m.parse()).collect::<Result<_>>()?,
            no_peer: *no_peer,
        }),
        BenchCmd::Search {
            rows,
            dim,
            batch,
            k,
            no_peer,
        } => simcase_bench::throughput::search(rows, *dim, *batch, *k, *no_peer),
        BenchCmd::Scale {
            data,
            rows,
            dim,
            queries,
            latency_queries,
            m,
            ef_construction,
            ef_search,
            seed,
            peers,
            work,
            model,
            manifest,
            json,
            keep,
            validate,
            draws,
            write_index,
            precision,
            index_type,
            hnsw_build_threads,
        } => {
            let work = match work {
                Some(w) => w.clone(),
                None => simcase_models::simcase_home()?.join("bench-scale"),
            };
            if *data == simcase_bench::scale::DataKind::Synthetic
                || *validate
                || write_index.is_some()
            {
                crate::ensure_model(*model)?;
            }
            let fit = || {
                std::fs::create_dir_all(&work)
                    .with_context(|| format!("creating {}", work.display()))?;
                simcase_bench::synth::fit_from_manifest(manifest, *model, &work, Default::default())
            };
            let report = if *validate {
                let (fitted, samples) = fit()?;
                let seeds: Vec<u64> = (0..*draws).collect();
                let v = simcase_bench::synth::validate(&samples, &fitted, &seeds)?;
                print!("{}", v.render());
                serde_json::to_value(&v)?
            } else if let Some(dir) = write_index {
                let (fitted, _) = fit()?;
                let layout = simcase_bench::scale::IndexLayout {
                    precision: *precision,
                    index_type: *index_type,
                    build_threads: *hnsw_build_threads,
                };
                simcase_bench::scale::write_index(&fitted, *rows, *seed, dir, 10_000, layout)?;
                let r = simcase_index::Reader::open(dir)?;
                println!(
                    "wrote {rows} synthetic rows ({}, {}-d, {}, {}) to {}",
                    fitted.source,
                    fitted.dim,
                    r.precision(),
                    r.ann_settings().index_type,
                    dir.display()
                );
                return Ok(());
            } else {
                simcase_bench::scale::run(&simcase_bench::scale::Options {
                    data: *data,
                    rows: *rows,
                    dim: *dim,
                    queries: *queries,
                    latency_queries: *latency_queries,
                    m: *m,
                    ef_construction: *ef_construction,
                    ef_search: ef_search.clone(),
                    seed: *seed,
                    peers: *peers,
                    work,
                    model: *model,
                    manifest: manifest.clone(),
                    keep: *keep,
                })?
            };
            if let Some(p) = json {
                std::fs::write(p, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        }
        BenchCmd::Milvus {
            url,
            rows,
            dim,
            queries,
            m,
            ef_construction,
            ef_search,
            batch,
            seed,
            images,
            manifest,
            model,
            work,
            keep,
            json,
        } => {
            let work = match work {
                Some(w) => w.clone(),
                None => simcase_models::simcase_home()?.join("bench-milvus"),
            };
            let o = simcase_bench::milvus::Options {
                url: url.clone(),
                rows: rows.clone(),
                dim: *dim,
                queries: *queries,
                m: *m,
                ef_construction: *ef_construction,
                ef_search: *ef_search,
                batch: *batch,
                seed: *seed,
                work: work.clone(),
                keep: *keep,
            };
            let end_to_end = if *images > 0 {
                crate::ensure_model(*model)?;
                Some(end_to_end_ingest(url, manifest, *model, *images, &work)?)
            } else {
                None
            };
            let mut report = simcase_bench::milvus::run(&o)?;
            if let Some(e) = &end_to_end {
                report["end_to_end"] = e.clone();
            }
            print!("{}", simcase_bench::milvus::render(&report));
            if let Some(p) = json {
                std::fs::write(p, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        }
        BenchCmd::Ingest {
            manifest,
            model,
            images,
            precision,
        } => {
            crate::ensure_model(*model)?;
            simcase_bench::throughput::ingest(manifest, *model, *images, precision)
        }
        BenchCmd::Serve {
            chaos: false,
            addr,
            seconds,
            connections,
            upload,
            k,
            token,
            ..
        } => simcase_bench::load::serve(addr, *seconds, *connections, upload, *k, token.as_deref()),
        BenchCmd::Serve {
            chaos: true,
            seconds,
            connections,
            upload,
            index,
            rss_bound_mb,
            slow_clients,
            max_bombs,
            seed,
            ..
        } => {
            let index = index.as_ref().context("--chaos needs --index")?;
            crate::ensure_models(&index_model(index)?)?;
            let token = simcase_bench::chaos::random_token()?;
            let seed = seed_or_clock(*seed);
            let log =
                std::env::temp_dir().join(format!("simcase-chaos-{}.log", std::process::id()));
            let mut server = std::process::Command::new(std::env::current_exe()?);
            server
                .args(["--log", "warn", "serve", "--bind", "127.0.0.1:0", "--token"])
                .arg(&token)
                .arg("--index")
                .arg(index)
                .env_remove("SIMCASE_TOKEN");
            println!(
                "chaos: seed {seed}, {connections} connections, {slow_clients} slow clients, {seconds} s; server log {}",
                log.display()
            );
            let opts = simcase_bench::chaos::Options {
                token,
                secs: *seconds as f64,
                connections: *connections,
                slow_clients: *slow_clients,
                rss_bound_mb: *rss_bound_mb,
                max_bombs: *max_bombs,
                upload: upload.clone(),
                seed,
                log,
            };
            let rep = simcase_bench::chaos::run(server, &opts)?;
            print!("{}", rep.render());
            let v = rep.violations();
            anyhow::ensure!(v.is_empty(), "chaos soak failed: {}", v.join("; "));
            println!("chaos soak passed");
            Ok(())
        }
        BenchCmd::Fuzz {
            index,
            secs,
            seed,
            keep,
            pending,
            upload,
            max_secs,
            rss_growth_mb,
            max_findings,
            exclude,
        } => {
            crate::ensure_models(&index_model(index)?)?;
            let seed = seed_or_clock(*seed);
            println!("fuzz: seed {seed}, {secs} s");
            let rep = simcase_bench::fuzz::run(&simcase_bench::fuzz::Options {
                index: index.clone(),
                secs: *secs,
                seed,
                kept: keep.clone(),
                pending: pending.clone(),
                sample_png: upload.clone(),
                max_secs: *max_secs,
                rss_growth_mb: *rss_growth_mb,
                max_findings: *max_findings,
                exclude: exclude.clone(),
            })?;
            print!("{}", rep.render());
            anyhow::ensure!(
                rep.findings.is_empty(),
                "fuzz: {} findings (seed {seed})",
                rep.findings.len()
            );
            Ok(())
        }
        BenchCmd::Open {
            rows,
            dim,
            dir,
            seed,
            clean,
        } => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("simcase-bench-open-{rows}")));
            let o = simcase_bench::open::Opts {
                rows: *rows,
                dim: *dim,
                dir: dir.clone(),
                seed: *seed,
            };
            let rep = simcase_bench::open::run(&o);
            if *clean {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            simcase_bench::open::print(&rep?);
            Ok(())
        }
    }
}

/// `simcase index` of the first `images` rows of `manifest` into a fresh local folder and into
/// a fresh collection (`PREFIX_images`), each a child process timed from start to exit: the
/// same decode and embedding on both sides, so the ratio is what the sink costs end to end.
fn end_to_end_ingest(
    url: &str,
    manifest: &Path,
    model: simcase_models::ModelId,
    images: usize,
    work: &Path,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let base = base
        .canonicalize()
        .with_context(|| format!("resolving {}", base.display()))?;
    let mut rdr = csv::Reader::from_path(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let headers = rdr.headers()?.clone();
    let col = headers
        .iter()
        .position(|h| h == "path")
        .with_context(|| format!("{}: no path column", manifest.display()))?;
    let sub = work.join("end-to-end.csv");
    let mut w =
        csv::Writer::from_path(&sub).with_context(|| format!("writing {}", sub.display()))?;
    w.write_record(&headers)?;
    for rec in rdr.records().take(images) {
        let rec = rec?;
        let mut row: Vec<String> = rec.iter().map(str::to_string).collect();
        row[col] = base.join(&row[col]).display().to_string();
        w.write_record(&row)?;
    }
    w.flush()?;
    drop(w);
    let remote = simcase_milvus::MilvusUrl::parse(url)?;
    let remote = remote.with_collection(&format!("{}_images", remote.collection))?;
    simcase_milvus::Collection::drop_collection(&remote)?;
    let local = work.join("end-to-end-index");
    let _ = std::fs::remove_dir_all(&local);
    let exe = std::env::current_exe().context("locating the simcase binary")?;
    let time = |index: &str| -> Result<f64> {
        let t = std::time::Instant::now();
        let out = std::process::Command::new(&exe)
            .args([
                "index",
                "--quiet",
                "--model",
                &model.to_string(),
                "--manifest",
            ])
            .arg(&sub)
            .args(["--index", index])
            .output()
            .context("running simcase index")?;
        anyhow::ensure!(
            out.status.success(),
            "simcase index --index {index} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(images as f64 / t.elapsed().as_secs_f64())
    };
    let local_rate = time(&local.display().to_string())?;
    let milvus_rate = time(&remote.to_string())?;
    eprintln!(
        "bench milvus: end to end, {images} images: local {local_rate:.1} img/s, Milvus \
         {milvus_rate:.1} img/s"
    );
    let _ = std::fs::remove_dir_all(&local);
    simcase_milvus::Collection::drop_collection(&remote)?;
    Ok(serde_json::json!({
        "images": images,
        "model": model.to_string(),
        "local_img_per_s": local_rate,
        "milvus_img_per_s": milvus_rate,
    }))
}
