//! `simcase serve`: an index as an HTTP API (`/api/*`, documented at `/api/openapi.json`) and
//! a web page served from the binary itself.
//!
//! The model is loaded once and concurrent queries are batched ([`embed`]). The index is
//! read through a shared memory-mapped [`Snapshot`], swapped for a fresh one when `simcase
//! index` commits more rows, so the server keeps answering during ingest and never sees a
//! half-written item. Off loopback every API call needs the token.

pub mod api;
pub mod client;
pub mod embed;
pub mod load;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query as UrlQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use simcase_imaging::{decode_bytes_with, DecodeBudget, DecodeError, DecodeOptions, WindowPreset};
use simcase_index::{Column, Snapshot};
use simcase_models::TextEncoder;
use simcase_query::{Field, Filters, GroupBy, Query};
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
    /// The index folder to serve.
    pub index: PathBuf,
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Required on every API call when set; required to bind off loopback.
    pub token: Option<String>,
    /// Largest upload accepted (413 above).
    pub max_upload_bytes: usize,
    /// Pixel limit for uploads, checked from the header before decoding.
    pub max_pixels: u64,
    /// Include file paths in responses (they can carry names from the archive's layout).
    pub show_paths: bool,
    /// Most uploads embedded in one batch.
    pub max_batch: usize,
    /// Largest `k` a search may ask for.
    pub max_k: usize,
    /// Memory shared by every upload and thumbnail decode (`--decode-budget-mb`; see
    /// `simcase_imaging::budget`): a request that finds no room before its deadline is a 503
    /// with Retry-After, one that can never fit a 413.
    pub decode_budget: Arc<DecodeBudget>,
}

impl Config {
    /// Defaults for serving `index`: loopback:8080, no token, 32 MB uploads, 64 M pixels.
    pub fn new(index: PathBuf) -> Self {
        Self {
            index,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            max_upload_bytes: 32 << 20,
            max_pixels: 64_000_000,
            show_paths: false,
            max_batch: 16,
            max_k: 500,
            decode_budget: DecodeBudget::from_mb(1024, DECODE_WAIT),
        }
    }
}

struct AppState {
    cfg: Config,
    snap: RwLock<Arc<Snapshot>>,
    embedder: embed::Embedder,
    text: Mutex<Option<Arc<dyn TextEncoder>>>,
    /// The index's model, parsed once at start-up.
    model: simcase_models::ModelId,
    has_text: bool,
    thumbs: Mutex<ThumbCache>,
}

type Shared = Arc<AppState>;

/// A small bounded cache of rendered thumbnails (PNG bytes), oldest dropped first.
#[derive(Default)]
struct ThumbCache {
    map: HashMap<String, Arc<Vec<u8>>>,
    order: std::collections::VecDeque<String>,
}

impl ThumbCache {
    const CAP: usize = 1024;
    fn get(&self, k: &str) -> Option<Arc<Vec<u8>>> {
        self.map.get(k).cloned()
    }
    fn put(&mut self, k: String, v: Arc<Vec<u8>>) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            if self.order.len() > Self::CAP {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
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

/// Load the model and the index, and build the router.
pub fn app(cfg: Config) -> Result<Router> {
    let snap = Snapshot::open(&cfg.index)?;
    let model: simcase_models::ModelId = snap.settings().model.parse()?;
    let enc = simcase_models::load(model, &simcase_models::default_device())
        .with_context(|| format!("loading {model}, the index's model"))?;
    let has_text = model.spec().text.is_some();
    let state = Arc::new(AppState {
        embedder: embed::Embedder::start(enc, cfg.max_batch),
        snap: RwLock::new(Arc::new(snap)),
        text: Mutex::new(None),
        model,
        has_text,
        thumbs: Mutex::new(ThumbCache::default()),
        cfg,
    });
    tokio::spawn(refresh(state.clone()));
    Ok(router(state))
}

fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/stats", get(stats))
        .route("/api/search", get(search_get).post(search_upload))
        .route("/api/items/{id}", get(item))
        .route("/api/items/{id}/thumbnail", get(thumbnail))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(state.cfg.max_upload_bytes));
    Router::new()
        .route(
            "/",
            get(|| async { page(PAGE, "text/html; charset=utf-8") }),
        )
        .route("/app.js", get(|| async { page(APP_JS, "text/javascript") }))
        .route("/style.css", get(|| async { page(STYLE, "text/css") }))
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .fallback(|| async { ApiError::not_found("not found") })
        .layer(axum::middleware::from_fn(log_requests))
        .with_state(state)
}

fn page(body: &'static str, ty: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}

/// Bind and serve until Ctrl-C. Off loopback, a token is required.
pub async fn serve(cfg: Config) -> Result<()> {
    anyhow::ensure!(
        cfg.bind.ip().is_loopback() || cfg.token.as_deref().is_some_and(|t| !t.is_empty()),
        "binding {} (not loopback) needs a token: pass --token or set SIMCASE_TOKEN",
        cfg.bind
    );
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("binding {}", cfg.bind))?;
    let addr = listener.local_addr()?;
    let app = app(cfg)?;
    // The first line on stdout, for scripts and tests that bind port 0.
    println!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Swap in a fresh snapshot whenever a writer has committed more rows.
async fn refresh(state: Shared) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let have = s.snap.read().map(|g| g.len()).unwrap_or(0);
            match Snapshot::committed_rows(&s.cfg.index) {
                Ok(n) if n != have => match Snapshot::open(&s.cfg.index) {
                    Ok(fresh) => {
                        tracing::info!("index now has {} items", fresh.len());
                        if let Ok(mut g) = s.snap.write() {
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

fn snapshot(state: &AppState) -> Arc<Snapshot> {
    state
        .snap
        .read()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// Method, path (never the query string, which may hold a search text) and status.
async fn log_requests(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t = Instant::now();
    let res = next.run(req).await;
    tracing::info!(
        "{method} {path} -> {} in {:.1} ms",
        res.status().as_u16(),
        t.elapsed().as_secs_f64() * 1e3
    );
    res
}

async fn auth(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.cfg.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token (send Authorization: Bearer TOKEN)".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(api::openapi_json_text);
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

async fn stats(State(state): State<Shared>) -> Json<api::StatsResponse> {
    let snap = snapshot(&state);
    let mut counts: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let fields: Vec<(&str, Field)> = Column::FILTERS
        .iter()
        .map(|&c| (c.name(), Field::Column(c)))
        .collect();
    let mut extra_cols: std::collections::BTreeSet<String> = Default::default();
    for it in snap.items() {
        for (name, f) in &fields {
            if let Some(v) = f.value(it) {
                *counts
                    .entry(name)
                    .or_default()
                    .entry(v.to_string())
                    .or_default() += 1;
            }
        }
        extra_cols.extend(it.meta.extra.keys().cloned());
    }
    let b = &state.embedder.stats;
    use std::sync::atomic::Ordering::Relaxed;
    Json(api::StatsResponse {
        items: snap.len(),
        model: snap.settings().model.clone(),
        dim: snap.settings().dim,
        text_search: state.has_text,
        counts: counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        extra_fields: extra_cols,
        embedding: api::BatchCounts {
            batches: b.batches.load(Relaxed),
            images: b.images.load(Relaxed),
            largest_batch: b.largest.load(Relaxed),
        },
    })
}

/// Search parameters shared by every kind of query.
struct Params {
    req: simcase_query::Request,
    window: Option<WindowPreset>,
    id: Option<u64>,
    text: Option<String>,
}

fn params(pairs: &[(String, String)], max_k: usize) -> ApiResult<Params> {
    let mut p = Params {
        req: simcase_query::Request {
            k: 20,
            ..Default::default()
        },
        window: None,
        id: None,
        text: None,
    };
    let mut filters = Filters::default();
    for (k, v) in pairs {
        let num = |what: &str| {
            v.parse::<usize>()
                .map_err(|_| ApiError::bad(format!("{what} must be a whole number, got {v:?}")))
        };
        match k.as_str() {
            "k" => p.req.k = num("k")?,
            "offset" => p.req.offset = num("offset")?,
            "id" => {
                p.id = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad(format!("bad item id {v:?}")))?,
                )
            }
            "text" => p.text = Some(v.clone()),
            "group_by" if v.is_empty() => {}
            "group_by" => {
                p.req.group_by = Some(
                    v.parse::<GroupBy>()
                        .map_err(|e| ApiError::bad(e.to_string()))?,
                )
            }
            "window" if v.is_empty() => {}
            "window" => {
                p.window = Some(
                    v.parse()
                        .map_err(|e| ApiError::bad(format!("window: {e}")))?,
                )
            }
            "date_from" => filters.date_from = Some(v.clone()),
            "date_to" => filters.date_to = Some(v.clone()),
            "token" => {}
            other => {
                let f: Field = other
                    .parse()
                    .map_err(|e: anyhow::Error| ApiError::bad(e.to_string()))?;
                filters.fields.entry(f).or_default().push(v.clone());
            }
        }
    }
    if p.req.k == 0 || p.req.k > max_k {
        return Err(ApiError::bad(format!("k must be 1..={max_k}")));
    }
    p.req.filters = filters;
    Ok(p)
}

/// `GET /api/search?id=N` ("more like this") or `?text=...` (CLIP-family models).
async fn search_get(
    State(state): State<Shared>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
) -> ApiResult<Json<api::SearchResponse>> {
    let p = params(&pairs, state.cfg.max_k)?;
    let snap = snapshot(&state);
    let (q, about) = match (&p.id, &p.text) {
        (Some(id), None) => {
            let q = Query::item(&snap, *id).map_err(|e| ApiError::not_found(format!("{e:#}")))?;
            (q, api::QueryInfo::Item { id: *id })
        }
        (None, Some(text)) => {
            let enc = text_encoder(&state).await?;
            let t = text.clone();
            let q = tokio::task::spawn_blocking(move || Query::text(enc.as_ref(), &t))
                .await
                .map_err(|e| ApiError::internal(e.into()))?
                .map_err(|e| ApiError::bad(format!("{e:#}")))?;
            (q, api::QueryInfo::Text { text: text.clone() })
        }
        _ => {
            return Err(ApiError::bad(
                "give exactly one of id= or text= (or POST an image)",
            ))
        }
    };
    respond(&state, &snap, q, &p, about).await
}

async fn text_encoder(state: &Shared) -> ApiResult<Arc<dyn TextEncoder>> {
    if !state.has_text {
        let model = state.model;
        return Err(ApiError::bad(format!(
            "{model} has no text tower; text search needs a CLIP-family model"
        )));
    }
    if let Some(t) = state
        .text
        .lock()
        .map_err(|_| ApiError::bad("poisoned"))?
        .clone()
    {
        return Ok(t);
    }
    let model = state.model;
    let enc = tokio::task::spawn_blocking(move || {
        simcase_models::load_text(model, &simcase_models::default_device())
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .map_err(|e| ApiError::bad(format!("{e:#}")))?;
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
    .map_err(|e| decode_failed(&e, format!("{shown}: {e}"), ApiError::bad))?;
    let vector = state
        .embedder
        .embed(input)
        .await
        .map_err(ApiError::internal)?;
    let snap = snapshot(&state);
    let q = Query {
        vector,
        exclude: None,
    };
    respond(&state, &snap, q, &p, api::QueryInfo::Upload { name }).await
}

async fn respond(
    state: &Shared,
    snap: &Arc<Snapshot>,
    q: Query,
    p: &Params,
    about: api::QueryInfo,
) -> ApiResult<Json<api::SearchResponse>> {
    let t = Instant::now();
    let (s, req) = (snap.clone(), p.req.clone());
    let mut res = tokio::task::spawn_blocking(move || simcase_query::search(&s, &q, &req))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(ApiError::internal)?;
    if !state.cfg.show_paths {
        res.hits.iter_mut().for_each(|h| h.path = None);
        for g in res.groups.iter_mut().flatten() {
            g.best.path = None;
        }
    }
    Ok(Json(api::SearchResponse {
        result: res,
        query: about,
        model: snap.settings().model.clone(),
        items: snap.len(),
        took_ms: t.elapsed().as_secs_f64() * 1e3,
    }))
}

fn parse_id(raw: &str, snap: &Snapshot) -> ApiResult<u64> {
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::bad(format!("item ids are whole numbers, got {raw:?}")))?;
    if snap.item(id).is_none() {
        return Err(ApiError::not_found(format!("no item {id}")));
    }
    Ok(id)
}

/// `GET /api/items/{id}`: metadata (never raw patient identifiers; paths only if enabled).
async fn item(
    State(state): State<Shared>,
    Path(raw): Path<String>,
) -> ApiResult<Json<simcase_index::Item>> {
    let snap = snapshot(&state);
    let id = parse_id(&raw, &snap)?;
    let it = snap
        .item(id)
        .ok_or_else(|| ApiError::not_found("no such item"))?;
    let mut it = it.clone();
    if !state.cfg.show_paths {
        it.meta.path.clear(); // an empty path is not serialised
    }
    Ok(Json(it))
}

/// `GET /api/items/{id}/thumbnail?size=256&window=lung`: a PNG rendered from the indexed file.
async fn thumbnail(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    UrlQuery(q): UrlQuery<HashMap<String, String>>,
) -> ApiResult<Response> {
    let snap = snapshot(&state);
    let id = parse_id(&raw, &snap)?;
    let size: usize = match q.get("size") {
        Some(s) => s
            .parse()
            .ok()
            .filter(|s| (16..=1024).contains(s))
            .ok_or_else(|| ApiError::bad("size must be 16..=1024"))?,
        None => 256,
    };
    let window: Option<WindowPreset> = match q.get("window").filter(|w| !w.is_empty()) {
        Some(w) => Some(
            w.parse()
                .map_err(|e| ApiError::bad(format!("window: {e}")))?,
        ),
        None => None,
    };
    let key = format!(
        "{id}/{size}/{}",
        q.get("window").map(String::as_str).unwrap_or("")
    );
    let cached = state.thumbs.lock().ok().and_then(|c| c.get(&key));
    let png = match cached {
        Some(p) => p,
        None => {
            let it = snap
                .item(id)
                .ok_or_else(|| ApiError::not_found("no such item"))?;
            let path = PathBuf::from(&it.meta.path);
            let opts = part_options(&it.meta, window, &state.cfg.decode_budget);
            let png = tokio::task::spawn_blocking(move || render_thumbnail(&path, size, opts))
                .await
                .map_err(|e| ApiError::internal(e.into()))?
                .map_err(|e| match e.downcast_ref::<DecodeError>() {
                    Some(d) => decode_failed(d, format!("item {id}: {e:#}"), ApiError::not_found),
                    None => ApiError::not_found(format!("item {id}: {e:#}")),
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

/// The status of a failed decode: 503 (with Retry-After) when the decode budget had no room
/// in time, 413 when the image needs more than the whole budget, else `otherwise`.
fn decode_failed(e: &DecodeError, msg: String, otherwise: fn(String) -> ApiError) -> ApiError {
    match e {
        DecodeError::Busy { .. } => ApiError(StatusCode::SERVICE_UNAVAILABLE, msg),
        DecodeError::OverBudget { .. } => ApiError(StatusCode::PAYLOAD_TOO_LARGE, msg),
        _ => otherwise(msg),
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
    let bytes = std::fs::read(path).context("reading the indexed file")?;
    // Resized to the thumbnail while the decode budget's bytes are held.
    let (rgb, tw, th) = simcase_imaging::decode_items_with(&bytes, &opts, |items| {
        let d = items.into_iter().next()?;
        let (w, h) = (d.image.width, d.image.height);
        let scale = (size as f64 / w.max(h) as f64).min(1.0);
        let (tw, th) = (
            ((w as f64 * scale).round() as usize).max(1),
            ((h as f64 * scale).round() as usize).max(1),
        );
        let small = simcase_imaging::resize_bilinear(&d.image, tw, th);
        let n = tw * th;
        let mut rgb = vec![0u8; n * 3];
        for c in 0..3 {
            for i in 0..n {
                rgb[i * 3 + c] = (small.data[c * n + i].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        Some((rgb, tw, th))
    })?
    .context("the file no longer holds this image")?;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&rgb, tw as u32, th as u32, image::ExtendedColorType::Rgb8)
        .context("encoding the thumbnail")?;
    Ok(out)
}

use image::ImageEncoder;

/// [`serve`] on its own tokio runtime, for the synchronous CLI.
pub fn serve_blocking(cfg: Config) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("simcase-http")
        .build()?
        .block_on(serve(cfg))
}
