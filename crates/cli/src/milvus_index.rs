//! `simcase index … --index milvus://HOST:PORT/COLLECTION`: the same ingest as into a local
//! folder (decode, embed, commit batch by batch, skip known content, merge manifest labels),
//! written into a Milvus collection. The collection is created on first use with the index
//! type given (`--index-type hnsw|ivf_flat|ivf_sq8|flat`), which it then keeps.

use crate::IndexArgs;
use anyhow::{bail, Result};
use simcase_ingest as ingest;
use simcase_milvus::{Collection, IndexSpec, MilvusUrl};

/// Whether `--index` names a Milvus collection.
pub(crate) fn is_milvus(a: &IndexArgs) -> bool {
    a.index.to_str().is_some_and(MilvusUrl::is_milvus)
}

/// The index spec `--index-type` and its parameters ask for.
fn spec(a: &IndexArgs) -> Result<IndexSpec> {
    let t = a
        .index_type
        .as_deref()
        .unwrap_or("hnsw")
        .to_ascii_lowercase();
    let nlist = a.nlist.unwrap_or(128);
    Ok(match t.as_str() {
        "hnsw" | "auto" => IndexSpec::Hnsw {
            m: a.hnsw_m.unwrap_or(16),
            ef_construction: a.hnsw_ef_construction.unwrap_or(128),
        },
        "flat" => IndexSpec::Flat,
        "ivf_flat" => IndexSpec::IvfFlat { nlist },
        "ivf_sq8" => IndexSpec::IvfSq8 { nlist },
        other => {
            bail!("--index-type {other} is not a Milvus index type (hnsw, ivf_flat, ivf_sq8, flat)")
        }
    })
}

pub(crate) fn index_cmd(a: &IndexArgs) -> Result<ingest::Summary> {
    let url = MilvusUrl::parse(&a.index.to_string_lossy())?;
    if a.precision.is_some() {
        bail!("--precision applies to local index folders; a Milvus collection stores f32 vectors");
    }
    if a.hnsw_ef_search.is_some() {
        bail!("--hnsw-ef-search is not stored in a Milvus collection: give --ef-search to search or serve");
    }
    let spec = spec(a)?;
    let sources = a.inputs(&[])?;
    crate::ensure_models(&a.model)?;
    let enc = a.model.load(&simcase_models::default_device())?;
    let mut coll = Collection::create_or_open(&url, &a.model.to_string(), enc.dim(), &spec)?;
    let before = coll.count()?;
    let opts = a.ingest_options();
    let t = std::time::Instant::now();
    let s = ingest::run(&mut coll, enc.as_ref(), sources, &opts)?;
    let secs = t.elapsed().as_secs_f64();
    let total = coll.count()?;
    let updated = match a.manifest {
        Some(_) => format!("{} labels updated, ", s.updated),
        None => String::new(),
    };
    eprintln!(
        "indexed {} new, {updated}{} already present, {} failed in {secs:.1}s ({:.1} img/s); {total} items in {url} ({} before, index {})",
        s.added,
        s.skipped,
        s.failed,
        s.added as f64 / secs.max(1e-9),
        before,
        coll.info().index,
    );
    // A collection keeps no errors table: the failures are listed here, in full.
    let mut failures: Vec<&ingest::Failure> = s.failures.iter().collect();
    failures.sort_by(|x, y| x.path.cmp(&y.path));
    for f in failures {
        eprintln!("failed: {}: {} ({})", f.path, f.reason, f.kind);
    }
    Ok(s)
}
