//! The blocking gRPC connection to one Milvus server: a one-thread tokio runtime, a tonic
//! channel with the `authorization` header Milvus reads, and one place that turns every failure
//! into one line. Milvus reports most errors inside successful replies (`status.error_code`,
//! `status.code`, `status.reason`), so every reply's status goes through [`check`].

use crate::proto::common::Status;
use crate::proto::milvus::milvus_service_client::MilvusServiceClient;
use crate::proto::milvus::GetVersionRequest;
use crate::MilvusUrl;
use anyhow::{anyhow, Result};
use std::future::Future;
use std::time::Duration;
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// How long connecting may take before the server counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take (a load or an index build is waited for by polling, not here).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest reply accepted (a page of vectors).
const MAX_MESSAGE: usize = 256 << 20;

/// Adds the credentials to every request; its value is marked sensitive, so no Debug output of
/// a request shows it.
#[derive(Clone)]
pub(crate) struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub(crate) type Svc = MilvusServiceClient<InterceptedService<Channel, Auth>>;

/// A connection to the server of one URL.
pub(crate) struct Client {
    rt: tokio::runtime::Runtime,
    svc: Svc,
    /// `host:port`, for messages.
    pub(crate) server: String,
    user: Option<String>,
}

impl Client {
    /// Connect (failing within [`CONNECT_TIMEOUT`] when nothing answers).
    pub(crate) fn connect(url: &MilvusUrl) -> Result<Self> {
        let server = format!("{}:{}", url.host, url.port);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("simcase-milvus")
            .enable_all()
            .build()?;
        let endpoint = Endpoint::from_shared(url.endpoint())
            .map_err(|e| anyhow!("Milvus at {server}: bad address ({e})"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = rt
            .block_on(async {
                tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), endpoint.connect())
                    .await
            })
            .map_err(|_| {
                anyhow!(
                    "cannot reach Milvus at {server}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| anyhow!("cannot reach Milvus at {server}: {}", source_chain(&e)))?;
        let auth = match url.authorization() {
            Some(v) => {
                let mut v: MetadataValue<Ascii> = v
                    .parse()
                    .map_err(|_| anyhow!("Milvus credentials are not valid header text"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let svc = MilvusServiceClient::with_interceptor(channel, Auth(auth))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let client = Self {
            rt,
            svc,
            server,
            user: url.user().map(str::to_string),
        };
        client.probe()?;
        Ok(client)
    }

    /// One cheap call, bounded by the connect timeout: something that accepts connections but
    /// does not answer as Milvus does (a stalled server, another service) fails here, in
    /// seconds, and so do credentials the server refuses.
    fn probe(&self) -> Result<()> {
        let svc = self.svc.clone();
        let server = &self.server;
        let r = self.rt.block_on(async move {
            let mut svc = svc;
            tokio::time::timeout(CONNECT_TIMEOUT, svc.get_version(GetVersionRequest {})).await
        });
        match r {
            Err(_) => Err(anyhow!(
                "cannot reach Milvus at {server}: connected, but no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )),
            Ok(Err(s))
                if s.code() == tonic::Code::Unimplemented
                    || s.message().contains("grpc-status header missing") =>
            {
                Err(anyhow!(
                    "cannot reach Milvus at {server}: something else answers there ({})",
                    one_line(s.message())
                ))
            }
            Ok(Err(s)) => Err(self.grpc_error("connect", &s)),
            Ok(Ok(v)) => check(server, "connect", v.into_inner().status.as_ref()),
        }
    }

    /// Run one call, `what` naming it in errors; transport failures and gRPC errors become one
    /// line.
    pub(crate) fn call<R, F, Fut>(&self, what: &str, f: F) -> Result<R>
    where
        F: FnOnce(Svc) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let svc = self.svc.clone();
        match self.rt.block_on(f(svc)) {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.grpc_error(what, &s)),
        }
    }

    fn grpc_error(&self, what: &str, s: &tonic::Status) -> anyhow::Error {
        let server = &self.server;
        match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                let who = match &self.user {
                    Some(u) => format!("user {u}"),
                    None => "no credentials (give user:password@ in the URL or SIMCASE_MILVUS_USER/SIMCASE_MILVUS_PASSWORD)".into(),
                };
                anyhow!(
                    "Milvus at {server} refused the credentials ({who}): {}",
                    one_line(s.message())
                )
            }
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                if s.message().is_empty() || is_transport(s) =>
            {
                anyhow!(
                    "lost the connection to Milvus at {server} during {what}: {}",
                    status_text(s)
                )
            }
            tonic::Code::DeadlineExceeded => {
                anyhow!(
                    "Milvus at {server} did not answer {what} within {}s",
                    CALL_TIMEOUT.as_secs()
                )
            }
            _ => anyhow!("Milvus at {server}: {what} failed: {}", status_text(s)),
        }
    }

    /// An error unless `status` says success.
    pub(crate) fn check(&self, what: &str, status: Option<&Status>) -> Result<()> {
        check(&self.server, what, status)
    }

    /// Sleep on the runtime (polling loops).
    pub(crate) fn sleep(&self, d: Duration) {
        self.rt.block_on(async move { tokio::time::sleep(d).await });
    }
}

/// An error unless `status` says success (Milvus 2.3 sets `error_code`, deprecated by the
/// newer protos, which is why it is read here; later servers set `code`).
#[allow(deprecated)]
pub(crate) fn check(server: &str, what: &str, status: Option<&Status>) -> Result<()> {
    let Some(s) = status else {
        return Ok(());
    };
    if s.error_code == 0 && s.code == 0 {
        return Ok(());
    }
    let reason = if s.reason.is_empty() {
        format!(
            "error code {}",
            if s.code != 0 { s.code } else { s.error_code }
        )
    } else {
        one_line(&s.reason)
    };
    // Milvus 2.3 reports a bad login inside the status too (code 1800 or error code 3).
    if s.error_code == 3 || s.code == 1800 || reason.contains("auth check failure") {
        return Err(anyhow!(
            "Milvus at {server} refused the credentials: {reason}"
        ));
    }
    Err(anyhow!("Milvus at {server}: {what} failed: {reason}"))
}

fn is_transport(s: &tonic::Status) -> bool {
    let m = s.message().to_ascii_lowercase();
    [
        "transport",
        "connection",
        "broken pipe",
        "reset",
        "h2 protocol",
        "operation was canceled",
        "error trying to connect",
    ]
    .iter()
    .any(|w| m.contains(w))
}

fn status_text(s: &tonic::Status) -> String {
    let mut m = one_line(s.message());
    if let Some(src) = std::error::Error::source(s) {
        m = format!("{m} ({})", one_line(&source_chain(src)));
    }
    if m.is_empty() {
        format!("{:?}", s.code())
    } else {
        m
    }
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    one_line(&parts.join(": "))
}

/// `s` on one line, bounded.
pub(crate) fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    simcase_index::shorten(&s, 400)
}
