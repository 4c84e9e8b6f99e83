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
//! Copies of one image (the same decoded pixels under another content key, `pixel_hash`) are
//! collapsed as locally: the best-ranked copy is the hit, the search over-fetches until it has
//! `offset + k` distinct images, and one query by pixel hash (the `x` JSON field, filters
//! applied) counts and lists the page's other copies. "More like this" leaves out the query's
//! own copies.
//! A page reaches at most [`MAX_TOPK`] results deep (`offset + k`): Milvus's own limit.

use crate::{
    Also, Duplicates, Field, Filters, Group, GroupBy, Hit, Query, QueryError, Request, Response,
    Result, MAX_ALSO,
};
use simcase_index::{Column, Item, ItemMeta};
use simcase_milvus::{expr, Collection, Consistency, MilvusUrl};
use std::collections::{HashMap, HashSet};

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
    /// search (`None`: Milvus's default for the collection), `consistency` how searches see
    /// the latest writes.
    pub fn open(url: &str, ef: Option<usize>, consistency: Consistency) -> anyhow::Result<Self> {
        let url = MilvusUrl::parse(url)?;
        let mut coll = Collection::open(&url)?;
        coll.set_consistency(consistency);
        Ok(Self { coll, ef })
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
            Some((it, vector)) => Ok(Query {
                vector,
                exclude: Some(id),
                origin: crate::Origin {
                    study_uid: it.meta.study_uid,
                    patient_key: it.meta.patient_key,
                    series_uid: it.meta.series_uid,
                    sop_uid: it.meta.sop_uid,
                },
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

    /// Stored items passing `w` whose pixel hash is one of `hashes`: per hash, how many and
    /// the first [`MAX_ALSO`] + 1 of them by id (one more, as the hit itself may be one).
    fn copies(
        &self,
        hashes: &[&str],
        w: &expr::Where,
    ) -> Result<HashMap<String, (usize, Vec<Item>)>> {
        let mut out: HashMap<String, (usize, Vec<Item>)> = HashMap::new();
        if hashes.is_empty() {
            return Ok(out);
        }
        self.scan_copies(hashes, w, &mut |it| {
            let Some(h) = it.meta.pixel_hash() else {
                return;
            };
            let (n, some) = out.entry(h.to_string()).or_default();
            *n += 1;
            some.push(it);
            if some.len() > MAX_ALSO + 1 {
                some.sort_by_key(|it| it.id);
                some.truncate(MAX_ALSO + 1);
            }
        })?;
        for (_, some) in out.values_mut() {
            some.sort_by_key(|it| it.id);
        }
        Ok(out)
    }

    /// Every stored item passing `w` whose pixel hash is one of `hashes`, to `f`.
    fn scan_copies(&self, hashes: &[&str], w: &expr::Where, f: &mut dyn FnMut(Item)) -> Result<()> {
        let mut w = w.clone();
        w.fields.push((
            expr::FieldRef::Extra(ItemMeta::PIXEL_HASH.into()),
            hashes.iter().map(|h| h.to_string()).collect(),
        ));
        self.coll
            .scan(w.to_expr().as_deref(), false, &mut |page| {
                page.into_iter().for_each(|(it, _)| f(it));
                Ok(())
            })
            .map_err(failed)
    }

    /// Fill each hit's [`Hit::duplicates`] and [`Hit::also`]: the other items passing `w` with
    /// its pixel hash.
    fn attach_copies(&self, hits: Vec<(&mut Hit, Option<String>)>, w: &expr::Where) -> Result<()> {
        let hashes: Vec<&str> = hits.iter().filter_map(|(_, x)| x.as_deref()).collect();
        let copies = self.copies(&hashes, w)?;
        for (h, hash) in hits {
            let Some((n, some)) = hash.as_ref().and_then(|x| copies.get(x)) else {
                continue;
            };
            let others = some.iter().filter(|it| it.id != h.id);
            // `n` counts the hit itself (it passes `w`): the others are one fewer.
            h.duplicates = n.saturating_sub(1);
            h.also = others.take(MAX_ALSO).map(Also::of).collect();
        }
        Ok(())
    }

    /// Rank the collection for `q` as [`crate::search`] ranks a local index: filters, the
    /// collapse of copies, paging, grouping (exact, see the module note) and the label vote of
    /// the page.
    pub fn search(&self, q: &Query, req: &Request) -> Result<Response> {
        let dim = self.dim();
        if q.vector.len() != dim {
            return Err(QueryError::Dimension {
                got: q.vector.len(),
                want: dim,
            });
        }
        if !req.filters.exclude.is_empty() {
            return Err(QueryError::bad(
                "exclude",
                "leaving out the query's study or patient is not done on a Milvus collection: \
                 keep them (--include-same-study) or search a local index folder",
            ));
        }
        if req.rerank != crate::Rerank::None {
            return Err(QueryError::bad(
                "rerank",
                "re-ranking needs the rows' vectors: search a local index folder",
            ));
        }
        let collapse = req.duplicates == Duplicates::Collapse;
        let mut base = to_where(&req.filters);
        base.exclude_ids.extend(q.exclude);
        // "More like this": the query item's other copies are the query too.
        let mut twins: Vec<Item> = Vec::new();
        if let (true, Some(id)) = (collapse, q.exclude) {
            if let Some(hash) = self
                .item(id)?
                .and_then(|it| it.meta.pixel_hash().map(String::from))
            {
                self.scan_copies(&[&hash], &expr::Where::default(), &mut |it| {
                    if it.id != id {
                        twins.push(it);
                    }
                })?;
                twins.sort_by_key(|it| it.id);
            }
        }
        base.exclude_ids.extend(twins.iter().map(|it| it.id));
        let candidates = self.count(&base)?;
        let page = |hits: Vec<Hit>, groups: Option<Vec<Group>>| {
            let also = twins.iter().take(MAX_ALSO).map(Also::of).collect();
            Response::page(req, candidates, hits, groups, twins.len(), also)
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
        let hash = |it: &Item| it.meta.pixel_hash().map(String::from);
        let Some(g) = req.group_by else {
            let ranked = self.distinct(&q.vector, &base, want, candidates, collapse)?;
            let mut hits: Vec<(Hit, Option<String>)> = ranked
                .into_iter()
                .enumerate()
                .skip(req.offset)
                .take(req.k)
                .map(|(i, (score, it))| (Hit::new(i + 1, score, &it), hash(&it)))
                .collect();
            if collapse {
                self.attach_copies(hits.iter_mut().map(|(h, x)| (h, x.take())).collect(), &base)?;
            }
            return Ok(page(hits.into_iter().map(|(h, _)| h).collect(), None));
        };
        let order = self.groups(&q.vector, &base, g, want, collapse)?;
        let mut groups: Vec<(Group, Option<String>)> = order
            .into_iter()
            .enumerate()
            .skip(req.offset)
            .take(req.k)
            .map(|(i, (key, best, matched))| {
                let mut hit = Hit::new(i + 1, best.score, &best.item);
                hit.group = Some(key.clone());
                let g = Group {
                    key,
                    score: hit.score,
                    matched,
                    best: hit,
                };
                (g, hash(&best.item))
            })
            .collect();
        if collapse {
            self.attach_copies(
                groups
                    .iter_mut()
                    .map(|(g, x)| (&mut g.best, x.take()))
                    .collect(),
                &base,
            )?;
        }
        let groups: Vec<Group> = groups.into_iter().map(|(g, _)| g).collect();
        let hits = groups.iter().map(|g| g.best.clone()).collect();
        Ok(page(hits, Some(groups)))
    }

    /// The first `want` distinct images passing `base`, best first, as (score, item): with
    /// `collapse`, only the best-ranked copy of each pixel hash, the search widened until it
    /// holds `want` of them (or all `candidates`, or Milvus's deepest page).
    fn distinct(
        &self,
        q: &[f32],
        base: &expr::Where,
        want: usize,
        candidates: usize,
        collapse: bool,
    ) -> Result<Vec<(f32, Item)>> {
        let cap = candidates.min(MAX_TOPK);
        let mut pool = if collapse {
            want.saturating_add(want / 2).saturating_add(16).min(cap)
        } else {
            want
        };
        loop {
            let ranked = self.top(q, pool, base)?;
            let exhausted = ranked.len() < pool || pool >= cap;
            let mut seen: HashSet<String> = HashSet::new();
            let out: Vec<(f32, Item)> = ranked
                .into_iter()
                .filter(|r| {
                    !collapse
                        || r.item
                            .meta
                            .pixel_hash()
                            .is_none_or(|h| seen.insert(h.to_string()))
                })
                .map(|r| (r.score, with_id(r.item, r.id)))
                .collect();
            if out.len() >= want || exhausted {
                return Ok(out);
            }
            pool = pool.saturating_mul(4).min(cap);
        }
    }

    /// The first `want` groups by their best row, best first: `(key, best, rows of the group
    /// seen while ranking)`. Exact (see the module note).
    fn groups(
        &self,
        q: &[f32],
        base: &expr::Where,
        g: GroupBy,
        want: usize,
        collapse: bool,
    ) -> Result<Vec<(String, Best, usize)>> {
        let column = match g {
            GroupBy::Patient => Some(Column::PatientKey),
            GroupBy::Study => Some(Column::StudyUid),
            GroupBy::Series => Some(Column::SeriesUid),
            GroupBy::Volume => None,
        };
        let mut order: Vec<(String, Best, usize)> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        // Pixel hashes already ranked: a later copy is not counted again.
        let mut seen: HashSet<String> = HashSet::new();
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
                seen.clear();
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
                if collapse {
                    if let Some(h) = it.meta.pixel_hash() {
                        if !seen.insert(h.to_string()) {
                            continue;
                        }
                    }
                }
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
