//! PACS integration against a real Orthanc 1.10 with its DICOMweb plugin (started by `.ci/run`
//! on loopback: `SIMCASE_ORTHANC`, `SIMCASE_ORTHANC_AUTH`). Real pydicom-data objects are
//! uploaded through Orthanc's REST API; `simcase index dicomweb+http://…` must then give the
//! same items and embeddings as indexing the files themselves, fetch only what is new on a
//! re-run, resume after a kill with nothing lost or duplicated, and refuse wrong credentials in
//! one line. Without Orthanc the tests say so and pass, except under CI, where they fail.

mod common;
use base64::Engine as _;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The pydicom-data objects uploaded: one per family of UIDs (the `_UNCR`/`_J2KR` copies of
/// one image share their SOP Instance UID), single- and multi-frame, MR, CT, US, RG and SC.
const FILES: [&str; 7] = [
    "MR2_UNCR.dcm",
    "693_UNCR.dcm",
    "RG1_UNCR.dcm",
    "US1_UNCR.dcm",
    "SC_rgb.dcm",
    "JPEG-LL.dcm",
    "emri_small.dcm",
];

/// Orthanc's HTTP address and `user:password`, or `None` (said) when it is not running here.
fn orthanc() -> Option<(String, String)> {
    match (
        std::env::var("SIMCASE_ORTHANC"),
        std::env::var("SIMCASE_ORTHANC_AUTH"),
    ) {
        (Ok(a), Ok(u)) => Some((a, u)),
        _ if in_ci() => panic!("SIMCASE_ORTHANC and SIMCASE_ORTHANC_AUTH are not set under CI"),
        _ => {
            println!("skipped: no Orthanc (set SIMCASE_ORTHANC=HOST:PORT and SIMCASE_ORTHANC_AUTH=USER:PASSWORD)");
            None
        }
    }
}

/// Upload `files` to Orthanc through its REST API (`POST /instances`).
/// The `Authorization` header for Orthanc's REST API (`user:password`).
fn basic(auth: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(auth)
    )
}

/// Orthanc's id of the instance with this SOP Instance UID (`/tools/lookup`).
fn orthanc_id(addr: &str, auth: &str, uid: &str) -> String {
    let found: serde_json::Value = serde_json::from_str(
        &ureq::post(&format!("http://{addr}/tools/lookup"))
            .set("Authorization", &basic(auth))
            .send_string(uid)
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    found[0]["ID"]
        .as_str()
        .unwrap_or_else(|| panic!("Orthanc holds no {uid}: {found}"))
        .to_string()
}

fn upload(addr: &str, auth: &str, files: &[std::path::PathBuf]) {
    let basic = basic(auth);
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        let r = ureq::post(&format!("http://{addr}/instances"))
            .set("Authorization", &basic)
            .set("Content-Type", "application/dicom")
            .send_bytes(&bytes);
        assert!(r.is_ok(), "uploading {}: {r:?}", f.display());
    }
}

/// `simcase index` with the DICOMweb credentials of `auth` (`user:password`).
fn index_dicomweb(index: &Path, addr: &str, auth: &str, extra: &[&str]) -> std::process::Command {
    let (user, password) = auth.split_once(':').unwrap();
    let mut c = bin();
    c.args(["index", "--quiet"])
        .arg(format!("dicomweb+http://{addr}/dicom-web"))
        .arg("--index")
        .arg(index)
        .args(extra)
        .env("SIMCASE_DICOMWEB_USER", user)
        .env("SIMCASE_DICOMWEB_PASSWORD", password)
        .env_remove("SIMCASE_DICOMWEB_TOKEN");
    c
}

/// Each item by content id: (SOP Instance UID, study UID, path, vector).
type Items = BTreeMap<String, (String, String, String, Vec<f32>)>;

fn items(index: &Path) -> Items {
    let r = simcase_index::Reader::open(index).unwrap();
    r.items()
        .unwrap()
        .into_iter()
        .map(|it| {
            let v = r.vector(it.id).unwrap().to_vec();
            let m = it.meta;
            (
                m.hash,
                (
                    m.sop_uid.unwrap_or_default(),
                    m.study_uid.unwrap_or_default(),
                    m.path,
                    v,
                ),
            )
        })
        .collect()
}

/// The files of [`FILES`], indexed from disk once: the reference, and the studies to select.
fn reference(dir: &Path) -> (Items, Vec<String>) {
    let files: Vec<_> = FILES.iter().map(|f| corpus_dicoms().join(f)).collect();
    let local = dir.join("local");
    run_ok(
        bin()
            .args(["index", "--quiet", "--index"])
            .arg(&local)
            .args(&files),
    );
    let want = items(&local);
    let studies: BTreeSet<String> = want.values().map(|v| v.1.clone()).collect();
    (want, studies.into_iter().collect())
}

fn study_args(studies: &[String]) -> Vec<String> {
    studies
        .iter()
        .flat_map(|s| ["--study".to_string(), s.clone()])
        .collect()
}

/// A test's start: Orthanc (or `None`, said), [`FILES`] uploaded, the files indexed from disk
/// (the reference items) and `--study` arguments selecting their studies.
struct Setup {
    addr: String,
    auth: String,
    dir: TmpDir,
    want: Items,
    study_args: Vec<String>,
}

fn setup(name: &str) -> Option<Setup> {
    let (addr, auth) = orthanc()?;
    let dir = tmp(name);
    let files: Vec<_> = FILES.iter().map(|f| corpus_dicoms().join(f)).collect();
    upload(&addr, &auth, &files);
    let (want, studies) = reference(&dir);
    Some(Setup {
        study_args: study_args(&studies),
        addr,
        auth,
        dir,
        want,
    })
}

#[test]
fn dicomweb_ingest_equals_indexing_the_files_and_a_rerun_fetches_nothing() {
    let Some(Setup {
        addr,
        auth,
        dir,
        want,
        study_args: sargs,
    }) = setup("pacs-dicomweb")
    else {
        return;
    };
    assert!(
        want.len() > FILES.len(),
        "multi-frame objects give an item per frame"
    );
    let sargs: Vec<&str> = sargs.iter().map(String::as_str).collect();

    let pacs = dir.join("pacs");
    let out = index_dicomweb(&pacs, &addr, &auth, &sargs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} instances found", FILES.len())),
        "{err}"
    );
    let got = items(&pacs);
    // The same items (content ids: the fetched bytes are the files'), the same UIDs and the
    // same embeddings; each item's path is its instance's DICOMweb URL.
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (hash, (sop, study, path, v)) in &got {
        let (wsop, wstudy, _, wv) = &want[hash];
        assert_eq!((sop, study), (wsop, wstudy));
        assert!(
            path.starts_with(&format!(
                "dicomweb+http://{addr}/dicom-web/studies/{study}/series/"
            )) && path.ends_with(&format!("/instances/{sop}")),
            "{path}"
        );
        let worst = v
            .iter()
            .zip(wv)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{hash}: embeddings differ by {worst}");
    }

    // A re-run fetches nothing: every SOP Instance UID is stored.
    let out = index_dicomweb(&pacs, &addr, &auth, &sargs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{} of them already indexed (by SOP Instance UID), not fetched",
            FILES.len()
        )) && err.contains("indexed 0 new"),
        "{err}"
    );
    assert_eq!(items(&pacs).len(), got.len());

    // --keep-files: each fetched instance also kept, byte for byte the archived file.
    let kept = dir.join("kept");
    let mut args = sargs.clone();
    args.extend(["--keep-files", kept.to_str().unwrap()]);
    run_ok(&mut index_dicomweb(
        &dir.join("with-copies"),
        &addr,
        &auth,
        &args,
    ));
    let copies: BTreeSet<String> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|e| simcase_imaging::content_hash(&std::fs::read(e.unwrap().path()).unwrap()))
        .collect();
    let files_hashes: BTreeSet<String> = got
        .keys()
        .map(|h| h.split('#').next().unwrap().to_string())
        .collect();
    assert_eq!(copies, files_hashes);

    // A modality selects on the server's side.
    let mr = dir.join("mr");
    let mut args = sargs.clone();
    args.extend(["--modality", "MR"]);
    run_ok(&mut index_dicomweb(&mr, &addr, &auth, &args));
    let r = simcase_index::Reader::open(&mr).unwrap();
    let mods: BTreeSet<Option<String>> = r
        .items()
        .unwrap()
        .into_iter()
        .map(|i| i.meta.modality)
        .collect();
    assert_eq!(mods, BTreeSet::from([Some("MR".to_string())]));

    // Wrong credentials: one line naming the refusal, not the password; the index is as it was.
    let (user, _) = auth.split_once(':').unwrap();
    let out = index_dicomweb(&pacs, &addr, &format!("{user}:wrong-pw"), &sargs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("401") && err.contains("refused the credentials"),
        "{err}"
    );
    assert!(!err.contains("wrong-pw"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(items(&pacs).len(), got.len());
    // No service there: one line too.
    let out = bin()
        .args([
            "index",
            "--quiet",
            "dicomweb+http://127.0.0.1:9/dicom-web",
            "--index",
        ])
        .arg(dir.join("none"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach it"),
        "{err}"
    );
    // Credentials in the URL are refused before anything is sent.
    let out = bin()
        .args([
            "index",
            &format!("dicomweb+http://{auth}@{addr}/dicom-web"),
            "--index",
        ])
        .arg(dir.join("none"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("credentials do not go in the URL"), "{err}");
    assert!(!err.contains(auth.split_once(':').unwrap().1), "{err}");
}

#[test]
fn a_killed_dicomweb_ingest_resumes_with_nothing_lost_or_duplicated() {
    let Some(Setup {
        addr,
        auth,
        dir,
        want,
        study_args: sargs,
    }) = setup("pacs-resume")
    else {
        return;
    };
    let mut args: Vec<&str> = sargs.iter().map(String::as_str).collect();
    args.extend(["--batch", "1", "--decode-threads", "1"]);
    let pacs = dir.join("pacs");
    let mut child = index_dicomweb(&pacs, &addr, &auth, &args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed (SIGKILL) once its first batch is committed, if it has not finished by then.
    let t = std::time::Instant::now();
    let mut killed_at = None;
    while t.elapsed() < std::time::Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let n = simcase_index::Reader::open(&pacs)
            .map(|r| r.len())
            .unwrap_or(0);
        if n >= 1 {
            child.kill().unwrap();
            killed_at = Some(n);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.wait().unwrap();
    match killed_at {
        Some(n) => {
            assert!(n < want.len(), "killed with {n} of {} items in", want.len());
            println!("killed with {n} of {} items committed", want.len());
        }
        None => println!("the ingest finished before it could be killed"),
    }
    run_ok(&mut index_dicomweb(&pacs, &addr, &auth, &args));
    let got = items(&pacs);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "every item once after the resume (killed at {killed_at:?})"
    );
    let r = simcase_index::Reader::open(&pacs).unwrap();
    assert_eq!(r.len(), want.len(), "no row stored twice");
}

/// `simcase search --json` hits as JSON values.
fn search_json(index: &Path, args: &[&str], auth: &str) -> (Vec<serde_json::Value>, String) {
    let (user, password) = auth.split_once(':').unwrap();
    let out = bin()
        .args(["search", "--json", "--index"])
        .arg(index)
        .args(args)
        .env("SIMCASE_DICOMWEB_USER", user)
        .env("SIMCASE_DICOMWEB_PASSWORD", password)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (hits.as_array().unwrap().clone(), err)
}

#[test]
fn an_archived_instance_is_a_query_that_leaves_out_its_own_study_and_links_to_the_viewer() {
    let Some(Setup {
        addr,
        auth,
        dir,
        want,
        study_args: sargs,
    }) = setup("pacs-reference")
    else {
        return;
    };
    let sargs: Vec<&str> = sargs.iter().map(String::as_str).collect();
    let pacs = dir.join("pacs");
    run_ok(&mut index_dicomweb(&pacs, &addr, &auth, &sargs));
    // emri_small: ten frames of one instance, so ten items of one study.
    let got = items(&pacs);
    let (_, (sop, study, url, _)) = got
        .iter()
        .find(|(h, _)| h.ends_with("#9"))
        .expect("a multi-frame instance");
    let url = url.clone();
    let study_of = |h: &serde_json::Value| h["study_uid"].as_str().unwrap_or("").to_string();

    // By reference, held by the index: its stored embedding; its own study is left out.
    let (hits, err) = search_json(&pacs, &[&url, "-k", "20"], &auth);
    assert!(err.contains("the index holds this instance"), "{err}");
    assert_eq!(
        hits.len(),
        want.len() - 10,
        "every item but the query's study"
    );
    assert!(hits.iter().all(|h| &study_of(h) != study), "{hits:?}");
    // Kept when asked: the other nine frames are among the results.
    let same_study = |hs: &[serde_json::Value]| hs.iter().filter(|h| &study_of(h) == study).count();
    let (kept, _) = search_json(&pacs, &[&url, "-k", "20", "--include-same-study"], &auth);
    assert_eq!(
        (kept.len(), same_study(&kept)),
        (want.len() - 1, 9),
        "{kept:?}"
    );
    // "More like this" keeps the study; the patient is left out when asked.
    let id0 = got.iter().find(|(h, _)| h.ends_with("#0")).unwrap();
    let r = simcase_index::Reader::open(&pacs).unwrap();
    let all = r.items().unwrap();
    let first = all.iter().find(|it| it.meta.hash == *id0.0).unwrap();
    let (same, _) = search_json(&pacs, &[&format!("id:{}", first.id), "-k", "20"], &auth);
    assert_eq!(same_study(&same), 9, "{same:?}");
    let with_patient = all.iter().find(|it| it.meta.patient_key.is_some()).unwrap();
    let patient = with_patient.meta.patient_key.clone().unwrap();
    let theirs = all
        .iter()
        .filter(|it| it.meta.patient_key.as_deref() == Some(patient.as_str()))
        .count();
    let (other, _) = search_json(
        &pacs,
        &[
            &format!("id:{}", with_patient.id),
            "-k",
            "20",
            "--exclude-same-patient",
        ],
        &auth,
    );
    assert_eq!(other.len(), want.len() - theirs, "{other:?}");
    assert!(
        other
            .iter()
            .all(|h| h["patient_key"].as_str() != Some(patient.as_str())),
        "{other:?}"
    );
    assert_eq!(sop, first.meta.sop_uid.as_deref().unwrap());

    // Not held: fetched by WADO-RS and embedded, as the same file searched from disk is.
    let mr = dir.join("mr");
    let mut args = sargs.clone();
    args.extend(["--modality", "MR"]);
    run_ok(&mut index_dicomweb(&mr, &addr, &auth, &args));
    let (us_url, us_hash) = got
        .iter()
        .find_map(|(h, (_, _, p, _))| {
            let held = simcase_index::Reader::open(&mr)
                .unwrap()
                .items()
                .unwrap()
                .iter()
                .any(|it| it.meta.hash == *h);
            (!held && !h.contains('#')).then(|| (p.clone(), h.clone()))
        })
        .expect("an instance the MR index does not hold");
    let local = dir.join("local");
    let file = simcase_index::Reader::open(&local)
        .unwrap()
        .items()
        .unwrap()
        .into_iter()
        .find(|it| it.meta.hash == us_hash)
        .unwrap()
        .meta
        .path;
    let (by_url, err) = search_json(&mr, &[&us_url, "-k", "5"], &auth);
    assert!(!err.contains("the index holds"), "{err}");
    let (by_file, _) = search_json(&mr, &[&file, "-k", "5"], &auth);
    let scores = |hs: &[serde_json::Value]| -> Vec<(u64, f64)> {
        hs.iter()
            .map(|h| (h["id"].as_u64().unwrap(), h["score"].as_f64().unwrap()))
            .collect()
    };
    let (a, b) = (scores(&by_url), scores(&by_file));
    assert_eq!(a.len(), b.len());
    for ((ia, sa), (ib, sb)) in a.iter().zip(&b) {
        assert!(ia == ib && (sa - sb).abs() < 1e-5, "{a:?} vs {b:?}");
    }

    // Viewer links: the template filled with each hit's UIDs.
    let tpl = "http://viewer.local/ohif?StudyInstanceUIDs={study}&sop={sop}";
    let (linked, _) = search_json(&pacs, &[&url, "-k", "3", "--viewer-url", tpl], &auth);
    for h in &linked {
        let want = format!(
            "http://viewer.local/ohif?StudyInstanceUIDs={}&sop={}",
            study_of(h),
            h["sop_uid"].as_str().unwrap()
        );
        assert_eq!(h["viewer"].as_str(), Some(want.as_str()), "{h}");
    }

    // The search written back into the PACS as a DICOM SR: Orthanc takes it (STOW-RS), and
    // dcmtk's dsrdump reads back the query's and each result's reference and score, in order.
    let target = format!("dicomweb+http://{addr}/dicom-web");
    let (reported, err) = search_json(
        &pacs,
        &[&url, "-k", "4", "--report-to-pacs", &target],
        &auth,
    );
    let sr_uid = err
        .split("report: SR ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{err}"))
        .to_string();
    check_sr(&addr, &auth, &sr_uid, &dir, sop, &reported);

    // The API: `sop_uid=` searches by the archived instance, the same way.
    let (user, password) = auth.split_once(':').unwrap();
    let srv = serve_env(
        &pacs,
        &["--no-token", "--viewer-url", tpl],
        &dir.join("serve.log"),
        &[
            ("SIMCASE_DICOMWEB_USER", user),
            ("SIMCASE_DICOMWEB_PASSWORD", password),
        ],
    );
    let mut c = simcase_server::client::Client::new(&srv.addr);
    let r = c.get(&format!("/api/search?sop_uid={sop}&k=20")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(v["query"]["sop_uid"], sop.as_str(), "{v}");
    let api_hits = v["hits"].as_array().unwrap();
    assert_eq!(api_hits.len(), hits.len());
    assert!(api_hits.iter().all(|h| &study_of(h) != study));
    assert!(api_hits.iter().all(|h| h["viewer"]
        .as_str()
        .is_some_and(|l| l.starts_with("http://viewer.local/"))));
    let r = c
        .get(&format!(
            "/api/search?sop_uid={sop}&k=20&include_same_study=true"
        ))
        .unwrap();
    let v = r.json().unwrap();
    assert_eq!(same_study(v["hits"].as_array().unwrap()), 9, "{v}");
    // Thumbnails of PACS-backed items: the instance fetched again by WADO-RS (a frame of a
    // multi-frame object as well).
    for h in api_hits.iter().take(3) {
        let r = c
            .get(&format!("/api/items/{}/thumbnail?size=64", h["id"]))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body.starts_with(b"\x89PNG"), "{}", r.content_type);
    }
    let frame = all.iter().find(|it| it.meta.hash.ends_with("#3")).unwrap();
    let r = c
        .get(&format!("/api/items/{}/thumbnail?size=64", frame.id))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get("/api/search?sop_uid=1.2.3.4.5").unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    // Reports are off unless the operator names a PACS.
    let r = c
        .post(&format!("/api/report?sop_uid={sop}"), "text/plain", b"")
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("--report-to-pacs"), "{}", r.text());
    assert_eq!(
        c.get("/api/stats").unwrap().json().unwrap()["report_to_pacs"],
        false
    );
    let r = c.get("/api/search?sop_uid=x/y").unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("sop_uid"), "{}", r.text());
}

/// The SR `sr_uid` as Orthanc stores it, read back by dcmtk's `dsrdump`: a Comprehensive SR
/// whose query image is `query_sop`, whose retrieved images and scores are `hits`' in order,
/// and whose model is dinov2-s. Skipped (said) without dcmtk, unless under CI.
fn check_sr(
    addr: &str,
    auth: &str,
    sr_uid: &str,
    dir: &Path,
    query_sop: &str,
    hits: &[serde_json::Value],
) {
    let sr_id = orthanc_id(addr, auth, sr_uid);
    let mut sr = Vec::new();
    std::io::Read::read_to_end(
        &mut ureq::get(&format!("http://{addr}/instances/{sr_id}/file"))
            .set("Authorization", &basic(auth))
            .call()
            .unwrap()
            .into_reader(),
        &mut sr,
    )
    .unwrap();
    let sr_file = dir.join(format!("{sr_uid}.dcm"));
    std::fs::write(&sr_file, &sr).unwrap();
    let Some(mut dsrdump) = dcmtk("dsrdump") else {
        return;
    };
    let out = dsrdump.arg("+Pu").arg(&sr_file).output().unwrap();
    let dump = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{dump}");
    assert!(dump.contains("Comprehensive SR Document"), "{dump}");
    let query_line = dump
        .lines()
        .find(|l| l.contains("\"Query image\""))
        .unwrap();
    assert!(query_line.contains(query_sop), "{query_line}");
    let quoted = |l: &str| l.rsplit('"').nth(1).unwrap_or("").to_string();
    let images: Vec<String> = dump
        .lines()
        .filter(|l| l.contains("\"Retrieved image\""))
        .map(quoted)
        .collect();
    let scores: Vec<f64> = dump
        .lines()
        .filter(|l| l.contains("\"Similarity score\""))
        .map(|l| {
            l.split("=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(images.len(), hits.len(), "{dump}");
    for ((h, img), score) in hits.iter().zip(&images).zip(&scores) {
        assert_eq!(h["sop_uid"].as_str(), Some(img.as_str()), "{dump}");
        assert!(
            (h["score"].as_f64().unwrap() - score).abs() < 2e-6,
            "{dump}"
        );
    }
    assert!(dump.contains("\"Embedding model\")=\"dinov2-s\""), "{dump}");
}

/// A `simcase listen` child, killed when dropped.
struct Listening {
    child: std::process::Child,
    /// The port, from its first line.
    port: u16,
    log: std::path::PathBuf,
    _out: std::io::BufReader<std::process::ChildStdout>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Listening {
    fn start(index: &Path, port: u16, extra: &[&str], log: &Path) -> Self {
        use std::io::BufRead;
        let mut child = bin()
            .args([
                "listen",
                "--aet",
                "SIMCASE",
                "--port",
                &port.to_string(),
                "--index",
            ])
            .arg(index)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "listen did not start: {first:?}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        Self {
            child,
            port,
            log: log.to_path_buf(),
            _out: out,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The index's first vector of each SOP Instance UID, once every one of `want` is there (or
/// after 180 s).
fn wait_for_sops(index: &Path, want: &BTreeSet<String>) -> BTreeMap<String, Vec<f32>> {
    let t = std::time::Instant::now();
    loop {
        let mut got = BTreeMap::new();
        if let Ok(r) = simcase_index::Reader::open(index) {
            for it in r.items().unwrap() {
                if let Some(s) = it.meta.sop_uid {
                    got.entry(s)
                        .or_insert_with(|| r.vector(it.id).unwrap().to_vec());
                }
            }
        }
        if want.iter().all(|s| got.contains_key(s)) || t.elapsed().as_secs() > 180 {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Whether nothing listens on this loopback port.
fn l_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn dcmtk(tool: &str) -> Option<std::process::Command> {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok();
    match (found, in_ci()) {
        (true, _) => Some(std::process::Command::new(tool)),
        (false, true) => panic!("{tool} (dcmtk) is not installed under CI"),
        (false, false) => {
            println!("skipped: no {tool} (dcmtk)");
            None
        }
    }
}

#[test]
fn pushed_studies_are_indexed_as_they_arrive_and_unknown_callers_are_refused() {
    let Some(Setup {
        addr,
        auth,
        dir,
        want,
        ..
    }) = setup("pacs-listen")
    else {
        return;
    };
    let Some(mut storescu) = dcmtk("storescu") else {
        return;
    };
    assert!(
        l_free(11112),
        "port 11112 (Orthanc's SIMCASE modality) is taken"
    );
    let pushed = dir.join("pushed");
    let kept = dir.join("kept");
    // Port 11112: where .ci/run's Orthanc knows the SIMCASE modality.
    let l = Listening::start(
        &pushed,
        11112,
        &[
            "--allow-aet",
            "STORESCU",
            "--allow-aet",
            "ORTHANC",
            "--keep-files",
            kept.to_str().unwrap(),
        ],
        &dir.join("listen.log"),
    );
    let port = l.port.to_string();
    // C-ECHO.
    let echo = dcmtk("echoscu")
        .unwrap()
        .args(["-aet", "STORESCU", "-aec", "SIMCASE", "127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );
    // A dropped association: half a PDU, then the connection closed. The node goes on.
    {
        use std::io::Write as _;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", l.port)).unwrap();
        s.write_all(&[0x01, 0x00, 0x00, 0x00, 0x10, 0x00]).unwrap();
    }
    // An unknown calling AE title is refused at association.
    let files: Vec<_> = FILES.iter().map(|f| corpus_dicoms().join(f)).collect();
    let out = dcmtk("storescu")
        .unwrap()
        .args(["-aet", "INTRUDER", "-aec", "SIMCASE", "127.0.0.1", &port])
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // storescu pushes three objects.
    let out = storescu
        .args(["-aet", "STORESCU", "-aec", "SIMCASE", "127.0.0.1", &port])
        .args(&files[..3])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        l.log()
    );
    let local = simcase_index::Reader::open(&dir.join("local"))
        .unwrap()
        .items()
        .unwrap();
    let mut sent: BTreeSet<String> = files[..3]
        .iter()
        .map(|f| {
            let p = std::fs::canonicalize(f).unwrap().display().to_string();
            local
                .iter()
                .find(|it| it.meta.path == p)
                .and_then(|it| it.meta.sop_uid.clone())
                .unwrap()
        })
        .collect();
    // `simcase serve` on the same index, alongside listen, once those three are in: it files
    // reports in Orthanc and must see what listen indexes next.
    wait_for_sops(&pushed, &sent);
    let (user, password) = auth.split_once(':').unwrap();
    let target = format!("dicomweb+http://{addr}/dicom-web");
    let srv = serve_env(
        &pushed,
        &["--no-token", "--report-to-pacs", &target],
        &dir.join("serve.log"),
        &[
            ("SIMCASE_DICOMWEB_USER", user),
            ("SIMCASE_DICOMWEB_PASSWORD", password),
        ],
    );
    // Orthanc pushes emri_small (C-STORE triggered by its REST API).
    let emri = want.keys().find(|h| h.ends_with("#0")).unwrap();
    let emri_sop = want[emri].0.clone();
    let id = orthanc_id(&addr, &auth, &emri_sop);
    let r = ureq::post(&format!("http://{addr}/modalities/SIMCASE/store"))
        .set("Authorization", &basic(&auth))
        .send_string(&serde_json::json!({"Resources": [id], "Synchronous": true}).to_string());
    assert!(r.is_ok(), "{r:?}\n{}", l.log());

    // An object without pixels (MR2 cut just before its Pixel Data) is refused with status
    // C000 and a reason, and not indexed.
    let mr2 = std::fs::read(&files[0]).unwrap();
    let cut = mr2
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap();
    let no_pixels = dir.join("no-pixels.dcm");
    std::fs::write(&no_pixels, &mr2[..cut]).unwrap();
    let _ = dcmtk("storescu")
        .unwrap()
        .args(["-aet", "STORESCU", "-aec", "SIMCASE", "127.0.0.1", &port])
        .arg(&no_pixels)
        .output()
        .unwrap();
    // Every pushed object is indexed, with the embeddings of the files themselves (the
    // reference index of the same files, by SOP Instance UID; a multi-frame object's first).
    let by_sop: BTreeMap<String, Vec<f32>> = want
        .iter()
        .filter(|(h, _)| !h.contains('#') || h.ends_with("#0"))
        .map(|(_, (sop, _, _, v))| (sop.clone(), v.clone()))
        .collect();
    sent.insert(emri_sop.clone());
    let got = wait_for_sops(&pushed, &sent);
    for s in &sent {
        let v = got
            .get(s)
            .unwrap_or_else(|| panic!("{s} not indexed\n{}", l.log()));
        let w = &by_sop[s];
        let worst = v
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{s}: embeddings differ by {worst}");
    }
    let log = l.log();
    assert!(log.contains("association from STORESCU"), "{log}");
    assert!(log.contains("association from ORTHANC"), "{log}");
    assert!(log.contains("\"INTRUDER\" is not allowed"), "{log}");
    assert!(
        log.contains("refused (status C000): no Pixel Data: simcase indexes images"),
        "{log}"
    );
    for phi in ["CompressedSamples", "5MR2", "19500112"] {
        assert!(!log.contains(phi), "{phi} in the log: {log}");
    }
    // The kept copies are where the items point.
    let r = simcase_index::Reader::open(&pushed).unwrap();
    for it in r.items().unwrap() {
        assert!(
            std::path::Path::new(&it.meta.path).is_file(),
            "{}",
            it.meta.path
        );
        assert!(it.meta.path.starts_with(&kept.display().to_string()));
    }
    assert_eq!(
        std::fs::read_dir(pushed.join("incoming")).unwrap().count(),
        0,
        "spool emptied"
    );

    // The server, started before Orthanc's push, finds the pushed instance (its snapshot
    // follows listen's commits), leaving out its own study.
    let mut c = simcase_server::client::Client::new(&srv.addr);
    let t = std::time::Instant::now();
    let v = loop {
        let r = c
            .get(&format!("/api/search?sop_uid={emri_sop}&k=3"))
            .unwrap();
        if r.status == 200 || t.elapsed().as_secs() > 30 {
            assert_eq!(r.status, 200, "{}", r.text());
            break r.json().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3, "{v}");
    assert!(hits
        .iter()
        .all(|h| sent.contains(h["sop_uid"].as_str().unwrap())));
    let r = c.get("/api/stats").unwrap();
    assert_eq!(r.json().unwrap()["report_to_pacs"], true);
    // The same search filed in the PACS from the API, as the page's "File in PACS" does: the
    // SR reads back with the query's and the results' references and scores.
    let r = c
        .post(
            &format!("/api/report?sop_uid={emri_sop}&k=3"),
            "text/plain",
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let rep = r.json().unwrap();
    assert_eq!(rep["results"], 3, "{rep}");
    assert_eq!(rep["left_out"], 0, "{rep}");
    assert_eq!(rep["search"]["hits"], v["hits"], "{rep}");
    let sr_uid = rep["sr_uid"].as_str().unwrap();
    check_sr(&addr, &auth, sr_uid, &dir, &emri_sop, hits);
    // Text is no archived instance.
    let r = c.post("/api/report?text=lung", "text/plain", b"").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // The page, opened as a viewer's link would (`/?sop_uid=`), files the same report.
    let page = format!("http://{}/", srv.addr);
    if let Some(out) = browser_script(
        "pacs.test.mjs",
        &[
            ("SIMCASE_URL", page.as_ref()),
            ("SIMCASE_SOP", emri_sop.as_ref()),
            ("SIMCASE_HITS", "3".as_ref()),
        ],
    ) {
        let sr_uid = out
            .lines()
            .find_map(|l| l.strip_prefix("SR "))
            .unwrap_or_else(|| panic!("{out}"));
        assert_ne!(sr_uid, rep["sr_uid"].as_str().unwrap());
        check_sr(&addr, &auth, sr_uid, &dir, &emri_sop, hits);
    }
}
