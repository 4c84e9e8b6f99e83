//! Milvus as simcase's distributed backend: a `milvus://host:port/collection` index holds the
//! vectors and the metadata that filters and grouping need, behind the same [`VectorIndex`]
//! trait as a local index, and ingest writes into it through [`simcase_ingest::Sink`].
//!
//! Why our own client rather than the official `milvus-sdk-rust` 3.0.3: its v2 API targets
//! Milvus 2.6, and it pulls reqwest, rustls, webpki-roots, dashmap, lru, strum, chrono, uuid and
//! more into a build that needs none of them. Its proto files are what matters, so
//! `tools/milvus-proto-gen` turns them (once, with a vendored protoc) into the client stubs
//! committed under `src/proto/`, and the only runtime additions are tonic and prost (on the
//! hyper/tower/tokio the server already uses): 15 new crates in Cargo.lock (tonic, prost, h2,
//! …), where the SDK's own lock file lists 85 crates this workspace does not have. The client is blocking: a [`Collection`] owns a
//! one-thread tokio runtime and waits on it (async callers use `spawn_blocking`).

mod client;
mod collection;
pub mod expr;
#[doc(hidden)]
pub mod proto;
mod rows;
mod sink;
#[doc(hidden)]
pub mod testing;
mod url;

pub use collection::{Collection, Consistency};
pub use url::{MilvusUrl, SCHEME};

use anyhow::Result;
use sha2::{Digest, Sha256};
use simcase_index::{Hit, Item, VectorIndex};

/// The collection schema this code writes, recorded in the collection description.
pub const SCHEMA_VERSION: u32 = 1;

/// How the collection's `vector` field is indexed (chosen at creation, recorded with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexSpec {
    /// Exact scan.
    Flat,
    /// HNSW graph.
    Hnsw {
        /// Links per node.
        m: usize,
        /// Candidate list while building.
        ef_construction: usize,
    },
    /// Inverted file over `nlist` clusters, full vectors.
    IvfFlat {
        /// Clusters.
        nlist: usize,
    },
    /// Inverted file over `nlist` clusters, 8-bit scalar-quantised vectors.
    IvfSq8 {
        /// Clusters.
        nlist: usize,
    },
}

impl Default for IndexSpec {
    fn default() -> Self {
        Self::Hnsw {
            m: 16,
            ef_construction: 128,
        }
    }
}

/// What a collection records about itself: the model and dimension of its vectors, its index,
/// and the salt of its patient keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionInfo {
    /// The model's catalogue name.
    pub model: String,
    /// Values per vector.
    pub dim: usize,
    /// How `vector` is indexed.
    pub index: IndexSpec,
    /// Salt of the patient keys of its items.
    pub salt: String,
}

/// A page of a [`Collection::scan`]: items, with their vectors when asked.
pub type Page = Vec<(Item, Option<Vec<f32>>)>;

/// One search result from Milvus.
#[derive(Clone, Debug, PartialEq)]
pub struct Remote {
    /// The item id ([`item_id`] of its content key).
    pub id: u64,
    /// Inner product with the query (cosine: vectors are L2-normalised).
    pub score: f32,
    /// The item's metadata, as stored.
    pub item: Item,
}

/// The item id of a row: 63 bits of SHA-256 of its primary key (the content key), so that
/// every shard agrees without coordination (and Milvus's signed Int64 holds it).
pub fn item_id(pk: &str) -> u64 {
    let d = Sha256::digest(pk.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b) >> 1
}

impl Collection {
    /// Top-`k` ids by inner product per query, best first (ties by ascending id), keeping only
    /// ids `keep` accepts: results are fetched in growing windows until `k` pass or the
    /// collection has no more.
    pub fn search_ids(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Vec<Hit>>> {
        let mut out: Vec<Vec<Hit>> = vec![Vec::new(); queries.len()];
        if k == 0 || queries.is_empty() {
            return Ok(out);
        }
        let mut todo: Vec<usize> = (0..queries.len()).collect();
        let mut window = k.min(collection::MAX_WINDOW);
        loop {
            let qs: Vec<&[f32]> = todo.iter().map(|&i| queries[i]).collect();
            let res = self.search_hits(&qs, window, None)?;
            let mut next = Vec::new();
            for (&qi, hits) in todo.iter().zip(res) {
                let exhausted = hits.len() < window;
                let mut kept: Vec<Hit> = hits
                    .into_iter()
                    .filter(|&(id, _)| keep.is_none_or(|f| f(id)))
                    .map(|(row, score)| Hit { row, score })
                    .collect();
                kept.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
                kept.truncate(k);
                if kept.len() < k && !exhausted && window < collection::MAX_WINDOW {
                    next.push(qi);
                }
                out[qi] = kept;
            }
            if next.is_empty() {
                return Ok(out);
            }
            todo = next;
            window = (window * 4).min(collection::MAX_WINDOW);
        }
    }
}

/// Rows are item ids; `keep` is applied by fetching further windows of results. `len` is the
/// count when the collection was opened or last counted (a count asks the server with strong
/// consistency, too slow to repeat per search).
impl VectorIndex for Collection {
    fn dim(&self) -> usize {
        self.info().dim
    }
    fn len(&self) -> usize {
        self.known_len() as usize
    }
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_ids(queries, k, keep)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn item_ids_are_63_bit_and_stable() {
        let a = super::item_id("abc");
        assert_eq!(a, super::item_id("abc"));
        assert_ne!(a, super::item_id("abd"));
        assert!(a < 1 << 63);
    }
}
