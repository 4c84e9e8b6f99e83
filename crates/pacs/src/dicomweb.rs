//! A DICOMweb client for ingest: QIDO-RS finds an archive's instances, WADO-RS fetches each
//! one as it was stored (`multipart/related; type="application/dicom"; transfer-syntax=*`,
//! so the bytes, and so the content hash, are those of the file the PACS holds).
//!
//! Why blocking and one small client: ingest's decode threads call [`DicomWeb::fetch`] each for
//! its own instance, so fetches overlap as decodes do, with no runtime to run; the agent keeps
//! connections alive between them.
//!
//! Credentials come from the environment only (`SIMCASE_DICOMWEB_TOKEN` for a bearer token, or
//! `SIMCASE_DICOMWEB_USER` and `SIMCASE_DICOMWEB_PASSWORD` for basic auth), never from the URL:
//! the URL is stored as every item's path and shown in logs.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;
use std::io::Read as _;
use std::time::Duration;

/// The prefix that marks a DICOMweb service where a path is expected.
pub const SCHEME: &str = "dicomweb+";
/// Bearer token for the DICOMweb service.
pub const TOKEN_VAR: &str = "SIMCASE_DICOMWEB_TOKEN";
/// User name for basic auth.
pub const USER_VAR: &str = "SIMCASE_DICOMWEB_USER";
/// Password for basic auth.
pub const PASSWORD_VAR: &str = "SIMCASE_DICOMWEB_PASSWORD";

/// Instances asked for per QIDO-RS page.
const PAGE: usize = 1000;
/// The largest instance fetched (bytes); a bigger answer is refused, not read.
const MAX_INSTANCE: u64 = 4 << 30;
/// The largest QIDO-RS answer read (bytes).
const MAX_QIDO: u64 = 256 << 20;

/// Whether `s` names a DICOMweb service (`dicomweb+http://…` or `dicomweb+https://…`).
pub fn is_dicomweb(s: &str) -> bool {
    s.strip_prefix(SCHEME)
        .is_some_and(|r| r.starts_with("http://") || r.starts_with("https://"))
}

/// Which instances to list: all, or those of some studies, of a modality, from a date on.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Study Instance UIDs (none: every study).
    pub studies: Vec<String>,
    /// Modality (`CT`, `MR`, …).
    pub modality: Option<String>,
    /// Studies from this date on (`YYYYMMDD`).
    pub since: Option<String>,
}

/// One archived instance, by its UIDs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance {
    /// Study Instance UID.
    pub study: String,
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub sop: String,
}

/// SOP classes that hold no image: structured reports (simcase's own included), key object
/// selections, presentation states, encapsulated documents, RT objects, raw data,
/// registrations and waveforms. QIDO-RS results of these classes are not fetched.
const NOT_IMAGES: [&str; 6] = [
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.481.",
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.5.1.4.1.1.9.",
];

/// Whether instances of this SOP class hold no image (see [`NOT_IMAGES`]).
pub fn holds_no_image(sop_class: &str) -> bool {
    NOT_IMAGES.iter().any(|p| sop_class.starts_with(p))
}

/// A UID as DICOM allows it (digits and dots, at most 64), so it can go into a URL path.
pub fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// An archived instance's address, `dicomweb+http://HOST/PATH/studies/S/series/R/instances/I`:
/// the service's URL (`dicomweb+http://HOST/PATH`) and the instance.
pub fn parse_instance_url(url: &str) -> Result<(String, Instance)> {
    let bad = || {
        anyhow::anyhow!(
            "{url}: an archived instance is dicomweb+http://HOST/PATH/studies/STUDY/series/\
             SERIES/instances/SOP (UIDs: digits and dots)"
        )
    };
    if !is_dicomweb(url) {
        return Err(bad());
    }
    let (service, rest) = url.rsplit_once("/studies/").ok_or_else(bad)?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        [study, "series", series, "instances", sop]
            if is_uid(study) && is_uid(series) && is_uid(sop) =>
        {
            Ok((
                service.to_string(),
                Instance {
                    study: study.to_string(),
                    series: series.to_string(),
                    sop: sop.to_string(),
                },
            ))
        }
        _ => Err(bad()),
    }
}

/// A DICOMweb service (its QIDO-RS and WADO-RS root).
pub struct DicomWeb {
    /// `http(s)://HOST:PORT/PATH`, no trailing slash.
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl DicomWeb {
    /// The service at `url` (`dicomweb+http://HOST:PORT/dicom-web`), with credentials from the
    /// environment.
    pub fn open(url: &str) -> Result<Self> {
        Self::with_env(url, |k| std::env::var(k).ok())
    }

    /// [`DicomWeb::open`], opened once per service URL in this process and shared (its
    /// connections pooled): for callers that fetch one instance at a time, as the server's
    /// thumbnails do. At most 16 services are kept; past that, the oldest goes.
    pub fn shared(url: &str) -> Result<std::sync::Arc<Self>> {
        use std::sync::{Arc, Mutex, OnceLock};
        type Open = Mutex<Vec<(String, Arc<DicomWeb>)>>;
        static OPEN: OnceLock<Open> = OnceLock::new();
        let open = OPEN.get_or_init(Default::default);
        if let Some((_, dw)) = open
            .lock()
            .map_err(|_| anyhow::anyhow!("DICOMweb clients: poisoned"))?
            .iter()
            .find(|(u, _)| u == url)
        {
            return Ok(dw.clone());
        }
        let dw = Arc::new(Self::open(url)?);
        let mut g = open
            .lock()
            .map_err(|_| anyhow::anyhow!("DICOMweb clients: poisoned"))?;
        if g.len() >= 16 {
            g.remove(0);
        }
        g.push((url.to_string(), dw.clone()));
        Ok(dw)
    }

    /// [`DicomWeb::open`] with the environment read through `env`.
    pub fn with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        anyhow::ensure!(
            is_dicomweb(url),
            "{url}: a DICOMweb service is dicomweb+http://HOST:PORT/PATH (or dicomweb+https://)"
        );
        let base = url[SCHEME.len()..].trim_end_matches('/').to_string();
        let authority = base
            .split_once("://")
            .map(|(_, r)| r.split('/').next().unwrap_or(""))
            .unwrap_or("");
        if authority.contains('@') {
            bail!(
                "{SCHEME}{}: credentials do not go in the URL (it is stored with every item); \
                 set {USER_VAR} and {PASSWORD_VAR}, or {TOKEN_VAR}",
                base.replace(authority, "…@…")
            );
        }
        anyhow::ensure!(!authority.is_empty(), "{url}: no host");
        let auth = match (env(TOKEN_VAR), env(USER_VAR), env(PASSWORD_VAR)) {
            (Some(t), _, _) if !t.is_empty() => Some(format!("Bearer {t}")),
            (_, Some(u), p) if !u.is_empty() => {
                let raw = format!("{u}:{}", p.unwrap_or_default());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            _ => None,
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .build();
        Ok(Self { base, agent, auth })
    }

    /// The service's URL as given (`dicomweb+http://…`), for messages.
    pub fn url(&self) -> String {
        format!("{SCHEME}{}", self.base)
    }

    /// The address of one instance, stored as its item's path.
    pub fn instance_url(&self, i: &Instance) -> String {
        format!(
            "{SCHEME}{}/studies/{}/series/{}/instances/{}",
            self.base, i.study, i.series, i.sop
        )
    }

    fn get(&self, url: &str, accept: &str) -> Result<ureq::Response> {
        let req = self.authed(self.agent.get(url).set("Accept", accept));
        self.answer(req.call(), url)
    }

    /// `req` with the credentials.
    fn authed(&self, req: ureq::Request) -> ureq::Request {
        match &self.auth {
            Some(a) => req.set("Authorization", a),
            None => req,
        }
    }

    /// A request's outcome, each failure one line naming the URL.
    fn answer(
        &self,
        outcome: std::result::Result<ureq::Response, ureq::Error>,
        url: &str,
    ) -> Result<ureq::Response> {
        match outcome {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code @ (401 | 403), r)) => bail!(
                "{SCHEME}{url}: {code} {}: the server refused {} ({TOKEN_VAR}, or {USER_VAR} \
                 and {PASSWORD_VAR})",
                r.status_text(),
                if self.auth.is_some() {
                    "the credentials"
                } else {
                    "a request without credentials"
                }
            ),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.status_text().to_string();
                let mut body = String::new();
                let _ = r.into_reader().take(300).read_to_string(&mut body);
                bail!(
                    "{SCHEME}{url}: {code} {text}{}",
                    match body.trim() {
                        "" => String::new(),
                        b => format!(": {}", b.replace('\n', " ")),
                    }
                )
            }
            Err(ureq::Error::Transport(t)) => {
                let why = match std::error::Error::source(&t) {
                    Some(e) => format!("{}: {e}", t.kind()),
                    None => t.message().unwrap_or("").to_string(),
                };
                bail!("{SCHEME}{url}: cannot reach it: {why}")
            }
        }
    }

    /// Every instance that `f` selects, by QIDO-RS (paged), sorted by study, series and SOP
    /// Instance UID, each once. Entries whose UIDs are missing or malformed are skipped with a
    /// warning.
    pub fn search(&self, f: &Filter) -> Result<Vec<Instance>> {
        let mut query = String::new();
        if let Some(m) = &f.modality {
            anyhow::ensure!(
                !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_alphanumeric()),
                "--modality {m:?}: a DICOM modality is letters and digits (CT, MR, …)"
            );
            query.push_str(&format!("&Modality={m}"));
        }
        if let Some(d) = &f.since {
            anyhow::ensure!(
                d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()),
                "--since {d:?}: give a date as YYYYMMDD"
            );
            query.push_str(&format!("&StudyDate={d}-"));
        }
        for s in &f.studies {
            anyhow::ensure!(is_uid(s), "--study {s:?} is not a UID (digits and dots)");
        }
        let roots: Vec<String> = if f.studies.is_empty() {
            vec![format!("{}/instances", self.base)]
        } else {
            f.studies
                .iter()
                .map(|s| format!("{}/studies/{s}/instances", self.base))
                .collect()
        };
        let mut out = std::collections::BTreeSet::new();
        let (mut skipped, mut not_images) = (0usize, 0usize);
        for root in roots {
            let mut offset = 0usize;
            loop {
                let url = format!(
                    "{root}?limit={PAGE}&offset={offset}&includefield=0020000D,0020000E,00080016{query}"
                );
                let resp = self.get(&url, "application/dicom+json")?;
                let body = read_body(resp, MAX_QIDO, &url)?;
                let page = json_array(&body, &url)?;
                let before = out.len();
                for d in &page {
                    let class = d["00080016"]["Value"][0].as_str().unwrap_or("");
                    match instance_of(d) {
                        _ if holds_no_image(class) => not_images += 1,
                        Some(i) => {
                            out.insert(i);
                        }
                        None => skipped += 1,
                    }
                }
                // A short page is the last; a server that ignores `offset` would repeat the
                // first page, which adds nothing: stop then too.
                if page.len() < PAGE || out.len() == before {
                    break;
                }
                offset += page.len();
            }
        }
        if not_images > 0 {
            tracing::info!(
                "{}: {not_images} instances of classes that hold no image (reports, \
                 presentation states, …) not fetched",
                self.url()
            );
        }
        if skipped > 0 {
            tracing::warn!(
                "{}: {skipped} QIDO-RS entries without valid study, series and SOP Instance \
                 UIDs skipped",
                self.url()
            );
        }
        Ok(out.into_iter().collect())
    }

    /// The attributes the PACS holds for one instance (QIDO-RS, `includefield` = `fields`, tags
    /// as 8 hex digits), as DICOM JSON.
    pub fn attributes(&self, i: &Instance, fields: &[&str]) -> Result<Value> {
        let url = format!(
            "{}/studies/{}/series/{}/instances?SOPInstanceUID={}&includefield={}",
            self.base,
            i.study,
            i.series,
            i.sop,
            fields.join(",")
        );
        let body = read_body(self.get(&url, "application/dicom+json")?, MAX_QIDO, &url)?;
        json_array(&body, &url)?
            .into_iter()
            .next()
            .with_context(|| format!("{}: the PACS does not hold instance {}", self.url(), i.sop))
    }

    /// Store one DICOM file in the PACS by STOW-RS (`POST …/studies`); a refusal names the
    /// PACS's reason.
    pub fn store(&self, file: &[u8]) -> Result<()> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let boundary: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let boundary = format!("simcase-{boundary}");
        let mut body =
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
        body.extend_from_slice(file);
        body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!("{}/studies", self.base);
        let req = self
            .authed(self.agent.post(&url))
            .set(
                "Content-Type",
                &format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .set("Accept", "application/dicom+json");
        let resp = self.answer(req.send_bytes(&body), &url)?;
        let answer = read_body(resp, MAX_QIDO, &url)?;
        if let Ok(v) = serde_json::from_slice::<Value>(&answer) {
            // Failed SOP Sequence (0008,1198), with the Failure Reason (0008,1197).
            if let Some(failed) = v["00081198"]["Value"].as_array().filter(|a| !a.is_empty()) {
                bail!(
                    "{SCHEME}{url}: the PACS refused the object (failure reason {})",
                    failed[0]["00081197"]["Value"][0]
                );
            }
        }
        Ok(())
    }

    /// One instance's stored bytes, by WADO-RS.
    pub fn fetch(&self, i: &Instance) -> Result<Vec<u8>> {
        let url = format!(
            "{}/studies/{}/series/{}/instances/{}",
            self.base, i.study, i.series, i.sop
        );
        let resp = self.get(
            &url,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )?;
        let ctype = resp.header("Content-Type").unwrap_or("").to_string();
        let body = read_body(resp, MAX_INSTANCE, &url)?;
        if ctype.to_ascii_lowercase().starts_with("application/dicom") {
            return Ok(body);
        }
        first_part(&ctype, &body).with_context(|| format!("{SCHEME}{url}"))
    }
}

/// A QIDO-RS answer's DICOM JSON array; an empty body is an empty result (some servers
/// answer 204).
fn json_array(body: &[u8], url: &str) -> Result<Vec<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(body).with_context(|| format!("{SCHEME}{url}: not a DICOM JSON array"))
}

/// An answer's body, refused (not read on) past `limit` bytes.
fn read_body(resp: ureq::Response, limit: u64, url: &str) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("{SCHEME}{url}: reading the answer"))?;
    anyhow::ensure!(
        body.len() as u64 <= limit,
        "{SCHEME}{url}: answer over {} MB",
        limit >> 20
    );
    Ok(body)
}

/// The UIDs of a QIDO-RS entry, if all three are there and well formed.
fn instance_of(d: &Value) -> Option<Instance> {
    let get = |tag: &str| {
        d[tag]["Value"][0]
            .as_str()
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .filter(|s| is_uid(s))
    };
    Some(Instance {
        study: get("0020000D")?,
        series: get("0020000E")?,
        sop: get("00080018")?,
    })
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let at = i + hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// The body of the first part of a `multipart/related` answer: its `Content-Length` bytes when
/// the part says, else up to the next boundary.
pub fn first_part(content_type: &str, body: &[u8]) -> Result<Vec<u8>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty())
        .with_context(|| format!("answer of type {content_type:?}: not multipart, no boundary"))?;
    let delim = format!("--{boundary}");
    let start = find(body, delim.as_bytes(), 0).context("no part in the multipart answer")?;
    let head_at = start + delim.len();
    let head_end = find(body, b"\r\n\r\n", head_at)
        .context("a multipart part without its headers' end (cut short?)")?;
    let headers = String::from_utf8_lossy(&body[head_at..head_end]);
    let data = head_end + 4;
    let length = headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let end = match length {
        Some(n) if data.checked_add(n).is_some_and(|e| e <= body.len()) => data + n,
        Some(n) => bail!(
            "a part of {n} bytes in an answer of {} (cut short?)",
            body.len()
        ),
        None => find(body, format!("\r\n{delim}").as_bytes(), data)
            .context("a multipart part without its closing boundary (cut short?)")?,
    };
    Ok(body[data..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_credentials_stay_out_of_them() {
        assert!(is_dicomweb("dicomweb+http://h:8042/dicom-web"));
        assert!(is_dicomweb("dicomweb+https://h/dw"));
        assert!(!is_dicomweb("http://h/dw") && !is_dicomweb("dicomweb+ftp://h"));
        assert!(holds_no_image(crate::sr::COMPREHENSIVE_SR));
        assert!(!holds_no_image("1.2.840.10008.5.1.4.1.1.2") && !holds_no_image(""));
        let none = |_: &str| None;
        let d = DicomWeb::with_env("dicomweb+http://h:8042/dicom-web/", none).unwrap();
        assert_eq!(d.url(), "dicomweb+http://h:8042/dicom-web");
        let i = Instance {
            study: "1.2".into(),
            series: "1.2.3".into(),
            sop: "1.2.3.4".into(),
        };
        assert_eq!(
            d.instance_url(&i),
            "dicomweb+http://h:8042/dicom-web/studies/1.2/series/1.2.3/instances/1.2.3.4"
        );
        let e = DicomWeb::with_env("dicomweb+http://u:secret@h/dw", none)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("credentials do not go in the URL") && !e.contains("secret"),
            "{e}"
        );
        let env = |k: &str| match k {
            USER_VAR => Some("simcase".to_string()),
            PASSWORD_VAR => Some("pw".to_string()),
            _ => None,
        };
        let d = DicomWeb::with_env("dicomweb+http://h/dw", env).unwrap();
        assert_eq!(d.auth.as_deref(), Some("Basic c2ltY2FzZTpwdw=="));
        let tok = |k: &str| (k == TOKEN_VAR).then(|| "t0k".to_string());
        let d = DicomWeb::with_env("dicomweb+http://h/dw", tok).unwrap();
        assert_eq!(d.auth.as_deref(), Some("Bearer t0k"));
    }

    #[test]
    fn an_instance_url_splits_into_its_service_and_uids() {
        let (svc, i) = parse_instance_url(
            "dicomweb+http://h:8042/dicom-web/studies/1.2/series/1.2.3/instances/1.2.3.4",
        )
        .unwrap();
        assert_eq!(svc, "dicomweb+http://h:8042/dicom-web");
        assert_eq!(
            (i.study.as_str(), i.series.as_str(), i.sop.as_str()),
            ("1.2", "1.2.3", "1.2.3.4")
        );
        let d = DicomWeb::with_env(&svc, |_| None).unwrap();
        assert_eq!(
            d.instance_url(&i),
            "dicomweb+http://h:8042/dicom-web/studies/1.2/series/1.2.3/instances/1.2.3.4"
        );
        for bad in [
            "dicomweb+http://h/dw/studies/1.2/series/1.2.3",
            "dicomweb+http://h/dw/studies/1.2/series/x/instances/1.3",
            "http://h/dw/studies/1/series/2/instances/3",
        ] {
            assert!(parse_instance_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_multipart_part_is_cut_by_its_length_or_its_boundary() {
        let ct = "multipart/related; type=\"application/dicom\"; boundary=\"b0b\"";
        let payload = b"DICM\r\n--b0\x00\x01binary";
        let mut with_len = b"--b0b\r\nContent-Type: application/dicom\r\nContent-Length: ".to_vec();
        with_len.extend(format!("{}\r\n\r\n", payload.len()).as_bytes());
        with_len.extend(payload);
        with_len.extend(b"\r\n--b0b--\r\n");
        assert_eq!(first_part(ct, &with_len).unwrap(), payload);
        let mut no_len = b"--b0b\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        no_len.extend(payload);
        no_len.extend(b"\r\n--b0b--");
        assert_eq!(first_part(ct, &no_len).unwrap(), payload);
        // Cut short: refused, not returned in part.
        let e = first_part(ct, &with_len[..40]).unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
        assert!(first_part("application/json", b"{}").is_err());
    }

    #[test]
    fn qido_entries_give_instances_only_with_three_valid_uids() {
        let d: Value = serde_json::json!({
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
            "00080018": {"vr": "UI", "Value": ["1.2.3.4.5\u{0}"]},
        });
        assert_eq!(
            instance_of(&d),
            Some(Instance {
                study: "1.2.3".into(),
                series: "1.2.3.4".into(),
                sop: "1.2.3.4.5".into()
            })
        );
        let mut bad = d.clone();
        bad["00080018"]["Value"][0] = "../../x".into();
        assert_eq!(instance_of(&bad), None);
        bad["00080018"] = serde_json::json!({"vr": "UI"});
        assert_eq!(instance_of(&bad), None);
    }
}
