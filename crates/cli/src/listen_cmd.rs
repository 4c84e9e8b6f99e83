//! `simcase listen --index DIR --aet SIMCASE --port 11112 --allow-aet ORTHANC…`: a DICOM node
//! (C-STORE and C-ECHO SCP) that indexes what is pushed to it ([`simcase_pacs::listen`]). Runs
//! until killed; what was received and not yet indexed is indexed when it starts again.

use anyhow::{Context, Result};
use simcase_pacs::listen::{self, ListenOptions};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(clap::Args)]
pub(crate) struct ListenArgs {
    /// Index folder (created with --model if missing; it can be served by `simcase serve` at
    /// the same time).
    #[arg(long)]
    index: PathBuf,
    #[command(flatten)]
    embed: crate::EmbedPrecision,
    /// This node's AE title (what the PACS or modality calls).
    #[arg(long, default_value = "SIMCASE")]
    aet: String,
    /// TCP port (0: any free one, printed).
    #[arg(long, default_value_t = 11112)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Calling AE titles allowed to push (repeatable); others are refused at association.
    #[arg(long = "allow-aet", value_name = "AE")]
    allow: Vec<String>,
    /// Accept any calling AE title (instead of --allow-aet).
    #[arg(long, conflicts_with = "allow")]
    any_aet: bool,
    /// The model of a new index (an existing index keeps its own).
    #[arg(long, default_value_t = simcase_models::ModelSet::one(simcase_models::DEFAULT_MODEL))]
    model: simcase_models::ModelSet,
    /// Objects embedded (and committed) together.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Keep every received object in this folder (the items point there); without it, an
    /// object is removed once indexed and its item's path is dimse://SOP-INSTANCE-UID.
    #[arg(long, value_name = "DIR")]
    keep_files: Option<PathBuf>,
    /// Largest object accepted, in MiB.
    #[arg(long, default_value_t = 2048)]
    max_object_mb: usize,
    /// Frames of multi-frame objects to index, each as an item: all, first, middle, or
    /// stride:N.
    #[arg(long, default_value = "all")]
    frames: simcase_imaging::FrameSelect,
}

pub(crate) fn run(a: &ListenArgs) -> Result<()> {
    anyhow::ensure!(
        !a.aet.trim().is_empty() && a.aet.len() <= 16,
        "--aet {:?}: an AE title is 1 to 16 characters",
        a.aet
    );
    anyhow::ensure!(
        !a.allow.is_empty() || a.any_aet,
        "give the calling AE titles allowed to push (--allow-aet ORTHANC …), or --any-aet"
    );
    let model: simcase_models::ModelSet = match simcase_index::Reader::open(&a.index)
        .ok()
        .map(|r| r.settings().model.clone())
    {
        Some(m) => m.parse()?,
        None => a.model.clone(),
    };
    crate::ensure_models(&model)?;
    let used = a.embed.apply();
    let enc = model.load(&simcase_models::default_device())?;
    let mut writer = simcase_index::Writer::open(&a.index, &model.to_string(), enc.dim())?;
    if writer.record_embedding_precision(used.name())?.as_deref() == Some("mixed") {
        eprintln!(
            "warning: {} already holds vectors embedded at another precision than {used}; it \
             is now recorded as mixed",
            a.index.display()
        );
    }
    if let Some(k) = &a.keep_files {
        std::fs::create_dir_all(k).with_context(|| format!("creating {}", k.display()))?;
    }
    let spool = listen::spool_dir(&a.index);
    std::fs::create_dir_all(&spool).with_context(|| format!("creating {}", spool.display()))?;
    let opts = ListenOptions {
        aet: a.aet.trim().to_string(),
        allowed: (!a.any_aet).then(|| a.allow.iter().map(|s| s.trim().to_string()).collect()),
        max_object_bytes: a.max_object_mb.max(1) << 20,
    };
    let listener = std::net::TcpListener::bind((a.bind, a.port))
        .with_context(|| format!("listening on {}:{}", a.bind, a.port))?;
    let addr = listener.local_addr()?;
    println!("listening as {} on {addr}", opts.aet);
    if opts.allowed.is_none() {
        eprintln!("any calling AE title may push (--any-aet)");
    }
    let left = listen::spooled(&spool).len();
    if left > 0 {
        eprintln!("{left} received objects not yet indexed: indexing them first");
    }
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(listen::Counts::default());
    {
        let (spool, opts, counts, stop) =
            (spool.clone(), opts.clone(), counts.clone(), stop.clone());
        std::thread::Builder::new()
            .name("simcase-listen".into())
            .spawn(move || {
                if let Err(e) = listen::accept_loop(listener, spool, opts, counts, wake_tx, stop) {
                    tracing::error!("the listener stopped: {e:#}");
                }
            })?;
    }
    let ingest_opts = simcase_ingest::Options {
        batch: a.batch.max(1),
        decode: simcase_imaging::DecodeOptions {
            frames: a.frames,
            slice_stride: 1,
            budget: Some(simcase_imaging::DecodeBudget::from_mb(
                1024,
                std::time::Duration::from_secs(3600),
            )),
            ..Default::default()
        },
        decode_threads: 0,
        progress: false,
        relabel: false,
    };
    listen::index_loop(
        &mut writer,
        enc.as_ref(),
        &spool,
        a.keep_files.as_deref(),
        &ingest_opts,
        &wake_rx,
        &stop,
    )?;
    Ok(())
}
