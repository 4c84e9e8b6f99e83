//! Similar-case queries against a Milvus collection (`--index milvus://HOST:PORT/COLLECTION`):
//! the same [`Request`] in and the same [`Response`] out as the local [`crate::search`], so the
//! CLI prints and the server serialises both alike. Filters become one Milvus boolean
//! expression ([`to_where`], values escaped by `simcase_milvus::expr`); ranking is Milvus's
//! inner product over L2-normalised vectors (cosine, exact on a FLAT collection).
//!
//! Milvus 2.3 has no grouped search, so `group_by` is a loop that stays exact: rank the top
//! K' rows that pass the filters and keep, in rank order, the first (best) row of each group;
//! a group seen there has its best row there, and every group not seen ranks below all of
//! them. While fewer than `offset + k` groups are known, search again with the groups already
//! filled left out (`not_in` their keys, and the ids of key-less items, each a group of its
//! own), so the next search's first rows are the next groups' best. (`volume` is not a column
//! of the collection: its loop grows K' instead, up to Milvus's top-k limit.)
//!
//! Copies of one image (the same decoded pixels under another content key) are not collapsed
//! against Milvus: every stored item is a hit of its own, as with `duplicates=all` locally.
//! A page reaches at most [`MAX_TOPK`] results deep (`offset + k`): Milvus's own limit.

use crate::{
    vote, Field, Filters, Group, GroupBy, Hit, Query, QueryError, Request, Response, Result,
};
use simcase_index::{Column, Item};
use simcase_milvus::{expr, Collection, MilvusUrl};
use std::collections::HashMap;

/// The deepest result Milvus returns (its `topk` and `offset + limit` bound).
pub const MAX_TOPK: usize = 16_384;

/// The filters as a Milvus [`expr::Where`]: the same fields and values (OR within a field, AND
/// across, compared case-insensitively) and the same inclusive study-date range.
pub fn to_where(f: &Filters) -> expr::Where {
    let fields = f
        .fields
        .iter()
        .map(|(field, values)| {
            let r = match field {
                Field::Column(c) => expr::FieldRef::Column(*c),
                Field::Format => expr::FieldRef::Format,
                Field::Extra(k) => expr::FieldRef::Extra(k.clone()),
            };
            (r, values.clone())
        })
        .collect();
    expr::Where {
        fields,
        date_from: f.date_from.map(|d| d.as_number()),
        date_to: f.date_to.map(|d| d.as_number()),
        ..Default::default()
    }
}

/// A Milvus failure, as the index failing (the server's fault, not the caller's).
fn failed(e: anyhow::Error) -> QueryError {
    QueryError::Index(e)
}

/// An open Milvus collection searched as an index, with the HNSW `ef` to search with.
pub struct RemoteIndex {
    coll: Collection,
    ef: Option<usize>,
}

impl RemoteIndex {
    /// Open the existing collection at `url` (`milvus://…`); `ef` is the HNSW candidates per
    /// search (`None`: Milvus's default for the collection).
    pub fn open(url: &str, ef: Option<usize>) -> anyhow::Result<Self> {
        let url = MilvusUrl::parse(url)?;
        Ok(Self {
            coll: Collection::open(&url)?,
            ef,
        })
    }

    /// The collection.
    pub fn collection(&self) -> &Collection {
        &self.coll
    }

    /// The model the collection was embedded with.
    pub fn model(&self) -> &str {
        &self.coll.info().model
    }

    /// Its vectors' dimension.
    pub fn dim(&self) -> usize {
        self.coll.info().dim
    }

    /// Items in the collection.
    pub fn len(&self) -> Result<usize> {
        Ok(self.coll.count().map_err(failed)? as usize)
    }

    /// Whether the collection holds no items.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Item `id` with its metadata, if the collection holds it.
    pub fn item(&self, id: u64) -> Result<Option<Item>> {
        Ok(self.fetch(id)?.map(|(it, _)| it))
    }

    fn fetch(&self, id: u64) -> Result<Option<(Item, Vec<f32>)>> {
        // One id asked, so the one row returned (if any) is that item.
        let got = self.coll.get(&[id]).map_err(failed)?;
        Ok(got.into_iter().next().map(|(it, v)| (with_id(it, id), v)))
    }

    /// "More like this": item `id`'s stored vector; the item itself is left out of the results.
    pub fn query_item(&self, id: u64) -> Result<Query> {
        match self.fetch(id)? {
            Some((_, vector)) => Ok(Query {
                vector,
                exclude: Some(id),
            }),
            None => Err(QueryError::NotFound {
                id,
                items: self.len()?,
            }),
        }
    }

    /// The top `k` rows passing `w`, best first.
    fn top(&self, q: &[f32], k: usize, w: &expr::Where) -> Result<Vec<simcase_milvus::Remote>> {
        let expr = w.to_expr();
        let mut res = self
            .coll
            .search(&[q], k, expr.as_deref(), self.ef)
            .map_err(failed)?;
        Ok(if res.is_empty() {
            Vec::new()
        } else {
            res.swap_remove(0)
        })
    }

    /// Whether any row passes `w` (one `count(*)`: no scan).
    fn any(&self, w: &expr::Where) -> Result<bool> {
        Ok(self.count(w)? > 0)
    }

    /// Rows passing `w` (Milvus's `count(*)`).
    fn count(&self, w: &expr::Where) -> Result<usize> {
        Ok(self
            .coll
            .count_where(w.to_expr().as_deref())
            .map_err(failed)? as usize)
    }

    /// Rank the collection for `q` as [`crate::search`] ranks a local index: filters, paging,
    /// grouping (exact, see the module note) and the label vote of the page. Copies are not
    /// collapsed (`duplicates=all`).
    pub fn search(&self, q: &Query, req: &Request) -> Result<Response> {
        let dim = self.dim();
        if q.vector.len() != dim {
            return Err(QueryError::Dimension {
                got: q.vector.len(),
                want: dim,
            });
        }
        let mut base = to_where(&req.filters);
        base.exclude_ids.extend(q.exclude);
        let candidates = self.count(&base)?;
        let page = |hits: Vec<Hit>, groups: Option<Vec<Group>>| Response {
            vote: vote(&hits),
            hits,
            groups,
            candidates,
            offset: req.offset,
            k: req.k,
            empty_reason: None,
            query_duplicates: 0,
            query_also: Vec::new(),
        };
        if candidates == 0 {
            let mut res = page(Vec::new(), req.group_by.map(|_| Vec::new()));
            res.empty_reason = Some(self.explain_empty(q, &req.filters)?);
            return Ok(res);
        }
        if req.k == 0 || req.offset >= candidates {
            return Ok(page(Vec::new(), req.group_by.map(|_| Vec::new())));
        }
        let want = req.offset.saturating_add(req.k).min(candidates);
        if want > MAX_TOPK {
            return Err(QueryError::bad(
                "offset",
                format!(
                    "offset + k is {want}; a Milvus index pages through its first {MAX_TOPK} \
                     results"
                ),
            ));
        }
        let Some(g) = req.group_by else {
            let hits = self
                .top(&q.vector, want, &base)?
                .into_iter()
                .enumerate()
                .skip(req.offset)
                .take(req.k)
                .map(|(i, r)| Hit::new(i + 1, r.score, &with_id(r.item, r.id)))
                .collect();
            return Ok(page(hits, None));
        };
        let order = self.groups(&q.vector, &base, g, want)?;
        let groups: Vec<Group> = order
            .into_iter()
            .enumerate()
            .skip(req.offset)
            .take(req.k)
            .map(|(i, (key, best, matched))| {
                let mut hit = Hit::new(i + 1, best.score, &best.item);
                hit.group = Some(key.clone());
                Group {
                    key,
                    score: hit.score,
                    matched,
                    best: hit,
                }
            })
            .collect();
        let hits = groups.iter().map(|g| g.best.clone()).collect();
        Ok(page(hits, Some(groups)))
    }

    /// The first `want` groups by their best row, best first: `(key, best, rows of the group
    /// seen while ranking)`. Exact (see the module note).
    fn groups(
        &self,
        q: &[f32],
        base: &expr::Where,
        g: GroupBy,
        want: usize,
    ) -> Result<Vec<(String, Best, usize)>> {
        let column = match g {
            GroupBy::Patient => Some(Column::PatientKey),
            GroupBy::Study => Some(Column::StudyUid),
            GroupBy::Series => Some(Column::SeriesUid),
            GroupBy::Volume => None,
        };
        let mut order: Vec<(String, Best, usize)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        // Groups already filled, left out of the next search: named keys, and key-less items.
        let (mut named, mut alone): (Vec<String>, Vec<u64>) = (Vec::new(), Vec::new());
        let mut pool = want.saturating_mul(4).saturating_add(16).min(MAX_TOPK);
        loop {
            let mut w = base.clone();
            if let Some(c) = column {
                if !named.is_empty() {
                    w.not_in = Some((c, named.clone()));
                }
                w.exclude_ids.extend(&alone);
            } else {
                order.clear();
                at.clear();
            }
            // Only rows that are left are searched for (a search that finds none is never
            // sent): the last round asks for what remains.
            let left = if order.is_empty() {
                usize::MAX
            } else {
                self.count(&w)?
            };
            if left == 0 {
                return Ok(order);
            }
            let ranked = self.top(q, pool.min(left), &w)?;
            let exhausted = ranked.len() < pool;
            for r in ranked {
                let it = with_id(r.item, r.id);
                let key = g.key(&it);
                match at.get(&key) {
                    Some(&i) => order[i].2 += 1,
                    None => {
                        if let Some(c) = column {
                            match c.get(&it.meta) {
                                Some(k) => named.push(k.to_string()),
                                None => alone.push(it.id),
                            }
                        }
                        at.insert(key.clone(), order.len());
                        order.push((
                            key,
                            Best {
                                score: r.score,
                                item: it,
                            },
                            1,
                        ));
                    }
                }
            }
            if order.len() >= want || exhausted {
                return Ok(order);
            }
            if column.is_none() {
                if pool >= MAX_TOPK {
                    return Err(QueryError::bad(
                        "group_by",
                        format!(
                            "volume: the first {MAX_TOPK} results of this Milvus index hold \
                             {} volumes, fewer than offset + k = {want}",
                            order.len()
                        ),
                    ));
                }
                pool = pool.saturating_mul(4).min(MAX_TOPK);
            } else {
                pool = (want - order.len())
                    .saturating_mul(4)
                    .saturating_add(16)
                    .min(MAX_TOPK);
            }
        }
    }

    /// Why no row passed `filters` (the query item left out): the collection is empty, holds
    /// only the query, a field's values match nothing, the date range matches nothing, or only
    /// the combination does. Each check is one `count(*)`.
    fn explain_empty(&self, q: &Query, filters: &Filters) -> Result<String> {
        let rows = self.len()?;
        if rows == 0 {
            return Ok("the index holds no items".to_string());
        }
        let everything = expr::Where {
            exclude_ids: q.exclude.into_iter().collect(),
            ..Default::default()
        };
        if !self.any(&everything)? {
            return Ok("the index holds no other item than the query".to_string());
        }
        for (field, allowed) in &filters.fields {
            let one = Filters {
                fields: [(field.clone(), allowed.clone())].into_iter().collect(),
                ..Default::default()
            };
            if !self.any(&to_where(&one))? {
                let wanted: Vec<String> = allowed
                    .iter()
                    .map(|a| simcase_index::shorten(a, 48))
                    .collect();
                return Ok(format!(
                    "no item has {}={} in this Milvus collection",
                    field.name(),
                    wanted.join("|")
                ));
            }
        }
        if filters.date_from.is_some() || filters.date_to.is_some() {
            let dates = Filters {
                date_from: filters.date_from,
                date_to: filters.date_to,
                ..Default::default()
            };
            if !self.any(&to_where(&dates))? {
                let end =
                    |d: Option<crate::StudyDate>| d.map(|d| d.to_string()).unwrap_or_default();
                return Ok(format!(
                    "no item's study date is in {}..{}",
                    end(filters.date_from),
                    end(filters.date_to)
                ));
            }
        }
        if self.any(&to_where(filters))? {
            return Ok("only the query itself passes the filters".to_string());
        }
        Ok(
            "no item passes all the filters together (each one alone matches some items)"
                .to_string(),
        )
    }
}

/// A group's best row.
struct Best {
    score: f32,
    item: Item,
}

/// `it` with the row's id (the collection's `id` field is the one hits and routes use).
fn with_id(mut it: Item, id: u64) -> Item {
    it.id = id;
    it
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_one_expression_with_every_value_a_literal() {
        let mut f = Filters::default();
        f.add("modality", "CT\" or id >= 0").unwrap();
        f.add("modality", "mr").unwrap();
        f.add("meta.view", "PA").unwrap();
        f.add("date_from", "2019-01-01").unwrap();
        f.add("date_to", "20191231").unwrap();
        let w = to_where(&f);
        assert_eq!((w.date_from, w.date_to), (Some(20190101), Some(20191231)));
        assert_eq!(w.fields.len(), 2);
        let e = w.to_expr().unwrap();
        // The hostile value stays inside its literal: its quote is escaped.
        assert!(e.contains(r#""ct\" or id >= 0""#), "{e}");
        assert!(!e.contains(r#""ct" or"#), "{e}");
        assert!(e.contains("20190101") && e.contains("20191231"), "{e}");
        assert!(to_where(&Filters::default()).to_expr().is_none());
    }
}
