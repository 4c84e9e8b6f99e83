//! `simcase serve`: an index as an HTTP API (`/api/*`, documented at `/api/openapi.json`) and
//! a web page served from the binary itself.
//!
//! The model is loaded once and concurrent queries are batched ([`embed`]). The index is
//! read through a shared memory-mapped [`Snapshot`], swapped for a fresh one when `simcase
//! index` commits more rows, so the server keeps answering during ingest and never sees a
//! half-written item. Every API call needs the token (generated at start-up unless given;
//! `--no-token` opts out on loopback only); the Host, Origin, header, timeout and panic
//! defences are in [`harden`].
//!
//! The index may instead be a Milvus collection (`--index milvus://HOST:PORT/COLLECTION`):
//! [`Backend`] is either the local snapshot or the remote collection, and each handler asks
//! it the same questions (an item, "more like this", a ranked page), so local behaviour is
//! unchanged. The Milvus client blocks, so every call to it runs in `spawn_blocking`.

pub mod api;
pub mod client;
pub mod embed;
pub mod harden;
pub mod load;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use simcase_imaging::{decode_bytes_with, DecodeBudget, DecodeError, DecodeOptions, WindowPreset};
use simcase_index::{Column, Snapshot};
use simcase_models::TextEncoder;
use simcase_query::remote::RemoteIndex;
use simcase_query::{Params, Query, QueryError, View};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const PAGE: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// How long an upload or thumbnail waits for decode memory before its 503.
pub const DECODE_WAIT: Duration = Duration::from_secs(5);

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The index folder to serve, or a Milvus collection (`milvus://HOST:PORT/COLLECTION`).
    pub index: PathBuf,
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Required on every API call (`Authorization: Bearer`). `None` serves without one,
    /// which only loopback allows. [`Config::new`] generates one.
    pub token: Option<String>,
    /// Print (stdout) and log the page URL with the token: right for a generated token, not
    /// for one the operator supplied.
    pub show_token: bool,
    /// Host names (`name` for any port, or `name:port`) accepted in the `Host` header
    /// besides the bound address (and `localhost` on loopback).
    pub allow_hosts: Vec<String>,
    /// Most connections served at once; more wait until one closes.
    pub max_connections: usize,
    /// Time a client has to send a request head; an idle keep-alive connection is closed
    /// after it too, and so is one whose client reads none of a response for as long.
    pub header_timeout: Duration,
    /// Time a client has to send a request body (408 after).
    pub body_timeout: Duration,
    /// Time a request may take once its body is read (503 after).
    pub request_timeout: Duration,
    /// Largest upload accepted (413 above).
    pub max_upload_bytes: usize,
    /// Pixel limit for uploads, checked from the header before decoding.
    pub max_pixels: u64,
    /// Include file paths in responses (they can carry names from the archive's layout).
    pub show_paths: bool,
    /// Every hit's link to the hospital's viewer (`--viewer-url`), in the API and on the page.
    pub viewer_url: Option<simcase_query::ViewerUrl>,
    /// The archive `POST /api/report` files searches in, as DICOM SRs (`--report-to-pacs
    /// dicomweb+http://…`); `None`: reports are off. Only the operator names it: a client
    /// never chooses where the server sends patient data.
    pub report_to_pacs: Option<String>,
    /// Most uploads embedded in one batch.
    pub max_batch: usize,
    /// Largest `k` a search may ask for.
    pub max_k: usize,
    /// Memory shared by every upload and thumbnail decode (`--decode-budget-mb`; see
    /// `simcase_imaging::budget`): a request that finds no room before its deadline is a 503
    /// with Retry-After, one that can never fit a 413.
    pub decode_budget: Arc<DecodeBudget>,
    /// Uploads read and decoded at once; more wait up to [`DECODE_WAIT`], then get 503 with
    /// Retry-After. Bounds the memory held by upload bodies to `max_uploads ×
    /// max_upload_bytes`, whatever the number of connections.
    pub max_uploads: usize,
    /// HNSW candidates per search; 0: the index's stored default.
    pub ef_search: usize,
    /// How searches of a `milvus://` index see the latest writes.
    pub consistency: simcase_milvus::Consistency,
}

impl Config {
    /// Defaults for serving `index`: loopback:8080, a freshly generated token, 32 MB uploads,
    /// 64 M pixels, 256 connections, 15 s to send a request head, 60 s for a body, 60 s per
    /// request. Should the OS random source fail, the token is left empty and [`serve`]
    /// refuses to start (it never falls back to a guessable token).
    pub fn new(index: PathBuf) -> Self {
        Self {
            index,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: Some(harden::generate_token().unwrap_or_default()),
            show_token: true,
            allow_hosts: Vec::new(),
            max_connections: 256,
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_upload_bytes: 32 << 20,
            max_pixels: 64_000_000,
            show_paths: false,
            viewer_url: None,
            report_to_pacs: None,
            max_batch: 16,
            max_k: simcase_query::params::MAX_K,
            decode_budget: DecodeBudget::from_mb(1024, DECODE_WAIT),
            max_uploads: 8,
            ef_search: 0,
            consistency: Default::default(),
        }
    }
}

struct AppState {
    cfg: Config,
    backend: Backend,
    embedder: embed::Embedder,
    text: Mutex<Option<Arc<dyn TextEncoder>>>,
    /// The index's model (or fused models), parsed once at start-up.
    model: simcase_models::ModelSet,
    /// The model whose text tower serves `text=` (a single CLIP-family model).
    text_model: Option<simcase_models::ModelId>,
    thumbs: Mutex<ThumbCache>,
    /// Views asked for by `view=`, their rows mapped for the snapshot they were opened on,
    /// oldest first.
    views: Mutex<Vec<Arc<View>>>,
    /// The archive reports are filed in ([`Config::report_to_pacs`]).
    pacs: Option<Arc<simcase_pacs::DicomWeb>>,
}

/// Views kept mapped at once (each holds 4 B × rows × its width); the oldest goes first.
const MAX_VIEWS: usize = 4;

type Shared = Arc<AppState>;

/// What the server searches: a local index (its current snapshot, swapped by [`refresh`]) or
/// a Milvus collection.
enum Backend {
    /// A local index folder.
    Local(RwLock<Arc<Snapshot>>),
    /// A Milvus collection, searched remotely.
    Remote(OffRuntime<Arc<RemoteIndex>>),
}

/// A value dropped on a thread of its own: the Milvus client owns a tokio runtime, which must
/// not be dropped inside the server's async context.
struct OffRuntime<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Drop for OffRuntime<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = std::thread::spawn(move || drop(t)).join();
        }
    }
}

/// The index one request works on: the current local snapshot, or the collection.
#[derive(Clone)]
enum Index {
    Local(Arc<Snapshot>),
    Remote(Arc<RemoteIndex>),
}

/// `f(remote)` on the blocking pool (the Milvus client blocks), its failure an [`ApiError`].
async fn blocking<T: Send + 'static>(
    r: &Arc<RemoteIndex>,
    f: impl FnOnce(&RemoteIndex) -> std::result::Result<T, QueryError> + Send + 'static,
) -> ApiResult<T> {
    let r = r.clone();
    Ok(tokio::task::spawn_blocking(move || f(&r))
        .await
        .map_err(|e| ApiError::internal(e.into()))??)
}

impl Index {
    /// The index's model name.
    fn model(&self) -> String {
        match self {
            Self::Local(s) => s.settings().model.clone(),
            Self::Remote(r) => r.model().to_string(),
        }
    }

    /// Items in the index.
    async fn len(&self) -> ApiResult<usize> {
        match self {
            Self::Local(s) => Ok(s.len()),
            Self::Remote(r) => blocking(r, |r| r.len()).await,
        }
    }

    /// "More like this" item `id` (404 when the index does not hold it).
    async fn query_item(&self, id: u64) -> ApiResult<Query> {
        match self {
            Self::Local(s) => Ok(Query::item(s, id)?),
            Self::Remote(r) => blocking(r, move |r| r.query_item(id)).await,
        }
    }

    /// 404 unless a local index holds item `id` (its ids are its rows, so this is a bound
    /// check); a collection's ids are hashes, checked when the item is read.
    fn check(&self, id: u64) -> std::result::Result<(), QueryError> {
        match self {
            Self::Local(s) if id >= s.len() as u64 => {
                Err(QueryError::NotFound { id, items: s.len() })
            }
            _ => Ok(()),
        }
    }

    /// Item `id`'s metadata (404 when the index does not hold it).
    async fn item(&self, id: u64) -> ApiResult<simcase_index::Item> {
        match self {
            Self::Local(s) => {
                self.check(id)?;
                Ok(s.item(id)
                    .map_err(QueryError::Index)?
                    .ok_or(QueryError::NotFound { id, items: s.len() })?)
            }
            Self::Remote(r) => {
                blocking(r, move |r| match r.item(id)? {
                    Some(it) => Ok(it),
                    None => Err(QueryError::NotFound {
                        id,
                        items: r.len()?,
                    }),
                })
                .await
            }
        }
    }

    /// A ranked page for `q`, in `view`'s space when one is given (local indexes only).
    async fn search(
        &self,
        q: Query,
        req: simcase_query::Request,
        view: Option<Arc<View>>,
    ) -> ApiResult<simcase_query::Response> {
        match self {
            Self::Local(s) => {
                let s = s.clone();
                Ok(tokio::task::spawn_blocking(move || {
                    simcase_query::search_with(&s, view.as_deref(), &q, &req)
                })
                .await
                .map_err(|e| ApiError::internal(e.into()))??)
            }
            Self::Remote(_) if view.is_some() => Err(QueryError::bad(
                "view",
                "views are stored with a local index folder, not a Milvus collection",
            )
            .into()),
            Self::Remote(r) => blocking(r, move |r| r.search(&q, &req)).await,
        }
    }
}

/// A small bounded cache of rendered thumbnails (PNG bytes), oldest dropped first: at most
/// [`ThumbCache::CAP`] entries and [`ThumbCache::MAX_BYTES`] of PNG, whatever sizes and
/// windows clients ask for.
#[derive(Default)]
struct ThumbCache {
    map: HashMap<String, Arc<Vec<u8>>>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
}

impl ThumbCache {
    const CAP: usize = 1024;
    const MAX_BYTES: usize = 64 << 20;
    fn get(&self, k: &str) -> Option<Arc<Vec<u8>>> {
        self.map.get(k).cloned()
    }
    fn put(&mut self, k: String, v: Arc<Vec<u8>>) {
        if v.len() > Self::MAX_BYTES || self.map.contains_key(&k) {
            return;
        }
        self.bytes += v.len();
        self.map.insert(k.clone(), v);
        self.order.push_back(k);
        while self.order.len() > Self::CAP || self.bytes > Self::MAX_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.map.remove(&old) {
                self.bytes -= gone.len();
            }
        }
    }
}

/// An API error: a status and a one-line reason, sent as `{"error": reason}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, msg.into())
    }
    fn internal(e: anyhow::Error) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

/// The one place where a query's failure becomes a status: by its kind, never its message.
impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            // The caller's fault: a bad parameter, an item the index lacks, an image that
            // does not decode, text search on an image-only model.
            QueryError::Decode { reason, .. } => decode_status(reason),
            QueryError::BadParameter { .. } | QueryError::NoTextTower { .. } => {
                StatusCode::BAD_REQUEST
            }
            QueryError::NotFound { .. } => StatusCode::NOT_FOUND,
            // The server's: its model failed, or gave vectors of another space.
            QueryError::Dimension { .. } | QueryError::Model(_) | QueryError::Index(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(api::ErrorBody { error: self.1 })).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            // The decode budget was full: room comes back as decodes finish.
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        }
        r
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// Load the model and the index, and build the router. `cfg.bind` is the address clients
/// reach (the Host check accepts it), so with port 0 pass the port actually bound.
pub fn app(cfg: Config) -> Result<Router> {
    let url = cfg.index.to_string_lossy().into_owned();
    let (backend, model) = if simcase_milvus::MilvusUrl::is_milvus(&url) {
        let ef = (cfg.ef_search > 0).then_some(cfg.ef_search);
        // Opened on a thread of its own: the client blocks on its own runtime.
        let consistency = cfg.consistency;
        let remote = std::thread::spawn(move || RemoteIndex::open(&url, ef, consistency))
            .join()
            .map_err(|_| anyhow::anyhow!("opening the Milvus collection panicked"))??;
        let model = remote.model().to_string();
        (Backend::Remote(OffRuntime(Some(Arc::new(remote)))), model)
    } else {
        let snap = open_snapshot(&cfg)?;
        let model = snap.settings().model.clone();
        (Backend::Local(RwLock::new(Arc::new(snap))), model)
    };
    let model: simcase_models::ModelSet = model.parse()?;
    let enc = model
        .load(&simcase_models::default_device())
        .with_context(|| format!("loading {model}, the index's model"))?;
    let text_model = model.text_model();
    let pacs = match &cfg.report_to_pacs {
        Some(url) => {
            anyhow::ensure!(
                matches!(backend, Backend::Local(_)),
                "--report-to-pacs needs a local index folder, not a Milvus collection"
            );
            Some(Arc::new(
                simcase_pacs::DicomWeb::open(url).context("--report-to-pacs")?,
            ))
        }
        None => None,
    };
    let state = Arc::new(AppState {
        pacs,
        embedder: embed::Embedder::start(enc, cfg.max_batch),
        backend,
        text: Mutex::new(None),
        model,
        text_model,
        thumbs: Mutex::new(ThumbCache::default()),
        views: Mutex::new(Vec::new()),
        cfg,
    });
    if matches!(state.backend, Backend::Local(_)) {
        tokio::spawn(refresh(state.clone()));
    }
    Ok(router(state))
}

fn router(state: Shared) -> Router {
    let guard = Arc::new(harden::Guard::new(&state.cfg, state.cfg.bind));
    let api = Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/stats", get(stats))
        .route("/api/search", get(search_get).post(search_upload))
        .route("/api/report", post(report))
        .route("/api/items/{id}", get(item))
        .route("/api/items/{id}/thumbnail", get(thumbnail))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(state.cfg.max_upload_bytes));
    let api = harden::api_layers(api, &guard);
    let app = Router::new()
        .route(
            "/",
            get(|| async { page(PAGE, "text/html; charset=utf-8") }),
        )
        .route("/app.js", get(|| async { page(APP_JS, "text/javascript") }))
        .route("/style.css", get(|| async { page(STYLE, "text/css") }))
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .fallback(|| async { ApiError::not_found("not found") })
        .with_state(state);
    harden::outer_layers(app, &guard)
}

fn page(body: &'static str, ty: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}

/// Bind and serve until Ctrl-C. Without a token (`--no-token`), only on loopback.
pub async fn serve(mut cfg: Config) -> Result<()> {
    anyhow::ensure!(
        cfg.token.as_deref() != Some(""),
        "the token is empty (none given, and none could be generated from the OS random source)"
    );
    anyhow::ensure!(
        cfg.bind.ip().is_loopback() || cfg.token.is_some(),
        "binding {} (not loopback) needs a token: --no-token is for loopback only",
        cfg.bind
    );
    anyhow::ensure!(
        cfg.max_connections > 0,
        "--max-connections must be at least 1"
    );
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("binding {}", cfg.bind))?;
    let addr = listener.local_addr()?;
    cfg.bind = addr;
    let limits = harden::Limits {
        max_connections: cfg.max_connections,
        header_timeout: cfg.header_timeout,
    };
    let (token, show) = (cfg.token.clone(), cfg.show_token);
    let app = app(cfg)?;
    // The first line on stdout, for scripts and tests that bind port 0; the second, the page.
    println!("listening on http://{addr}");
    let page = if addr.ip().is_unspecified() {
        format!("http://localhost:{}/", addr.port())
    } else {
        format!("http://{addr}/")
    };
    match token {
        Some(t) if show => {
            tracing::info!("the page, with its token: {page}#token={t}");
            println!("open {page}#token={t}");
        }
        Some(_) => println!("open {page}#token=TOKEN (the token you gave)"),
        None => println!("open {page} (no token: --no-token)"),
    }
    harden::serve_on(listener, app, limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Swap in a fresh snapshot whenever a writer has committed more rows or rewritten labels.
async fn refresh(state: Shared) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let Backend::Local(snap) = &s.backend else {
                return;
            };
            let have = snap.read().map(|g| g.version()).unwrap_or_default();
            match Snapshot::committed_version(&s.cfg.index) {
                Ok(n) if n != have => match open_snapshot(&s.cfg) {
                    Ok(fresh) => {
                        tracing::info!("index now has {} items", fresh.len());
                        if let Ok(mut g) = snap.write() {
                            *g = Arc::new(fresh);
                        }
                    }
                    Err(e) => tracing::warn!("index refresh failed: {e:#}"),
                },
                Ok(_) => {}
                Err(e) => tracing::warn!("index refresh failed: {e:#}"),
            }
        })
        .await;
    }
}

/// A snapshot with the configured `ef_search`, its graph (for an HNSW index) loaded or grown
/// before it serves, so that no request pays for that.
fn open_snapshot(cfg: &Config) -> Result<Snapshot> {
    let snap = Snapshot::open(&cfg.index)?;
    snap.set_ef_search(cfg.ef_search);
    snap.graph();
    Ok(snap)
}

fn index(state: &AppState) -> Index {
    match &state.backend {
        Backend::Local(snap) => Index::Local(
            snap.read()
                .map(|g| g.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
        ),
        Backend::Remote(r) => Index::Remote(r.0.clone().expect("held until the state drops")),
    }
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(api::openapi_json_text);
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

async fn stats(State(state): State<Shared>) -> ApiResult<Json<api::StatsResponse>> {
    let b = &state.embedder.stats;
    use std::sync::atomic::Ordering::Relaxed;
    let embedding = api::BatchCounts {
        batches: b.batches.load(Relaxed),
        images: b.images.load(Relaxed),
        largest_batch: b.largest.load(Relaxed),
    };
    let snap = match index(&state) {
        Index::Local(snap) => snap,
        Index::Remote(r) => {
            // A Milvus collection: its size, model and dimension. Per-value counts would scan
            // the whole collection, and failed files stay with the ingest that met them.
            let items = blocking(&r, |r| r.len()).await?;
            return Ok(Json(api::StatsResponse {
                items,
                model: r.model().to_string(),
                dim: r.dim(),
                text_search: state.text_model.is_some(),
                counts: BTreeMap::new(),
                extra_fields: Default::default(),
                views: Vec::new(),
                embedding,
                report_to_pacs: false,
                errors: 0,
                errors_by_kind: BTreeMap::new(),
            }));
        }
    };
    // Counts only: the errors table's paths stay out of the API (`simcase errors` has them).
    let dir = state.cfg.index.clone();
    let errors_by_kind =
        tokio::task::spawn_blocking(move || simcase_index::store::failure_counts(&dir))
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("counting failed files: {e}")))?
            .map_err(ApiError::internal)?;
    // Counted from the snapshot's codes: one pass over each column's codes, no SQLite.
    let mut counts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for c in Column::FILTERS {
        let Some(codes) = snap.column(c) else {
            continue;
        };
        let per: BTreeMap<String, usize> = codes
            .counts(snap.len())
            .into_iter()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .filter_map(|(code, n)| Some((codes.value(code as u32)?.to_string(), n)))
            .collect();
        if !per.is_empty() {
            counts.insert(c.name(), per);
        }
    }
    let extra_cols = snap.extra_keys().clone();
    let views = View::list(&snap);
    Ok(Json(api::StatsResponse {
        views,
        items: snap.len(),
        model: snap.settings().model.clone(),
        dim: snap.settings().dim,
        text_search: state.text_model.is_some(),
        counts: counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        extra_fields: extra_cols,
        embedding,
        report_to_pacs: state.pacs.is_some(),
        errors: errors_by_kind.values().sum(),
        errors_by_kind,
    }))
}

/// Search parameters shared by every kind of query, parsed and bounded by
/// [`Params::parse`]: each bad value is a 400 naming its parameter.
fn params(pairs: &[(String, String)], max_k: usize) -> ApiResult<Params> {
    Ok(Params::parse(pairs, max_k)?)
}

/// `GET /api/search?id=N` ("more like this") or `?text=...` (CLIP-family models).
async fn search_get(
    State(state): State<Shared>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
) -> ApiResult<Json<api::SearchResponse>> {
    let mut p = params(&pairs, state.cfg.max_k)?;
    let idx = index(&state);
    let (q, about) = query_of(&state, &idx, &mut p).await?;
    respond(&state, &idx, q, &p, about).await
}

/// The query `GET /api/search` and `POST /api/report` name (`id=`, `sop_uid=` or `text=`),
/// with `p`'s filters set to leave out its origin as asked.
async fn query_of(
    state: &Shared,
    idx: &Index,
    p: &mut Params,
) -> ApiResult<(Query, api::QueryInfo)> {
    if let Some(uid) = p.sop_uid.clone() {
        if p.id.is_some() || p.text.is_some() {
            return Err(QueryError::bad("sop_uid", "give one of id=, text= or sop_uid=").into());
        }
        let Index::Local(snap) = idx else {
            return Err(QueryError::bad("sop_uid", "needs a local index folder").into());
        };
        let s = snap.clone();
        let u = uid.clone();
        let id = tokio::task::spawn_blocking(move || s.id_by_sop_uid(&u))
            .await
            .map_err(|e| ApiError::internal(e.into()))?
            .map_err(QueryError::Index)?
            .ok_or_else(|| {
                ApiError::not_found(format!("no indexed item has SOP Instance UID {uid}"))
            })?;
        let q = idx.query_item(id).await?;
        // An archived instance: its own study is left out unless asked for.
        let (study, patient) = (!p.include_same_study, p.exclude_same_patient);
        p.req.filters.exclude_origin(&q.origin, study, patient);
        return Ok((q, api::QueryInfo::Instance { sop_uid: uid, id }));
    }
    let (q, about) = match (&p.id, &p.text) {
        (Some(id), None) => {
            let q = idx.query_item(*id).await?;
            p.req
                .filters
                .exclude_origin(&q.origin, false, p.exclude_same_patient);
            (q, api::QueryInfo::Item { id: *id })
        }
        (None, Some(text)) => {
            let enc = text_encoder(state).await?;
            let t = text.clone();
            let q = tokio::task::spawn_blocking(move || Query::text(enc.as_ref(), &t))
                .await
                .map_err(|e| ApiError::internal(e.into()))??;
            (q, api::QueryInfo::Text { text: text.clone() })
        }
        (Some(_), Some(_)) => {
            return Err(QueryError::bad("text", "give one of id= or text=, not both").into())
        }
        (None, None) => {
            return Err(QueryError::bad(
                "id",
                "give exactly one of id= or text= (or POST an image)",
            )
            .into())
        }
    };
    Ok((q, about))
}

/// `POST /api/report?id=N|sop_uid=UID&…`: the search `GET /api/search` would answer, filed in
/// the query's study as a DICOM SR ([`simcase_pacs::report::file`]) in the operator's PACS.
async fn report(
    State(state): State<Shared>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
) -> ApiResult<Json<api::ReportResponse>> {
    let Some(dw) = state.pacs.clone() else {
        return Err(ApiError::not_found(
            "reports are off: `simcase serve --report-to-pacs dicomweb+http://…` turns them on",
        ));
    };
    let mut p = params(&pairs, state.cfg.max_k)?;
    if p.text.is_some() {
        return Err(QueryError::bad(
            "text",
            "a report is filed in the query's study: give id= or sop_uid= of a DICOM item",
        )
        .into());
    }
    let idx = index(&state);
    let Index::Local(snap) = &idx else {
        return Err(QueryError::bad("id", "reports need a local index folder").into());
    };
    let snap = snap.clone();
    let (q, about) = query_of(&state, &idx, &mut p).await?;
    let origin = q.origin.clone();
    if simcase_pacs::report::archived(&origin).is_none() {
        return Err(QueryError::bad(
            "id",
            "a report is filed in the query's study: the query must be a DICOM item with \
             study, series and SOP Instance UIDs",
        )
        .into());
    }
    let Json(search) = respond(&state, &idx, q, &p, about).await?;
    let hits = search.result.hits.clone();
    let index = state.cfg.index.clone();
    let filed = tokio::task::spawn_blocking(move || {
        simcase_pacs::report::file(&dw, &snap, &index, &origin, &hits)
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("report: {e:#}")))?;
    tracing::info!(
        sr = %filed.sr_uid,
        results = filed.results,
        left_out = filed.left_out,
        "search filed in the PACS as an SR"
    );
    Ok(Json(api::ReportResponse {
        sr_uid: filed.sr_uid,
        study_uid: filed.study_uid,
        results: filed.results,
        left_out: filed.left_out,
        search,
    }))
}

async fn text_encoder(state: &Shared) -> ApiResult<Arc<dyn TextEncoder>> {
    let Some(model) = state.text_model else {
        return Err(QueryError::NoTextTower {
            model: state.model.to_string(),
        }
        .into());
    };
    if let Some(t) = state
        .text
        .lock()
        .map_err(|_| ApiError::bad("poisoned"))?
        .clone()
    {
        return Ok(t);
    }
    let enc = tokio::task::spawn_blocking(move || {
        simcase_models::load_text(model, &simcase_models::default_device())
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .map_err(QueryError::Model)?;
    let enc: Arc<dyn TextEncoder> = Arc::from(enc);
    if let Ok(mut g) = state.text.lock() {
        *g = Some(enc.clone());
    }
    Ok(enc)
}

/// `POST /api/search` with a multipart `file` (PNG, JPEG or DICOM); parameters in the URL.
async fn search_upload(
    State(state): State<Shared>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
    multipart: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Json<api::SearchResponse>> {
    let p = params(&pairs, state.cfg.max_k)?;
    if p.id.is_some() || p.text.is_some() || p.sop_uid.is_some() {
        let name = match (&p.id, &p.text) {
            (Some(_), _) => "id",
            (_, Some(_)) => "text",
            _ => "sop_uid",
        };
        return Err(QueryError::bad(name, "not with an upload: the upload is the query").into());
    }
    let mut mp =
        multipart.map_err(|e| ApiError(e.status(), format!("upload: {}", e.body_text())))?;
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        let field = mp
            .next_field()
            .await
            .map_err(|e| ApiError(e.status(), format!("upload: {}", e.body_text())))?;
        let Some(field) = field else { break };
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or("upload").to_string();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError(e.status(), format!("upload: {}", e.body_text())))?;
            file = Some((name, bytes.to_vec()));
        }
    }
    let (name, bytes) = file.ok_or_else(|| ApiError::bad("upload: no `file` field"))?;
    let opts = DecodeOptions {
        window: p.window,
        max_pixels: Some(state.cfg.max_pixels),
        budget: Some(state.cfg.decode_budget.clone()),
        ..Default::default()
    };
    let pre = state.embedder.preprocess().clone();
    let shown = name.clone();
    // Preprocessed while the decode budget's bytes are held.
    let input = tokio::task::spawn_blocking(move || {
        decode_bytes_with(&bytes, &opts, |d| pre.apply(&d.image))
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .map_err(|reason| QueryError::Decode {
        name: shown,
        reason,
    })?;
    let vector = state
        .embedder
        .embed(input)
        .await
        .map_err(ApiError::internal)?;
    let idx = index(&state);
    let q = Query {
        vector,
        exclude: None,
        origin: Default::default(),
    };
    respond(&state, &idx, q, &p, api::QueryInfo::Upload { name }).await
}

async fn respond(
    state: &Shared,
    idx: &Index,
    q: Query,
    p: &Params,
    about: api::QueryInfo,
) -> ApiResult<Json<api::SearchResponse>> {
    let view = match (&p.view, idx) {
        (Some(name), Index::Local(snap)) => Some(view(state, snap, name).await?),
        _ => None,
    };
    let t = Instant::now();
    let mut res = idx.search(q, p.req.clone(), view).await?;
    let took_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(v) = &state.cfg.viewer_url {
        v.fill(&mut res);
    }
    if !state.cfg.show_paths {
        let hide = |h: &mut simcase_query::Hit| {
            h.path = None;
            h.also.iter_mut().for_each(|a| a.path = None);
        };
        res.hits.iter_mut().for_each(hide);
        res.groups
            .iter_mut()
            .flatten()
            .for_each(|g| hide(&mut g.best));
        res.query_also.iter_mut().for_each(|a| a.path = None);
    }
    Ok(Json(api::SearchResponse {
        result: res,
        query: about,
        model: idx.model(),
        view: p.view.clone(),
        items: idx.len().await?,
        took_ms,
    }))
}

/// View `name` mapped for `snap`: from the cache when it was mapped for this snapshot, else
/// loaded and mapped on the blocking pool (an unknown name is a 400 listing the views).
async fn view(state: &Shared, snap: &Arc<Snapshot>, name: &str) -> ApiResult<Arc<View>> {
    let cached = state
        .views
        .lock()
        .map_err(|_| ApiError::internal(anyhow::anyhow!("the view cache is poisoned")))?
        .iter()
        .find(|v| v.name == name && v.fits(snap))
        .cloned();
    if let Some(v) = cached {
        return Ok(v);
    }
    let (s, n) = (snap.clone(), name.to_string());
    let v = Arc::new(
        tokio::task::spawn_blocking(move || View::open(&s, &n))
            .await
            .map_err(|e| ApiError::internal(e.into()))??,
    );
    tracing::info!("view {name}: {} rows mapped", snap.len());
    if let Ok(mut g) = state.views.lock() {
        g.retain(|old| old.fits(snap) && old.name != name);
        if g.len() >= MAX_VIEWS {
            g.remove(0);
        }
        g.push(v.clone());
    }
    Ok(v)
}

/// The `{id}` of an item route: a whole number (400 naming `id`); whether the index holds it
/// is [`Index::item`]'s to say (404).
fn parse_id(
    raw: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> std::result::Result<u64, QueryError> {
    let Path(raw) = raw.map_err(|e| QueryError::bad("id", e.body_text()))?;
    simcase_query::params::parse_id("id", &raw)
}

/// `GET /api/items/{id}`: metadata (never raw patient identifiers; paths only if enabled).
async fn item(
    State(state): State<Shared>,
    raw: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Json<simcase_index::Item>> {
    let id = parse_id(raw)?;
    let mut it = index(&state).item(id).await?;
    if !state.cfg.show_paths {
        it.meta.path.clear(); // an empty path is not serialised
    }
    Ok(Json(it))
}

/// `GET /api/items/{id}/thumbnail?size=256&window=lung`: a PNG rendered from the indexed file.
async fn thumbnail(
    State(state): State<Shared>,
    raw: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    UrlQuery(q): UrlQuery<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let idx = index(&state);
    let id = parse_id(raw)?;
    idx.check(id)?;
    let (size, window) = thumb_params(&q)?;
    let key = format!(
        "{id}/{size}/{}",
        window
            .map(|w| format!("{},{}", w.center, w.width))
            .unwrap_or_default()
    );
    let cached = state.thumbs.lock().ok().and_then(|c| c.get(&key));
    let png = match cached {
        Some(p) => p,
        None => {
            let it = idx.item(id).await?;
            let path = PathBuf::from(&it.meta.path);
            let opts = part_options(&it.meta, window, &state.cfg.decode_budget);
            let png = tokio::task::spawn_blocking(move || render_thumbnail(&path, size, opts))
                .await
                .map_err(|e| ApiError::internal(e.into()))?
                .map_err(|e| {
                    // The stored file is gone or no longer decodes: 404, unless the decode
                    // budget refused it (503 or 413, as for uploads).
                    let status = match e.downcast_ref::<DecodeError>().map(decode_status) {
                        Some(s) if s != StatusCode::BAD_REQUEST => s,
                        _ => StatusCode::NOT_FOUND,
                    };
                    ApiError(status, format!("item {id}: {e:#}"))
                })?;
            let png = Arc::new(png);
            if let Ok(mut c) = state.thumbs.lock() {
                c.put(key, png.clone());
            }
            png
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "image/png".parse().expect("static header"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        "private, max-age=3600".parse().expect("static header"),
    );
    Ok((headers, png.as_ref().clone()).into_response())
}

/// A thumbnail's `size` (16..=1024, default 256) and `window`, each at most once; any other
/// parameter is refused. Each bad value is a 400 naming its parameter.
fn thumb_params(
    pairs: &[(String, String)],
) -> std::result::Result<(usize, Option<WindowPreset>), QueryError> {
    let (mut size, mut window, mut seen) = (None, None, Vec::new());
    for (name, v) in pairs {
        if seen.contains(&name.as_str()) {
            return Err(QueryError::bad(name, "given more than once"));
        }
        seen.push(name.as_str());
        match name.as_str() {
            "size" => {
                let s = simcase_query::params::parse_count("size", v)?;
                if !(16..=1024).contains(&s) {
                    return Err(QueryError::bad(
                        "size",
                        format!("must be 16..=1024, got {s}"),
                    ));
                }
                size = Some(s);
            }
            "window" if v.is_empty() => {}
            "window" => window = Some(simcase_query::params::parse_window("window", v)?),
            "token" => {}
            other => {
                return Err(QueryError::bad(
                    other,
                    "unknown thumbnail parameter (size, window)",
                ))
            }
        }
    }
    Ok((size.unwrap_or(256), window))
}

/// The status of a failed decode of the caller's image: 503 (with Retry-After) when the
/// decode budget had no room in time, 413 when the image needs more than the whole budget,
/// else 400 (the pixel limit included: the header says what the image is).
fn decode_status(e: &DecodeError) -> StatusCode {
    match e {
        DecodeError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        DecodeError::OverBudget { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Decode options that select a stored item's own frame or volume slice, under the server's
/// decode budget.
fn part_options(
    meta: &simcase_index::ItemMeta,
    window: Option<WindowPreset>,
    budget: &Arc<DecodeBudget>,
) -> DecodeOptions {
    DecodeOptions {
        budget: Some(budget.clone()),
        window,
        part: meta.part_index(),
        axis: meta
            .slice_axis()
            .and_then(|a| a.parse().ok())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Decode (DICOM windowed), fit into `size`×`size` keeping the aspect ratio, encode PNG.
fn render_thumbnail(path: &std::path::Path, size: usize, opts: DecodeOptions) -> Result<Vec<u8>> {
    let shown = path.to_string_lossy();
    // An item indexed from a PACS: its stored bytes fetched again by WADO-RS (credentials from
    // the server's environment, as for `simcase index`).
    // A stored file is read inside the budgeted decode: its bytes are counted before they are
    // read (a thumbnail takes no upload slot, so only the budget bounds how many are held).
    let png = if simcase_pacs::is_dicomweb(&shown) {
        let (service, inst) = simcase_pacs::dicomweb::parse_instance_url(&shown)?;
        let bytes = simcase_pacs::DicomWeb::shared(&service)?
            .fetch(&inst)
            .context("fetching the archived instance")?;
        simcase_imaging::thumbnail_png(simcase_imaging::Input::Bytes(&bytes), size, &opts)?
    } else {
        match simcase_imaging::thumbnail_png(simcase_imaging::Input::File(path), size, &opts) {
            // Gone or unreadable: said as before, once (the error's source repeats it).
            Err(DecodeError::Io(e)) => {
                return Err(anyhow::Error::new(e).context("reading the indexed file"))
            }
            r => r?,
        }
    };
    png.context("the file no longer holds this image")
}

/// [`serve`] on its own tokio runtime, for the synchronous CLI.
pub fn serve_blocking(cfg: Config) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("simcase-http")
        .build()?
        .block_on(serve(cfg))
}
