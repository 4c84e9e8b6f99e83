//! Similar-case queries, shared by the CLI and the HTTP server: resolve a query (an image, an
//! indexed item, or text for CLIP-family models) to a vector in the index's space, then rank
//! the index by exact cosine and attach each hit's metadata.

use anyhow::{Context, Result};
use serde::Serialize;
use simcase_imaging::{decode_path, DecodeOptions, Image, WindowPreset};
use simcase_index::{search_rows, Column, Item, Snapshot};
use simcase_models::{Encoder, TextEncoder};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One ranked neighbour, as printed and served. No raw patient identifiers: only the salted key.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Hit {
    /// 1-based position in the full ranking (offset included).
    pub rank: usize,
    /// Cosine similarity with the query.
    pub score: f32,
    /// The item's id.
    pub id: u64,
    /// The file's path on the indexing machine (the server leaves it out unless asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The item's label.
    pub label: Option<String>,
    /// Modality.
    pub modality: Option<String>,
    /// Anatomy.
    pub anatomy: Option<String>,
    /// Pathology.
    pub pathology: Option<String>,
    /// Source data set or archive.
    pub source: Option<String>,
    /// Manifest split.
    pub split: Option<String>,
    /// Salted patient key (never the raw id).
    pub patient_key: Option<String>,
    /// DICOM StudyInstanceUID.
    pub study_uid: Option<String>,
    /// DICOM SeriesInstanceUID.
    pub series_uid: Option<String>,
    /// The key this hit was grouped by, when the search was grouped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Hit {
    fn new(rank: usize, score: f32, it: &Item) -> Self {
        let m = &it.meta;
        Self {
            rank,
            score,
            id: it.id,
            path: Some(m.path.clone()),
            label: m.label.clone(),
            modality: m.modality.clone(),
            anatomy: m.anatomy.clone(),
            pathology: m.pathology.clone(),
            source: m.source.clone(),
            split: m.split.clone(),
            patient_key: m.patient_key.clone(),
            study_uid: m.study_uid.clone(),
            series_uid: m.series_uid.clone(),
            group: None,
        }
    }
}

/// A query resolved to a vector, and the item it came from when it was one.
pub struct Query {
    /// The query vector, L2-normalised, in the index's space.
    pub vector: Vec<f32>,
    /// An indexed item to leave out of the results (the query itself, for "more like this").
    pub exclude: Option<u64>,
}

impl Query {
    /// "More like this": item `id`'s stored vector; the item itself is left out of the results.
    pub fn item(reader: &Snapshot, id: u64) -> Result<Self> {
        let v = reader
            .vector(id)
            .with_context(|| format!("no item {id} in the index ({} items)", reader.len()))?;
        Ok(Self {
            vector: v.to_vec(),
            exclude: Some(id),
        })
    }

    /// A decoded image, embedded with the index's model.
    pub fn image(enc: &dyn Encoder, img: &Image) -> Result<Self> {
        Ok(Self {
            vector: enc.embed_images(&[img])?.remove(0),
            exclude: None,
        })
    }

    /// An image or DICOM file.
    pub fn file(enc: &dyn Encoder, path: &Path, window: Option<WindowPreset>) -> Result<Self> {
        let img = decode_path(
            path,
            &DecodeOptions {
                window,
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::image(enc, &img.image)
    }

    /// Free text, through the text tower that shares the index model's space.
    pub fn text(enc: &dyn TextEncoder, text: &str) -> Result<Self> {
        anyhow::ensure!(!text.trim().is_empty(), "the text query is empty");
        Ok(Self {
            vector: enc.embed_texts(&[text])?.remove(0),
            exclude: None,
        })
    }
}

/// A metadata field results can be filtered on: one of the index's filter columns
/// ([`Column::FILTERS`]: labels and provenance), the file format, or any other manifest column
/// (`meta.NAME`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// A stored column.
    Column(Column),
    /// The container format (`png`, `dicom`, …).
    Format,
    /// A manifest column kept in the item's extra metadata.
    Extra(String),
}

impl std::str::FromStr for Field {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(c) = Column::from_name(s).filter(|c| Column::FILTERS.contains(c)) {
            return Ok(Self::Column(c));
        }
        Ok(match s {
            "format" => Self::Format,
            other => match other.strip_prefix("meta.") {
                Some(k) if !k.is_empty() => Self::Extra(k.to_string()),
                _ => {
                    let names: Vec<&str> = Column::FILTERS.iter().map(|c| c.name()).collect();
                    anyhow::bail!(
                        "unknown filter field {other:?} ({}, format, or meta.COLUMN)",
                        names.join(", ")
                    )
                }
            },
        })
    }
}

impl Field {
    /// This field's value for `it`, if it has one.
    pub fn value<'a>(&self, it: &'a Item) -> Option<&'a str> {
        let m = &it.meta;
        match self {
            Self::Column(c) => c.get(m),
            Self::Format => Some(m.format.as_str()),
            Self::Extra(k) => m.extra.get(k).and_then(|v| v.as_str()),
        }
    }
}

/// Which items may be returned: every field must match one of its values (case-insensitive),
/// and the study date (`meta.study_date`, `YYYYMMDD`) must fall in the range when one is given.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Allowed values per field (OR within a field, AND across fields).
    pub fields: BTreeMap<Field, Vec<String>>,
    /// Earliest study date kept, `YYYYMMDD` (dashes ignored).
    pub date_from: Option<String>,
    /// Latest study date kept.
    pub date_to: Option<String>,
}

impl Filters {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.date_from.is_none() && self.date_to.is_none()
    }

    /// Whether `it` passes every filter.
    pub fn keeps(&self, it: &Item) -> bool {
        let fields_ok = self.fields.iter().all(|(f, allowed)| {
            f.value(it)
                .is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
        });
        if !fields_ok {
            return false;
        }
        if self.date_from.is_none() && self.date_to.is_none() {
            return true;
        }
        let Some(date) = it.meta.extra.get("study_date").and_then(|v| v.as_str()) else {
            return false;
        };
        let date = date.replace('-', "");
        self.date_from
            .as_deref()
            .is_none_or(|f| date.as_str() >= f.replace('-', "").as_str())
            && self
                .date_to
                .as_deref()
                .is_none_or(|t| date.as_str() <= t.replace('-', "").as_str())
    }
}

/// What distinct results mean when one patient (or study, series, volume) has many images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By salted patient key.
    Patient,
    /// By StudyInstanceUID.
    Study,
    /// By SeriesInstanceUID.
    Series,
    /// By the volume a slice was cut from.
    Volume,
}

impl std::str::FromStr for GroupBy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "patient" => Self::Patient,
            "study" => Self::Study,
            "series" => Self::Series,
            "volume" => Self::Volume,
            other => anyhow::bail!("unknown group {other:?} (patient, study, series, volume)"),
        })
    }
}

impl GroupBy {
    /// The group of `it`; an item without the key is a group of its own.
    pub fn key(self, it: &Item) -> String {
        let m = &it.meta;
        let k = match self {
            Self::Patient => m.patient_key.as_deref(),
            Self::Study => m.study_uid.as_deref(),
            Self::Series => m.series_uid.as_deref(),
            Self::Volume => m.volume(),
        };
        match k {
            Some(k) => k.to_string(),
            None => format!("item:{}", it.id),
        }
    }
}

/// One search: how many results, which page, which items, and whether to group.
#[derive(Clone, Debug)]
pub struct Request {
    /// Results per page.
    pub k: usize,
    /// Results (or groups) skipped before this page.
    pub offset: usize,
    /// Which items may be returned.
    pub filters: Filters,
    /// Return distinct groups instead of items.
    pub group_by: Option<GroupBy>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            k: 10,
            offset: 0,
            filters: Filters::default(),
            group_by: None,
        }
    }
}

/// A group of results, scored by its best item.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Group {
    /// The group's key (patient key, UID or volume id).
    pub key: String,
    /// The best item's score.
    pub score: f32,
    /// How many of the group's items were among the ranked candidates.
    pub matched: usize,
    /// The group's best item.
    pub best: Hit,
}

/// What the similar cases say: per label level, the share of the summed (non-negative) score
/// of the top results that carries each value, largest first.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Vote {
    /// Modalities, as `[value, share]` pairs.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub modality: Vec<(String, f32)>,
    /// `modality/anatomy`, as `[value, share]` pairs.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub anatomy: Vec<(String, f32)>,
    /// Full labels, as `[value, share]` pairs.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub label: Vec<(String, f32)>,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Response {
    /// This page of results (of groups' best items when grouped).
    pub hits: Vec<Hit>,
    /// The groups of this page, when grouped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Group>>,
    /// The label vote of this page.
    pub vote: Vote,
    /// Items that passed the filters.
    pub candidates: usize,
    /// The request's offset.
    pub offset: usize,
    /// The request's page size.
    pub k: usize,
}

/// Rank `snap` for `q`: exact cosine over the items that pass the filters, then optional
/// grouping, pagination and the label vote of the first page.
pub fn search(snap: &Snapshot, q: &Query, req: &Request) -> Result<Response> {
    let dim = snap.settings().dim;
    anyhow::ensure!(
        q.vector.len() == dim,
        "the query has {} dimensions, the index {dim}",
        q.vector.len()
    );
    let skip = q.exclude;
    let items = snap.items();
    let keep = |r: u64| {
        Some(r) != skip
            && items
                .get(r as usize)
                .is_some_and(|it| req.filters.keeps(it))
    };
    let candidates = if req.filters.is_empty() {
        snap.len() - usize::from(skip.is_some_and(|s| (s as usize) < snap.len()))
    } else {
        items.iter().filter(|it| keep(it.id)).count()
    };
    let want = req.offset + req.k;
    let rank = |k: usize| search_rows(snap.vectors(), dim, &[&q.vector], k, Some(&keep)).remove(0);
    let (hits, groups) = match req.group_by {
        None => {
            let ranked = rank(want);
            let hits: Vec<Hit> = ranked
                .iter()
                .enumerate()
                .skip(req.offset)
                .map(|(i, h)| Hit::new(i + 1, h.score, &items[h.row as usize]))
                .collect();
            (hits, None)
        }
        Some(g) => {
            // Enough candidates for `want` distinct groups in practice; all of them otherwise.
            let mut pool = (want * 20 + 100).min(candidates);
            loop {
                let ranked = rank(pool);
                let mut order: Vec<String> = Vec::new();
                let mut found: HashMap<String, Group> = HashMap::new();
                for h in &ranked {
                    let it = &items[h.row as usize];
                    let key = g.key(it);
                    match found.get_mut(&key) {
                        Some(gr) => gr.matched += 1,
                        None => {
                            let mut best = Hit::new(0, h.score, it);
                            best.group = Some(key.clone());
                            order.push(key.clone());
                            found.insert(
                                key.clone(),
                                Group {
                                    key,
                                    score: h.score,
                                    matched: 1,
                                    best,
                                },
                            );
                        }
                    }
                }
                if order.len() >= want || pool >= candidates {
                    let groups: Vec<Group> = order
                        .into_iter()
                        .enumerate()
                        .skip(req.offset)
                        .take(req.k)
                        .filter_map(|(i, k)| {
                            let mut gr = found.remove(&k)?;
                            gr.best.rank = i + 1;
                            Some(gr)
                        })
                        .collect();
                    let hits = groups.iter().map(|g| g.best.clone()).collect();
                    break (hits, Some(groups));
                }
                pool = candidates;
            }
        }
    };
    Ok(Response {
        vote: vote(&hits),
        hits,
        groups,
        candidates,
        offset: req.offset,
        k: req.k,
    })
}

/// The score-weighted label distribution of `hits` at each level.
pub fn vote(hits: &[Hit]) -> Vote {
    let level = |key: &dyn Fn(&Hit) -> Option<String>| {
        let mut sum: BTreeMap<String, f32> = BTreeMap::new();
        let mut total = 0.0f32;
        for h in hits {
            let w = h.score.max(0.0);
            if let Some(k) = key(h) {
                *sum.entry(k).or_default() += w;
                total += w;
            }
        }
        let mut v: Vec<(String, f32)> = sum
            .into_iter()
            .map(|(k, s)| (k, if total > 0.0 { s / total } else { 0.0 }))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    Vote {
        modality: level(&|h| h.modality.clone()),
        anatomy: level(&|h| match (&h.modality, &h.anatomy) {
            (Some(m), Some(a)) => Some(format!("{m}/{a}")),
            _ => None,
        }),
        label: level(&|h| h.label.clone()),
    }
}

/// Top-`k` neighbours of `q`, unfiltered and ungrouped.
pub fn neighbours(snap: &Snapshot, q: &Query, k: usize) -> Result<Vec<Hit>> {
    let req = Request {
        k,
        ..Request::default()
    };
    Ok(search(snap, q, &req)?.hits)
}
