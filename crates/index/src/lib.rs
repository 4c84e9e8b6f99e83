//! Storage and exact search of embeddings. Backends differ (flat scan today; HNSW and Milvus
//! for scale later) but all answer through [`VectorIndex`].

mod flat;
pub mod store;

pub use flat::{dot, search_rows, FlatIndex};
pub use store::{part_keys, Column, Item, ItemMeta, Reader, Rows, Settings, Snapshot, Writer};

/// One search result: a row of the index and its inner product with the query.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Hit {
    pub row: u64,
    pub score: f32,
}

/// A searchable set of L2-normalised vectors.
pub trait VectorIndex: Send + Sync {
    fn dim(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Top-`k` rows by inner product for each query, best first, ties by ascending row.
    /// `keep` restricts the candidate rows.
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Vec<Vec<Hit>>;
}
