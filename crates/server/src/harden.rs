//! The server's defences, in one place, because loopback is not a security boundary: any web
//! page the user opens can reach `127.0.0.1` (DNS rebinding, cross-origin form posts), and any
//! client can stall or crash a naive server. Modelled on what Jupyter did after the same class
//! of attacks:
//!
//! - the `Host` header must name this server (its bound address, `localhost` on loopback, or an
//!   `--allow-host` name), so a rebound domain gets 403 (every route);
//! - a bearer token on every `/api` call, generated at start-up unless the operator gives one
//!   or opts out on loopback (`--no-token`), compared in constant time;
//! - cross-origin API calls (an `Origin` that is not this server, `Sec-Fetch-Site: cross-site`
//!   or `same-site`) get 403, so a foreign page can neither read nor spend;
//! - CSP, `nosniff`, `no-referrer` and frame denial on every response;
//! - a handler panic is a 500 and a log line, never a dead connection or process;
//! - bounded time: request-head read timeout (slow clients, idle keep-alive), body read timeout
//!   (408), request timeout (503), and a cap on concurrent connections.

use crate::api;
use anyhow::{Context, Result};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

/// The page's Content-Security-Policy: scripts, styles and fetches from this origin only;
/// images also from `blob:` (thumbnails are fetched with the token, shown as blob URLs) and
/// `data:` (the empty favicon); no framing, no `<base>`, no foreign form targets, no plugins.
pub const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; \
                       frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A fresh random token: 32 bytes from the OS random source, as 64 hex digits.
pub fn generate_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness from the OS for the server token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal-length byte strings compared without an early exit: the time taken depends on the
/// lengths only, never on where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    std::hint::black_box(diff) == 0
}

/// What the request layers check, built once from the [`crate::Config`] and the address
/// actually bound (port 0 becomes the real port).
#[derive(Debug)]
pub struct Guard {
    bound: SocketAddr,
    allow: Vec<String>,
    token: Option<String>,
    max_body: usize,
    body_timeout: Duration,
    request_timeout: Duration,
    /// Permits for request bodies being read or handled ([`crate::Config::max_uploads`]).
    uploads: tokio::sync::Semaphore,
    max_uploads: usize,
}

impl Guard {
    /// The checks for a server configured by `cfg` and listening on `bound`.
    pub fn new(cfg: &crate::Config, bound: SocketAddr) -> Self {
        Self {
            bound,
            allow: cfg
                .allow_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            token: cfg.token.clone(),
            max_body: cfg.max_upload_bytes,
            body_timeout: cfg.body_timeout,
            request_timeout: cfg.request_timeout,
            uploads: tokio::sync::Semaphore::new(cfg.max_uploads.max(1)),
            max_uploads: cfg.max_uploads.max(1),
        }
    }

    /// Whether a `Host` value (`name[:port]`, `ip[:port]`, `[v6][:port]`) names this server.
    /// Bound to the unspecified address (`0.0.0.0`, `::`), any IP literal and `localhost` at
    /// the bound port are accepted: an IP cannot be rebound, a name can, so other names need
    /// `--allow-host`.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        let port = port.unwrap_or(80);
        if self
            .allow
            .iter()
            .any(|a| *a == host || (split_host(a).is_some_and(|(n, p)| p.is_none() && n == name)))
        {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(_) if self.bound.ip().is_unspecified() => true,
            Ok(ip) => ip == self.bound.ip() && port == self.bound.port(),
            // `localhost` resolves on this machine, so no foreign page can rebind it.
            Err(_) => {
                name == "localhost"
                    && (self.bound.ip().is_loopback() || self.bound.ip().is_unspecified())
                    && port == self.bound.port()
            }
        }
    }
}

/// `name[:port]` or `[v6][:port]` → (name without brackets, port). `None` when malformed.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            Some(_) => return None, // a bare IPv6 address must be bracketed
            None => (host, None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((name, port))
}

fn refuse(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(api::ErrorBody { error: msg.into() })).into_response()
}

/// Shown back in errors: printable ASCII, at most 100 characters.
fn shown(v: &str) -> String {
    v.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(100)
        .collect()
}

/// The layers of every route, outermost last: host check, request log, panic catcher,
/// security headers.
pub fn outer_layers(app: Router, guard: &Arc<Guard>) -> Router {
    app.layer(from_fn(json_method_not_allowed))
        .layer(from_fn_with_state(guard.clone(), check_host))
        .layer(from_fn(log_requests))
        .layer(from_fn(catch_panic))
        .layer(from_fn(security_headers))
}

/// The layers of the `/api` routes, run in this order: same-origin check, token, body read
/// under its timeout, handler under the request timeout.
pub fn api_layers<S: Clone + Send + Sync + 'static>(
    api: Router<S>,
    guard: &Arc<Guard>,
) -> Router<S> {
    api.layer(from_fn_with_state(guard.clone(), bounded))
        .layer(from_fn_with_state(guard.clone(), auth))
        .layer(from_fn(same_origin))
}

/// axum answers a method that a route does not take with 405 and an empty body; every other
/// error is `{"error": …}`, so this one is too (its `Allow` header kept).
async fn json_method_not_allowed(req: Request, next: Next) -> Response {
    let method = shown(req.method().as_str());
    let res = next.run(req).await;
    if res.status() != StatusCode::METHOD_NOT_ALLOWED || res.body().size_hint().exact() != Some(0) {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut out = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here"),
    );
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Other sites cannot embed the thumbnails (or anything else) with <img>/<script>.
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// Polls a boxed future inside `catch_unwind`; a panic ends it with `Err(payload)`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let fut = &mut self.get_mut().0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

async fn catch_panic(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match CatchUnwind(Box::pin(next.run(req))).await {
        Ok(res) => res,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            tracing::error!("panic in {method} {path}: {msg} (answered 500, still serving)");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request failed on the server (logged)",
            )
        }
    }
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

async fn check_host(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).map(|v| v.to_str());
    let host = match host {
        None => return refuse(StatusCode::BAD_REQUEST, "no Host header"),
        Some(Err(_)) => return refuse(StatusCode::BAD_REQUEST, "Host header is not ASCII"),
        Some(Ok(h)) => h,
    };
    // An absolute-form target (`GET http://name/ HTTP/1.1`) names the host too.
    let authority = req.uri().authority().map(|a| a.as_str());
    for h in std::iter::once(host).chain(authority) {
        if !g.host_allowed(h) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {:?} is not this server's address; to serve under that name, start it \
                     with --allow-host NAME",
                    shown(h)
                ),
            );
        }
    }
    next.run(req).await
}

/// 403 for requests a foreign page made: an `Origin` that is not this server, or a browser's
/// `Sec-Fetch-Site` saying another site. Clients that send neither (curl, the CLI) pass.
async fn same_origin(req: Request, next: Next) -> Response {
    if let Some(why) = cross_origin(req.headers()) {
        return refuse(StatusCode::FORBIDDEN, why);
    }
    next.run(req).await
}

fn cross_origin(h: &HeaderMap) -> Option<String> {
    let site = h
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase());
    if let Some(site) = site.filter(|s| s == "cross-site" || s == "same-site") {
        return Some(format!(
            "cross-origin request refused (Sec-Fetch-Site: {site})"
        ));
    }
    let origin = h.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("?");
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match (authority, host) {
        (Some(a), Some(host)) if a.eq_ignore_ascii_case(host) => None,
        _ => Some(format!(
            "cross-origin request refused (Origin {:?} is not this server)",
            shown(origin)
        )),
    }
}

async fn auth(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Some(token) = &g.token {
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim_start());
        if !given.is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token (send Authorization: Bearer TOKEN; the page takes it \
                 from the URL that `simcase serve` prints, #token=...)",
            );
        }
    }
    next.run(req).await
}

/// A request with a body waits for one of the `max_uploads` permits (503 with Retry-After
/// after [`crate::DECODE_WAIT`]), so that bodies held at once are at most `max_uploads ×
/// max_body` bytes whatever the number of connections; it has its body read whole within the
/// body timeout (408 after, 413 above the upload limit); then the handler runs, permit held,
/// within the request timeout (503 after).
async fn bounded(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let mut _permit = None;
    let req = if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        match tokio::time::timeout(crate::DECODE_WAIT, g.uploads.acquire()).await {
            Ok(Ok(p)) => _permit = Some(p),
            _ => {
                let mut res = refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "busy: {} uploads in flight, none finished within {} s",
                        g.max_uploads,
                        crate::DECODE_WAIT.as_secs()
                    ),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                return res;
            }
        }
        match read_body(&g, req).await {
            Ok(r) => r,
            Err(res) => return res,
        }
    } else {
        req
    };
    match tokio::time::timeout(g.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(
                "a request ran past the {} s request timeout",
                g.request_timeout.as_secs_f64()
            );
            let mut res = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {} s; try again",
                    g.request_timeout.as_secs_f64()
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            res
        }
    }
}

async fn read_body(g: &Guard, req: Request) -> std::result::Result<Request, Response> {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload: larger than the {} MiB limit", g.max_body >> 20),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > g.max_body as u64) {
        return Err(too_large());
    }
    let (parts, mut body) = req.into_parts();
    let deadline = tokio::time::Instant::now() + g.body_timeout;
    // Grown as data arrives: a declared length alone reserves at most 1 MiB.
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(1 << 20) as usize);
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, next).await {
            Err(_) => {
                return Err(refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "upload: the body was not received within {} s",
                        g.body_timeout.as_secs_f64()
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("upload: reading the body: {e}"),
                ))
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > g.max_body {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(Request::from_parts(parts, Body::from(Bytes::from(buf))))
}

/// Connection limits for [`serve_on`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time allowed to send a request head (also how long an idle keep-alive connection
    /// lasts, and how long a response may wait for the client to read any of it).
    pub header_timeout: Duration,
}

/// A stream whose writes must make progress within `limit`. hyper times out reading a request
/// head, not writing a response: a client that sends requests and never reads the answers
/// (its receive window full) held its connection slot for as long as it liked, and 256 such
/// connections locked everyone out, tokens or not.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed when a write first finds the socket full; disarmed by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What a write that could not proceed answers: pending, or the error that ends the
    /// connection once the client has read nothing for `limit`.
    fn stall<T>(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read none of its response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// `r`, disarming the deadline when it is ready, or [`Self::stall`].
    fn progress<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(r, cx)
    }
}

/// Serve `app` on `listener` until `shutdown` completes: HTTP/1.1, at most
/// `limits.max_connections` connections at once, each dropped when a request head takes more
/// than `limits.header_timeout`, or a response waits that long for the client to read any of
/// it ([`WriteDeadline`]).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    anyhow::ensure!(
        limits.max_connections > 0,
        "--max-connections must be at least 1"
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.context("connection limiter closed")?,
            _ = &mut shutdown => return Ok(()),
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait, and go on serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let stream = WriteDeadline::new(stream, limits.header_timeout);
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use axum::routing::get;

    fn guard(bind: &str, allow: &[&str]) -> Guard {
        let mut cfg = crate::Config::new("unused".into());
        cfg.allow_hosts = allow.iter().map(|s| s.to_string()).collect();
        Guard::new(&cfg, bind.parse().unwrap())
    }

    #[test]
    fn hosts_are_the_bound_address_localhost_on_loopback_or_allowed_names() {
        let g = guard("127.0.0.1:8080", &["simcase.example", "Proxy.Example:443"]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "simcase.example",
            "simcase.example:9",
            "proxy.example:443",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost",
            "10.0.0.1:8080",
            "proxy.example:80",
            "proxy.example",
            "",
            ":8080",
            "127.0.0.1:notaport",
            "localhost.:8080",
            "::1:8080",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        let any = guard("0.0.0.0:8080", &[]);
        assert!(any.host_allowed("192.168.1.20:8080"));
        assert!(any.host_allowed("[fe80::1]:9000"));
        assert!(any.host_allowed("localhost:8080"));
        assert!(!any.host_allowed("localhost:8081"));
        assert!(!any.host_allowed("evil.example:8080"));
        let v6 = guard("[::1]:8080", &[]);
        assert!(v6.host_allowed("[::1]:8080") && v6.host_allowed("localhost:8080"));
        assert!(!v6.host_allowed("127.0.0.1:8080"));
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (generate_token().unwrap(), generate_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(constant_time_eq(a.as_bytes(), a.clone().as_bytes()));
        let mut last = a.clone().into_bytes();
        *last.last_mut().unwrap() ^= 1;
        assert!(!constant_time_eq(a.as_bytes(), &last));
        assert!(!constant_time_eq(a.as_bytes(), &a.as_bytes()[..63]));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn origins_and_fetch_sites() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(cross_origin(&h(&[])).is_none());
        assert!(cross_origin(&h(&[("origin", "http://127.0.0.1:8080")])).is_none());
        assert!(cross_origin(&h(&[("sec-fetch-site", "same-origin")])).is_none());
        assert!(cross_origin(&h(&[("sec-fetch-site", "none")])).is_none());
        for bad in [
            h(&[("origin", "http://evil.example")]),
            h(&[("origin", "null")]),
            h(&[("origin", "http://127.0.0.1:8081")]),
            h(&[("sec-fetch-site", "cross-site")]),
            h(&[("sec-fetch-site", "same-site")]),
        ] {
            assert!(cross_origin(&bad).is_some(), "{bad:?}");
        }
    }

    /// `serve_on` on a loopback port for one test; `app` is made for the bound address.
    struct TestServer {
        addr: SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<()>>,
    }

    impl TestServer {
        async fn start(app: impl FnOnce(SocketAddr) -> Router, limits: Limits) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve_on(listener, app(addr), limits, async {
                let _ = rx.await;
            }));
            Self { addr, stop, task }
        }

        /// Shut it down; it must end without error.
        async fn stop(self) {
            let _ = self.stop.send(());
            self.task.await.unwrap().unwrap();
        }
    }

    async fn boom() -> &'static str {
        panic!("deliberate test panic")
    }

    /// A handler that panics answers 500 with a JSON error, and the same server (the same
    /// connection, even) goes on answering; a handler that runs past the request timeout is
    /// answered 503.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_is_a_500_and_the_server_goes_on() {
        let app = |addr| {
            let mut cfg = crate::Config::new("unused".into());
            cfg.token = None;
            cfg.request_timeout = Duration::from_secs(1);
            let g = Arc::new(Guard::new(&cfg, addr));
            let api = Router::new().route(
                "/api/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    "slow"
                }),
            );
            let app = Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "fine" }))
                .merge(api_layers(api, &g));
            outer_layers(app, &g)
        };
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(5),
        };
        let server = TestServer::start(app, limits).await;
        let a = server.addr.to_string();
        let (boom, fine, slow, took) = tokio::task::spawn_blocking(move || {
            let mut c = Client::new(&a);
            let boom = c.get("/boom").unwrap();
            let fine = c.get("/fine").unwrap();
            let t = Instant::now();
            let slow = c.get("/api/slow").unwrap();
            (boom, fine, slow, t.elapsed())
        })
        .await
        .unwrap();
        assert_eq!(boom.status, 500, "{}", boom.text());
        assert!(boom.json().unwrap()["error"].is_string());
        assert_eq!(fine.status, 200);
        assert_eq!(fine.text(), "fine");
        assert_eq!(slow.status, 503, "{}", slow.text());
        assert!(slow.json().unwrap()["error"].is_string());
        assert!(took < Duration::from_secs(10), "{took:?}");
        server.stop().await;
    }

    /// A client that pipelines requests for a large response and never reads them loses its
    /// connection once its responses have waited `header_timeout`: with one connection slot,
    /// a second client is served after that (before, never, while the first stayed open).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_loses_its_connection() {
        let app = |_| {
            Router::new()
                .route("/big", get(|| async { vec![b'x'; 8 << 20] }))
                .route("/fine", get(|| async { "fine" }))
        };
        let limits = Limits {
            max_connections: 1,
            header_timeout: Duration::from_secs(1),
        };
        let server = TestServer::start(app, limits).await;
        let addr = server.addr;
        let (fine, took) = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut stalled = std::net::TcpStream::connect(addr).unwrap();
            let req = format!("GET /big HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            // 128 MiB of answers: more than any socket's buffers hold.
            stalled.write_all(req.repeat(16).as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            let mut c = Client::new(&addr.to_string());
            let fine = c.get("/fine");
            drop(stalled);
            (fine, t.elapsed())
        })
        .await
        .unwrap();
        let fine = fine.unwrap();
        assert_eq!(fine.status, 200, "{}", fine.text());
        assert!(took < Duration::from_secs(10), "{took:?}");
        server.stop().await;
    }

    /// A method a route does not take is a 405 with the JSON error body (and `Allow`), and the
    /// token's scheme is read whatever its case.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_methods_answer_json_and_the_bearer_scheme_ignores_case() {
        let app = |addr| {
            let mut cfg = crate::Config::new("unused".into());
            cfg.token = Some("t0ken".into());
            let g = Arc::new(Guard::new(&cfg, addr));
            let api = Router::new().route("/api/x", get(|| async { "x" }));
            outer_layers(Router::new().merge(api_layers(api, &g)), &g)
        };
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(5),
        };
        let server = TestServer::start(app, limits).await;
        let addr = server.addr;
        let answers = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let raw = |method: &str, auth: &str| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                let req = format!(
                    "{method} /api/x HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes()).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            };
            [
                raw("GET", "bearer t0ken"),
                raw("GET", "BEARER  t0ken"),
                raw("GET", "Basic t0ken"),
                raw("DELETE", "Bearer t0ken"),
            ]
        })
        .await
        .unwrap();
        assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
        assert!(answers[1].starts_with("HTTP/1.1 200"), "{}", answers[1]);
        assert!(answers[2].starts_with("HTTP/1.1 401"), "{}", answers[2]);
        let d = &answers[3];
        assert!(d.starts_with("HTTP/1.1 405"), "{d}");
        assert!(
            d.to_ascii_lowercase().contains("\r\nallow: get,head"),
            "{d}"
        );
        assert!(
            d.ends_with("{\"error\":\"DELETE is not allowed here\"}"),
            "{d}"
        );
        server.stop().await;
    }
}
