//! The API fuzzed in process: generated requests ([`crate::hostile`]) sent one at a time to the
//! server's router (`simcase_server::app`) with `tower::ServiceExt::oneshot`, no socket in
//! between, for a stated time. Kept cases (a regression file) are replayed first.
//!
//! A finding is a panic, a 5xx other than 503, no answer within `max_secs`, a request during
//! which the process's peak RSS grew past `rss_growth_mb`, or a 2xx for a request carrying an
//! invalid parameter. One that aborts the process cannot be reported from inside it: each case
//! is written to `pending` before it is sent, so the caller that watches this process knows
//! which case killed it.

use crate::hostile::{generate, read_cases, Bodies, Case, Rng, Target};
use crate::rss;
use anyhow::{Context, Result};
use axum::body::Body as HttpBody;
use axum::http::Request;
use axum::Router;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// How a fuzz run goes.
#[derive(Clone, Debug)]
pub struct Options {
    /// The index served (its model must be installed).
    pub index: PathBuf,
    /// How long to generate cases for, after the kept ones.
    pub secs: f64,
    /// The RNG's seed (printed, so a run can be repeated).
    pub seed: u64,
    /// Regression file: replayed first; new findings are appended (one JSON case a line).
    pub kept: Option<PathBuf>,
    /// Each case is written here just before it is sent.
    pub pending: Option<PathBuf>,
    /// A real PNG, the valid upload.
    pub sample_png: PathBuf,
    /// A request with no answer within this many seconds is a finding.
    pub max_secs: f64,
    /// A request during which the peak RSS grows by more than this is a finding (MiB).
    pub rss_growth_mb: u64,
    /// Stop generating after this many findings.
    pub max_findings: usize,
    /// Generated cases whose target contains one of these are not sent (to explore past a
    /// known finding that kills the process).
    pub exclude: Vec<String>,
}

/// What a fuzz run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Kept cases replayed.
    pub replayed: usize,
    /// Kept cases that are findings still.
    pub regressions: usize,
    /// Cases generated and sent.
    pub generated: usize,
    /// Cases the HTTP library refused to build (bad header bytes); not sent.
    pub unsendable: usize,
    /// Answers by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Findings (replayed and new), shrunk where possible, each with its note.
    pub findings: Vec<Case>,
    /// The largest peak-RSS growth of one request (bytes), where it could be measured.
    pub max_growth: Option<u64>,
    /// The slowest answer, in seconds.
    pub max_secs: f64,
}

#[derive(Debug)]
enum Outcome {
    Answer(u16, Vec<u8>),
    Panic(String),
    Timeout,
    Unsendable,
}

/// The class of a finding: what must not change while a case is shrunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Panic,
    Status,
    Slow,
    Memory,
    AcceptedInvalid,
}

struct Harness {
    app: Router,
    bodies: Bodies,
    host: String,
    token: String,
    max: Duration,
    growth_bound: u64,
    rss_ok: bool,
    pending: Option<PathBuf>,
}

impl Harness {
    async fn send(&self, case: &Case) -> (Outcome, Option<u64>, f64) {
        if let Some(p) = &self.pending {
            let _ = std::fs::write(p, case.to_line() + "\n");
        }
        let body = self.bodies.bytes(&case.body);
        let mut b = Request::builder()
            .method(case.method.as_str())
            .uri(case.target.as_str());
        let ty = body.as_ref().map(|b| b.0.as_str());
        for (k, v) in case.all_headers(&self.host, Some(&self.token), ty) {
            b = b.header(k, v);
        }
        let bytes = body.map(|b| b.1).unwrap_or_default();
        if !bytes.is_empty() || case.method == "POST" {
            b = b.header("content-length", bytes.len());
        }
        let Ok(req) = b.body(HttpBody::from(bytes)) else {
            return (Outcome::Unsendable, None, 0.0);
        };
        let before = if self.rss_ok && rss::reset_peak(None) {
            rss::of(None).map(|r| r.0)
        } else {
            None
        };
        let app = self.app.clone();
        let t = Instant::now();
        let mut task = tokio::spawn(async move {
            let res = match app.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let status = res.status().as_u16();
            let body = axum::body::to_bytes(res.into_body(), 256 << 20)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_else(|e| format!("(body failed: {e})").into_bytes());
            (status, body)
        });
        let out = match tokio::time::timeout(self.max, &mut task).await {
            Err(_) => {
                task.abort();
                Outcome::Timeout
            }
            Ok(Err(e)) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                Outcome::Panic(msg)
            }
            Ok(Err(e)) => Outcome::Panic(e.to_string()),
            Ok(Ok((s, b))) => Outcome::Answer(s, b),
        };
        let secs = t.elapsed().as_secs_f64();
        let growth = before.and_then(|b| rss::of(None).map(|r| r.1.saturating_sub(b)));
        (out, growth, secs)
    }

    fn judge(&self, case: &Case, out: &Outcome, growth: Option<u64>) -> Option<(Class, String)> {
        let what = |s: &str| s.chars().take(200).collect::<String>();
        match out {
            Outcome::Panic(m) => return Some((Class::Panic, format!("panic: {}", what(m)))),
            Outcome::Timeout => {
                return Some((
                    Class::Slow,
                    format!("no answer within {:.0} s", self.max.as_secs_f64()),
                ))
            }
            Outcome::Answer(s, b) if *s >= 500 && *s != 503 => {
                return Some((
                    Class::Status,
                    format!("status {s}: {}", what(&String::from_utf8_lossy(b))),
                ))
            }
            _ => {}
        }
        if let Some(g) = growth.filter(|g| *g > self.growth_bound) {
            return Some((
                Class::Memory,
                format!(
                    "peak RSS grew by {:.0} MiB (bound {:.0} MiB)",
                    rss::mib(g),
                    rss::mib(self.growth_bound)
                ),
            ));
        }
        match out {
            Outcome::Answer(s, _) if case.invalid && (200..300).contains(s) => Some((
                Class::AcceptedInvalid,
                format!("status {s} for an invalid parameter (a 4xx expected)"),
            )),
            _ => None,
        }
    }

    /// Smaller versions of `case` (one query pair or header fewer) that give the same class
    /// of finding; only for classes that do not depend on which parameters are invalid.
    async fn shrink(&self, mut case: Case, class: Class) -> Case {
        if !matches!(class, Class::Panic | Class::Status | Class::Memory) {
            return case;
        }
        let mut tries = 0;
        'outer: loop {
            let (path, query) = match case.target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (case.target.clone(), String::new()),
            };
            let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
            let mut variants = Vec::new();
            for i in 0..pairs.len() {
                let rest: Vec<&str> = pairs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect();
                let mut v = case.clone();
                v.target = if rest.is_empty() {
                    path.clone()
                } else {
                    format!("{path}?{}", rest.join("&"))
                };
                variants.push(v);
            }
            for i in 0..case.headers.len() {
                let mut v = case.clone();
                v.headers.remove(i);
                variants.push(v);
            }
            for v in variants {
                tries += 1;
                if tries > 24 {
                    break 'outer;
                }
                let (out, growth, _) = self.send(&v).await;
                if self
                    .judge(&v, &out, growth)
                    .is_some_and(|(c, _)| c == class)
                {
                    case = v;
                    continue 'outer;
                }
            }
            break;
        }
        case
    }
}

/// Fuzz the router over `opts.index` for `opts.secs`; the report lists every finding. New
/// findings are appended to `opts.kept`.
pub fn run(opts: &Options) -> Result<Report> {
    let png = std::fs::read(&opts.sample_png)
        .with_context(|| format!("reading {}", opts.sample_png.display()))?;
    let kept = match &opts.kept {
        Some(p) => read_cases(p)?,
        None => vec![],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut cfg = simcase_server::Config::new(opts.index.clone());
        // An explicit token, sent with every request beside a Host equal to the bound address.
        cfg.token = Some(format!("fuzz-{:x}", opts.seed));
        let target = {
            let snap = simcase_index::Snapshot::open(&opts.index)?;
            let model: simcase_models::ModelSet = snap.settings().model.parse()?;
            Target {
                items: snap.len() as u64,
                text_search: model.text_model().is_some(),
                max_k: cfg.max_k as u64,
            }
        };
        anyhow::ensure!(
            target.items > 0,
            "{}: the index is empty",
            opts.index.display()
        );
        let h = Harness {
            host: cfg.bind.to_string(),
            token: cfg.token.clone().unwrap_or_default(),
            app: simcase_server::app(cfg)?,
            bodies: Bodies::new(png),
            max: Duration::from_secs_f64(opts.max_secs.max(0.1)),
            growth_bound: opts.rss_growth_mb << 20,
            rss_ok: rss::reset_peak(None) && rss::of(None).is_some(),
            pending: opts.pending.clone(),
        };
        let mut rep = Report::default();
        let mut new = Vec::new();
        let mut seen: std::collections::HashSet<String> = Default::default();
        let one = |rep: &mut Report, case: &Case, out: &Outcome, growth: Option<u64>, secs: f64| {
            match out {
                Outcome::Answer(s, _) => *rep.statuses.entry(*s).or_default() += 1,
                Outcome::Unsendable => rep.unsendable += 1,
                _ => {}
            }
            rep.max_secs = rep.max_secs.max(secs);
            if let Some(g) = growth {
                rep.max_growth = Some(rep.max_growth.unwrap_or(0).max(g));
            }
            h.judge(case, out, growth)
        };
        for case in &kept {
            let (out, growth, secs) = h.send(case).await;
            rep.replayed += 1;
            if let Some((_, note)) = one(&mut rep, case, &out, growth, secs) {
                rep.regressions += 1;
                let mut c = case.key();
                c.finding = Some(format!("still: {note}"));
                rep.findings.push(c);
            }
        }
        let mut rng = Rng::new(opts.seed);
        // Bodies that already cost a memory or time finding take seconds each: not again.
        let mut costly = std::collections::HashSet::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < opts.secs && new.len() < opts.max_findings {
            let case = generate(&mut rng, &target);
            if costly.contains(&std::mem::discriminant(&case.body))
                || opts
                    .exclude
                    .iter()
                    .any(|x| case.target.contains(x.as_str()))
            {
                continue;
            }
            let (out, growth, secs) = h.send(&case).await;
            rep.generated += 1;
            let Some((class, _)) = one(&mut rep, &case, &out, growth, secs) else {
                continue;
            };
            // One kept case per kind of finding, route and body kind.
            let route: String = case
                .target
                .split('?')
                .next()
                .unwrap_or("")
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            let sig = format!(
                "{class:?} {} {route} {:?}",
                case.method,
                std::mem::discriminant(&case.body)
            );
            if matches!(class, Class::Memory | Class::Slow) {
                costly.insert(std::mem::discriminant(&case.body));
            }
            if !seen.insert(sig) {
                continue;
            }
            let small = h.shrink(case, class).await;
            // The note comes from the shrunk case's own answer.
            let (out, growth, _) = h.send(&small).await;
            let note = h
                .judge(&small, &out, growth)
                .map(|(_, n)| n)
                .unwrap_or_else(|| format!("{class:?} (not reproduced on replay)"));
            let mut c = small;
            c.finding = Some(note);
            new.push(c);
        }
        if let Some(p) = &opts.pending {
            let _ = std::fs::remove_file(p);
        }
        if let (Some(path), false) = (&opts.kept, new.is_empty()) {
            crate::hostile::keep_cases(path, &new)?;
        }
        rep.findings.extend(new);
        Ok::<Report, anyhow::Error>(rep)
    })
}

impl Report {
    /// The report as text: counts, statuses, then one line per finding.
    pub fn render(&self) -> String {
        let mut s = format!(
            "fuzz: {} kept cases replayed ({} still findings), {} generated, {} unsendable; slowest {:.2} s; largest peak-RSS growth of one request {}\n",
            self.replayed,
            self.regressions,
            self.generated,
            self.unsendable,
            self.max_secs,
            self.max_growth
                .map(|g| format!("{:.0} MiB", rss::mib(g)))
                .unwrap_or_else(|| "not measured".into())
        );
        let st: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        s.push_str(&format!("statuses: {}\n", st.join(", ")));
        s.push_str(&format!("findings: {}\n", self.findings.len()));
        for f in &self.findings {
            s.push_str(&format!(
                "  {} -- {}\n",
                f.finding.as_deref().unwrap_or(""),
                f.to_line()
            ));
        }
        s
    }
}
