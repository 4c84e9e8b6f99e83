//! A view applied at search time: an adapter that `simcase adapt` stored with the index
//! ([`simcase_adapt::view`]) maps the query and every row into its space, and the search ranks
//! there. Why the rows are mapped once, here, and kept in memory: the index's files hold the
//! model's embeddings, which every other view and the plain search need unchanged, and mapping
//! 10k rows of 512-d through a linear map takes milliseconds (a million: seconds), so a server
//! maps them when a view is first asked for and keeps the result for that snapshot.
//!
//! Memory: 4 B × rows × the view's output width (whitening keeps the model's width), beside
//! the memory-mapped index. The ranking over the mapped rows is the exact flat scan.

use crate::{QueryError, Result};
use rayon::prelude::*;
use simcase_adapt::Adapter;
use simcase_index::{Snapshot, Version};

/// A stored view with the snapshot's rows mapped into its space.
pub struct View {
    /// The view's name.
    pub name: String,
    /// Its adapter.
    pub adapter: Adapter,
    /// The snapshot's rows in the view's space, row-major (`dim` columns), L2-normalised.
    pub rows: Vec<f32>,
    /// The view's width.
    pub dim: usize,
    /// The snapshot version the rows were mapped from.
    pub version: Version,
    /// What the view's file records (method, tuning, rows learned from).
    pub meta: serde_json::Value,
    /// k-reciprocal knobs that `simcase adapt` tuned on val in this view's space, used by
    /// `rerank=kr` in it.
    pub kr: Option<crate::rerank::Kr>,
}

impl View {
    /// Load view `name` of `snap`'s index and map every row of `snap` through it. An unknown
    /// name is a bad parameter (`view`) listing the index's views; a view made for another
    /// model or width, or a damaged one, is an index fault.
    pub fn open(snap: &Snapshot, name: &str) -> Result<Self> {
        simcase_adapt::view::check_name(name)
            .map_err(|e| QueryError::bad("view", e.to_string()))?;
        let dir = snap.dir();
        let s = snap.settings();
        // Not load's error: that names the index folder, which an API client must not see.
        if !dir.join("views").join(format!("{name}.json")).is_file() {
            return Err(QueryError::bad(
                "view",
                format!(
                    "no view {} (views of this index: {})",
                    crate::params::quote(name),
                    simcase_adapt::view::listed(dir)
                ),
            ));
        }
        let info =
            simcase_adapt::view::load_for(dir, name, &s.model, s.dim).map_err(QueryError::Index)?;
        let (d_in, d_out) = (info.adapter.dim_in, info.adapter.dim_out);
        let src = snap.vectors();
        let mut rows = vec![0f32; src.len() / d_in.max(1) * d_out];
        rows.par_chunks_mut(d_out.max(1))
            .zip(src.par_chunks(d_in.max(1)))
            .for_each(|(out, x)| out.copy_from_slice(&info.adapter.apply(x)));
        let k = &info.meta["rerank"]["kr"];
        let kr = match (k["k1"].as_u64(), k["k2"].as_u64(), k["lambda"].as_f64()) {
            (Some(k1), Some(k2), Some(l)) if (1..=1000).contains(&k1) && k2 <= 1000 => {
                Some(crate::rerank::Kr {
                    k1: k1 as usize,
                    k2: k2 as usize,
                    lambda: (l as f32).clamp(0.0, 1.0),
                })
            }
            _ => None,
        };
        Ok(Self {
            kr,
            name: info.name,
            adapter: info.adapter,
            rows,
            dim: d_out,
            version: snap.version(),
            meta: info.meta,
        })
    }

    /// The names of the views stored with `snap`'s index.
    pub fn list(snap: &Snapshot) -> Vec<String> {
        simcase_adapt::view::list(snap.dir()).unwrap_or_default()
    }

    /// Row `r` in the view's space.
    pub fn row(&self, r: u64) -> Option<&[f32]> {
        let i = usize::try_from(r).ok()?;
        self.rows
            .get(i.checked_mul(self.dim)?..(i + 1).checked_mul(self.dim)?)
    }

    /// Whether the rows were mapped from `snap` (same rows and labels generation).
    pub fn fits(&self, snap: &Snapshot) -> bool {
        self.version == snap.version()
    }
}
