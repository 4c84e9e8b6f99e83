//! Storage and exact search of embeddings. Backends differ (flat scan today; HNSW and Milvus
//! for scale later) but all answer through [`VectorIndex`].

mod flat;
pub mod store;

pub use flat::{dot, search_rows, FlatIndex};
pub use store::{
    part_keys, Column, Disagreement, Item, ItemMeta, LabelOutcome, LabelUpdate, Reader, Rows,
    Settings, Snapshot, Version, Writer,
};

/// One search result: a row of the index and its inner product with the query.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The row (item id).
    pub row: u64,
    /// Inner product with the query (cosine, for normalised vectors).
    pub score: f32,
}

/// A searchable set of L2-normalised vectors.
pub trait VectorIndex: Send + Sync {
    /// Values per vector.
    fn dim(&self) -> usize;
    /// Vectors held.
    fn len(&self) -> usize;
    /// Whether it holds none.
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
