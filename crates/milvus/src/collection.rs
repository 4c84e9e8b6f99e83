//! A simcase collection on a Milvus server: created with its schema, index and settings
//! (recorded as JSON in its description), loaded, then written in durable batches and read by
//! search, id lookup and paged scans.

use crate::client::Client;
use crate::expr;
use crate::proto::common::{
    ConsistencyLevel, DslType, KeyValuePair, PlaceholderGroup, PlaceholderType, PlaceholderValue,
};
use crate::proto::milvus as pm;
use crate::proto::schema::{i_ds, FieldData};
use crate::rows::{self, Columns};
use crate::{item_id, CollectionInfo, IndexSpec, MilvusUrl, Remote, SCHEMA_VERSION};
use anyhow::{anyhow, bail, Context, Result};
use prost::Message;
use simcase_index::{Item, ItemMeta};
use std::time::{Duration, Instant};

/// Most rows one query returns (Milvus's `maxQueryResultWindow`), and most results per query.
pub(crate) const MAX_WINDOW: usize = 16_384;
/// Ids per `id in [...]` lookup.
const IDS_PER_QUERY: usize = 1024;
/// Rows a scan aims to fetch per query.
const SCAN_PAGE: u64 = 4096;
/// How long a load, an index build or a flush may take before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// One query's (id, score) hits, best first, and their output fields.
type QueryHits = (Vec<(u64, f32)>, Vec<FieldData>);

/// How a search sees writes acknowledged just before it (Milvus's consistency levels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Every acknowledged write is seen; a search first waits for the server's next time tick
    /// (up to ~200 ms with default settings, more on a loaded server).
    #[default]
    Strong,
    /// Writes older than a few seconds (the server's `gracefulTime`, 5 s by default) are seen;
    /// no wait, so searches take milliseconds. What a busy `serve` wants.
    Bounded,
    /// Whatever the query nodes hold now; no guarantee at all.
    Eventually,
}

impl std::str::FromStr for Consistency {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "strong" => Ok(Self::Strong),
            "bounded" => Ok(Self::Bounded),
            "eventually" => Ok(Self::Eventually),
            _ => bail!("consistency must be strong, bounded or eventually, not {s:?}"),
        }
    }
}

/// A Milvus collection of simcase items, loaded and ready to search.
pub struct Collection {
    url: MilvusUrl,
    info: CollectionInfo,
    settings: simcase_index::Settings,
    client: Client,
    consistency: Consistency,
    /// Rows when last counted (see [`Self::known_len`]).
    rows: std::sync::atomic::AtomicU64,
}

fn kv(k: &str, v: impl ToString) -> KeyValuePair {
    KeyValuePair {
        key: k.into(),
        value: v.to_string(),
    }
}

impl IndexSpec {
    /// Milvus's name of the index type.
    pub fn milvus_type(&self) -> &'static str {
        match self {
            Self::Flat => "FLAT",
            Self::Hnsw { .. } => "HNSW",
            Self::IvfFlat { .. } => "IVF_FLAT",
            Self::IvfSq8 { .. } => "IVF_SQ8",
        }
    }

    fn params(&self) -> serde_json::Value {
        match *self {
            Self::Flat => serde_json::json!({}),
            Self::Hnsw { m, ef_construction } => {
                serde_json::json!({"M": m, "efConstruction": ef_construction})
            }
            Self::IvfFlat { nlist } | Self::IvfSq8 { nlist } => serde_json::json!({"nlist": nlist}),
        }
    }

    fn from_json(v: &serde_json::Value) -> Option<Self> {
        let p = &v["params"];
        let n = |k: &str| p[k].as_u64().map(|x| x as usize);
        Some(match v["type"].as_str()? {
            "FLAT" => Self::Flat,
            "HNSW" => Self::Hnsw {
                m: n("M")?,
                ef_construction: n("efConstruction")?,
            },
            "IVF_FLAT" => Self::IvfFlat { nlist: n("nlist")? },
            "IVF_SQ8" => Self::IvfSq8 { nlist: n("nlist")? },
            _ => return None,
        })
    }

    /// Search parameters for `k` results with candidate list `ef`.
    fn search_params(&self, k: usize, ef: Option<usize>) -> serde_json::Value {
        match *self {
            Self::Flat => serde_json::json!({}),
            Self::Hnsw { .. } => serde_json::json!({"ef": ef.unwrap_or(64).max(k).min(32_768)}),
            Self::IvfFlat { nlist } | Self::IvfSq8 { nlist } => {
                serde_json::json!({"nprobe": 32.min(nlist.max(1))})
            }
        }
    }

    /// Check the parameters against Milvus's ranges.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Flat => {}
            Self::Hnsw { m, ef_construction } => {
                anyhow::ensure!(
                    (4..=64).contains(&m),
                    "HNSW M must be 4..=64 in Milvus, not {m}"
                );
                anyhow::ensure!(
                    (8..=512).contains(&ef_construction),
                    "HNSW efConstruction must be 8..=512 in Milvus, not {ef_construction}"
                );
            }
            Self::IvfFlat { nlist } | Self::IvfSq8 { nlist } => {
                anyhow::ensure!(
                    (1..=65_536).contains(&nlist),
                    "IVF nlist must be 1..=65536, not {nlist}"
                );
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Flat => write!(f, "FLAT"),
            Self::Hnsw { m, ef_construction } => {
                write!(f, "HNSW (M {m}, efConstruction {ef_construction})")
            }
            Self::IvfFlat { nlist } => write!(f, "IVF_FLAT (nlist {nlist})"),
            Self::IvfSq8 { nlist } => write!(f, "IVF_SQ8 (nlist {nlist})"),
        }
    }
}

/// The description JSON of a collection with `info`.
fn description(info: &CollectionInfo) -> String {
    serde_json::json!({
        "simcase": SCHEMA_VERSION,
        "model": info.model,
        "dim": info.dim,
        "salt": info.salt,
        "index": {"type": info.index.milvus_type(), "params": info.index.params()},
    })
    .to_string()
}

fn parse_description(url: &MilvusUrl, d: &str) -> Result<CollectionInfo> {
    let not_ours =
        || anyhow!("{url} was not made by simcase (its description holds no simcase settings)");
    let v: serde_json::Value = serde_json::from_str(d).map_err(|_| not_ours())?;
    let version = v["simcase"].as_u64().ok_or_else(not_ours)?;
    if version != u64::from(SCHEMA_VERSION) {
        bail!("{url} has simcase schema {version}; this simcase reads schema {SCHEMA_VERSION}");
    }
    let info = CollectionInfo {
        model: v["model"].as_str().ok_or_else(not_ours)?.to_string(),
        dim: v["dim"].as_u64().ok_or_else(not_ours)? as usize,
        salt: v["salt"].as_str().ok_or_else(not_ours)?.to_string(),
        index: IndexSpec::from_json(&v["index"]).ok_or_else(not_ours)?,
    };
    Ok(info)
}

impl Collection {
    /// An existing collection, loaded; a clear error when it is absent or not simcase's.
    pub fn open(url: &MilvusUrl) -> Result<Self> {
        let client = Client::connect(url)?;
        if !has_collection(&client, url)? {
            bail!("{url}: no such collection (create it with `simcase index ... --index {url}`)");
        }
        Self::opened(url, client)
    }

    /// The collection at `url`, created (with `index`) when absent; an existing one of another
    /// model or dimension is refused. An existing collection keeps its own index.
    pub fn create_or_open(
        url: &MilvusUrl,
        model: &str,
        dim: usize,
        index: &IndexSpec,
    ) -> Result<Self> {
        index.validate()?;
        anyhow::ensure!(
            dim > 0 && dim <= 32_768,
            "vector dimension {dim} is outside Milvus's 1..=32768"
        );
        let client = Client::connect(url)?;
        if !has_collection(&client, url)? {
            let settings = simcase_index::Settings::generate(model, dim)?;
            let info = CollectionInfo {
                model: model.into(),
                dim,
                index: *index,
                salt: settings.salt().to_string(),
            };
            create(&client, url, &info)?;
        }
        let c = Self::opened(url, client)?;
        if c.info.model != model || c.info.dim != dim {
            bail!(
                "{url} holds vectors of model {} ({} dims), not {model} ({dim} dims): use another collection",
                c.info.model,
                c.info.dim
            );
        }
        c.settings.check_env_salt(url)?;
        if c.info.index != *index {
            tracing::info!("{url} keeps its index {} (asked: {index})", c.info.index);
        }
        Ok(c)
    }

    fn opened(url: &MilvusUrl, client: Client) -> Result<Self> {
        let d = describe(&client, url)?;
        let schema = d.schema.unwrap_or_default();
        let info = parse_description(url, &schema.description)?;
        if !rows::schema_matches(&schema, info.dim) {
            bail!("{url}: its fields are not the simcase schema {SCHEMA_VERSION} (made by another tool?)");
        }
        let settings = simcase_index::Settings::with_salt(&info.model, info.dim, &info.salt);
        let c = Self {
            url: url.clone(),
            info,
            settings,
            client,
            consistency: Consistency::Strong,
            rows: Default::default(),
        };
        c.load()?;
        c.refresh_len()?;
        Ok(c)
    }

    /// Drop the collection at `url` if it exists; whether it did.
    pub fn drop_collection(url: &MilvusUrl) -> Result<bool> {
        let client = Client::connect(url)?;
        if !has_collection(&client, url)? {
            return Ok(false);
        }
        let r = client.call("drop collection", {
            let req = pm::DropCollectionRequest {
                collection_name: url.collection.clone(),
                ..Default::default()
            };
            move |mut s| async move { s.drop_collection(req).await }
        })?;
        client.check("drop collection", Some(&r))?;
        Ok(true)
    }

    /// Where it lives (no credentials shown).
    pub fn url(&self) -> &MilvusUrl {
        &self.url
    }

    /// What it records about itself.
    pub fn info(&self) -> &CollectionInfo {
        &self.info
    }

    /// Model, dimension and patient-key salt, as an index's settings.
    pub fn settings(&self) -> &simcase_index::Settings {
        &self.settings
    }

    /// How searches and reads see recent writes (default [`Consistency::Strong`]).
    pub fn set_consistency(&mut self, c: Consistency) {
        self.consistency = c;
    }

    fn consistency(&self) -> i32 {
        match self.consistency {
            Consistency::Strong => ConsistencyLevel::Strong as i32,
            Consistency::Bounded => ConsistencyLevel::Bounded as i32,
            Consistency::Eventually => ConsistencyLevel::Eventually as i32,
        }
    }

    fn load(&self) -> Result<()> {
        let name = self.url.collection.clone();
        let state = |c: &Client| -> Result<i32> {
            let r = c.call("load state", {
                let req = pm::GetLoadStateRequest {
                    collection_name: name.clone(),
                    ..Default::default()
                };
                move |mut s| async move { s.get_load_state(req).await }
            })?;
            c.check("load state", r.status.as_ref())?;
            Ok(r.state)
        };
        const LOADED: i32 = crate::proto::common::LoadState::Loaded as i32;
        if state(&self.client)? == LOADED {
            return Ok(());
        }
        let r = self.client.call("load", {
            let req = pm::LoadCollectionRequest {
                collection_name: name.clone(),
                replica_number: 1,
                ..Default::default()
            };
            move |mut s| async move { s.load_collection(req).await }
        })?;
        self.client.check("load", Some(&r))?;
        let t = Instant::now();
        while state(&self.client)? != LOADED {
            if t.elapsed() > WAIT_LIMIT {
                bail!("{}: not loaded after {}s", self.url, WAIT_LIMIT.as_secs());
            }
            self.client.sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Rows passing `expr` (all rows for `None`).
    pub fn count_where(&self, expr: Option<&str>) -> Result<u64> {
        let r = self.query_raw(
            expr.unwrap_or(""),
            &["count(*)"],
            None,
            ConsistencyLevel::Strong as i32,
        )?;
        let c = Columns(&r);
        let n = c.longs("count(*)")?;
        n.first()
            .map(|&n| n as u64)
            .context("Milvus count(*) returned no row")
    }

    /// Rows held (asked of the server).
    pub fn count(&self) -> Result<u64> {
        let n = self.count_where(None)?;
        self.rows.store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    fn refresh_len(&self) -> Result<()> {
        self.count().map(|_| ())
    }

    /// Rows held when last counted: at open or by [`Self::count`].
    pub fn known_len(&self) -> u64 {
        self.rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn query_raw(
        &self,
        expr: &str,
        fields: &[&str],
        limit: Option<usize>,
        consistency: i32,
    ) -> Result<Vec<FieldData>> {
        let mut query_params = Vec::new();
        if let Some(l) = limit {
            query_params.push(kv("limit", l));
        }
        let req = pm::QueryRequest {
            collection_name: self.url.collection.clone(),
            expr: expr.to_string(),
            output_fields: fields.iter().map(|f| f.to_string()).collect(),
            query_params,
            consistency_level: consistency,
            ..Default::default()
        };
        let r = self
            .client
            .call("query", move |mut s| async move { s.query(req).await })?;
        self.client.check("query", r.status.as_ref())?;
        Ok(r.fields_data)
    }

    /// Store `batch` (replacing rows of the same content key) and return once Milvus has
    /// persisted it: upsert, flush, and wait for the flush.
    pub fn upsert(&self, batch: &[(ItemMeta, Vec<f32>)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.upsert_unflushed(batch)?;
        self.flush()
    }

    /// Upsert without waiting for persistence: only for measuring what a server restart keeps
    /// of unflushed writes (the durability test); ingest always goes through [`Self::upsert`].
    #[doc(hidden)]
    pub fn upsert_unflushed(&self, batch: &[(ItemMeta, Vec<f32>)]) -> Result<()> {
        let fields = rows::to_fields(batch, self.info.dim)?;
        let req = pm::UpsertRequest {
            collection_name: self.url.collection.clone(),
            fields_data: fields,
            num_rows: batch.len() as u32,
            ..Default::default()
        };
        let r = self
            .client
            .call("upsert", move |mut s| async move { s.upsert(req).await })?;
        self.client.check("upsert", r.status.as_ref())?;
        if !r.err_index.is_empty() {
            bail!(
                "Milvus at {}: upsert refused {} of {} rows",
                self.client.server,
                r.err_index.len(),
                batch.len()
            );
        }
        Ok(())
    }

    /// Persist everything written so far (seal the growing segments and wait until they are
    /// stored).
    pub fn flush(&self) -> Result<()> {
        let name = self.url.collection.clone();
        let r = self.client.call("flush", {
            let req = pm::FlushRequest {
                collection_names: vec![name.clone()],
                ..Default::default()
            };
            move |mut s| async move { s.flush(req).await }
        })?;
        self.client.check("flush", r.status.as_ref())?;
        let segments = r
            .coll_seg_i_ds
            .get(&name)
            .map(|a| a.data.clone())
            .unwrap_or_default();
        let flush_ts = r.coll_flush_ts.get(&name).copied().unwrap_or(0);
        let t = Instant::now();
        loop {
            let req = pm::GetFlushStateRequest {
                segment_i_ds: segments.clone(),
                flush_ts,
                collection_name: name.clone(),
                ..Default::default()
            };
            let s = self.client.call("flush state", move |mut s| async move {
                s.get_flush_state(req).await
            })?;
            self.client.check("flush state", s.status.as_ref())?;
            if s.flushed {
                return Ok(());
            }
            if t.elapsed() > WAIT_LIMIT {
                bail!(
                    "{}: flush not done after {}s",
                    self.url,
                    WAIT_LIMIT.as_secs()
                );
            }
            self.client.sleep(Duration::from_millis(50));
        }
    }

    /// Top-`k` by inner product (vectors are L2-normalised, so cosine), best first; `expr` a
    /// Milvus boolean expression (from [`expr::Where::to_expr`]), `ef` the HNSW candidate list
    /// (ignored by other index types).
    pub fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        expr: Option<&str>,
        ef: Option<usize>,
    ) -> Result<Vec<Vec<Remote>>> {
        let r = self.search_raw(queries, k, expr, ef, &[rows::PK, rows::META])?;
        r.into_iter()
            .map(|(hits, fields)| {
                let items = Columns(&fields).items()?;
                Ok(hits
                    .into_iter()
                    .zip(items)
                    .map(|((id, score), item)| Remote { id, score, item })
                    .collect())
            })
            .collect()
    }

    /// Per query: (id, score) best first, and the output fields of those hits.
    fn search_raw(
        &self,
        queries: &[&[f32]],
        k: usize,
        expr: Option<&str>,
        ef: Option<usize>,
        output: &[&str],
    ) -> Result<Vec<QueryHits>> {
        if queries.is_empty() || k == 0 {
            return Ok(vec![Default::default(); queries.len()]);
        }
        anyhow::ensure!(
            k <= MAX_WINDOW,
            "Milvus returns at most {MAX_WINDOW} results per query, not {k}"
        );
        let dim = self.info.dim;
        let mut values = Vec::with_capacity(queries.len());
        for q in queries {
            anyhow::ensure!(
                q.len() == dim,
                "query of {} values; {} holds {dim}",
                q.len(),
                self.url
            );
            values.push(q.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        }
        let group = PlaceholderGroup {
            placeholders: vec![PlaceholderValue {
                tag: "$0".into(),
                r#type: PlaceholderType::FloatVector as i32,
                values,
                ..Default::default()
            }],
        };
        let req = pm::SearchRequest {
            collection_name: self.url.collection.clone(),
            dsl: expr.unwrap_or("").to_string(),
            dsl_type: DslType::BoolExprV1 as i32,
            search_input: Some(pm::search_request::SearchInput::PlaceholderGroup(
                group.encode_to_vec(),
            )),
            output_fields: output.iter().map(|s| s.to_string()).collect(),
            search_params: vec![
                kv("anns_field", rows::VECTOR),
                kv("topk", k),
                kv("metric_type", "IP"),
                kv("params", self.info.index.search_params(k, ef)),
                kv("round_decimal", -1),
                kv("offset", 0),
            ],
            nq: queries.len() as i64,
            consistency_level: self.consistency(),
            ..Default::default()
        };
        let r = self
            .client
            .call("search", move |mut s| async move { s.search(req).await })?;
        self.client.check("search", r.status.as_ref())?;
        let res = r.results.unwrap_or_default();
        let pks: Vec<String> = match res.ids.and_then(|i| i.id_field) {
            Some(i_ds::IdField::StrId(s)) => s.data,
            None => Vec::new(),
            Some(_) => bail!("Milvus search returned non-text primary keys"),
        };
        let mut topks: Vec<usize> = res.topks.iter().map(|&t| t.max(0) as usize).collect();
        if topks.is_empty() && pks.is_empty() {
            topks = vec![0; queries.len()];
        }
        anyhow::ensure!(
            topks.len() == queries.len()
                && topks.iter().sum::<usize>() == pks.len()
                && res.scores.len() == pks.len(),
            "Milvus search reply does not add up ({} queries, {} counts, {} hits)",
            queries.len(),
            topks.len(),
            pks.len()
        );
        let mut out = Vec::with_capacity(queries.len());
        let mut start = 0;
        for n in topks {
            let hits: Vec<(u64, f32)> = (start..start + n)
                .map(|i| (item_id(&pks[i]), res.scores[i]))
                .collect();
            let fields = slice_fields(&res.fields_data, start, n);
            out.push((hits, fields));
            start += n;
        }
        Ok(out)
    }

    /// Items by id, with their vectors (missing ids are absent from the result).
    pub fn get(&self, ids: &[u64]) -> Result<Vec<(Item, Vec<f32>)>> {
        let dim = self.info.dim;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
            let r = self.query_raw(
                &format!("id in [{}]", list.join(", ")),
                &[rows::PK, rows::META, rows::VECTOR],
                None,
                self.consistency(),
            )?;
            let c = Columns(&r);
            if c.len() == 0 {
                continue;
            }
            let items = c.items()?;
            let v = c.vectors(rows::VECTOR, dim)?;
            out.extend(
                items
                    .into_iter()
                    .zip(v.chunks(dim))
                    .map(|(i, v)| (i, v.to_vec())),
            );
        }
        Ok(out)
    }

    /// Every row passing `expr`, in pages, with vectors when asked.
    pub fn scan(
        &self,
        expr: Option<&str>,
        vectors: bool,
        f: &mut dyn FnMut(crate::Page) -> Result<()>,
    ) -> Result<()> {
        let dim = self.info.dim;
        let mut fields = vec![rows::PK, rows::META];
        if vectors {
            fields.push(rows::VECTOR);
        }
        self.scan_raw(expr, &fields, &mut |cols| {
            let c = Columns(cols);
            let items = c.items()?;
            let page: Vec<(Item, Option<Vec<f32>>)> = if vectors {
                let v = c.vectors(rows::VECTOR, dim)?;
                items
                    .into_iter()
                    .zip(v.chunks(dim))
                    .map(|(i, v)| (i, Some(v.to_vec())))
                    .collect()
            } else {
                items.into_iter().map(|i| (i, None)).collect()
            };
            f(page)
        })
    }

    /// Pages of the rows passing `expr`. Milvus 2.3 caps a query at [`MAX_WINDOW`] rows and
    /// does not promise an order to page by, so rows are read by ranges of their (uniformly
    /// spread) item ids, a range halved whenever it returns a full window.
    pub(crate) fn scan_raw(
        &self,
        expr: Option<&str>,
        fields: &[&str],
        f: &mut dyn FnMut(&[FieldData]) -> Result<()>,
    ) -> Result<()> {
        let total = self.count_where(expr)?;
        if total == 0 {
            return Ok(());
        }
        const END: u64 = 1 << 63;
        let ranges = total.div_ceil(SCAN_PAGE).clamp(1, 1 << 20);
        let step = END / ranges;
        let mut todo: Vec<(u64, u64)> = (0..ranges)
            .rev()
            .map(|i| (i * step, if i + 1 == ranges { END } else { (i + 1) * step }))
            .collect();
        while let Some((lo, hi)) = todo.pop() {
            // 2^63 does not fit an Int64 literal: the last range has no upper bound.
            let range = if hi == END {
                format!("id >= {lo}")
            } else {
                format!("id >= {lo} and id < {hi}")
            };
            let e = expr::and(expr, Some(&range)).unwrap_or_default();
            let r = self.query_raw(
                &e,
                fields,
                Some(MAX_WINDOW),
                ConsistencyLevel::Strong as i32,
            )?;
            let n = Columns(&r).len();
            if n >= MAX_WINDOW && hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                todo.push((mid, hi));
                todo.push((lo, mid));
                continue;
            }
            if n > 0 {
                f(&r)?;
            }
        }
        Ok(())
    }

    /// Every content key held.
    pub fn keys(&self) -> Result<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        self.scan_raw(None, &[rows::PK], &mut |cols| {
            out.extend(Columns(cols).strings(rows::PK)?.iter().cloned());
            Ok(())
        })?;
        Ok(out)
    }

    /// The stored items of the file with content hash `hash` (every frame, slice and axis),
    /// with their vectors.
    pub(crate) fn file_items(&self, hash: &str) -> Result<Vec<(ItemMeta, Vec<f32>)>> {
        let e = format!(
            "pk == {} or pk like {} or pk like {}",
            expr::string(hash),
            expr::string(&format!("{}#%", like_escape(hash))),
            expr::string(&format!("{}@%", like_escape(hash)))
        );
        let r = self.query_raw(
            &e,
            &[rows::PK, rows::META, rows::VECTOR],
            Some(MAX_WINDOW),
            ConsistencyLevel::Strong as i32,
        )?;
        let c = Columns(&r);
        if c.len() == 0 {
            return Ok(Vec::new());
        }
        let dim = self.info.dim;
        let items = c.items()?;
        let v = c.vectors(rows::VECTOR, dim)?;
        Ok(items
            .into_iter()
            .zip(v.chunks(dim))
            .map(|(i, v)| (i.meta, v.to_vec()))
            .collect())
    }
}

/// `s` with the characters a `like` pattern gives a meaning to escaped.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Rows `start..start + n` of column-wise fields.
fn slice_fields(fields: &[FieldData], start: usize, n: usize) -> Vec<FieldData> {
    use crate::proto::schema::{
        field_data::Field, scalar_field::Data, vector_field, ScalarField, VectorField,
    };
    fields
        .iter()
        .map(|f| {
            let mut g = f.clone();
            match &mut g.field {
                Some(Field::Scalars(ScalarField { data: Some(d), .. })) => match d {
                    Data::StringData(a) => a.data = a.data.drain(..).skip(start).take(n).collect(),
                    Data::LongData(a) => a.data = a.data.drain(..).skip(start).take(n).collect(),
                    Data::JsonData(a) => a.data = a.data.drain(..).skip(start).take(n).collect(),
                    _ => {}
                },
                Some(Field::Vectors(VectorField {
                    dim,
                    data: Some(vector_field::Data::FloatVector(a)),
                    ..
                })) => {
                    let d = *dim as usize;
                    a.data = a.data.drain(..).skip(start * d).take(n * d).collect();
                }
                _ => {}
            }
            g
        })
        .collect()
}

fn has_collection(client: &Client, url: &MilvusUrl) -> Result<bool> {
    let r = client.call("has collection", {
        let req = pm::HasCollectionRequest {
            collection_name: url.collection.clone(),
            ..Default::default()
        };
        move |mut s| async move { s.has_collection(req).await }
    })?;
    client.check("has collection", r.status.as_ref())?;
    Ok(r.value)
}

fn describe(client: &Client, url: &MilvusUrl) -> Result<pm::DescribeCollectionResponse> {
    let r = client.call("describe collection", {
        let req = pm::DescribeCollectionRequest {
            collection_name: url.collection.clone(),
            ..Default::default()
        };
        move |mut s| async move { s.describe_collection(req).await }
    })?;
    client.check("describe collection", r.status.as_ref())?;
    Ok(r)
}

/// Create the collection and its vector index. Another process creating the same collection
/// at the same time is fine: whichever loses finds it made.
fn create(client: &Client, url: &MilvusUrl, info: &CollectionInfo) -> Result<()> {
    let schema = rows::schema(&url.collection, &description(info), info.dim);
    let r = client.call("create collection", {
        let req = pm::CreateCollectionRequest {
            collection_name: url.collection.clone(),
            schema: schema.encode_to_vec(),
            shards_num: 1,
            consistency_level: ConsistencyLevel::Bounded as i32,
            ..Default::default()
        };
        move |mut s| async move { s.create_collection(req).await }
    })?;
    if let Err(e) = client.check("create collection", Some(&r)) {
        if !has_collection(client, url)? {
            return Err(e);
        }
    }
    let r = client.call("create index", {
        let req = pm::CreateIndexRequest {
            collection_name: url.collection.clone(),
            field_name: rows::VECTOR.into(),
            index_name: rows::VECTOR.into(),
            extra_params: vec![
                kv("index_type", info.index.milvus_type()),
                kv("metric_type", "IP"),
                kv("params", info.index.params()),
            ],
            ..Default::default()
        };
        move |mut s| async move { s.create_index(req).await }
    })?;
    client.check("create index", Some(&r))?;
    Ok(())
}

impl Collection {
    /// Per query, (id, score) of the top `k`, best first, with HNSW candidate list `ef`.
    pub(crate) fn search_hits(
        &self,
        queries: &[&[f32]],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Vec<(u64, f32)>>> {
        Ok(self
            .search_raw(queries, k, None, ef, &[])?
            .into_iter()
            .map(|(h, _)| h)
            .collect())
    }
}

impl Collection {
    /// Per query, the top `k` ids and scores, best first, searched with HNSW candidate list
    /// `ef` (what `simcase bench milvus` times: no metadata fetched).
    pub fn search_ids_ef(
        &self,
        queries: &[&[f32]],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Vec<simcase_index::Hit>>> {
        Ok(self
            .search_hits(queries, k, ef)?
            .into_iter()
            .map(|h| {
                h.into_iter()
                    .map(|(row, score)| simcase_index::Hit { row, score })
                    .collect()
            })
            .collect())
    }

    /// Wait until the vector index covers every stored row (Milvus builds it in the
    /// background per sealed segment; until then those rows are scanned). Returns the rows
    /// indexed.
    pub fn wait_indexed(&self) -> Result<u64> {
        let t = Instant::now();
        loop {
            let req = pm::DescribeIndexRequest {
                collection_name: self.url.collection.clone(),
                field_name: rows::VECTOR.into(),
                ..Default::default()
            };
            let r = self
                .client
                .call("describe index", move |mut s| async move {
                    s.describe_index(req).await
                })?;
            self.client.check("describe index", r.status.as_ref())?;
            let d = r
                .index_descriptions
                .first()
                .ok_or_else(|| anyhow::anyhow!("{}: no index on the vectors", self.url))?;
            if !d.index_state_fail_reason.is_empty() {
                bail!(
                    "{}: index build failed: {}",
                    self.url,
                    d.index_state_fail_reason
                );
            }
            // Every row served from an index. Compaction may go on merging the small flushed
            // segments and indexing the merged ones (`pending_index_rows`) for a long while;
            // searches meanwhile use the indexed segments they replace.
            if d.indexed_rows >= d.total_rows {
                return Ok(d.indexed_rows.max(0) as u64);
            }
            if t.elapsed() > WAIT_LIMIT {
                bail!(
                    "{}: index covers {} of {} rows after {}s",
                    self.url,
                    d.indexed_rows,
                    d.total_rows,
                    WAIT_LIMIT.as_secs()
                );
            }
            self.client.sleep(Duration::from_millis(500));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_round_trip_and_foreign_ones_are_refused() {
        let url = MilvusUrl::parse_only("milvus://h:1/c").unwrap();
        for index in [
            IndexSpec::Flat,
            IndexSpec::Hnsw {
                m: 8,
                ef_construction: 64,
            },
            IndexSpec::IvfFlat { nlist: 128 },
            IndexSpec::IvfSq8 { nlist: 16 },
        ] {
            let info = CollectionInfo {
                model: "m".into(),
                dim: 384,
                index,
                salt: "s".into(),
            };
            assert_eq!(parse_description(&url, &description(&info)).unwrap(), info);
        }
        let e = parse_description(&url, "my vectors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not made by simcase"), "{e}");
        assert!(IndexSpec::Hnsw {
            m: 2,
            ef_construction: 64
        }
        .validate()
        .is_err());
        assert_eq!(like_escape("a_b%c"), "a\\_b\\%c");
    }
}
