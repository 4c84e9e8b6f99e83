//! API tests of `simcase serve`: the real binary on an ephemeral loopback port, over an index
//! of real images from ../shared/data plus real DICOMs (with patient names, ids and birth
//! dates) from the pydicom-data wheel, embedded with the real default model.

mod common;
use common::*;
use simcase_server::client::{multipart_file, Client};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Patient identifiers inside the DICOMs indexed below; none may ever be served or logged.
const PHI: [&str; 7] = [
    "CompressedSamples",
    "5MR2",
    "19500112",
    "CQ500-CT-310",
    "9RG1",
    "19400305",
    "Lestrade",
];
const DICOMS: [&str; 4] = ["MR2_UNCR.dcm", "693_UNCR.dcm", "RG1_UNCR.dcm", "SC_rgb.dcm"];

/// One index for the read-only tests: 48 labelled images and 4 DICOMs with PHI.
fn shared_index() -> PathBuf {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let dir = tmp("index").keep(); // shared by this binary's tests
            let m = manifest(&dir, 48, 17, 0);
            let index = dir.join("index");
            index_manifest(&index, &m);
            let dcm = dir.join("dicom");
            std::fs::create_dir_all(&dcm).unwrap();
            for f in DICOMS {
                std::fs::copy(corpus_dicoms().join(f), dcm.join(f)).unwrap();
            }
            run_ok(
                bin()
                    .args(["index", "--quiet", "--index"])
                    .arg(&index)
                    .arg(&dcm),
            );
            index
        })
        .clone()
}

struct Server {
    srv: Served,
    addr: String,
    log: PathBuf,
    /// The token the server printed (generated) or was given; `None` with `--no-token`.
    token: Option<String>,
    /// The second line the server printed: the page's URL.
    page: String,
}

impl Server {
    fn start(index: &Path, extra: &[&str]) -> Self {
        let log = index.with_extension(format!("log-{}", rand_suffix()));
        let srv = serve(index, extra, &log);
        let (addr, page) = (srv.addr.clone(), srv.page.clone());
        let given = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_string());
        let printed = page
            .split_once("#token=")
            .map(|(_, t)| t.to_string())
            .filter(|t| t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()));
        let token = if extra.contains(&"--no-token") {
            None
        } else {
            Some(
                given
                    .or(printed)
                    .unwrap_or_else(|| panic!("no token in the server's page line {page:?}")),
            )
        };
        Self {
            srv,
            addr,
            log,
            token,
            page,
        }
    }

    /// A client that sends the server's token (if any).
    fn client(&self) -> Client {
        let c = Client::new(&self.addr);
        match &self.token {
            Some(t) => c.with_token(t),
            None => c,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn assert_no_phi(what: &str, text: &str) {
    for p in PHI {
        assert!(
            !text.contains(p),
            "{what} shows patient data {p:?}:\n{text}"
        );
    }
}

fn png_of(rel: &str) -> Vec<u8> {
    std::fs::read(data().join(rel)).unwrap()
}

#[test]
fn api_searches_filters_groups_votes_and_never_shows_phi() {
    let index = shared_index();
    let srv = Server::start(&index, &[]);
    let mut c = srv.client();
    let seen = std::cell::RefCell::new(String::new());
    let get = |c: &mut Client, path: &str| {
        let r = c.get(path).unwrap();
        seen.borrow_mut().push_str(&r.text());
        r
    };

    assert_eq!(get(&mut c, "/healthz").status, 200);
    let stats = get(&mut c, "/api/stats").json().unwrap();
    let n = simcase_index::Reader::open(&index).unwrap().len() as u64;
    assert!(n >= 50, "{n} items");
    assert_eq!(stats["items"], n, "{stats}");
    assert_eq!(stats["model"], "dinov2-s");
    assert!(stats["counts"]["modality"]["CT"].as_u64().unwrap() > 0);

    // More like this: the item itself is excluded, scores are sorted, the vote sums to 1.
    let r = get(&mut c, "/api/search?id=0&k=10").json().unwrap();
    let hits = r["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h["id"] != 0));
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for level in ["modality", "anatomy", "label"] {
        let total: f64 = r["vote"][level]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{level}: {total}");
    }
    assert!(
        hits.iter().all(|h| h.get("path").is_none()),
        "paths are off by default"
    );

    // Pagination: page 2 of 5 is ranks 6..10 of the first query.
    let p2 = get(&mut c, "/api/search?id=0&k=5&offset=5").json().unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&p2["hits"]), ids(&r["hits"])[5..].to_vec());

    // Upload (a real ultrasound PNG), filtered to CT: every hit is CT.
    let (ty, body) = multipart_file("q.png", &png_of("images/busi/benign_136.png"));
    let up = c.post("/api/search?k=8&modality=CT", &ty, &body).unwrap();
    seen.borrow_mut().push_str(&up.text());
    let up = up.json().unwrap();
    assert_eq!(up["query"]["kind"], "upload");
    assert!(!up["hits"].as_array().unwrap().is_empty());
    assert!(
        up["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["modality"] == "CT"),
        "{up}"
    );
    assert_eq!(
        up["candidates"].as_u64().unwrap(),
        stats["counts"]["modality"]["CT"].as_u64().unwrap()
    );
    // Unfiltered, the nearest case of an ultrasound is an ultrasound.
    let up = c
        .post("/api/search?k=3", &ty, &body)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(up["hits"][0]["modality"], "US", "{up}");
    assert_eq!(up["vote"]["modality"][0][0], "US");

    // Group by patient: distinct groups, each reporting its matched items.
    let g = get(&mut c, "/api/search?id=0&k=6&group_by=patient")
        .json()
        .unwrap();
    let groups = g["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 6);
    let mut keys: Vec<&str> = groups.iter().map(|g| g["key"].as_str().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6, "groups are distinct");
    assert!(groups.iter().all(|g| g["matched"].as_u64().unwrap() >= 1));

    // Item details and a server-rendered thumbnail (a DICOM one windowed by a preset).
    let it = get(&mut c, "/api/items/3").json().unwrap();
    assert_eq!(it["id"], 3);
    assert!(it.get("path").is_none());
    let dicom_id = (0..n)
        .find(|i| get(&mut c, &format!("/api/items/{i}")).json().unwrap()["format"] == "dicom")
        .unwrap();
    for q in ["", "?size=64&window=brain", "?window=40,400"] {
        let t = c
            .get(&format!("/api/items/{dicom_id}/thumbnail{q}"))
            .unwrap();
        assert_eq!(t.status, 200, "{}", t.text());
        assert_eq!(t.content_type, "image/png");
        assert!(t.body.starts_with(b"\x89PNG"));
    }
    let bad_window = c
        .get(&format!("/api/items/{dicom_id}/thumbnail?window=nope"))
        .unwrap();
    assert_eq!(bad_window.status, 400);

    // A DICOM upload with patient data: searched, and none of it comes back.
    let dcm = std::fs::read(corpus_dicoms().join("MR2_UNCR.dcm")).unwrap();
    let (ty2, body2) = multipart_file("MR2_UNCR.dcm", &dcm);
    let r = c
        .post("/api/search?k=5&window=brain", &ty2, &body2)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    seen.borrow_mut().push_str(&r.text());

    // Traversal, unknown routes and bad parameters: JSON errors, never a file.
    for (path, status) in [
        ("/api/items/..%2F..%2Fetc%2Fpasswd/thumbnail", 400),
        ("/api/items/../../etc/passwd", 404),
        ("/api/thumbnail?path=/etc/passwd", 404),
        ("/api/items/99999", 404),
        ("/api/search?id=0&k=0", 400),
        ("/api/search?id=0&nosuchfield=1", 400),
        ("/api/search?text=lung", 400), // dinov2-s has no text tower
    ] {
        let r = c.get(path).unwrap();
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.json().unwrap()["error"].is_string(), "{path}");
        assert!(!r.text().contains("root:"), "{path}");
    }

    // Bad uploads: a one-line reason naming the file, and the server keeps serving.
    let (ty3, body3) = multipart_file("notes.txt", b"not an image");
    let r = c.post("/api/search", &ty3, &body3).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("notes.txt"));
    // A decompression bomb: a PNG header claiming 100000 x 100000 pixels is refused unread.
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
    bomb.extend_from_slice(&ihdr);
    bomb.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let (ty4, body4) = multipart_file("bomb.png", &bomb);
    let r = c.post("/api/search", &ty4, &body4).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("too large"), "{}", r.text());
    assert_eq!(c.get("/healthz").unwrap().status, 200);

    // The OpenAPI document covers every API route.
    let doc = c.get("/api/openapi.json").unwrap().json().unwrap();
    for p in [
        "/api/search",
        "/api/stats",
        "/api/items/{id}",
        "/api/items/{id}/thumbnail",
        "/healthz",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from openapi.json"
        );
    }

    assert_no_phi("responses", &seen.borrow());
    drop(c);
    let log = srv.log();
    assert!(log.contains("/api/search"), "requests are logged:\n{log}");
    assert_no_phi("the server log", &log);
    // Request lines have method, path, status and time, never the query string (which can
    // hold a search text); every search above was made with one.
    let requests: Vec<&str> = log.lines().filter(|l| l.contains(" /api/")).collect();
    let searches = requests
        .iter()
        .filter(|l| l.contains("GET /api/search -> ") || l.contains("POST /api/search -> "))
        .count();
    assert!(searches >= 8, "{searches} search requests logged:\n{log}");
    for l in &requests {
        assert!(
            !l.contains('?') && !l.contains("k=") && !l.contains("id=0"),
            "a query string in the log: {l}"
        );
    }
}

/// "Raw PatientID is never stored": every byte of the index folder (`index.sqlite`, its WAL
/// and shared-memory files while they exist, `vectors.f32`) is free of the DICOMs' patient
/// ids, names and birth dates, both once ingest is done and while a server holds the index
/// open. With `--keep-phi` the same scan finds them, so it can see what it looks for.
#[test]
fn index_files_hold_no_patient_identifiers_unless_keep_phi() {
    let dir = tmp("phi-scan");
    let dcm = dir.join("dicom");
    std::fs::create_dir_all(&dcm).unwrap();
    for f in DICOMS {
        std::fs::copy(corpus_dicoms().join(f), dcm.join(f)).unwrap();
    }
    for keep in [false, true] {
        let index = dir.join(if keep { "keep-phi" } else { "plain" });
        let mut cmd = bin();
        cmd.args(["index", "--quiet", "--index"])
            .arg(&index)
            .arg(&dcm);
        if keep {
            cmd.arg("--keep-phi");
        }
        run_ok(&mut cmd);
        let n = simcase_index::Reader::open(&index).unwrap().len();
        assert_eq!(n, DICOMS.len(), "all four DICOMs are indexed");
        let after_ingest = find_in_files(&index, &PHI);
        // And with a server reading it (SQLite's -shm and possibly -wal present).
        let srv = Server::start(&index, &[]);
        let mut c = srv.client();
        assert_eq!(c.get("/api/search?id=0&k=3").unwrap().status, 200);
        let names: Vec<String> = std::fs::read_dir(&index)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let while_served = find_in_files(&index, &PHI);
        drop(c);
        drop(srv);
        println!("keep-phi {keep}: files {names:?}, found {after_ingest:?} / {while_served:?}");
        if keep {
            for p in PHI {
                assert!(
                    after_ingest.iter().any(|(f, _)| f == p),
                    "--keep-phi: {p:?} not found in {}: the scan cannot see it",
                    index.display()
                );
            }
        } else {
            assert!(after_ingest.is_empty(), "stored: {after_ingest:?}");
            assert!(while_served.is_empty(), "stored: {while_served:?}");
        }
    }
}

#[test]
fn oversized_uploads_are_refused_with_json() {
    let srv = Server::start(&shared_index(), &["--max-upload-mb", "1"]);
    let mut c = srv.client();
    let (ty, body) = multipart_file("big.png", &vec![0u8; 3 << 20]);
    let r = c.post("/api/search", &ty, &body).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json().unwrap()["error"].is_string());
    let mut c = srv.client();
    assert_eq!(c.get("/healthz").unwrap().status, 200);
}

#[test]
fn off_loopback_needs_a_token_and_the_token_is_checked() {
    let index = shared_index();
    // --no-token is for loopback only.
    let out = bin()
        .args(["serve", "--no-token", "--bind", "0.0.0.0:0", "--index"])
        .arg(&index)
        .env_remove("SIMCASE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a token") && err.contains("--no-token"),
        "{err}"
    );

    let srv = Server::start(&index, &["--token", "s3cret-token"]);
    assert!(
        !srv.page.contains("s3cret"),
        "a given token is not printed: {}",
        srv.page
    );
    let mut anon = Client::new(&srv.addr);
    assert_eq!(anon.get("/healthz").unwrap().status, 200);
    assert_eq!(
        anon.get("/").unwrap().status,
        200,
        "the page itself holds no data"
    );
    for p in ["/api/stats", "/api/search?id=1", "/api/items/1/thumbnail"] {
        let r = anon.get(p).unwrap();
        assert_eq!(r.status, 401, "{p}");
    }
    let mut wrong = srv.client().with_token("s3cret-tokem");
    assert_eq!(wrong.get("/api/stats").unwrap().status, 401);
    let mut ok = srv.client().with_token("s3cret-token");
    assert_eq!(ok.get("/api/stats").unwrap().status, 200);
    assert_eq!(ok.get("/api/search?id=1&k=3").unwrap().status, 200);
    assert!(!srv.log().contains("s3cret"), "the token is never logged");
}

/// `simcase index` appends while the server answers; readers only ever see whole items, and
/// concurrent uploads are served (and batched) by the one loaded model.
#[test]
fn serves_during_ingest_and_batches_concurrent_uploads() {
    let dir = tmp("live");
    let index = dir.join("index");
    let m1 = manifest(&dir, 10, 23, 1);
    index_manifest(&index, &m1);
    let srv = Server::start(&index, &[]);
    let more = dir.join("more");
    std::fs::create_dir_all(&more).unwrap();
    let m2 = manifest(&more, 40, 11, 2);
    let mut writer = bin()
        .args(["index", "--quiet", "--batch", "4", "--index"])
        .arg(&index)
        .arg("--manifest")
        .arg(&m2)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = srv.client();
    let t = Instant::now();
    let mut sizes = Vec::new();
    loop {
        let s = c.get("/api/stats").unwrap().json().unwrap();
        let n = s["items"].as_u64().unwrap();
        sizes.push(n);
        // Every visible item is whole: searchable, with metadata and a thumbnail.
        let r = c.get(&format!("/api/search?id={}&k=3", n - 1)).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let last = c
            .get(&format!("/api/items/{}", n - 1))
            .unwrap()
            .json()
            .unwrap();
        assert!(last["label"].is_string(), "{last}");
        let done = writer.try_wait().unwrap().is_some();
        if done && n == simcase_index::Reader::open(&index).unwrap().len() as u64 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "sizes seen: {sizes:?}"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(writer.wait().unwrap().success());
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert!(
        sizes.len() > 2 && sizes[0] < *sizes.last().unwrap(),
        "the server saw growth: {sizes:?}"
    );

    let st = c.get("/api/stats").unwrap().json().unwrap();
    let before = st["embedding"]["images"].as_u64().unwrap();
    let batches_before = st["embedding"]["batches"].as_u64().unwrap();
    assert_eq!(
        st["embedding"]["largest_batch"].as_u64().unwrap(),
        0,
        "no upload yet: {st}"
    );
    let (ty, body) = multipart_file("q.png", &png_of("images/busi/benign_136.png"));
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (ty, body, addr) = (&ty, &body, &srv.addr);
            let token = srv.token.as_deref().unwrap();
            s.spawn(move || {
                let r = Client::new(addr)
                    .with_token(token)
                    .post("/api/search?k=5", ty, body)
                    .unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
            });
        }
    });
    let st = c.get("/api/stats").unwrap().json().unwrap();
    assert_eq!(
        st["embedding"]["images"].as_u64().unwrap(),
        before + 8,
        "{st}"
    );
    println!(
        "embedding batches after 8 concurrent uploads: {}",
        st["embedding"]
    );
    // They were batched: fewer batches than uploads, and at least one held several. The
    // first upload starts a batch alone; the others arrive while it runs (one image takes
    // ~100 ms) and share the next.
    let batches = st["embedding"]["batches"].as_u64().unwrap() - batches_before;
    assert!(
        batches < 8,
        "8 concurrent uploads took {batches} batches: {st}"
    );
    assert!(
        st["embedding"]["largest_batch"].as_u64().unwrap() >= 2,
        "no batch held two uploads: {st}"
    );
}

/// The page in headless Debian Chromium, driven by playwright-core
/// (`crates/server/browser/browser.test.mjs`): upload, wait for results, crop and search the
/// region, filter by a chip, compare side by side, keyboard "more like this", error state.
/// Screenshots go to `target/screenshots/`. Needs `/usr/bin/chromium` and `npm ci` in
/// `crates/server/browser`; skipped without them unless `SIMCASE_BROWSER_TEST=1` or `CI` is set.
#[test]
fn page_works_in_headless_chromium() {
    let srv = Server::start(&shared_index(), &[]);
    let shot = screenshot("page.png");
    let image = data().join("images/busi/benign_136.png");
    let Some(stdout) = browser_script(
        "browser.test.mjs",
        &[
            ("SIMCASE_URL", srv.page["open ".len()..].as_ref()),
            ("SIMCASE_IMAGE", image.as_os_str()),
            ("SIMCASE_SCREENSHOT", shot.as_os_str()),
        ],
    ) else {
        return;
    };
    assert!(stdout.contains("filter chip keeps only CT"));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    assert_no_phi("the server log", &srv.log());
}

/// A short smoke run of the load generator (`simcase bench serve`), which gives the full
/// 30 s / 32-connection numbers in the README: both phases finish with zero errors.
#[test]
fn load_smoke_run_has_no_errors() {
    let srv = Server::start(&shared_index(), &[]);
    let upload = data().join("images/busi/benign_136.png");
    let out = run_ok(
        bin()
            .args([
                "bench",
                "serve",
                "--seconds",
                "2",
                "--connections",
                "8",
                "--addr",
            ])
            .arg(&srv.addr)
            .arg("--upload")
            .arg(&upload)
            .arg("--token")
            .arg(srv.token.as_deref().unwrap()),
    );
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| search by"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for r in rows {
        let cells: Vec<&str> = r.split('|').map(str::trim).collect();
        let requests: usize = cells[2].parse().unwrap();
        assert!(requests > 0, "{r}");
        assert_eq!(cells[7], "0", "errors under load: {r}");
    }
}

/// Issue 10: `GET /api/search?id=3&offset=1000000000000` aborted the whole server (a ranking
/// heap sized `offset + k`, 16 TB). Every offset now answers a page, empty at or past the
/// candidates, without allocating by the offset, and the server goes on answering.
#[test]
fn huge_offsets_answer_empty_pages_and_the_server_goes_on() {
    let srv = Server::start(&shared_index(), &[]);
    let mut c = srv.client();
    let stats = c.get("/api/stats").unwrap().json().unwrap();
    let n = stats["items"].as_u64().unwrap();
    let ct = stats["counts"]["modality"]["CT"].as_u64().unwrap();
    let item3 = c.get("/api/items/3").unwrap().json().unwrap();
    // Candidates for "more like item 3": every other item (those of item 3's modality, less
    // item 3 itself, when filtered to CT).
    let ct_candidates = ct - u64::from(item3["modality"] == "CT");
    for (q, candidates, grouped) in [
        ("offset=1000000000000".to_string(), n - 1, false),
        (format!("offset={}&k=500", usize::MAX), n - 1, false),
        (format!("offset={}", n - 1), n - 1, false),
        ("offset=1000000000000&group_by=patient".into(), n - 1, true),
        (format!("offset={}&group_by=study", usize::MAX), n - 1, true),
        (
            "offset=1000000000000&modality=CT".into(),
            ct_candidates,
            false,
        ),
        (
            format!("offset={ct_candidates}&modality=CT"),
            ct_candidates,
            false,
        ),
    ] {
        let r = c.get(&format!("/api/search?id=3&{q}")).unwrap();
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let j = r.json().unwrap();
        assert_eq!(j["hits"].as_array().map(Vec::len), Some(0), "{q}: {j}");
        assert_eq!(j["candidates"], candidates, "{q}");
        if grouped {
            assert_eq!(j["groups"].as_array().map(Vec::len), Some(0), "{q}");
        }
        assert_eq!(c.get("/healthz").unwrap().status, 200, "after {q}");
    }
    // The page just before the end holds what is left.
    let last = c
        .get(&format!("/api/search?id=3&k=10&offset={}", n - 3))
        .unwrap()
        .json()
        .unwrap();
    let ranks: Vec<u64> = last["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, vec![n - 2, n - 1]);
    // Several at once, as a crowd of clients would send them.
    let addr = srv.addr.clone();
    let token = srv.token.clone().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (addr, token) = (addr.clone(), token.clone());
            std::thread::spawn(move || {
                let mut c = Client::new(&addr).with_token(&token);
                let q = format!(
                    "/api/search?id={i}&k=500&offset={}",
                    1_000_000_000_000u64 + i
                );
                c.get(&q).unwrap().status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let r = c.get("/api/search?id=3&k=5").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["hits"].as_array().unwrap().len(), 5);
}

/// Study dates: a value that is not a date is a 400 naming its parameter (it answered 200 with
/// no hits), and a valid range keeps exactly the items whose stored study date is in it.
#[test]
fn study_dates_are_validated_and_filter() {
    let srv = Server::start(&shared_index(), &[]);
    let mut c = srv.client();
    for (q, name) in [
        ("date_from=notadate", "date_from"),
        ("date_to=notadate", "date_to"),
        ("date_from=2019-13-01", "date_from"),
        ("date_from=2020-01-01&date_to=2019-12-31", "date_from"),
    ] {
        let r = c.get(&format!("/api/search?id=0&{q}")).unwrap();
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        let e = r.json().unwrap()["error"].as_str().unwrap().to_string();
        assert!(e.starts_with(&format!("{name}: ")), "{q}: {e}");
    }
    // The stored dates (DICOM StudyDate, YYYYMMDD), read through the API.
    let n = c.get("/api/stats").unwrap().json().unwrap()["items"]
        .as_u64()
        .unwrap();
    let dates: Vec<(u64, String)> = (0..n)
        .filter_map(|i| {
            let it = c.get(&format!("/api/items/{i}")).unwrap().json().unwrap();
            let d = it["extra"]["study_date"].as_str()?.trim().to_string();
            Some((i, d))
        })
        .collect();
    assert!(!dates.is_empty(), "the DICOMs carry study dates");
    let query = (0..n)
        .find(|i| dates.iter().all(|(id, _)| id != i))
        .unwrap();
    for (from, to) in [
        ("1900-01-01", "21001231"),
        ("19000101", "1999-12-31"),
        ("2000-01-01", "2100-01-01"),
    ] {
        let key = |d: &str| d.replace(['-', '.'], "");
        let want = dates
            .iter()
            .filter(|(_, d)| key(d) >= key(from) && key(d) <= key(to))
            .count();
        let r = c
            .get(&format!(
                "/api/search?id={query}&k=100&date_from={from}&date_to={to}"
            ))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json().unwrap();
        assert_eq!(j["candidates"], want as u64, "{from}..{to}: {j}");
        assert_eq!(j["hits"].as_array().unwrap().len(), want);
    }
}

/// Every parameter of every route: a bad value is a 400 whose one-line JSON error starts with
/// the parameter's name; nothing is a 500 or a crash, and the server goes on.
#[test]
fn views_and_reranking_answer_through_the_api_and_the_stats_list_views() {
    let dir = tmp("serve-views");
    let m = manifest(&dir, 30, 13, 0);
    let index = dir.join("index");
    index_manifest(&index, &m);
    run_ok(
        bin()
            .args(["adapt", "--method", "whiten", "--name", "w1", "--index"])
            .arg(&index),
    );
    let srv = Server::start(&index, &[]);
    let mut c = srv.client();
    let stats = c.get("/api/stats").unwrap().json().unwrap();
    assert_eq!(stats["views"], serde_json::json!(["w1"]), "{stats}");
    let plain = c.get("/api/search?id=2&k=5").unwrap().json().unwrap();
    assert!(plain.get("view").is_none());
    // Twice: the second answer comes from the cached mapping, the same.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = c.get("/api/search?id=2&k=5&view=w1").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        answers.push(r.json().unwrap());
    }
    let v = &answers[0];
    assert_eq!(v["view"], "w1");
    assert_eq!(v["hits"], answers[1]["hits"]);
    // The view's scores are cosines in the whitened space, not the model's.
    let s0 = |r: &serde_json::Value| r["hits"][0]["score"].as_f64().unwrap();
    assert!((s0(v) - s0(&plain)).abs() > 1e-3, "{v} {plain}");
    // The same, computed here.
    let view = simcase_adapt::view::load(&index, "w1").unwrap();
    let reader = simcase_index::Reader::open(&index).unwrap();
    let q = view.adapter.apply(reader.vector(2).unwrap());
    let best = v["hits"][0]["id"].as_u64().unwrap();
    let y = view.adapter.apply(reader.vector(best).unwrap());
    let cos: f32 = q.iter().zip(&y).map(|(a, b)| a * b).sum();
    assert!((f64::from(cos) - s0(v)).abs() < 1e-4, "{cos} vs {v}");
    for rr in ["kr", "aqe", "none"] {
        let r = c
            .get(&format!("/api/search?id=2&k=5&view=w1&rerank={rr}"))
            .unwrap();
        assert_eq!(r.status, 200, "{rr}: {}", r.text());
        assert_eq!(r.json().unwrap()["hits"].as_array().unwrap().len(), 5);
    }
    let r = c.get("/api/search?id=2&view=w2").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json().unwrap()["error"],
        "view: no view \"w2\" (views of this index: w1)"
    );
}

#[test]
fn every_bad_parameter_is_a_400_naming_it() {
    let srv = Server::start(&shared_index(), &[]);
    let mut c = srv.client();
    let long_text = "x".repeat(2000);
    let long_value = "y".repeat(300);
    let many_values: String = (0..40).map(|i| format!("&label=L{i}")).collect();
    let many_params: String = (0..70).map(|i| format!("&source=S{i}")).collect();
    let table: Vec<(String, &str)> = vec![
        ("/api/search?id=3&k=abc".into(), "k"),
        ("/api/search?id=3&k=0".into(), "k"),
        ("/api/search?id=3&k=-5".into(), "k"),
        ("/api/search?id=3&k=100000".into(), "k"),
        ("/api/search?id=3&k=1&k=2".into(), "k"),
        ("/api/search?id=3&offset=-1".into(), "offset"),
        ("/api/search?id=3&offset=1e3".into(), "offset"),
        (
            "/api/search?id=3&offset=99999999999999999999999".into(),
            "offset",
        ),
        ("/api/search?id=abc".into(), "id"),
        ("/api/search?id=-1".into(), "id"),
        ("/api/search?id=1&id=2".into(), "id"),
        ("/api/search?k=5".into(), "id"),
        ("/api/search?id=3&text=lung".into(), "text"),
        ("/api/search?text=%20%20".into(), "text"),
        (format!("/api/search?text={long_text}"), "text"),
        ("/api/search?id=3&group_by=doctor".into(), "group_by"),
        ("/api/search?id=3&window=nope".into(), "window"),
        ("/api/search?id=3&window=nan,400".into(), "window"),
        ("/api/search?id=3&view=..%2Fetc".into(), "view"),
        ("/api/search?id=3&view=nosuch".into(), "view"),
        ("/api/search?id=3&rerank=dba".into(), "rerank"),
        ("/api/search?sop_uid=1.2%2F3".into(), "sop_uid"),
        ("/api/search?sop_uid=1.2&sop_uid=1.3".into(), "sop_uid"),
        ("/api/search?id=3&sop_uid=1.2".into(), "sop_uid"),
        (
            "/api/search?id=3&include_same_study=maybe".into(),
            "include_same_study",
        ),
        (
            "/api/search?id=3&exclude_same_patient=2".into(),
            "exclude_same_patient",
        ),
        ("/api/search?id=3&date_from=notadate".into(), "date_from"),
        ("/api/search?id=3&date_to=2019-02-30".into(), "date_to"),
        ("/api/search?id=3&modality=".into(), "modality"),
        (
            format!("/api/search?id=3&modality={long_value}"),
            "modality",
        ),
        ("/api/search?id=3&nosuchfield=1".into(), "nosuchfield"),
        ("/api/search?id=3&meta.=1".into(), "meta."),
        (format!("/api/search?id=3{many_values}"), "label"),
        (format!("/api/search?id=3{many_params}"), "query"),
        ("/api/items/abc".into(), "id"),
        ("/api/items/-1".into(), "id"),
        ("/api/items/%FF".into(), "id"),
        ("/api/items/99999999999999999999".into(), "id"),
        ("/api/items/abc/thumbnail".into(), "id"),
        ("/api/items/0/thumbnail?size=abc".into(), "size"),
        ("/api/items/0/thumbnail?size=8".into(), "size"),
        ("/api/items/0/thumbnail?size=100000".into(), "size"),
        ("/api/items/0/thumbnail?size=64&size=65".into(), "size"),
        ("/api/items/0/thumbnail?window=nope".into(), "window"),
        ("/api/items/0/thumbnail?window=40,inf".into(), "window"),
        ("/api/items/0/thumbnail?sise=64".into(), "sise"),
    ];
    for (path, name) in &table {
        let r = c.get(path).unwrap();
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let e = r.json().unwrap()["error"].as_str().unwrap().to_string();
        assert!(e.starts_with(&format!("{name}: ")), "{path}: {e}");
        assert!(!e.contains('\n') && e.len() < 400, "{path}: {e}");
    }
    // Uploads take the same parameters; the upload is the query, so id= and text= are refused.
    let (ty, body) = multipart_file("q.png", &png_of("images/busi/benign_136.png"));
    for (q, name) in [
        ("date_from=notadate", "date_from"),
        ("k=0", "k"),
        ("id=3", "id"),
        ("text=lung", "text"),
    ] {
        let r = c.post(&format!("/api/search?{q}"), &ty, &body).unwrap();
        assert_eq!(r.status, 400, "POST {q}: {}", r.text());
        let e = r.json().unwrap()["error"].as_str().unwrap().to_string();
        assert!(e.starts_with(&format!("{name}: ")), "POST {q}: {e}");
    }
    // Well-formed ids of items the index lacks are 404, by type.
    for path in [
        "/api/search?id=99999",
        "/api/items/99999",
        "/api/items/99999/thumbnail",
    ] {
        let r = c.get(path).unwrap();
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.json().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("no item 99999"));
    }
    // Good values of the same parameters still work.
    for path in [
        "/api/search?id=3&k=3&offset=2&group_by=&window=&modality=CT&modality=MR",
        "/api/search?id=3&k=3&date_from=1900-01-01&date_to=21001231",
        "/api/items/0/thumbnail?size=16&window=40,400",
    ] {
        assert_eq!(c.get(path).unwrap().status, 200, "{path}");
    }
    assert_eq!(c.get("/healthz").unwrap().status, 200);
}

/// A valid `w`×`h` 8-bit grey PNG of one level: ~60 KB for 64 M pixels (1.1 GB as float RGB).
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; w as usize + 1];
    for _ in 0..h {
        z.write_all(&row).unwrap();
    }
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&z.finish().unwrap());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for c in [&ihdr[..], &idat[..], b"IEND"] {
        out.extend_from_slice(&(c.len() as u32 - 4).to_be_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(&crc32(c).to_be_bytes());
    }
    out
}

/// The kernel's peak resident set of a live process, in MiB.
fn vm_hwm_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Concurrent uploads of an 8000×8000 bomb PNG under a small `--decode-budget-mb`: each
/// answer is a search (200) or 503 with Retry-After, the server keeps serving, and its peak
/// RSS stays under the budget plus fixed overheads (before the budget and the reduced PNG
/// decoding, four such uploads took it from 120 MB to 4 GB).
#[test]
fn bomb_uploads_share_the_decode_budget_and_never_crash_the_server() {
    const BUDGET_MB: f64 = 100.0;
    // The model and a batch's activations, the runtime, the uploads' bodies in flight.
    const OVERHEAD_MB: f64 = 700.0;
    let dir = tmp("serve-bombs");
    let m = manifest(&dir, 3, 101, 5);
    let index = dir.join("index");
    index_manifest(&index, &m);
    let srv = Server::start(&index, &["--decode-budget-mb", &format!("{BUDGET_MB}")]);
    let pid = srv.srv.child.id();
    let idle = vm_hwm_mb(pid);
    let (ty, body) = multipart_file("bomb.png", &bomb_png(8000, 8000));
    assert!(body.len() < 1 << 20, "{} bytes", body.len());
    let statuses: Vec<(u16, Option<String>, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (ty, body, srv) = (&ty, &body, &srv);
                s.spawn(move || {
                    let r = srv.client().post("/api/search?k=3", ty, body).unwrap();
                    (r.status, r.retry_after.clone(), r.text())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let peak = vm_hwm_mb(pid);
    println!("6 concurrent 8000x8000 uploads: peak RSS {peak:.0} MiB (idle {idle:.0} MiB), statuses {:?}",
        statuses.iter().map(|s| s.0).collect::<Vec<_>>());
    for (status, retry, text) in &statuses {
        match status {
            200 => {
                let j: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(j["hits"].as_array().unwrap().len(), 3, "{text}");
            }
            503 => {
                assert!(retry.is_some(), "503 without Retry-After: {text}");
                assert!(text.contains("error"), "{text}");
            }
            other => panic!("status {other}: {text}"),
        }
    }
    assert!(
        statuses.iter().any(|s| s.0 == 200),
        "at least one upload gets its turn: {statuses:?}"
    );
    // Still serving.
    assert_eq!(srv.client().get("/healthz").unwrap().status, 200);
    assert!(
        peak < BUDGET_MB + OVERHEAD_MB,
        "peak RSS {peak:.0} MiB over the bound {} MiB",
        BUDGET_MB + OVERHEAD_MB
    );
    // An image that needs more than the whole budget is refused at once, naming the bytes.
    let tiny = Server::start(&index, &["--decode-budget-mb", "16"]);
    let r = tiny.client().post("/api/search?k=3", &ty, &body).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("decode budget"), "{}", r.text());
}

/// Thumbnails read stored files (no upload slot bounds them): each file's bytes are taken
/// from the decode budget before it is read, so that concurrent thumbnails of a large stored
/// file stay within the budget (before, 30 thumbnails of a 100 MB DICOM under a 256 MiB
/// budget took the server to 5.8 GB). The file: a real PNG carrying a 48 MiB private chunk.
#[test]
fn thumbnails_of_a_large_stored_file_share_the_decode_budget() {
    const BUDGET_MB: f64 = 64.0;
    // Responses, connections and the allocator's slack.
    const SLACK_MB: f64 = 200.0;
    let dir = tmp("serve-thumb-budget");
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let png = png_of("images/busi/benign_136.png");
    // After the signature and IHDR (8 + 25 bytes): an ancillary, private chunk, which
    // decoders skip.
    let mut chunk = b"prVt".to_vec();
    chunk.resize(4 + (48 << 20), 0);
    let mut big = png[..33].to_vec();
    big.extend_from_slice(&((chunk.len() - 4) as u32).to_be_bytes());
    big.extend_from_slice(&chunk);
    big.extend_from_slice(&crc32(&chunk).to_be_bytes());
    big.extend_from_slice(&png[33..]);
    std::fs::write(imgs.join("big.png"), &big).unwrap();
    let index = dir.join("index");
    run_ok(
        bin()
            .args(["index", "--quiet", "--index"])
            .arg(&index)
            .arg(&imgs),
    );
    let srv = Server::start(&index, &["--decode-budget-mb", &format!("{BUDGET_MB}")]);
    let pid = srv.srv.child.id();
    assert_eq!(
        srv.client()
            .get("/api/items/0/thumbnail?size=64")
            .unwrap()
            .status,
        200
    );
    let idle = vm_hwm_mb(pid);
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let srv = &srv;
                // A size each, so that none comes from the thumbnail cache.
                s.spawn(move || {
                    let r = srv
                        .client()
                        .get(&format!("/api/items/0/thumbnail?size={}", 100 + i))
                        .unwrap();
                    (r.status, r.text())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let peak = vm_hwm_mb(pid);
    println!(
        "16 thumbnails of a 48 MiB file: peak RSS {peak:.0} MiB (idle {idle:.0} MiB), statuses {:?}",
        statuses.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    for (status, text) in &statuses {
        assert!(matches!(status, 200 | 503), "status {status}: {text}");
    }
    assert!(statuses.iter().any(|s| s.0 == 200), "{statuses:?}");
    assert!(
        peak < idle + BUDGET_MB + SLACK_MB,
        "peak RSS {peak:.0} MiB over idle {idle:.0} + budget {BUDGET_MB} + {SLACK_MB} MiB"
    );
    // A stored file larger than the whole budget is refused before it is read.
    let tiny = Server::start(&index, &["--decode-budget-mb", "16"]);
    let r = tiny.client().get("/api/items/0/thumbnail?size=90").unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("decode budget"), "{}", r.text());
}
