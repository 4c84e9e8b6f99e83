//! Requests for the API, valid and hostile, generated from its real parameters (those of
//! `simcase_server::api`: `id`, `text`, `k`, `offset`, `group_by`, the filter fields,
//! `date_from`/`date_to`, `window`, the thumbnail's `size`) with a seeded RNG: huge, negative
//! and NaN numbers, huge offsets, bad dates, long and unicode strings, repeated and unknown
//! parameters, forged headers, and multipart bodies (a real PNG, truncated, empty, text, and
//! PNGs whose header promises a huge image). A [`Case`] is plain data (JSON), so a finding can
//! be kept in a file and replayed; bodies are kept as recipes, not bytes.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// xorshift64*: small, seeded, reproducible; not for anything secret.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// What an upload carries. The sample PNG is a real image given to the harness.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// No body.
    #[default]
    None,
    /// The sample PNG as the multipart `file`.
    Png,
    /// The sample PNG cut after `len` bytes.
    Truncated {
        /// Bytes kept.
        len: usize,
    },
    /// An empty `file`.
    Empty,
    /// Text as the `file`.
    Text {
        /// The file's content.
        text: String,
    },
    /// A real, complete `w`×`h` 8-bit grey PNG: tens of KB on the wire, `w`×`h` pixels decoded.
    BombPng {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
    /// A PNG signature and an IHDR claiming `w`×`h`, then a few bytes of nothing.
    BombHeader {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
    /// A well-formed multipart body whose only field is not `file`.
    NoFile,
    /// The sample PNG twice, as two `file` fields.
    TwoFiles,
    /// A multipart body that never closes its boundary.
    Unterminated,
    /// `len` bytes of noise under a multipart content type.
    Garbage {
        /// Bytes sent.
        len: usize,
    },
}

/// One request: method, target (path and query, as sent), extra headers, body, and what a
/// correct server must do with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Case {
    /// HTTP method.
    pub method: String,
    /// Path and query string, exactly as sent.
    pub target: String,
    /// Headers sent besides the harness's own `Host` and `Authorization`, which a header of
    /// the same name here replaces (an empty value: the header is left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(default, skip_serializing_if = "is_none")]
    pub body: Body,
    /// The request carries a parameter that cannot be valid (a bad number, date, window,
    /// grouping, a missing item): any 2xx answer is a finding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invalid: bool,
    /// Why the case was kept, for the regression file; not part of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

fn is_none(b: &Body) -> bool {
    *b == Body::None
}

impl Case {
    /// A plain request with no extra headers and no body.
    pub fn get(target: impl Into<String>) -> Self {
        Self {
            method: "GET".into(),
            target: target.into(),
            headers: vec![],
            body: Body::None,
            invalid: false,
            finding: None,
        }
    }

    /// The request itself, without the finding note: what deduplicates kept cases.
    pub fn key(&self) -> Case {
        Case {
            finding: None,
            ..self.clone()
        }
    }

    /// The header `name` set by the case (`Some("")`: left out), if it sets one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The headers to send: the case's own, then `Host` and `Authorization` unless it sets
    /// them, then the body's content type unless it sets one; empty values dropped.
    pub fn all_headers(
        &self,
        host: &str,
        token: Option<&str>,
        ty: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self.headers.clone();
        if self.header("host").is_none() {
            h.push(("Host".into(), host.into()));
        }
        if let (None, Some(t)) = (self.header("authorization"), token) {
            h.push(("Authorization".into(), format!("Bearer {t}")));
        }
        if let (None, Some(ty)) = (self.header("content-type"), ty) {
            h.push(("Content-Type".into(), ty.into()));
        }
        h.retain(|(_, v)| !v.is_empty());
        h
    }

    /// One line of a regression file.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Read kept cases: one JSON [`Case`] per line; blank lines and `#` comments skipped. A
/// missing file is an empty list; a bad line is an error naming the file and line.
pub fn read_cases(path: &std::path::Path) -> anyhow::Result<Vec<Case>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        out.push(
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}:{}: not a case: {e}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// Append `cases` not already in the file at `path` (compared without their notes); returns
/// how many were added.
pub fn keep_cases(path: &std::path::Path, cases: &[Case]) -> anyhow::Result<usize> {
    let have: std::collections::HashSet<Case> = read_cases(path)?.iter().map(Case::key).collect();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut added = std::collections::HashSet::new();
    for c in cases {
        if !have.contains(&c.key()) && added.insert(c.key()) {
            writeln!(f, "{}", c.to_line())?;
        }
    }
    Ok(added.len())
}

/// What the generator knows about the served index.
#[derive(Clone, Debug)]
pub struct Target {
    /// Items in the index (ids `0..items` exist).
    pub items: u64,
    /// Whether the model has a text tower (`text=` is then valid).
    pub text_search: bool,
    /// The server's `max_k`.
    pub max_k: u64,
}

/// Whether a value is valid for its parameter, invalid (must be refused), or either (the
/// server may answer 200 or refuse).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum V {
    Ok,
    Bad,
    Either,
}

const LONG: usize = 20_000;

fn hostile_string(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => "A".repeat(LONG),
        1 => "肺炎 🫁 \u{202e}gnp.exe \u{0301}e\u{200b}".into(),
        2 => "\u{0}".into(),
        3 => "' OR 1=1 --".into(),
        4 => "../../../../etc/passwd".into(),
        5 => "%00%ff".into(),
        6 => "🫁".repeat(3000),
        7 => String::new(),
        8 => "<script>alert(1)</script>".into(),
        9 => "\r\nX-Injected: 1".into(),
        10 => "NaN".into(),
        _ => format!("{}", rng.next_u64()),
    }
}

fn number(rng: &mut Rng, lo: u64, hi: u64, huge_ok: bool) -> (String, V) {
    let huge = if huge_ok { V::Ok } else { V::Bad };
    match rng.below(14) {
        0..=4 => ((lo + rng.below(hi - lo + 1)).to_string(), V::Ok),
        5 => ("-1".into(), V::Bad),
        6 => ("NaN".into(), V::Bad),
        7 => ("1000000000000".into(), huge),
        8 => (u64::MAX.to_string(), huge),
        9 => (
            "18446744073709551616".into(),
            if huge_ok { V::Either } else { V::Bad },
        ),
        10 => ("1.5".into(), V::Bad),
        11 => ("abc".into(), V::Bad),
        12 => ("-9223372036854775808".into(), V::Bad),
        _ => ((hi + 1 + rng.below(1 << 20)).to_string(), huge),
    }
}

fn date(rng: &mut Rng) -> (String, V) {
    match rng.below(8) {
        0..=2 => (
            format!(
                "{}{:02}{:02}",
                1990 + rng.below(40),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            V::Ok,
        ),
        3 => ("notadate".into(), V::Bad),
        4 => ("yesterday".into(), V::Bad),
        5 => ("12ab5678".into(), V::Bad),
        6 => ("2024-01-01".into(), V::Either),
        _ => ("99999999".into(), V::Either),
    }
}

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Search parameters: `(encoded pair, validity)`; `id_text` adds `id=`/`text=` (GET search).
fn search_params(rng: &mut Rng, t: &Target, id_text: bool) -> (Vec<String>, bool) {
    let mut pairs: Vec<(String, String, V)> = Vec::new();
    if id_text {
        match rng.below(10) {
            0..=6 => pairs.push(("id".into(), rng.below(t.items.max(1)).to_string(), V::Ok)),
            7 => {
                let (v, _) = number(rng, 0, t.items.saturating_sub(1), false);
                // Any id that is not an indexed item is refused (400 or 404).
                let ok = v.parse::<u64>().is_ok_and(|n| n < t.items);
                pairs.push(("id".into(), v, if ok { V::Ok } else { V::Bad }));
            }
            8 => pairs.push((
                "text".into(),
                hostile_string(rng),
                if t.text_search { V::Either } else { V::Bad },
            )),
            _ => {} // neither: refused
        }
    }
    for _ in 0..rng.below(6) {
        let p = match rng.below(12) {
            0 => {
                let (v, ok) = number(rng, 1, t.max_k, false);
                ("k".into(), v, ok)
            }
            1 | 2 => {
                let (v, ok) = number(rng, 0, 50, true);
                ("offset".into(), v, ok)
            }
            3 => {
                let gs = ["patient", "study", "series", "volume", ""];
                match rng.below(3) {
                    0 => ("group_by".into(), "nonsense".into(), V::Bad),
                    _ => ("group_by".into(), rng.pick(&gs).to_string(), V::Ok),
                }
            }
            4 => {
                let f = [
                    "modality",
                    "anatomy",
                    "pathology",
                    "label",
                    "source",
                    "split",
                    "body_part",
                    "format",
                    "meta.view",
                    "meta.study_date",
                ];
                let vals = ["CT", "XR", "MR/brain/glioma", "test", "chest"];
                let v = if rng.chance(50) {
                    rng.pick(&vals).to_string()
                } else {
                    hostile_string(rng)
                };
                (rng.pick(&f).to_string(), v, V::Ok)
            }
            5 | 6 => {
                let (v, ok) = date(rng);
                let name = if rng.chance(50) {
                    "date_from"
                } else {
                    "date_to"
                };
                (name.into(), v, ok)
            }
            7 => match rng.below(4) {
                0 => ("window".into(), "lung".into(), V::Ok),
                1 => ("window".into(), "40,400".into(), V::Ok),
                2 => ("window".into(), "nonsense".into(), V::Bad),
                _ => ("window".into(), "1e309,NaN".into(), V::Either),
            },
            8 => (
                hostile_string(rng).chars().take(64).collect(),
                "1".into(),
                V::Either,
            ),
            9 => ("token".into(), hostile_string(rng), V::Ok),
            10 => {
                // Repeat one already chosen, with another value.
                match pairs.last().cloned() {
                    Some((k, _, _)) if k == "k" || k == "offset" => {
                        let (v, ok) = number(rng, if k == "k" { 1 } else { 0 }, 50, k == "offset");
                        // Which of the repeated values wins is the server's choice.
                        (k, v, if ok == V::Ok { V::Ok } else { V::Either })
                    }
                    Some((k, v, ok)) => (k, v, ok),
                    None => ("k".into(), "5".into(), V::Ok),
                }
            }
            _ => ("offset".into(), "100000000".into(), V::Ok),
        };
        pairs.push(p);
    }
    let mut invalid = pairs.iter().any(|p| p.2 == V::Bad);
    if id_text {
        // Exactly one of id= and text= (a repeated id= is still one).
        let has = |name: &str| pairs.iter().any(|p| p.0 == name);
        invalid |= has("id") == has("text");
    }
    let mut enc: Vec<String> = pairs
        .iter()
        .map(|(k, v, _)| format!("{}={}", pct_encode(k), pct_encode(v)))
        .collect();
    if rng.chance(5) {
        // Raw, undecodable bits of a query string.
        // What the server makes of these is its choice: validity unchanged.
        enc.push(
            rng.pick(&["%ZZ", "%", "&&", "==", "k", "=5", "%FF%FE=%C0%AF"])
                .to_string(),
        );
    }
    (enc, invalid)
}

fn query(enc: &[String]) -> String {
    if enc.is_empty() {
        String::new()
    } else {
        format!("?{}", enc.join("&"))
    }
}

fn hostile_headers(rng: &mut Rng) -> Vec<(String, String)> {
    let mut h = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let (k, v): (&str, String) = match rng.below(10) {
            0 => ("Host", "attacker.example:18080".into()),
            1 => ("Host", String::new()),
            2 => ("Origin", "http://attacker.example".into()),
            3 => ("Origin", "null".into()),
            4 => ("Authorization", "Bearer wrong-token".into()),
            5 => ("Authorization", String::new()),
            6 => ("Authorization", format!("Bearer {}", "x".repeat(8000))),
            7 => ("Sec-Fetch-Site", "cross-site".into()),
            8 => ("X-Filler", "y".repeat(30_000)),
            _ => ("Accept", "*/*;q=NaN, text/html;q=1e999".into()),
        };
        h.push((k.to_string(), v));
    }
    h
}

fn body(rng: &mut Rng) -> Body {
    match rng.below(20) {
        0..=5 => Body::Png,
        6 | 7 => Body::Truncated {
            len: rng.below(2000) as usize,
        },
        8 => Body::Empty,
        9 => Body::Text {
            text: hostile_string(rng),
        },
        10 | 11 => {
            let (w, h) = *rng.pick(&[(8000, 8000), (16000, 4000), (4000, 16000), (64_000, 1000)]);
            Body::BombPng { w, h }
        }
        12 | 13 => {
            let (w, h) = *rng.pick(&[
                (8000, 8000),
                (100_000, 100_000),
                (u32::MAX >> 1, u32::MAX >> 1),
                (1, u32::MAX >> 1),
                (0, 0),
            ]);
            Body::BombHeader { w, h }
        }
        14 => Body::NoFile,
        15 => Body::TwoFiles,
        16 => Body::Unterminated,
        _ => Body::Garbage {
            len: rng.below(5000) as usize,
        },
    }
}

/// One generated request against `t`.
pub fn generate(rng: &mut Rng, t: &Target) -> Case {
    let mut c = Case::get("/");
    match rng.below(100) {
        0..=39 => {
            let (enc, invalid) = search_params(rng, t, true);
            c.target = format!("/api/search{}", query(&enc));
            c.invalid = invalid;
        }
        40..=64 => {
            let (enc, invalid) = search_params(rng, t, false);
            c.method = "POST".into();
            c.target = format!("/api/search{}", query(&enc));
            c.body = body(rng);
            // An upload that is not one decodable image cannot be searched.
            c.invalid =
                invalid || !matches!(c.body, Body::Png | Body::TwoFiles | Body::BombPng { .. });
        }
        65..=74 => {
            let (id, ok) = item_id(rng, t);
            c.target = format!("/api/items/{id}");
            c.invalid = ok == V::Bad;
        }
        75..=84 => {
            let (id, ok) = item_id(rng, t);
            let mut enc = Vec::new();
            let mut invalid = ok == V::Bad;
            if rng.chance(60) {
                let (v, vok) = number(rng, 16, 1024, false);
                let vok = match v.parse::<u64>() {
                    Ok(n) if (16..=1024).contains(&n) => V::Ok,
                    _ => vok.max_bad(),
                };
                invalid |= vok == V::Bad;
                enc.push(format!("size={}", pct_encode(&v)));
            }
            if rng.chance(30) {
                let w = *rng.pick(&["lung", "brain", "40,400", "nonsense", "../x"]);
                invalid |= w == "nonsense" || w == "../x";
                enc.push(format!("window={}", pct_encode(w)));
            }
            c.target = format!("/api/items/{id}/thumbnail{}", query(&enc));
            c.invalid = invalid;
        }
        85..=91 => {
            c.target = rng
                .pick(&[
                    "/api/stats",
                    "/api/openapi.json",
                    "/healthz",
                    "/",
                    "/app.js",
                    "/style.css",
                ])
                .to_string();
        }
        _ => {
            c.method = rng
                .pick(&["GET", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"])
                .to_string();
            c.target = rng
                .pick(&[
                    "/api/search",
                    "/api/../../etc/passwd",
                    "/api/items/%2e%2e/thumbnail",
                    "/api/items//thumbnail",
                    "/api/nope",
                    "/%00",
                    "/api/items/1/thumbnail/extra",
                ])
                .to_string();
            if c.method == "GET" {
                c.invalid = true;
            }
        }
    }
    if rng.chance(20) {
        c.headers = hostile_headers(rng);
        // The API answers only its own host (no DNS rebinding), the right token, and no
        // cross-site POST; the page and /healthz may answer anyone.
        let forged = |name: &str, bad: &dyn Fn(&str) -> bool| c.header(name).is_some_and(bad);
        let refused = forged("host", &|v| v.starts_with("attacker"))
            || forged("authorization", &|v| v != "Bearer " && !v.is_empty())
            || forged("authorization", &|v| v.is_empty())
            || (c.method == "POST"
                && (forged("origin", &|v| v.starts_with("http://attacker"))
                    || forged("sec-fetch-site", &|v| v == "cross-site")));
        if c.target.starts_with("/api/") && c.target != "/api/openapi.json" && refused {
            c.invalid = true;
        }
    }
    c
}

impl V {
    fn max_bad(self) -> V {
        if self == V::Either {
            V::Either
        } else {
            V::Bad
        }
    }
}

fn item_id(rng: &mut Rng, t: &Target) -> (String, V) {
    match rng.below(10) {
        0..=5 => (rng.below(t.items.max(1)).to_string(), V::Ok),
        6 => (t.items.to_string(), V::Bad),
        7 => ("-1".into(), V::Bad),
        8 => ("99999999999999999999999".into(), V::Bad),
        _ => (
            pct_encode(&hostile_string(rng).chars().take(200).collect::<String>()),
            V::Either,
        ),
    }
}

/// Large PNGs already built, by size.
type BombCache = HashMap<(u32, u32), Arc<Vec<u8>>>;

/// Bodies as bytes: the sample PNG, and the large PNGs, built once each.
#[derive(Clone)]
pub struct Bodies {
    png: Arc<Vec<u8>>,
    bombs: Arc<Mutex<BombCache>>,
}

const BOUNDARY: &str = "simcase-fuzz-8f41c2";

fn part(name: &str, file: &str, bytes: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(bytes);
    b.extend_from_slice(b"\r\n");
    b
}

impl Bodies {
    /// `png`: a real image, uploaded by [`Body::Png`] and cut by [`Body::Truncated`].
    pub fn new(png: Vec<u8>) -> Self {
        Self {
            png: Arc::new(png),
            bombs: Default::default(),
        }
    }

    /// `(content type, body)` of `b`, or `None` for [`Body::None`].
    pub fn bytes(&self, b: &Body) -> Option<(String, Vec<u8>)> {
        let file = |bytes: &[u8]| part("file", "query.png", bytes);
        let end = format!("--{BOUNDARY}--\r\n").into_bytes();
        let mut out = match b {
            Body::None => return None,
            Body::Png => file(self.png.as_slice()),
            Body::Truncated { len } => file(&self.png[..(*len).min(self.png.len())]),
            Body::Empty => file(&[]),
            Body::Text { text } => file(text.as_bytes()),
            Body::BombPng { w, h } => file(self.bomb(*w, *h).as_slice()),
            Body::BombHeader { w, h } => {
                let mut p = png_head(*w, *h);
                p.extend_from_slice(&[0u8; 16]);
                file(&p)
            }
            Body::NoFile => part("other", "x.txt", b"hello"),
            Body::TwoFiles => {
                let mut v = file(self.png.as_slice());
                v.extend(file(self.png.as_slice()));
                v
            }
            Body::Unterminated => {
                let mut v = file(self.png.as_slice());
                v.truncate(v.len() / 2);
                return Some((format!("multipart/form-data; boundary={BOUNDARY}"), v));
            }
            Body::Garbage { len } => {
                let mut r = Rng::new(*len as u64);
                let v = (0..*len).map(|_| r.next_u64() as u8).collect();
                return Some((format!("multipart/form-data; boundary={BOUNDARY}"), v));
            }
        };
        out.extend(end);
        Some((format!("multipart/form-data; boundary={BOUNDARY}"), out))
    }

    fn bomb(&self, w: u32, h: u32) -> Arc<Vec<u8>> {
        let mut g = self.bombs.lock().unwrap_or_else(|p| p.into_inner());
        g.entry((w, h))
            .or_insert_with(|| Arc::new(grey_png(w, h)))
            .clone()
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// PNG signature and an IHDR for a `w`×`h` 8-bit grey image.
fn png_head(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// A complete, valid `w`×`h` black grey PNG, compressed row by row (never `w`×`h` in memory).
pub fn grey_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = png_head(w, h);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let row = vec![0u8; w as usize + 1]; // filter byte 0, then black pixels
    for _ in 0..h {
        // Writing to a Vec cannot fail.
        let _ = z.write_all(&row);
    }
    let data = z.finish().unwrap_or_default();
    chunk(&mut out, b"IDAT", &data);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_cases_and_cases_round_trip() {
        let t = Target {
            items: 20,
            text_search: false,
            max_k: 500,
        };
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let mut kinds = std::collections::HashSet::new();
        let mut invalid = 0;
        for _ in 0..2000 {
            let (x, y) = (generate(&mut a, &t), generate(&mut b, &t));
            assert_eq!(x, y);
            let back: Case = serde_json::from_str(&x.to_line()).unwrap();
            assert_eq!(back, x);
            kinds.insert(format!(
                "{} {:?}",
                x.method,
                std::mem::discriminant(&x.body)
            ));
            invalid += x.invalid as usize;
        }
        assert!(kinds.len() >= 10, "{kinds:?}");
        assert!((200..1800).contains(&invalid), "{invalid} invalid of 2000");
    }

    #[test]
    fn known_findings_are_generated_and_marked() {
        let t = Target {
            items: 20,
            text_search: false,
            max_k: 500,
        };
        let mut r = Rng::new(1);
        let cases: Vec<Case> = (0..20_000).map(|_| generate(&mut r, &t)).collect();
        assert!(cases
            .iter()
            .any(|c| c.target.contains("offset=1000000000000")));
        assert!(cases
            .iter()
            .any(|c| c.target.contains("date_from=notadate") && c.invalid));
        assert!(cases
            .iter()
            .any(|c| matches!(c.body, Body::BombPng { w: 8000, h: 8000 })));
        // A lone valid search is not marked invalid.
        assert!(cases.iter().any(|c| c.method == "GET"
            && c.target.starts_with("/api/search?id=")
            && !c.target.contains('&')
            && !c.invalid));
    }

    #[test]
    fn bomb_png_is_a_real_png_of_that_size() {
        let p = grey_png(3000, 2000);
        assert!(p.len() < 20_000, "{} bytes", p.len());
        let img = image::load_from_memory(&p).unwrap();
        assert_eq!((img.width(), img.height()), (3000, 2000));
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn kept_cases_are_deduplicated_and_bad_lines_named() {
        let dir = std::env::temp_dir().join(format!("simcase-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("kept.jsonl");
        let _ = std::fs::remove_file(&f);
        let mut c = Case::get("/api/search?id=1&offset=1000000000000");
        c.finding = Some("abort".into());
        assert_eq!(keep_cases(&f, &[c.clone(), c.clone()]).unwrap(), 1);
        c.finding = Some("other note".into());
        assert_eq!(keep_cases(&f, &[c.clone()]).unwrap(), 0);
        assert_eq!(read_cases(&f).unwrap().len(), 1);
        std::fs::write(&f, "{\"method\": 1}\n").unwrap();
        let e = read_cases(&f).unwrap_err().to_string();
        assert!(e.contains("kept.jsonl:1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
