//! The paper's protocol end to end, shared by `simcase eval` (and the report to come): embed a
//! labelled manifest into a per-model index folder (resuming, so a second run only scores),
//! index = train split, queries = test split, three label levels, modified P@1/3/5/10 (micro and
//! macro), the kNN vote with k tuned on val, optionally over distinct groups, and a per-modality
//! view, as JSON and Markdown. A manifest that cannot be scored (no `split` column, no train
//! or no test rows, no labels) is refused by [`check_manifest`] before any model is loaded.

use crate::{at_level, knn_classification, precision_report, LEVELS, NS};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use simcase_imaging::content_hash;
use simcase_index::{FlatIndex, Reader, VectorIndex};
use simcase_models::{default_device, ModelId};
use simcase_query::GroupBy;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where and how a manifest is embedded.
#[derive(Clone, Debug)]
pub struct Options {
    /// Labelled manifest with a `split` column.
    pub manifest: PathBuf,
    /// Folder for the per-model embedding indexes (default `$SIMCASE_HOME/eval`).
    pub work: Option<PathBuf>,
    /// Images embedded together.
    pub batch: usize,
    /// No progress bar or summary lines.
    pub quiet: bool,
}

/// Neighbours retrieved per query, as in the paper's code (FAISS search with k = 100).
const RETRIEVE: usize = 100;

/// One usable manifest row: its label, split, index id and group key.
#[derive(Clone, Debug)]
pub struct Row {
    /// Its position among the manifest's rows (the same row in every model's index).
    line: usize,
    path: PathBuf,
    label: String,
    split: String,
    id: u64,
    /// Patient / study / series / volume key for grouped scoring.
    group: String,
}

impl Row {
    /// A row of a manifest, for callers that build rows themselves (tests, fused spaces).
    pub fn new(line: usize, path: PathBuf, label: &str, split: &str, id: u64, group: &str) -> Self {
        Self {
            line,
            path,
            label: label.to_string(),
            split: split_name(split),
            id,
            group: group.to_string(),
        }
    }
    /// Its position among the manifest's rows.
    pub fn line(&self) -> usize {
        self.line
    }
    /// The row's file, as the manifest names it (resolved against the manifest's folder).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The row's label (`modality/anatomy/pathology`).
    pub fn label(&self) -> &str {
        &self.label
    }
    /// Its split, trimmed and lower-case (`train`, `val`, `test`).
    pub fn split(&self) -> &str {
        &self.split
    }
    /// Its item id in the index (its embedding is `reader.vector(id)`).
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Its group key (patient, study, …, as asked of [`embed_manifest`]; `item:ID` without).
    pub fn group(&self) -> &str {
        &self.group
    }
}

fn manifest_key(p: &Path) -> String {
    let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    content_hash(canon.display().to_string().as_bytes())[..12].to_string()
}

/// Refuse, before any model is installed, loaded or run, a manifest the protocol cannot score:
/// it needs labels, and a `split` column with `train` rows (the index) and `test` rows (the
/// queries). The error is one line naming the file and what is missing.
pub fn check_manifest(manifest: &Path) -> Result<()> {
    let m = simcase_ingest::read_manifest_full(manifest)?;
    let shown = manifest.display();
    let need = "eval needs a `split` column with `train` rows (the index) and `test` rows \
                (the queries)";
    anyhow::ensure!(
        m.has_column("split"),
        "{shown}: no `split` column ({}); {need}",
        m.describe_header()
    );
    anyhow::ensure!(
        m.rows.iter().any(|s| s.meta.label.is_some()),
        "{shown}: no row has a label (a `label` column, or `modality`, `anatomy` and \
         `pathology`) ({}); eval scores retrieval against labels",
        m.describe_header()
    );
    // Split names are matched case-insensitively (`Train`, `TEST`), as eval reads them.
    let mut splits: BTreeMap<String, usize> = BTreeMap::new();
    for s in &m.rows {
        if let (Some(_), Some(split)) = (&s.meta.label, &s.meta.split) {
            *splits.entry(split_name(split)).or_default() += 1;
        }
    }
    let missing: Vec<&str> = ["train", "test"]
        .into_iter()
        .filter(|s| !splits.contains_key(*s))
        .collect();
    if !missing.is_empty() {
        let found: Vec<String> = splits.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let found = if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        };
        anyhow::bail!(
            "{shown}: no labelled rows with split `{}` (labelled rows by split: {found}); {need}",
            missing.join("` or `")
        );
    }
    Ok(())
}

/// A split as eval compares it: trimmed and lower-case, so `Train` and `train` are one split.
pub fn split_name(split: &str) -> String {
    split.trim().to_ascii_lowercase()
}

/// The per-model embedding index of a manifest: `WORK/MODEL-KEY`, KEY from the manifest's
/// canonical path; `WORK/MODEL@PRECISION-KEY` when the process embeds at another precision
/// than f32 ([`simcase_models::precision`]), so each precision is evaluated on its own vectors.
fn cache_dir(a: &Options, model: ModelId) -> Result<PathBuf> {
    let work = match &a.work {
        Some(w) => w.clone(),
        None => simcase_models::simcase_home()?.join("eval"),
    };
    let at = match simcase_models::precision() {
        simcase_models::Precision::F32 => String::new(),
        p => format!("@{p}"),
    };
    Ok(work.join(format!("{model}{at}-{}", manifest_key(&a.manifest))))
}

/// Each manifest row's content hash (`None`: its file cannot be read; ingest reports it).
fn row_hashes(sources: &[simcase_ingest::Source]) -> Vec<Option<String>> {
    sources
        .iter()
        .map(|s| std::fs::read(&s.path).ok().map(|b| content_hash(&b)))
        .collect()
}

/// The rows ingest sees: one per file content, the first in manifest order. A manifest may
/// list pixel-identical files under several rows (dev.csv has 9 such pairs: other paths,
/// patients or splits, e.g. `Te-no_0053.jpg` in `test` and `Te-no_0068.jpg` in `val`). The
/// index stores one item per content, so feeding every row would merge each row's values
/// into that one item in turn (eval ingests with `relabel`): the last row wins, and the next
/// run finds the first row disagreeing, relabels again and warns, on every run. With only the
/// first row, the stored item carries the first row's values once and for all, and a second
/// run changes nothing.
fn first_per_content(
    sources: &[simcase_ingest::Source],
    hashes: &[Option<String>],
) -> (Vec<simcase_ingest::Source>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut repeats = 0;
    let mut unique = Vec::with_capacity(sources.len());
    for (s, h) in sources.iter().zip(hashes) {
        match h {
            Some(h) if !seen.insert(h.as_str()) => repeats += 1,
            _ => unique.push(s.clone()),
        }
    }
    (unique, repeats)
}

/// Embed the manifest's files into its per-model index (resuming: files already there are
/// not embedded again, and their stored values are brought in line with the manifest, which
/// is the truth for eval). Returns the index folder and what ingest did. Rows whose file has
/// the same content as an earlier row's are not handed to ingest (see [`first_per_content`]),
/// so that a second run over the same manifest changes nothing and warns nothing. The model
/// must be installed.
pub fn cache_manifest(a: &Options, model: ModelId) -> Result<(PathBuf, simcase_ingest::Summary)> {
    check_manifest(&a.manifest)?;
    cache_any_manifest(a, model)
}

/// [`cache_manifest`] for any manifest, labelled or not (the report draws what needs no
/// labels from an unlabelled one).
pub fn cache_any_manifest(
    a: &Options,
    model: ModelId,
) -> Result<(PathBuf, simcase_ingest::Summary)> {
    let dir = cache_dir(a, model)?;
    let sources = simcase_ingest::read_manifest(&a.manifest)?;
    let (unique, repeats) = first_per_content(&sources, &row_hashes(&sources));
    let enc = simcase_models::load(model, &default_device())?;
    let mut w = simcase_index::Writer::open(&dir, model.name(), enc.dim())?;
    w.record_embedding_precision(simcase_models::precision().name())?;
    let opts = simcase_ingest::Options {
        batch: a.batch.max(1),
        decode: Default::default(),
        decode_threads: 0,
        progress: !a.quiet,
        // The manifest is the truth for eval: an edited label replaces the cached one.
        relabel: true,
    };
    let s = simcase_ingest::run(&mut w, enc.as_ref(), unique, &opts)?;
    if !a.quiet {
        let shared = match repeats {
            0 => String::new(),
            n => format!(
                "; {n} row(s) repeat an earlier row's file content (stored once, each scored \
                 as its own row)"
            ),
        };
        eprintln!(
            "{model}: {} embedded, {} cached, {} failed{shared} ({})",
            s.added,
            s.skipped,
            s.failed,
            dir.display()
        );
    }
    Ok((dir, s))
}

/// Embed the manifest (resuming, [`cache_manifest`]) and return its rows joined to index ids,
/// and how many rows could not be used (no label or split, or no embedding). The model must
/// be installed.
///
/// Every manifest row is one image of the protocol, with its own label, split and group, also
/// when its file has the same content as another row's: it is scored as the manifest lists it
/// (two rows in `test` are two queries; a row in `train` and one in `test` would be a query
/// that finds its own copy, as the manifest asks), and only its embedding is shared. Its group
/// key comes from its own row (its `patient_id`, …) over the stored item, not from whichever
/// row the shared item was stored with.
pub fn embed_manifest(
    a: &Options,
    model: ModelId,
    group_by: Option<GroupBy>,
) -> Result<(Reader, Vec<Row>, usize)> {
    let (dir, _) = cache_manifest(a, model)?;
    let sources = simcase_ingest::read_manifest(&a.manifest)?;
    let hashes = row_hashes(&sources);
    let reader = Reader::open(&dir)?;
    let mut rows = Vec::new();
    let mut missing = 0;
    for (line, (s, hash)) in sources.iter().zip(&hashes).enumerate() {
        let (Some(label), Some(split)) = (&s.meta.label, &s.meta.split) else {
            missing += 1;
            continue;
        };
        let id = match hash {
            Some(h) => reader.id_by_hash(h)?,
            None => None,
        };
        let Some(id) = id else {
            missing += 1;
            continue;
        };
        let group = match (group_by, reader.item(id)?) {
            (Some(g), Some(mut it)) => {
                // This row's own values over the stored item's (the same for a file only
                // one row lists).
                let mut own = s.meta.clone();
                own.patient_key = s
                    .patient_id
                    .as_deref()
                    .map(|p| reader.settings().patient_key(p));
                it.meta.merge_labels(&own, true, &mut Vec::new());
                g.key(&it)
            }
            _ => format!("item:{id}"),
        };
        rows.push(Row {
            line,
            path: s.path.clone(),
            label: label.clone(),
            split: split_name(split),
            id,
            group,
        })
    }
    Ok((reader, rows, missing))
}

/// One embedded manifest row of any manifest: its file, index id and label (if any).
pub struct Embedded {
    /// The file, as the manifest names it.
    pub path: PathBuf,
    /// Its item id in the index.
    pub id: u64,
    /// Its label (`modality/anatomy/pathology`), when the manifest gives one.
    pub label: Option<String>,
}

/// Embed any manifest (resuming) and return every row that has an embedding, and how many
/// have none. The model must be installed.
pub fn embed_all(a: &Options, model: ModelId) -> Result<(Reader, Vec<Embedded>, usize)> {
    let (dir, _) = cache_any_manifest(a, model)?;
    let sources = simcase_ingest::read_manifest(&a.manifest)?;
    let hashes = row_hashes(&sources);
    let reader = Reader::open(&dir)?;
    let (mut rows, mut missing) = (Vec::new(), 0);
    for (s, hash) in sources.iter().zip(&hashes) {
        match hash.as_deref().map(|h| reader.id_by_hash(h)).transpose()? {
            Some(Some(id)) => rows.push(Embedded {
                path: s.path.clone(),
                id,
                label: s.meta.label.clone(),
            }),
            _ => missing += 1,
        }
    }
    Ok((reader, rows, missing))
}

type Ranked = Vec<(String, f32)>;

/// Score one model; returns the JSON report.
pub fn evaluate(
    reader: &Reader,
    rows: &[Row],
    missing: usize,
    max_k: usize,
    group_by: Option<GroupBy>,
) -> Result<Value> {
    let s = reader.settings();
    evaluate_with(
        &s.model,
        s.dim,
        rows,
        &|id| reader.vector(id),
        missing,
        max_k,
        group_by,
    )
}

/// Score the rows with vectors from `vector` (by row id) instead of the index's own: an
/// adapted or fused space, named `name`, scored with the protocol unchanged.
pub fn evaluate_with<'v>(
    name: &str,
    dim: usize,
    rows: &[Row],
    vector: &dyn Fn(u64) -> Option<&'v [f32]>,
    missing: usize,
    max_k: usize,
    group_by: Option<GroupBy>,
) -> Result<Value> {
    evaluate_reranked(name, dim, rows, vector, None, missing, max_k, group_by)
}

/// Re-orders a query's shortlist: given the query and the shortlist's vectors (best first),
/// the shortlist's positions in their new order, each with its new score (higher is nearer).
pub type Rerank<'r> = dyn Fn(&[f32], &[&[f32]]) -> Vec<(usize, f32)> + 'r;

/// [`evaluate_with`], each query's top [`RETRIEVE`] re-ordered by `rerank` before scoring.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_reranked<'v>(
    name: &str,
    dim: usize,
    rows: &[Row],
    vector: &dyn Fn(u64) -> Option<&'v [f32]>,
    rerank: Option<&Rerank>,
    missing: usize,
    max_k: usize,
    group_by: Option<GroupBy>,
) -> Result<Value> {
    let train: Vec<&Row> = rows.iter().filter(|r| r.split == "train").collect();
    anyhow::ensure!(!train.is_empty(), "the manifest has no train rows to index");
    let mut flat = Vec::with_capacity(train.len() * dim);
    for r in &train {
        flat.extend_from_slice(vector(r.id).context("vector missing")?);
    }
    let index = FlatIndex::new(flat, dim);
    // Grouped scoring needs the whole ranking to find RETRIEVE distinct groups.
    let depth = if group_by.is_some() {
        train.len()
    } else {
        RETRIEVE
    };
    let search = |split: &str, grouped: bool| -> Result<Vec<(String, Ranked)>> {
        let qs: Vec<&Row> = rows.iter().filter(|r| r.split == split).collect();
        let vecs = qs
            .iter()
            .map(|r| vector(r.id).context("vector missing"))
            .collect::<Result<Vec<&[f32]>>>()?;
        let mut hits = index.search(&vecs, depth, None)?;
        if let Some(rerank) = rerank {
            // Only the shortlist (the top RETRIEVE) is re-ordered; deeper hits (grouped
            // scoring ranks everything) follow in their order, below it.
            for (v, hs) in vecs.iter().zip(hits.iter_mut()) {
                let cut = hs.len().min(RETRIEVE);
                let short: Vec<&[f32]> = hs[..cut]
                    .iter()
                    .map(|h| index.row(h.row as usize))
                    .collect();
                let order = rerank(v, &short);
                let floor = order.iter().map(|o| o.1).fold(f32::INFINITY, f32::min);
                let mut new: Vec<simcase_index::Hit> = order
                    .into_iter()
                    .map(|(i, score)| simcase_index::Hit {
                        row: hs[i].row,
                        score,
                    })
                    .collect();
                new.extend(hs[cut..].iter().map(|h| simcase_index::Hit {
                    row: h.row,
                    score: floor - 1.0 - (1.0 - h.score),
                }));
                *hs = new;
            }
        }
        Ok(qs
            .iter()
            .zip(hits)
            .map(|(q, hs)| {
                let ranked = hs
                    .iter()
                    .map(|h| (train[h.row as usize], h.score))
                    .map(|(t, score)| (t.label.as_str(), t.group.as_str(), score));
                (q.label.clone(), top_ranked(ranked, grouped))
            })
            .collect())
    };
    let train: Vec<(&str, &str)> = train
        .iter()
        .map(|r| (r.label.as_str(), r.group.as_str()))
        .collect();
    report(name, dim, &train, missing, max_k, group_by, &search)
}

/// The first [`RETRIEVE`] of a ranking's `(label, group, score)`, labels and scores only;
/// `grouped`: each group's first (best) only.
fn top_ranked<'a>(ranked: impl Iterator<Item = (&'a str, &'a str, f32)>, grouped: bool) -> Ranked {
    let mut seen = std::collections::HashSet::new();
    ranked
        .filter(|(_, g, _)| !grouped || seen.insert(*g))
        .take(RETRIEVE)
        .map(|(l, _, s)| (l.to_string(), s))
        .collect()
}

/// Ranks the queries of a split (`grouped`: by distinct groups): per query, its label and
/// the labels and scores of its top [`RETRIEVE`] train rows.
type Search<'a> = dyn Fn(&str, bool) -> Result<Vec<(String, Ranked)>> + 'a;

/// The report of one model from its index's train rows (`(label, group)` each) and a
/// [`Search`] of them: P@N per level, the kNN vote tuned on val, grouped P@N and the
/// per-modality view.
fn report(
    model: &str,
    dim: usize,
    train: &[(&str, &str)],
    missing: usize,
    max_k: usize,
    group_by: Option<GroupBy>,
    search: &Search,
) -> Result<Value> {
    let (test, val) = (search("test", false)?, search("val", false)?);
    let cut = |qs: &[(String, Ranked)], lvl: usize| -> Vec<(String, Ranked)> {
        qs.iter()
            .map(|(l, r)| {
                let r = r.iter().map(|(c, s)| (at_level(c, lvl), *s)).collect();
                (at_level(l, lvl), r)
            })
            .collect()
    };
    let counts = |lvl: usize| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (label, _) in train {
            *m.entry(at_level(label, lvl)).or_insert(0) += 1;
        }
        m
    };
    let level_report = |qs: &[(String, Ranked)], lvl: usize| {
        let q: Vec<(String, Vec<String>)> = cut(qs, lvl)
            .into_iter()
            .map(|(l, r)| (l, r.into_iter().map(|x| x.0).collect()))
            .collect();
        precision_report(&q, &counts(lvl)).to_json()
    };
    let mut levels = serde_json::Map::new();
    let mut knn = serde_json::Map::new();
    for (lvl, name) in LEVELS.iter().enumerate() {
        levels.insert(name.to_string(), level_report(&test, lvl));
        let c = knn_classification(&cut(&val, lvl), &cut(&test, lvl), max_k);
        knn.insert(name.to_string(), serde_json::to_value(c)?);
    }
    // The same P@N over distinct groups: a class's size is how many groups hold it.
    let grouped = match group_by {
        None => Value::Null,
        Some(g) => {
            let gtest = search("test", true)?;
            let mut lv = serde_json::Map::new();
            for (lvl, name) in LEVELS.iter().enumerate() {
                let mut holders: HashMap<String, std::collections::HashSet<&str>> = HashMap::new();
                for (label, group) in train {
                    holders
                        .entry(at_level(label, lvl))
                        .or_default()
                        .insert(*group);
                }
                let sizes: HashMap<String, usize> =
                    holders.into_iter().map(|(c, g)| (c, g.len())).collect();
                let q: Vec<(String, Vec<String>)> = cut(&gtest, lvl)
                    .into_iter()
                    .map(|(l, r)| (l, r.into_iter().map(|x| x.0).collect()))
                    .collect();
                lv.insert(name.to_string(), precision_report(&q, &sizes).to_json());
            }
            let groups: std::collections::HashSet<&str> = train.iter().map(|t| t.1).collect();
            json!({ "by": g, "index_groups": groups.len(), "levels": lv })
        }
    };
    let mut per_modality = serde_json::Map::new();
    let modalities: BTreeMap<String, ()> = test.iter().map(|(l, _)| (at_level(l, 0), ())).collect();
    for m in modalities.keys() {
        let sub: Vec<(String, Ranked)> = test
            .iter()
            .filter(|(l, _)| &at_level(l, 0) == m)
            .cloned()
            .collect();
        let mut lv = serde_json::Map::new();
        for (lvl, name) in LEVELS.iter().enumerate() {
            lv.insert(name.to_string(), level_report(&sub, lvl));
        }
        per_modality.insert(m.clone(), Value::Object(lv));
    }
    Ok(json!({
        "model": model,
        "dim": dim,
        "protocol": "index=train, queries=test; modified P@N with N'=min(N, class size in index); kNN k tuned on val",
        "counts": {
            "index": train.len(),
            "val": val.len(),
            "test": test.len(),
            "unusable_rows": missing,
        },
        "levels": levels,
        "grouped": grouped,
        "knn": knn,
        "per_modality": per_modality,
    }))
}

/// Score the Milvus collection `coll` with the manifest's rows, the protocol unchanged: the
/// collection's labelled `train` rows are the index, searched through Milvus (exact on a FLAT
/// collection, approximate on HNSW or IVF), and the manifest's `test` and `val` rows are the
/// queries, each found in the collection by its file's content key (`simcase index
/// --manifest … --index milvus://…` stores them). Labels, splits and group keys are the
/// collection's metadata. A manifest row whose file the collection lacks is unusable, as a
/// row whose file cannot be embedded is locally.
pub fn evaluate_remote(
    coll: &simcase_milvus::Collection,
    manifest: &Path,
    max_k: usize,
    group_by: Option<GroupBy>,
) -> Result<Value> {
    use simcase_milvus::expr::{FieldRef, Where};
    use simcase_query::remote::MAX_TOPK;
    check_manifest(manifest)?;
    let info = coll.info();
    let shown = coll.url();
    let group = |it: &simcase_index::Item| match group_by {
        Some(g) => g.key(it),
        None => format!("item:{}", it.id),
    };
    // The index: every labelled train row of the collection.
    let in_train = Where {
        fields: vec![(
            FieldRef::Column(simcase_index::Column::Split),
            vec!["train".into()],
        )],
        raw: Some("label != \"\"".into()),
        ..Default::default()
    };
    let in_train = in_train.to_expr();
    let mut train: HashMap<u64, (String, String)> = HashMap::new();
    coll.scan(in_train.as_deref(), false, &mut |batch| {
        for (it, _) in batch {
            if let Some(label) = it.meta.label.clone() {
                train.insert(it.id, (label, group(&it)));
            }
        }
        Ok(())
    })
    .with_context(|| format!("reading the train rows of {shown}"))?;
    anyhow::ensure!(
        !train.is_empty(),
        "{shown} has no labelled train rows to search"
    );
    let depth = if group_by.is_some() {
        anyhow::ensure!(
            train.len() <= MAX_TOPK,
            "{shown}: grouped scoring ranks all {} train rows, and Milvus returns at most \
             {MAX_TOPK} (use --group-by none)",
            train.len()
        );
        train.len()
    } else {
        RETRIEVE
    };
    // The queries: the manifest's rows, found by content key, with the collection's values.
    let sources = simcase_ingest::read_manifest(manifest)?;
    let hashes = row_hashes(&sources);
    let ids: Vec<Option<u64>> = hashes
        .iter()
        .map(|h| h.as_deref().map(simcase_milvus::item_id))
        .collect();
    let mut wanted: Vec<u64> = ids.iter().flatten().copied().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut stored: HashMap<u64, (simcase_index::Item, Vec<f32>)> = HashMap::new();
    for chunk in wanted.chunks(256) {
        for (it, v) in coll
            .get(chunk)
            .with_context(|| format!("reading the manifest's items from {shown}"))?
        {
            stored.insert(it.id, (it, v));
        }
    }
    let mut missing = 0;
    let mut queries: Vec<(String, String, u64)> = Vec::new();
    for id in &ids {
        let Some((it, _)) = id.and_then(|id| stored.get(&id)) else {
            missing += 1;
            continue;
        };
        let (Some(label), Some(split)) = (&it.meta.label, &it.meta.split) else {
            missing += 1;
            continue;
        };
        queries.push((label.clone(), split_name(split), it.id));
    }
    let search = |split: &str, grouped: bool| -> Result<Vec<(String, Ranked)>> {
        let qs: Vec<&(String, String, u64)> = queries.iter().filter(|q| q.1 == split).collect();
        let mut out = Vec::with_capacity(qs.len());
        for chunk in qs.chunks(16) {
            let vecs: Vec<&[f32]> = chunk.iter().map(|q| stored[&q.2].1.as_slice()).collect();
            let hits = coll
                .search(&vecs, depth, in_train.as_deref(), None)
                .with_context(|| format!("searching {shown}"))?;
            for (q, hs) in chunk.iter().zip(hits) {
                let ranked = hs.iter().filter_map(|h| {
                    let (label, group) = train.get(&h.id)?;
                    Some((label.as_str(), group.as_str(), h.score))
                });
                out.push((q.0.clone(), top_ranked(ranked, grouped)));
            }
        }
        Ok(out)
    };
    let train_rows: Vec<(&str, &str)> = train
        .values()
        .map(|(l, g)| (l.as_str(), g.as_str()))
        .collect();
    report(
        &info.model,
        info.dim,
        &train_rows,
        missing,
        max_k,
        group_by,
        &search,
    )
}

/// ` micro / macro |` for P@1..P@10 of one level report, and the end of the row.
/// A table's P@N cell: `n/a` for `null` (no query of its row was scored).
fn score(v: &Value) -> String {
    v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.3}"))
}

fn pn_cells(s: &mut String, level: &Value) {
    for n in NS {
        let p = &level[format!("P@{n}")];
        let _ = write!(s, " {} / {} |", score(&p["micro"]), score(&p["macro"]));
    }
    let _ = writeln!(s);
}

/// The side-by-side Markdown tables of one or more reports.
pub fn markdown(reports: &[Value]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| model | level | P@1 micro | P@1 macro | P@3 micro | P@3 macro | P@5 micro | P@5 macro | P@10 micro | P@10 macro | kNN k | kNN acc | kNN macro-F1 |"
    );
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(11));
    for r in reports {
        for lvl in LEVELS {
            let l = &r["levels"][lvl];
            let k = &r["knn"][lvl];
            let _ = write!(s, "| {} | {lvl} |", r["model"].as_str().unwrap_or("?"));
            for n in NS {
                let p = &l[format!("P@{n}")];
                let _ = write!(s, " {} | {} |", score(&p["micro"]), score(&p["macro"]));
            }
            let _ = writeln!(
                s,
                " {} | {:.3} | {:.3} |",
                k["k"],
                k["accuracy"].as_f64().unwrap_or(0.0),
                k["macro_f1"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if reports.iter().any(|r| r["grouped"].is_object()) {
        let _ = writeln!(
            s,
            "\nDistinct groups (each scored by its best image), micro / macro:\n"
        );
        let _ = writeln!(
            s,
            "| model | by | index groups | level | P@1 | P@3 | P@5 | P@10 |"
        );
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|---:|---:|");
        for r in reports {
            let g = &r["grouped"];
            if !g.is_object() {
                continue;
            }
            for lvl in LEVELS {
                let l = &g["levels"][lvl];
                let _ = write!(
                    s,
                    "| {} | {} | {} | {lvl} |",
                    r["model"].as_str().unwrap_or("?"),
                    g["by"].as_str().unwrap_or("?"),
                    g["index_groups"]
                );
                pn_cells(&mut s, l);
            }
        }
    }
    let _ = writeln!(
        s,
        "\nPer modality, full label (`modality/anatomy/pathology`), micro / macro:\n"
    );
    let _ = writeln!(s, "| model | modality | queries | P@1 | P@3 | P@5 | P@10 |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for r in reports {
        if let Some(pm) = r["per_modality"].as_object() {
            for (m, v) in pm {
                let l = &v[LEVELS[2]];
                // Scored queries; those whose class the index lacks are skipped, and said.
                let skipped = l["skipped"].as_u64().unwrap_or(0);
                let scored = l["queries"].as_u64().unwrap_or(0).saturating_sub(skipped);
                let queries = match skipped {
                    0 => scored.to_string(),
                    k => format!("{scored} ({k} skipped)"),
                };
                let _ = write!(
                    s,
                    "| {} | {m} | {queries} |",
                    r["model"].as_str().unwrap_or("?"),
                );
                pn_cells(&mut s, l);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, csv: &str) -> Result<()> {
        let dir = std::env::temp_dir().join(format!("simcase-eval-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, csv).unwrap();
        check_manifest(&p)
    }

    /// A modality whose queries were all skipped (their class is not in the index) shows no
    /// score and says so; it showed 0.000 beside its query count.
    #[test]
    fn a_modality_whose_queries_were_all_skipped_shows_no_score() {
        let scored = crate::precision_report(
            &[("XR/chest/a".to_string(), vec!["XR/chest/a".to_string()])],
            &[("XR/chest/a".to_string(), 1)].into_iter().collect(),
        );
        let skipped = crate::precision_report(
            &[("CT/head/b".to_string(), vec!["XR/chest/a".to_string()])],
            &[("XR/chest/a".to_string(), 1)].into_iter().collect(),
        );
        let level = |r: &crate::LevelReport| json!({ LEVELS[2]: r.to_json() });
        let report = json!({
            "model": "m",
            "levels": level(&skipped),
            "per_modality": { "CT": level(&skipped), "XR": level(&scored) },
        });
        let md = markdown(&[report]);
        assert!(
            md.contains("| m | CT | 0 (1 skipped) | n/a / n/a | n/a / n/a |"),
            "{md}"
        );
        assert!(md.contains("| m | XR | 1 | 1.000 / 1.000 |"), "{md}");
        assert!(
            md.contains(&format!("| m | {} | n/a | n/a | n/a | n/a |", LEVELS[2])),
            "{md}"
        );
    }

    #[test]
    fn a_manifest_without_train_or_test_rows_is_refused_with_what_is_missing() {
        let e = check("nosplit.csv", "path,label\na.png,US/breast/benign\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nosplit.csv: no `split` column"), "{e}");
        assert!(e.contains("columns found: path, label"), "{e}");
        let e = check(
            "notest.csv",
            "path,label,split\na.png,US/b/c,train\nb.png,US/b/c,val\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("notest.csv: no labelled rows with split `test`"),
            "{e}"
        );
        assert!(e.contains("train 1, val 1"), "{e}");
        let e = check("empty.csv", "path;Split\n").unwrap_err().to_string();
        assert!(e.contains("empty.csv: no row has a label"), "{e}");
        let e = check(
            "unlabelled.csv",
            "path,label,split\na.png,,train\nb.png,x,\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("split `train` or `test` (labelled rows by split: none)"),
            "{e}"
        );
        // Case and spacing of the header do not matter; a label-only manifest is enough.
        check(
            "ok.csv",
            "Path ; Label ; SPLIT\na.png;US/breast/benign;train\nb.png;US/breast/normal;test\n",
        )
        .unwrap(); // Split names in any case are one split, for the check and for scoring alike.
        check(
            "case.csv",
            "path,label,split\na.png,US/b/c,Train\nb.png,US/b/c,TEST\n",
        )
        .unwrap();
        assert_eq!(split_name(" Train "), "train");
    }
}
