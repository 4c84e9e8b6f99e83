//! A bounded load generator (`simcase bench serve`): N keep-alive connections, each sending
//! requests back to back for a fixed time; reports throughput, latency percentiles and errors.

use crate::client::Client;
use std::time::{Duration, Instant};

/// One request: method, path, and an optional (content type, body).
pub type Request = (&'static str, String, Option<(String, Vec<u8>)>);

/// Builds client `conn`'s `i`-th request.
pub type MakeRequest<'a> = &'a (dyn Fn(usize, usize) -> Request + Sync);

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests completed (errors included).
    pub requests: usize,
    /// Non-2xx replies and I/O failures.
    pub errors: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th-percentile latency.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
}

impl Report {
    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Run `connections` clients against `addr` for `duration`; `make(conn, i)` builds each
/// client's i-th request. Non-2xx replies and I/O failures count as errors.
pub fn run(
    addr: &str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
    make: MakeRequest,
) -> Report {
    let start = Instant::now();
    let per: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|c| {
                s.spawn(move || {
                    let mut client = Client::new(addr);
                    if let Some(t) = token {
                        client = client.with_token(t);
                    }
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    let mut i = 0;
                    while start.elapsed() < duration {
                        let (method, path, body) = make(c, i);
                        i += 1;
                        let t = Instant::now();
                        let r = client.send(
                            method,
                            &path,
                            body.as_ref().map(|(ty, b)| (ty.as_str(), b.as_slice())),
                        );
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        if !matches!(r, Ok(ref r) if (200..300).contains(&r.status)) {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let errors = per.iter().map(|p| p.1).sum();
    let mut lat: Vec<f64> = per.into_iter().flat_map(|p| p.0).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * q).round() as usize]
        }
    };
    Report {
        requests: lat.len(),
        errors,
        seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
    }
}
