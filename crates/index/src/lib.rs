//! Storage and exact search of embeddings. Backends differ (flat scan, HNSW, and Milvus
//! in its own crate) but all answer through [`VectorIndex`].

pub mod compact;
mod flat;
pub mod hnsw;
pub mod store;
#[doc(hidden)]
pub mod testdata;

pub use compact::{CompactRows, Precision};
pub use flat::{dot, search_rows, FlatIndex};
pub use hnsw::{HnswIndex, HnswParams, IndexType};
pub use store::{
    part_keys, AnnSettings, Codes, Column, Disagreement, Item, ItemMeta, LabelOutcome, LabelUpdate,
    Reader, Rows, Settings, Snapshot, Version, Writer, MAX_EXTRA_COLUMNS, MAX_EXTRA_VALUES,
};

/// `s` in at most `width` characters: as it is when it fits, else its head and tail around
/// `…` (`1.2.840.113619…4821`), so that tables keep their columns and messages that echo stored
/// values stay bounded, while both ends (a UID's root and instance digits, a path's file name)
/// stay readable. Machine-readable output keeps full values.
pub fn shorten(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width || width < 3 {
        return s.to_string();
    }
    let tail = (width - 1) / 3;
    let head = width - 1 - tail;
    let h: String = s.chars().take(head).collect();
    let t: String = s.chars().skip(n - tail).collect();
    format!("{h}…{t}")
}

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
    /// `keep` restricts the candidate rows. Local engines never fail; a remote one (Milvus)
    /// fails when its server does, and says so here rather than answering with nothing.
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> anyhow::Result<Vec<Vec<Hit>>>;
}

/// A borrowed index searches as the index does, so a `&I` can be boxed as a
/// `dyn VectorIndex` (benchmarks hand out views of engines they own).
impl<T: VectorIndex + ?Sized> VectorIndex for &T {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> anyhow::Result<Vec<Vec<Hit>>> {
        (**self).search(queries, k, keep)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shorten_keeps_both_ends() {
        assert_eq!(super::shorten("CT", 10), "CT");
        let uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320";
        let s = super::shorten(uid, 20);
        assert_eq!(s.chars().count(), 20);
        assert_eq!(s, "1.2.840.11361…29.320");
        assert_eq!(super::shorten("ééééé", 4), "éé…é");
    }
}
