//! `simcase bench serve --chaos`: a soak of a real server process on loopback for a bounded
//! time. Many connections mix valid searches (by id and by upload), hostile requests
//! ([`crate::hostile`]), uploads of PNGs that decode to 64 M pixels, and slow clients that
//! send half their headers and hold the connection. A watcher polls the server process: it
//! must stay alive, answer no 5xx but 503, and keep its peak RSS (`VmHWM`) under the bound.
//! Past the bound the server is stopped at once (so a soak cannot exhaust the machine) and
//! the run fails.

use crate::hostile::{generate, Bodies, Body, Case, Rng, Target};
use crate::{rss, wire};
use anyhow::{bail, Context, Result};
use simcase_server::client::{multipart_file, Client};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a soak goes.
#[derive(Clone, Debug)]
pub struct Options {
    /// The token the server was started with (sent as `Authorization: Bearer`).
    pub token: String,
    /// Length of the soak.
    pub secs: f64,
    /// Client connections sending requests back to back.
    pub connections: usize,
    /// Connections held open with half-sent headers, besides the short ones the clients open.
    pub slow_clients: usize,
    /// The server's peak RSS must stay under this (MiB).
    pub rss_bound_mb: u64,
    /// Most bomb uploads in flight at once.
    pub max_bombs: usize,
    /// A real PNG, the valid upload.
    pub upload: PathBuf,
    /// The RNG's seed.
    pub seed: u64,
    /// Where the server's stderr goes.
    pub log: PathBuf,
}

/// What a soak measured.
#[derive(Debug, Default)]
pub struct Report {
    /// The server's address.
    pub addr: String,
    /// Items in the served index.
    pub items: u64,
    /// Wall time.
    pub seconds: f64,
    /// Requests answered or failed (slow clients not counted).
    pub requests: usize,
    /// Valid searches sent (by id and by upload).
    pub valid: usize,
    /// Valid searches answered 2xx.
    pub valid_ok: usize,
    /// Latency of valid searches answered 2xx: p50, p99, max (ms).
    pub valid_ms: (f64, f64, f64),
    /// Answers by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused, reset, timed out).
    pub io_errors: usize,
    /// Bomb uploads sent.
    pub bombs: usize,
    /// Slow clients opened, and how many of them the server closed before the end.
    pub slow: (usize, usize),
    /// 5xx answers other than 503, with their cases (at most 20 kept).
    pub bad_5xx: Vec<String>,
    /// How many 5xx other than 503.
    pub bad_5xx_count: usize,
    /// Set when the server process died by itself.
    pub crashed: Option<String>,
    /// Set when the watcher stopped the server for passing the RSS bound.
    pub stopped_at_bound: bool,
    /// The server's peak RSS (`VmHWM`), bytes.
    pub peak_rss: Option<u64>,
    /// The bound, bytes.
    pub rss_bound: u64,
}

impl Report {
    /// Every broken rule: a crash, 5xx other than 503, RSS past the bound, no valid search
    /// answered.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(c) = &self.crashed {
            v.push(format!("the server crashed: {c}"));
        }
        if self.bad_5xx_count > 0 {
            v.push(format!("{} answers 5xx other than 503", self.bad_5xx_count));
        }
        if self.stopped_at_bound || self.peak_rss.is_some_and(|p| p > self.rss_bound) {
            v.push(format!(
                "peak RSS {:.0} MiB past the bound {:.0} MiB{}",
                rss::mib(self.peak_rss.unwrap_or(0)),
                rss::mib(self.rss_bound),
                if self.stopped_at_bound {
                    " (server stopped by the watcher)"
                } else {
                    ""
                }
            ));
        }
        if self.peak_rss.is_none() {
            v.push("the server's RSS could not be read (/proc)".into());
        }
        if self.valid_ok == 0 {
            v.push("no valid search was answered".into());
        }
        v
    }

    /// The report as a Markdown table and a few lines.
    pub fn render(&self) -> String {
        let count = |f: &dyn Fn(u16) -> bool| -> usize {
            self.statuses
                .iter()
                .filter(|(s, _)| f(**s))
                .map(|(_, n)| n)
                .sum()
        };
        let mut s = format!(
            "chaos soak: {:.1} s against http://{} ({} items)\n\
             | requests | valid searches (2xx/sent) | p50 ms | p99 ms | max ms | 2xx | 4xx | 503 | 5xx not 503 | no answer | bombs | crashes | peak RSS MiB | bound MiB |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.seconds, self.addr, self.items
        );
        s.push_str(&format!(
            "| {} | {}/{} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            self.requests,
            self.valid_ok,
            self.valid,
            self.valid_ms.0,
            self.valid_ms.1,
            self.valid_ms.2,
            count(&|s| (200..300).contains(&s)),
            count(&|s| (400..500).contains(&s)),
            count(&|s| s == 503),
            self.bad_5xx_count,
            self.io_errors,
            self.bombs,
            usize::from(self.crashed.is_some()),
            self.peak_rss
                .map(|p| format!("{:.0}", rss::mib(p)))
                .unwrap_or_else(|| "?".into()),
            rss::mib(self.rss_bound),
        ));
        let st: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        s.push_str(&format!("statuses: {}\n", st.join(", ")));
        s.push_str(&format!(
            "slow clients: {} opened, {} closed by the server\n",
            self.slow.0, self.slow.1
        ));
        for b in &self.bad_5xx {
            s.push_str(&format!("  5xx: {b}\n"));
        }
        s
    }
}

/// 32 hex digits from the OS random source.
pub fn random_token() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for a token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[derive(Default)]
struct Tally {
    requests: usize,
    valid: usize,
    valid_ms: Vec<f64>,
    statuses: BTreeMap<u16, usize>,
    io_errors: usize,
    bombs: usize,
    bad: Vec<String>,
    bad_count: usize,
}

impl Tally {
    fn status(&mut self, s: u16, case: impl FnOnce() -> String) {
        self.requests += 1;
        *self.statuses.entry(s).or_default() += 1;
        if s >= 500 && s != 503 {
            self.bad_count += 1;
            if self.bad.len() < 20 {
                self.bad.push(format!("{s} {}", case()));
            }
        }
    }
}

/// Start `server` (a `simcase serve` command line that binds `127.0.0.1:0` and prints
/// `listening on http://ADDR` first on stdout), soak it, stop it, and report.
pub fn run(mut server: Command, opts: &Options) -> Result<Report> {
    let png = std::fs::read(&opts.upload)
        .with_context(|| format!("reading {}", opts.upload.display()))?;
    let log = std::fs::File::create(&opts.log)
        .with_context(|| format!("creating {}", opts.log.display()))?;
    let mut child = server
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the server")?;
    let log_tail = || {
        let t = std::fs::read_to_string(&opts.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    let mut line = String::new();
    let stdout = child.stdout.take().context("no stdout")?;
    let mut stdout = BufReader::new(stdout);
    let _ = stdout.read_line(&mut line);
    let Some(addr) = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|r| r.split(['/', ' ']).next())
        .map(str::to_string)
    else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "the server did not start (first line {line:?}); its log {}:\n{}",
            opts.log.display(),
            log_tail()
        );
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    let pid = child.id();
    let child = Arc::new(Mutex::new(child));
    let result = soak(&addr, pid, &child, png, opts);
    let mut c = child.lock().unwrap_or_else(|p| p.into_inner());
    let _ = c.kill();
    let _ = c.wait();
    let mut rep = result?;
    if rep.crashed.is_some() {
        rep.crashed = Some(format!(
            "{}; log {}:\n{}",
            rep.crashed.unwrap_or_default(),
            opts.log.display(),
            log_tail()
        ));
    }
    Ok(rep)
}

fn soak(
    addr: &str,
    pid: u32,
    child: &Arc<Mutex<Child>>,
    png: Vec<u8>,
    opts: &Options,
) -> Result<Report> {
    let mut c = Client::new(addr).with_token(&opts.token);
    let stats = c.get("/api/stats")?.json()?;
    let items = stats["items"]
        .as_u64()
        .context("no item count in /api/stats")?;
    anyhow::ensure!(items > 0, "the served index is empty");
    let target = Target {
        items,
        text_search: stats["text_search"].as_bool().unwrap_or(false),
        max_k: 500,
    };
    let bodies = Bodies::new(png.clone());
    // Build the bomb once before the clock starts.
    let _ = bodies.bytes(&Body::BombPng { w: 8000, h: 8000 });
    let (upload_ty, upload_body) = multipart_file("query.png", &png);
    let stop = AtomicBool::new(false);
    let crashed: Mutex<Option<String>> = Mutex::new(None);
    let stopped_at_bound = AtomicBool::new(false);
    let peak = Mutex::new(None::<u64>);
    let bombs_in_flight = AtomicUsize::new(0);
    let slow_opened = AtomicUsize::new(0);
    let slow_closed = AtomicUsize::new(0);
    let bound = opts.rss_bound_mb << 20;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.secs);
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        // The watcher.
        s.spawn(|| {
            while !stop.load(SeqCst) {
                let exited = child
                    .lock()
                    .map(|mut c| c.try_wait().ok().flatten())
                    .unwrap_or(None);
                if let Some(st) = exited {
                    *crashed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("exited by itself: {st}"));
                    stop.store(true, SeqCst);
                    break;
                }
                if let Some((now, hwm)) = rss::of(Some(pid)) {
                    *peak.lock().unwrap_or_else(|p| p.into_inner()) = Some(hwm);
                    if now > bound {
                        stopped_at_bound.store(true, SeqCst);
                        if let Ok(mut c) = child.lock() {
                            let _ = c.kill();
                        }
                        stop.store(true, SeqCst);
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        for _ in 0..opts.slow_clients {
            s.spawn(|| {
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    slow_opened.fetch_add(1, SeqCst);
                    match wire::slow_client(addr, addr, deadline) {
                        Ok(true) => {
                            slow_closed.fetch_add(1, SeqCst);
                        }
                        Ok(false) => break,
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            });
        }
        let workers: Vec<_> = (0..opts.connections)
            .map(|w| {
                let (bodies, target, stop) = (&bodies, &target, &stop);
                let (upload_ty, upload_body) = (&upload_ty, &upload_body);
                let bombs_in_flight = &bombs_in_flight;
                let (slow_opened, slow_closed) = (&slow_opened, &slow_closed);
                s.spawn(move || {
                    let mut rng = Rng::new(opts.seed.wrapping_add(w as u64 * 0x9E37));
                    let mut client = Client::new(addr).with_token(&opts.token);
                    let mut t = Tally::default();
                    let timeout = Duration::from_secs(60);
                    while !stop.load(SeqCst) && Instant::now() < deadline {
                        let roll = rng.below(100);
                        if roll < 55 {
                            // A valid search: by id mostly, by upload sometimes.
                            let begin = Instant::now();
                            let r = if roll < 45 {
                                let id = rng.below(target.items);
                                client.get(&format!("/api/search?id={id}&k=10"))
                            } else {
                                client.post("/api/search?k=10", upload_ty, upload_body)
                            };
                            t.valid += 1;
                            match r {
                                Ok(r) => {
                                    if (200..300).contains(&r.status) {
                                        t.valid_ms.push(begin.elapsed().as_secs_f64() * 1e3);
                                    }
                                    t.status(r.status, || format!("valid search: {}", r.text()));
                                }
                                Err(_) => {
                                    t.requests += 1;
                                    t.io_errors += 1;
                                }
                            }
                            continue;
                        }
                        let case = if roll < 85 {
                            generate(&mut rng, target)
                        } else if roll < 95 {
                            Case {
                                method: "POST".into(),
                                body: Body::BombPng { w: 8000, h: 8000 },
                                ..Case::get("/api/search?k=5")
                            }
                        } else {
                            let hold =
                                Instant::now() + Duration::from_millis(500 + rng.below(2500));
                            slow_opened.fetch_add(1, SeqCst);
                            if let Ok(true) = wire::slow_client(addr, addr, hold.min(deadline)) {
                                slow_closed.fetch_add(1, SeqCst);
                            }
                            continue;
                        };
                        let bomb = matches!(case.body, Body::BombPng { .. });
                        if bomb {
                            if bombs_in_flight.fetch_add(1, SeqCst) >= opts.max_bombs {
                                bombs_in_flight.fetch_sub(1, SeqCst);
                                continue;
                            }
                            t.bombs += 1;
                        }
                        let body = bodies.bytes(&case.body);
                        let headers = case.all_headers(
                            addr,
                            Some(&opts.token),
                            body.as_ref().map(|b| b.0.as_str()),
                        );
                        let r = wire::exchange(
                            addr,
                            &case.method,
                            &case.target,
                            &headers,
                            body.as_ref().map(|b| b.1.as_slice()),
                            timeout,
                        );
                        if bomb {
                            bombs_in_flight.fetch_sub(1, SeqCst);
                        }
                        match r {
                            Ok(st) => t.status(st, || case.to_line()),
                            Err(_) => {
                                t.requests += 1;
                                t.io_errors += 1;
                            }
                        }
                    }
                    t
                })
            })
            .collect();
        let tallies: Vec<Tally> = workers
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        stop.store(true, SeqCst);
        tallies
    });
    // One last look: a server that died at the very end died all the same.
    let exited = child
        .lock()
        .map(|mut c| c.try_wait().ok().flatten())
        .unwrap_or(None);
    let mut crashed = crashed.into_inner().unwrap_or_else(|p| p.into_inner());
    let stopped_at_bound = stopped_at_bound.load(SeqCst);
    if crashed.is_none() && !stopped_at_bound {
        if let Some(st) = exited {
            crashed = Some(format!("exited by itself: {st}"));
        }
    }
    let final_peak = rss::of(Some(pid)).map(|r| r.1);
    let peak = final_peak.or(peak.into_inner().unwrap_or_else(|p| p.into_inner()));
    let mut rep = Report {
        addr: addr.to_string(),
        items,
        seconds: start.elapsed().as_secs_f64(),
        crashed,
        stopped_at_bound,
        peak_rss: peak,
        rss_bound: bound,
        slow: (slow_opened.load(SeqCst), slow_closed.load(SeqCst)),
        ..Default::default()
    };
    let mut lat = Vec::new();
    for t in tallies {
        rep.requests += t.requests;
        rep.valid += t.valid;
        rep.io_errors += t.io_errors;
        rep.bombs += t.bombs;
        rep.bad_5xx_count += t.bad_count;
        rep.bad_5xx.extend(t.bad);
        for (s, n) in t.statuses {
            *rep.statuses.entry(s).or_default() += n;
        }
        lat.extend(t.valid_ms);
    }
    rep.bad_5xx.truncate(20);
    rep.valid_ok = lat.len();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * q).round() as usize]
        }
    };
    rep.valid_ms = (pct(0.5), pct(0.99), lat.last().copied().unwrap_or(0.0));
    Ok(rep)
}
