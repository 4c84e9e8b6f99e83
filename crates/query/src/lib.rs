//! Similar-case queries, shared by the CLI and the HTTP server: resolve a query (an image, an
//! indexed item, or text for CLIP-family models) to a vector in the index's space, then rank
//! the index by exact cosine and attach each hit's metadata (where in its file it is, and the
//! other stored copies of its pixels, collapsed into it: [`Duplicates`]); an empty filtered
//! result says why. Parameters are parsed and bounded here ([`params`]), errors are typed
//! ([`QueryError`]), and a search's memory is bounded by the index, whatever its parameters
//! ([`search`]).

mod error;
pub mod params;
pub mod remote;
pub mod rerank;
pub mod view;

pub use error::QueryError;
pub use params::{Params, StudyDate};
pub use view::View;

use serde::Serialize;
use simcase_imaging::{decode_path, DecodeOptions, Image, WindowPreset};
use simcase_index::{part_keys, Codes, Column, Item, Snapshot};
use simcase_models::{Encoder, TextEncoder};
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// What this crate's fallible calls return.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

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
    /// DICOM SOPInstanceUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_uid: Option<String>,
    /// The hit in the radiologist's viewer: the operator's `--viewer-url` template filled with
    /// its UIDs ([`ViewerUrl`]); absent without a template or the UIDs it needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer: Option<String>,
    /// The key this hit was grouped by, when the search was grouped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For a volume slice: its 0-based index across `axis` (of `slices`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<u32>,
    /// For a volume slice: how many slices its volume has across `axis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices: Option<u32>,
    /// For a volume slice: the slicing axis (`axial`, `coronal`, `sagittal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub axis: Option<String>,
    /// For a volume slice: the id its volume's slices share (what `group_by=volume` uses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// For a frame of a multi-frame DICOM object: its 0-based index (of `frames`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u32>,
    /// For a frame: how many frames its object has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    /// How many other stored items (that pass the filters) hold the same decoded pixels: the
    /// same image in other files or encodings, collapsed into this hit (see
    /// [`Duplicates`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
    /// The first [`MAX_ALSO`] of those items, by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Also>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A link template to the hospital's viewer, e.g.
/// `http://ohif/viewer?StudyInstanceUIDs={study}`: `{study}`, `{series}` and `{sop}` are
/// replaced by a hit's UIDs (digits and dots, so safe in a URL as they are).
#[derive(Clone, Debug, PartialEq)]
pub struct ViewerUrl(String);

impl std::str::FromStr for ViewerUrl {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            s.starts_with("http://") || s.starts_with("https://"),
            "viewer URL {s:?}: give an http:// or https:// template"
        );
        anyhow::ensure!(
            ["{study}", "{series}", "{sop}"]
                .iter()
                .any(|p| s.contains(p)),
            "viewer URL {s:?}: name at least one of {{study}}, {{series}}, {{sop}}"
        );
        Ok(Self(s.to_string()))
    }
}

impl ViewerUrl {
    /// The link of a hit, when it has every UID the template names (each a well-formed UID).
    pub fn link(&self, h: &Hit) -> Option<String> {
        let mut out = self.0.clone();
        for (key, value) in [
            ("{study}", &h.study_uid),
            ("{series}", &h.series_uid),
            ("{sop}", &h.sop_uid),
        ] {
            if out.contains(key) {
                let v = value.as_deref().filter(|v| {
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                })?;
                out = out.replace(key, v);
            }
        }
        Some(out)
    }

    /// Give every hit of `res` (and every group's best) its link.
    pub fn fill(&self, res: &mut Response) {
        for h in &mut res.hits {
            h.viewer = self.link(h);
        }
        for g in res.groups.iter_mut().flatten() {
            g.best.viewer = self.link(&g.best);
        }
    }
}

/// Most duplicates listed in a hit's [`Hit::also`] (all are counted in [`Hit::duplicates`]).
pub const MAX_ALSO: usize = 16;

/// Another stored copy of an image: the same decoded pixels, another item.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Also {
    /// The copy's item id.
    pub id: u64,
    /// Its file (the server leaves it out unless asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its frame, when it is a frame of a multi-frame object (as [`Hit::frame`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u32>,
    /// Its slice, when it is a volume's (as [`Hit::slice`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<u32>,
}

impl Also {
    fn of(it: &Item) -> Self {
        Self {
            id: it.id,
            path: Some(it.meta.path.clone()),
            frame: extra_u32(it, part_keys::FRAME),
            slice: extra_u32(it, part_keys::SLICE),
        }
    }
}

/// A whole number from an item's extra metadata.
fn extra_u32(it: &Item, key: &str) -> Option<u32> {
    it.meta.extra.get(key)?.as_u64()?.try_into().ok()
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
            sop_uid: m.sop_uid.clone(),
            viewer: None,
            group: None,
            slice: extra_u32(it, part_keys::SLICE),
            slices: extra_u32(it, part_keys::SLICES),
            axis: m.slice_axis().map(str::to_string),
            volume: m.volume().map(str::to_string),
            frame: extra_u32(it, part_keys::FRAME),
            frames: extra_u32(it, part_keys::FRAMES),
            duplicates: 0,
            also: Vec::new(),
        }
    }

    /// Where in its file this hit is, for a table: `slice 12/40 axial` or `frame 3/10`
    /// (0-based index / count, as in the JSON), or nothing for a single image.
    pub fn place(&self) -> Option<String> {
        let of = |n: Option<u32>| n.map(|n| format!("/{n}")).unwrap_or_default();
        if let Some(s) = self.slice {
            let axis = self.axis.as_deref().map(|a| format!(" {a}"));
            return Some(format!(
                "slice {s}{}{}",
                of(self.slices),
                axis.unwrap_or_default()
            ));
        }
        self.frame.map(|f| format!("frame {f}{}", of(self.frames)))
    }
}

/// A query resolved to a vector, and the item it came from when it was one.
pub struct Query {
    /// The query vector, L2-normalised, in the index's space.
    pub vector: Vec<f32>,
    /// An indexed item to leave out of the results (the query itself, for "more like this").
    pub exclude: Option<u64>,
    /// The query's study and patient, when known (an indexed item, an archived instance): what
    /// [`Filters::exclude_origin`] leaves out.
    pub origin: Origin,
}

/// Where a query image comes from: its study and its patient (salted key), when known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Origin {
    /// StudyInstanceUID.
    pub study_uid: Option<String>,
    /// The index's salted key of the patient.
    pub patient_key: Option<String>,
    /// SeriesInstanceUID.
    pub series_uid: Option<String>,
    /// SOPInstanceUID: with the study and series, the archived instance the query is.
    pub sop_uid: Option<String>,
}

impl Query {
    /// "More like this": item `id`'s stored vector; the item itself is left out of the results.
    pub fn item(reader: &Snapshot, id: u64) -> Result<Self> {
        let v = reader.vector(id).ok_or(QueryError::NotFound {
            id,
            items: reader.len(),
        })?;
        let origin = match reader.item(id).map_err(QueryError::Index)? {
            Some(it) => Origin {
                study_uid: it.meta.study_uid,
                patient_key: it.meta.patient_key,
                series_uid: it.meta.series_uid,
                sop_uid: it.meta.sop_uid,
            },
            None => Origin::default(),
        };
        Ok(Self {
            vector: v.to_vec(),
            exclude: Some(id),
            origin,
        })
    }

    /// A decoded image, embedded with the index's model.
    pub fn image(enc: &dyn Encoder, img: &Image) -> Result<Self> {
        Ok(Self {
            vector: first(enc.embed_images(&[img]))?,
            exclude: None,
            origin: Origin::default(),
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
        .map_err(|reason| QueryError::Decode {
            name: path.display().to_string(),
            reason,
        })?;
        Self::image(enc, &img.image)
    }

    /// Free text (not blank, at most [`params::MAX_TEXT_BYTES`]), through the text tower
    /// that shares the index model's space.
    pub fn text(enc: &dyn TextEncoder, text: &str) -> Result<Self> {
        params::check_text(text)?;
        Ok(Self {
            vector: first(enc.embed_texts(&[text]))?,
            exclude: None,
            origin: Origin::default(),
        })
    }
}

/// The one embedding of a one-input batch; a model that returns none has failed.
fn first(batch: anyhow::Result<Vec<Vec<f32>>>) -> Result<Vec<f32>> {
    batch
        .map_err(QueryError::Model)?
        .into_iter()
        .next()
        .ok_or_else(|| QueryError::Model(anyhow::anyhow!("no embedding for the query")))
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
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(c) = Column::from_name(s).filter(|c| Column::FILTERS.contains(c)) {
            return Ok(Self::Column(c));
        }
        Ok(match s {
            "format" => Self::Format,
            other => match other.strip_prefix("meta.") {
                Some(k) if !k.is_empty() && k.len() <= params::MAX_VALUE_BYTES => {
                    Self::Extra(k.to_string())
                }
                _ => {
                    let names: Vec<&str> = Column::FILTERS.iter().map(|c| c.name()).collect();
                    return Err(QueryError::bad(
                        other,
                        format!(
                            "unknown filter field ({}, format, or meta.COLUMN)",
                            names.join(", ")
                        ),
                    ));
                }
            },
        })
    }
}

impl Field {
    /// The field's name as a filter spells it: `modality`, `format`, `meta.view`.
    pub fn name(&self) -> String {
        match self {
            Self::Column(c) => c.name().to_string(),
            Self::Format => "format".to_string(),
            Self::Extra(k) => format!("meta.{k}"),
        }
    }

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
/// and the study date (`meta.study_date`, read by [`StudyDate::parse_stored`]) must fall in the
/// range when one is given; an item without a readable study date is then left out.
/// [`Filters::add`] builds one from request parameters, within bounds.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Allowed values per field (OR within a field, AND across fields).
    pub fields: BTreeMap<Field, Vec<String>>,
    /// Earliest study date kept.
    pub date_from: Option<StudyDate>,
    /// Latest study date kept.
    pub date_to: Option<StudyDate>,
    /// Values left out: an item whose field holds one of them is not returned (the query's own
    /// study or patient, [`Filters::exclude_origin`]). Exact, case-sensitive: identifiers.
    pub exclude: BTreeMap<Field, Vec<String>>,
}

impl Filters {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
            && self.date_from.is_none()
            && self.date_to.is_none()
            && self.exclude.is_empty()
    }

    /// Leave out the query's own study (`study`) and patient (`patient`), where `origin` knows
    /// them: a search by an archived image then does not answer with its neighbouring slices.
    pub fn exclude_origin(&mut self, origin: &Origin, study: bool, patient: bool) {
        let pairs = [
            (study, Column::StudyUid, &origin.study_uid),
            (patient, Column::PatientKey, &origin.patient_key),
        ];
        for (on, column, value) in pairs {
            if let (true, Some(v)) = (on, value) {
                self.exclude
                    .entry(Field::Column(column))
                    .or_default()
                    .push(v.clone());
            }
        }
    }

    /// Whether `it` passes every filter.
    pub fn keeps(&self, it: &Item) -> bool {
        let fields_ok = self.fields.iter().all(|(f, allowed)| {
            f.value(it)
                .is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
        });
        let excluded = self
            .exclude
            .iter()
            .any(|(f, out)| f.value(it).is_some_and(|v| out.iter().any(|o| o == v)));
        if !fields_ok || excluded {
            return false;
        }
        if self.date_from.is_none() && self.date_to.is_none() {
            return true;
        }
        let Some(date) = it
            .meta
            .extra
            .get("study_date")
            .and_then(|v| v.as_str())
            .and_then(StudyDate::parse_stored)
        else {
            return false;
        };
        self.date_from.is_none_or(|f| date >= f) && self.date_to.is_none_or(|t| date <= t)
    }

    /// Whether `date` is in the range (true when there is none).
    fn in_range(&self, date: StudyDate) -> bool {
        self.date_from.is_none_or(|f| date >= f) && self.date_to.is_none_or(|t| date <= t)
    }

    /// Whether a date range is given.
    fn has_dates(&self) -> bool {
        self.date_from.is_some() || self.date_to.is_some()
    }

    /// These filters against `snap`'s coded metadata: for each field, which of its codes
    /// pass (values compared case-insensitively, as [`Filters::keeps`] does), and which study
    /// dates are in range; [`Compiled::keeps`] then decides a row by its codes alone.
    pub fn compile<'s>(&self, snap: &'s Snapshot) -> Result<Compiled<'s>> {
        let mut fields = Vec::with_capacity(self.fields.len());
        for (f, allowed) in &self.fields {
            let codes = field_codes(snap, f)?;
            let pass = codes.select(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)));
            fields.push((codes, pass));
        }
        let mut exclude = Vec::with_capacity(self.exclude.len());
        for (f, out) in &self.exclude {
            let codes = field_codes(snap, f)?;
            let hit = codes.select(|v| out.iter().any(|o| o == v));
            exclude.push((codes, hit));
        }
        let date = if self.has_dates() {
            let codes = snap.extra(STUDY_DATE).map_err(QueryError::Index)?;
            let pass =
                codes.select(|v| StudyDate::parse_stored(v).is_some_and(|d| self.in_range(d)));
            Some((codes, pass))
        } else {
            None
        };
        Ok(Compiled {
            fields,
            date,
            exclude,
        })
    }
}

/// The `extra` key of an item's study date.
const STUDY_DATE: &str = "study_date";

/// The codes of `f` in `snap`.
fn field_codes<'s>(snap: &'s Snapshot, f: &Field) -> Result<Cow<'s, Codes>> {
    Ok(match f {
        Field::Column(c) => match snap.column(*c) {
            Some(codes) => Cow::Borrowed(codes),
            None => Cow::Owned(Codes::empty()),
        },
        Field::Format => Cow::Borrowed(snap.formats()),
        Field::Extra(k) => snap.extra(k).map_err(QueryError::Index)?,
    })
}

/// [`Filters`] resolved against one snapshot's codes (see [`Filters::compile`]).
pub struct Compiled<'s> {
    /// Per field: its codes, and which codes pass.
    fields: Vec<(Cow<'s, Codes>, Vec<bool>)>,
    /// The study-date codes and which are in range, when a range is given.
    date: Option<(Cow<'s, Codes>, Vec<bool>)>,
    /// Per excluded field: its codes, and which codes are left out.
    exclude: Vec<(Cow<'s, Codes>, Vec<bool>)>,
}

impl Compiled<'_> {
    /// Whether row `row` passes every filter.
    #[inline]
    pub fn keeps(&self, row: u64) -> bool {
        let pass = |(codes, ok): &(Cow<Codes>, Vec<bool>)| {
            ok.get(codes.code(row) as usize).copied().unwrap_or(false)
        };
        self.fields.iter().all(pass)
            && self.date.as_ref().is_none_or(pass)
            && !self.exclude.iter().any(pass)
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
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "patient" => Self::Patient,
            "study" => Self::Study,
            "series" => Self::Series,
            "volume" => Self::Volume,
            other => {
                return Err(QueryError::bad(
                    "group_by",
                    format!(
                        "unknown group {} (patient, study, series, volume)",
                        params::quote(other)
                    ),
                ))
            }
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
            None => GroupKey::Item(it.id).to_string(),
        }
    }

    /// The codes of this key in `snap` (a row's group is its code's value; a row without
    /// one is a group of its own).
    pub fn key_codes(self, snap: &Snapshot) -> Result<Cow<'_, Codes>> {
        let column = match self {
            Self::Patient => Column::PatientKey,
            Self::Study => Column::StudyUid,
            Self::Series => Column::SeriesUid,
            Self::Volume => return snap.extra(part_keys::VOLUME).map_err(QueryError::Index),
        };
        Ok(snap
            .column(column)
            .map_or_else(|| Cow::Owned(Codes::empty()), Cow::Borrowed))
    }
}

/// The group of row `row` with key `codes`, borrowed from its dictionary; a row without the
/// key is a group of its own.
fn key_of(codes: &Codes, row: u64) -> GroupKey<'_> {
    match codes.get(row) {
        Some(k) => GroupKey::Named(k),
        None => GroupKey::Item(row),
    }
}

/// A group key without a copy: the item's own key, or the item alone (`item:ID`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum GroupKey<'a> {
    Named(&'a str),
    Item(u64),
}

impl std::fmt::Display for GroupKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Named(k) => f.write_str(k),
            Self::Item(id) => write!(f, "item:{id}"),
        }
    }
}

/// Whether stored copies of one image (the same decoded pixels,
/// [`simcase_index::ItemMeta::pixel_hash`], e.g. one DICOM object in several transfer
/// syntaxes) are shown once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Duplicates {
    /// One hit per image, the best-ranked copy, listing the others (`also`); `k` counts
    /// distinct images. The default.
    #[default]
    Collapse,
    /// Every stored item, copies included.
    All,
}

impl std::str::FromStr for Duplicates {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "collapse" => Ok(Self::Collapse),
            "all" => Ok(Self::All),
            other => Err(QueryError::bad(
                "duplicates",
                format!("{} is not collapse or all", params::quote(other)),
            )),
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
    /// Whether copies of one image are collapsed into one hit.
    pub duplicates: Duplicates,
    /// How the candidates are re-ranked, if at all.
    pub rerank: Rerank,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            k: 10,
            offset: 0,
            filters: Filters::default(),
            group_by: None,
            duplicates: Duplicates::Collapse,
            rerank: Rerank::None,
        }
    }
}

/// How many of the best candidates k-reciprocal re-ranking reorders; the rest follow in their
/// cosine order. Its cost is O(K² · dim) per query ([`rerank`]).
pub const KR_SHORTLIST: usize = 100;

/// Re-ranking of a search's candidates, after the cosine ranking ([`rerank`]). On dev.csv
/// neither changes P@1 by much; `kr` raises P@10 and the label vote slightly, at 60–150× the
/// cost of a plain search.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Rerank {
    /// The cosine ranking as it is.
    #[default]
    None,
    /// α-query expansion at query time: the query is replaced by the L2-normalised sum of
    /// itself and its `n` best candidates, each weighted by its score to the power α, and
    /// ranked again (scores are then cosines to the expanded query). The database-side half
    /// (DBA) is an offline pass over the whole index and is left to `simcase eval`.
    Aqe {
        /// Neighbours summed.
        n: usize,
        /// Their weight's exponent.
        alpha: f32,
    },
    /// k-reciprocal re-ranking of the best [`KR_SHORTLIST`] candidates; hits keep their cosine
    /// scores, so a page in this order may show a lower score above a higher one. In a view
    /// whose `simcase adapt` tuned k-reciprocal knobs on val, those replace these.
    Kr(rerank::Kr),
}

impl Rerank {
    /// αQE's defaults: n = 3, α = 3 (Radenović et al.'s α).
    pub const AQE: Rerank = Rerank::Aqe { n: 3, alpha: 3.0 };
}

impl std::str::FromStr for Rerank {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "aqe" => Ok(Self::AQE),
            "kr" => Ok(Self::Kr(rerank::Kr::PAPER)),
            other => Err(QueryError::bad(
                "rerank",
                format!("{} is not none, aqe or kr", params::quote(other)),
            )),
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
    /// Items that passed the filters (the query item and its copies left out).
    pub candidates: usize,
    /// The request's offset.
    pub offset: usize,
    /// The request's page size.
    pub k: usize,
    /// When no item passed the filters: why, e.g. `no item has modality=US; modality values
    /// in this index: CR (120), MR (40)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_reason: Option<String>,
    /// For "more like this" with duplicates collapsed: how many other items hold the query
    /// item's pixels (left out of the results: they are the query).
    #[serde(skip_serializing_if = "is_zero")]
    pub query_duplicates: usize,
    /// The first [`MAX_ALSO`] of them, by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_also: Vec<Also>,
}

impl Response {
    /// A page of `req`'s answer: its hits (groups' best items when grouped) and their vote,
    /// out of `candidates`, with the query item's other copies (`twins` of them, `also` the
    /// first [`MAX_ALSO`]).
    fn page(
        req: &Request,
        candidates: usize,
        hits: Vec<Hit>,
        groups: Option<Vec<Group>>,
        twins: usize,
        also: Vec<Also>,
    ) -> Self {
        Self {
            vote: vote(&hits),
            hits,
            groups,
            candidates,
            offset: req.offset,
            k: req.k,
            empty_reason: None,
            query_duplicates: twins,
            query_also: also,
        }
    }
}

/// Rank `snap` for `q`: exact cosine over the items that pass the filters, then the collapse
/// of pixel-identical copies ([`Duplicates`]), optional grouping, pagination and the label
/// vote of the page.
///
/// Bounded by the index, whatever `req` says. Let `n` be the rows in the index and `c ≤ n` the
/// candidates (rows that pass the filters, the query's own item and its copies left out). A
/// page that starts at or past the end (`offset ≥ c`, or `k = 0`) is answered empty before
/// anything is ranked or allocated (when `c = 0` because of a filter, the one allocation is
/// the explanation: a scan of the items and a count per value of one field, ≤ `n`). Otherwise
/// ranking keeps `w = min(offset + k, c) ≤ n` hits (`offset + k` saturating), so the memory of
/// one search, beyond the memory-mapped index, is at most about:
///
/// - ranking ([`Rows::search`](simcase_index::Rows::search): exact, compact or HNSW): 16 B ×
///   (`n` + `p`) for the heaps and the sorted hits, where
///   the pool `p ≤ c` is `w` plus a margin when copies are collapsed or groups formed, grown
///   (to `c` at most) until it holds `w` distinct images or groups;
/// - collapsing: a set of the pool's copy groups (≤ `p` ids), the query item's copies (≤ `n`
///   ids), and for each of the page's hits at most [`MAX_ALSO`] copies listed
///   ([`Snapshot::copies_of`] looks them up: no scan of the items);
/// - grouping: about 100 B per distinct group (≤ `c`: its place in first-seen order and in a
///   hash table); group keys are borrowed from the index's metadata, not copied;
/// - the page: `min(k, c − offset)` hits with a copy of their metadata.
///
/// So it is O(n) in all: `offset` never sizes anything, and `k` only as `min(k, n)`.
pub fn search(snap: &Snapshot, q: &Query, req: &Request) -> Result<Response> {
    search_with(snap, None, q, req)
}

/// [`search`] in a [`View`]'s space when one is given: the query is mapped through the view's
/// adapter (an indexed item's mapped row is used as it is) and the view's mapped rows are
/// ranked by the exact flat scan. The view must have been opened on `snap`.
///
/// Re-ranking ([`Request::rerank`]) adds to [`search`]'s bounds: `aqe` one more ranking of
/// `n` hits and a query-sized vector; `kr` a pool of at least [`KR_SHORTLIST`] and, per
/// ranking, O([`KR_SHORTLIST`]²) floats for the shortlist's distances.
pub fn search_with(
    snap: &Snapshot,
    view: Option<&View>,
    q: &Query,
    req: &Request,
) -> Result<Response> {
    let dim = snap.settings().dim;
    if q.vector.len() != dim {
        return Err(QueryError::Dimension {
            got: q.vector.len(),
            want: dim,
        });
    }
    if let Some(v) = view.filter(|v| !v.fits(snap)) {
        return Err(QueryError::Index(anyhow::anyhow!(
            "view {} was mapped from another version of the index",
            v.name
        )));
    }
    let skip = q.exclude;
    let rows = snap.len();
    let collapse = req.duplicates == Duplicates::Collapse;
    // "More like this": the query item's other copies are the query too.
    let twins: Vec<u64> = match skip.filter(|_| collapse) {
        Some(s) => snap
            .copies_of(s)
            .iter()
            .copied()
            .filter(|&id| id != s)
            .collect(),
        None => Vec::new(),
    };
    let filters = req.filters.compile(snap)?;
    let keep = |r: u64| {
        Some(r) != skip
            && (twins.is_empty() || twins.binary_search(&r).is_err())
            && r < rows as u64
            && filters.keeps(r)
    };
    let candidates = if req.filters.is_empty() {
        let left_out = usize::from(skip.is_some_and(|s| s < rows as u64)) + twins.len();
        rows.saturating_sub(left_out)
    } else {
        (0..rows as u64).filter(|&r| keep(r)).count()
    };
    let item = |id: u64| snap.item(id).map_err(QueryError::Index);
    let page = |hits: Vec<Hit>, groups: Option<Vec<Group>>| -> Result<Response> {
        let mut query_also = Vec::new();
        for &id in twins.iter().take(MAX_ALSO) {
            if let Some(it) = item(id)? {
                query_also.push(Also::of(&it));
            }
        }
        Ok(Response::page(
            req,
            candidates,
            hits,
            groups,
            twins.len(),
            query_also,
        ))
    };
    if candidates == 0 {
        let mut res = page(Vec::new(), req.group_by.map(|_| Vec::new()))?;
        res.empty_reason = Some(explain_empty(snap, &req.filters, &filters, skip, &twins)?);
        return Ok(res);
    }
    if req.k == 0 || req.offset >= candidates {
        return page(Vec::new(), req.group_by.map(|_| Vec::new()));
    }
    // offset < candidates ≤ rows here, so every size below is at most `rows`.
    let want = req.offset.saturating_add(req.k).min(candidates);
    // The query in the searched space.
    let qv: Cow<[f32]> = match view {
        Some(v) => match q.exclude.and_then(|e| v.row(e)) {
            Some(r) => Cow::Borrowed(r),
            None => Cow::Owned(v.adapter.apply(&q.vector)),
        },
        None => Cow::Borrowed(&q.vector),
    };
    let row = |r: u64| match view {
        Some(v) => v.row(r),
        None => snap.vector(r),
    };
    let cosine = |qv: &[f32], k: usize| {
        match view {
            Some(v) => simcase_index::search_rows(&v.rows, v.dim, &[qv], k, Some(&keep)),
            None => snap.search(&[qv], k, Some(&keep)),
        }
        .into_iter()
        .next()
        .unwrap_or_default()
    };
    let qv = match req.rerank {
        Rerank::Aqe { n, alpha } if n > 0 => {
            let near = cosine(&qv, n);
            let nb: Vec<(&[f32], f32)> = near
                .iter()
                .filter_map(|h| Some((row(h.row)?, h.score)))
                .collect();
            Cow::Owned(rerank::alpha_qe(&qv, &nb, n, alpha))
        }
        _ => qv,
    };
    let rank = |k: usize| {
        let Rerank::Kr(kr) = req.rerank else {
            return cosine(&qv, k);
        };
        // A view's own knobs, tuned on val by `simcase adapt`, when it has them.
        let kr = view.and_then(|v| v.kr).unwrap_or(kr);
        let mut ranked = cosine(&qv, k.max(KR_SHORTLIST));
        let m = ranked.len().min(KR_SHORTLIST);
        let short: Vec<&[f32]> = ranked[..m]
            .iter()
            .map(|h| row(h.row).unwrap_or_default())
            .collect();
        let head: Vec<simcase_index::Hit> = kr
            .rerank(&qv, &short)
            .into_iter()
            .map(|(i, _)| ranked[i])
            .collect();
        ranked.splice(..m, head);
        ranked.truncate(k);
        ranked
    };
    let hit = |rank: usize, h: &simcase_index::Hit| -> Result<Option<Hit>> {
        Ok(item(h.row)?.map(|it| Hit::new(rank, h.score, &it)))
    };
    let group_codes = match req.group_by {
        Some(g) => Some(g.key_codes(snap)?),
        None => None,
    };
    // Enough candidates for `want` distinct images (groups) in practice; more if not.
    let mut pool = match (req.group_by, collapse) {
        (Some(_), _) => want.saturating_mul(20).saturating_add(100),
        (None, true) => want.saturating_add(want / 2).saturating_add(16),
        (None, false) => want,
    }
    .min(candidates);
    loop {
        let ranked = rank(pool);
        // The pool's distinct images: the first (best-ranked) copy of each pixel hash, its
        // copies known by their group's first id.
        let distinct: Vec<&simcase_index::Hit> = if collapse {
            let mut seen: HashSet<u64> = HashSet::new();
            ranked
                .iter()
                .filter(|h| {
                    snap.copies_of(h.row)
                        .first()
                        .is_none_or(|&g| seen.insert(g))
                })
                .collect()
        } else {
            ranked.iter().collect()
        };
        let last_try = pool >= candidates;
        let Some(codes) = &group_codes else {
            if distinct.len() < want && !last_try {
                pool = pool.saturating_mul(4).min(candidates);
                continue;
            }
            let mut hits = Vec::new();
            for (i, h) in distinct.iter().enumerate().skip(req.offset).take(req.k) {
                hits.extend(hit(i + 1, h)?);
            }
            if collapse {
                attach_copies(snap, &keep, hits.iter_mut())?;
            }
            return page(hits, None);
        };
        // Groups in order of first appearance: (key, its best hit in `distinct`, items matched).
        let mut order: Vec<(GroupKey, usize, usize)> = Vec::new();
        let mut at: HashMap<GroupKey, usize> = HashMap::new();
        for (i, h) in distinct.iter().enumerate() {
            if h.row >= rows as u64 {
                continue;
            }
            match at.entry(key_of(codes, h.row)) {
                Entry::Occupied(e) => order[*e.get()].2 += 1,
                Entry::Vacant(e) => {
                    order.push((*e.key(), i, 1));
                    e.insert(order.len() - 1);
                }
            }
        }
        if order.len() < want && !last_try {
            pool = candidates;
            continue;
        }
        let mut groups: Vec<Group> = Vec::new();
        for (i, &(key, best, matched)) in order.iter().enumerate().skip(req.offset).take(req.k) {
            let Some(mut best) = hit(i + 1, distinct[best])? else {
                continue;
            };
            best.group = Some(key.to_string());
            groups.push(Group {
                key: key.to_string(),
                score: best.score,
                matched,
                best,
            });
        }
        if collapse {
            attach_copies(snap, &keep, groups.iter_mut().map(|g| &mut g.best))?;
        }
        let hits = groups.iter().map(|g| g.best.clone()).collect();
        return page(hits, Some(groups));
    }
}

/// Fill each hit's [`Hit::duplicates`] and [`Hit::also`]: the other items that `keep` lets
/// through with the same pixel hash ([`Snapshot::copies_of`], no scan of the items).
fn attach_copies<'h>(
    snap: &Snapshot,
    keep: &dyn Fn(u64) -> bool,
    hits: impl Iterator<Item = &'h mut Hit>,
) -> Result<()> {
    for h in hits {
        for &id in snap.copies_of(h.id) {
            if id == h.id || !keep(id) {
                continue;
            }
            h.duplicates += 1;
            if h.also.len() < MAX_ALSO {
                if let Some(it) = snap.item(id).map_err(QueryError::Index)? {
                    h.also.push(Also::of(&it));
                }
            }
        }
    }
    Ok(())
}

/// Values listed when a filter matches nothing.
const MAX_VALUES_LISTED: usize = 12;

/// Why no item passed `filters` (`compiled` against `snap`): the first filter that matches no
/// item of the index, with the values its field does have (most frequent first), or the date
/// range, or the combination. Counted from the snapshot's codes: one pass over the rows per
/// field, none over SQLite.
fn explain_empty(
    snap: &Snapshot,
    filters: &Filters,
    compiled: &Compiled,
    skip: Option<u64>,
    twins: &[u64],
) -> Result<String> {
    let rows = snap.len();
    let queries = usize::from(skip.is_some_and(|s| (s as usize) < rows))
        + twins
            .iter()
            .filter(|&&t| (t as usize) < rows && Some(t) != skip)
            .count();
    if queries >= rows {
        return Ok(match (rows, skip) {
            (0, _) => "the index holds no items".to_string(),
            (_, Some(_)) if !twins.is_empty() => {
                "the index holds no other image than the query (and its copies)".to_string()
            }
            (_, Some(_)) => "the index holds no other item than the query".to_string(),
            _ => "no item passed the filters".to_string(),
        });
    }
    for (field, allowed) in &filters.fields {
        let name = field.name();
        let codes = field_codes(snap, field)?;
        let matches = codes.select(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)));
        let counts = codes.counts(rows);
        if counts.iter().zip(&matches).any(|(&n, &m)| m && n > 0) {
            continue;
        }
        let wanted: Vec<String> = allowed.iter().map(|a| short(a)).collect();
        let wanted = format!("{name}={}", wanted.join("|"));
        let mut counts: Vec<(&str, usize)> = counts
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .filter_map(|(c, &n)| Some((codes.value(c as u32)?, n)))
            .collect();
        if counts.is_empty() {
            return Ok(format!("no item has a {name} value (filter {wanted})"));
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut listed: Vec<String> = counts
            .iter()
            .take(MAX_VALUES_LISTED)
            .map(|(v, n)| format!("{} ({n})", short(v)))
            .collect();
        if counts.len() > MAX_VALUES_LISTED {
            listed.push(format!("… {} more", counts.len() - MAX_VALUES_LISTED));
        }
        return Ok(format!(
            "no item has {wanted}; {name} values in this index: {}",
            listed.join(", ")
        ));
    }
    if filters.has_dates() {
        let codes = snap.extra(STUDY_DATE).map_err(QueryError::Index)?;
        let counts = codes.counts(rows);
        let dates: Vec<StudyDate> = counts
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .filter_map(|(c, _)| StudyDate::parse_stored(codes.value(c as u32)?))
            .collect();
        let range = |f: Option<StudyDate>, t: Option<StudyDate>| {
            let end = |d: Option<StudyDate>| d.map(|d| d.to_string()).unwrap_or_default();
            format!("{}..{}", end(f), end(t))
        };
        let asked = range(filters.date_from, filters.date_to);
        let (Some(&lo), Some(&hi)) = (dates.iter().min(), dates.iter().max()) else {
            return Ok(format!("no item has a study date (filter {asked})"));
        };
        if !dates.iter().any(|&d| filters.in_range(d)) {
            return Ok(format!(
                "no item's study date is in {asked}; study dates in this index: {}",
                range(Some(lo), Some(hi))
            ));
        }
    }
    if (0..rows as u64).any(|r| compiled.keeps(r)) {
        return Ok("only the query itself (or its copies) passes the filters".to_string());
    }
    Ok("no item passes all the filters together (each one alone matches some items)".to_string())
}

/// `v` as it is when short, else cut in the middle: a message echoes index values boundedly.
fn short(v: &str) -> String {
    simcase_index::shorten(v, 48)
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
