//! `simcase search|serve|eval --index milvus://…` against a real Milvus server (env
//! `SIMCASE_MILVUS=HOST:PORT`; without it the test skips with one line, and fails under CI):
//! the same real images, embedded with the real default model, indexed into a local index and
//! into a FLAT Milvus collection (exact inner product, so both rank alike) by the real binary
//! (`simcase index --index-type flat --index milvus://…`),
//! must give the same searches (same files, same scores within 1e-4), filters (hostile values
//! included: they match nothing, as locally, and change no expression's meaning), groups,
//! pages, served API answers and eval tables. Ids differ by design (a local index numbers its
//! rows, a collection hashes content keys) and so do patient keys (each salts its own), so
//! results are compared by file path, label and score.

mod common;
use common::*;
use serde_json::Value;
use simcase_server::client::{multipart_file, Client};
use std::path::Path;
use std::time::Instant;

/// The Milvus server's `HOST:PORT`, or `None` (after one printed line) when none is given.
fn milvus() -> Option<String> {
    match std::env::var("SIMCASE_MILVUS") {
        Ok(a) if !a.is_empty() => Some(a),
        _ => {
            assert!(
                !in_ci(),
                "SIMCASE_MILVUS is not set, and CI must run the Milvus tests"
            );
            eprintln!(
                "skipping milvus_query: SIMCASE_MILVUS (HOST:PORT of a Milvus server) is not set"
            );
            None
        }
    }
}

/// Drops the test's collection however the test ends.
struct Dropped(String);

impl Drop for Dropped {
    fn drop(&mut self) {
        if let Ok(url) = simcase_milvus::MilvusUrl::parse(&self.0) {
            if let Err(e) = simcase_milvus::Collection::drop_collection(&url) {
                eprintln!("dropping {url}: {e:#}");
            }
        }
    }
}

/// `simcase search … --json` on `index`: the hits.
fn search(index: &str, args: &[&str]) -> Vec<Value> {
    let out = run_ok(
        bin()
            .args(["search", "--json", "--index", index])
            .args(args),
    );
    match serde_json::from_str(&out) {
        Ok(Value::Array(a)) => a,
        other => panic!("search {args:?}: not a JSON array: {other:?}\n{out}"),
    }
}

/// The same files, in the same order, with the same ranks, labels and scores (within 1e-4).
fn assert_same(what: &str, local: &[Value], remote: &[Value]) {
    let show = |hs: &[Value]| -> Vec<String> {
        hs.iter()
            .map(|h| {
                format!(
                    "{} {:.5} {} {}",
                    h["rank"], h["score"], h["label"], h["path"]
                )
            })
            .collect()
    };
    assert_eq!(
        local.len(),
        remote.len(),
        "{what}: local {:#?}\nmilvus {:#?}",
        show(local),
        show(remote)
    );
    for (l, r) in local.iter().zip(remote) {
        let (ls, rs) = (l["score"].as_f64().unwrap(), r["score"].as_f64().unwrap());
        assert!(
            l["path"] == r["path"]
                && l["rank"] == r["rank"]
                && l["label"] == r["label"]
                && (ls - rs).abs() < 1e-4,
            "{what}: local {:#?}\nmilvus {:#?}",
            show(local),
            show(remote)
        );
    }
}

/// A small PNG no data set holds (its content is the test's process id), for an item whose
/// file is deleted after indexing.
fn synthetic_png(to: &Path) {
    let seed = std::process::id();
    let img = image::RgbImage::from_fn(96, 80, |x, y| {
        let v = (x * 7 + y * 13 + seed) % 251;
        image::Rgb([v as u8, (v * 3 % 256) as u8, (x * y % 256) as u8])
    });
    img.save(to).unwrap();
}

/// Rows of [`test_manifest`].
const ROWS: usize = 80;

/// 60 rows of dev.csv across its sources, splits and patients, and 20 CT slices of one patient
/// (a run of kidney slices), so that the nearest cases of a slice fill few groups and a grouped
/// search needs more than one round. Absolute paths.
fn test_manifest(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let mut picked: Vec<&str> = rows.iter().skip(3).step_by(15).take(60).copied().collect();
    let run: Vec<&str> = rows
        .iter()
        .filter(|l| l.contains(",kidney_normal_run001,") && !picked.contains(l))
        .take(20)
        .copied()
        .collect();
    assert_eq!(run.len(), 20);
    picked.extend(run);
    let root = std::fs::canonicalize(data()).unwrap();
    let mut out = vec![header.to_string()];
    out.extend(picked.iter().map(|l| format!("{}/{l}", root.display())));
    let p = dir.join("manifest.csv");
    std::fs::write(&p, out.join("\n") + "\n").unwrap();
    p
}

/// The `path` column of the manifest's rows.
fn manifest_paths(m: &Path) -> Vec<String> {
    std::fs::read_to_string(m)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    eprintln!("{what}: {:.1} s", t.elapsed().as_secs_f64());
    v
}

#[test]
fn milvus_index_searches_serves_and_evals_like_a_local_one() {
    let Some(addr) = milvus() else { return };
    let dir = tmp("milvus-query");
    let name = format!(
        "milvus_query_{}_{}",
        std::process::id(),
        dir.as_os_str().len()
    );
    let url = format!("milvus://{addr}/{name}");
    let _drop = Dropped(url.clone());
    let m = test_manifest(&dir);
    let local = dir.join("local");
    let local_s = local.to_str().unwrap().to_string();
    let extra = dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    let gone = extra.join("synthetic.png");
    synthetic_png(&gone);
    timed("index local", || {
        index_manifest(&local, &m);
        run_ok(
            bin()
                .args(["index", "--quiet", "--index"])
                .arg(&local)
                .arg(&extra),
        );
    });
    timed("index milvus (flat)", || {
        let milvus_index = |what: &mut std::process::Command| {
            run_ok(what.args(["--quiet", "--index-type", "flat", "--index", &url]));
        };
        milvus_index(bin().arg("index").arg("--manifest").arg(&m));
        milvus_index(bin().arg("index").arg(&extra));
    });
    let paths = manifest_paths(&m);
    let queries = [
        &paths[0],
        &paths[21],
        &paths[42],
        &paths[57],
        &paths[ROWS - 1],
    ];

    timed("search", || {
        // Image queries: every hit the same file with the same score.
        for q in queries {
            for k in ["1", "10", "90"] {
                let args = ["--all-duplicates", "-k", k, q.as_str()];
                assert_same(
                    &format!("{q} k={k}"),
                    &search(&local_s, &args),
                    &search(&url, &args),
                );
            }
        }
        // Paging: the second page of five is ranks 6..10, on both sides.
        let q = queries[1].as_str();
        let page2 = ["--all-duplicates", "-k", "5", "--offset", "5", q];
        let remote2 = search(&url, &page2);
        assert_same("page 2", &search(&local_s, &page2), &remote2);
        assert_eq!(
            remote2,
            search(&url, &["--all-duplicates", "-k", "10", q])[5..].to_vec()
        );
        // More like this, by each side's own id of the same item: the item left out.
        let top = |index: &str| search(index, &["--all-duplicates", "-k", "1", q])[0]["id"].clone();
        let (lid, rid) = (top(&local_s), top(&url));
        let (lid, rid) = (format!("id:{lid}"), format!("id:{rid}"));
        let like = |index: &str, id: &str| search(index, &["--all-duplicates", "-k", "8", id]);
        let remote_like = like(&url, &rid);
        assert_same("more like this", &like(&local_s, &lid), &remote_like);
        assert!(remote_like.iter().all(|h| format!("id:{}", h["id"]) != rid));
        // A model's text tower: dinov2-s has none, on both sides alike.
        for index in [local_s.as_str(), url.as_str()] {
            let out = bin()
                .args(["search", "--text", "pneumothorax", "--index", index])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success()
                    && err.contains("text search on an index built with dinov2-s"),
                "{err}"
            );
        }
    });

    timed("filters", || {
        let q = queries[2].as_str();
        for filters in [
            &["modality=CT"][..],
            &["modality=ct", "modality=US"],
            &["label=MR/brain/glioma"],
            &["split=train", "anatomy=chest"],
            &["meta.view=PA"],
            &["source=busi", "format=png"],
            &["modality=XR", "meta.view=pa", "meta.view=AP"],
        ] {
            let mut args = vec!["--all-duplicates", "-k", "20", q];
            for f in filters {
                args.extend(["--filter", f]);
            }
            let remote = search(&url, &args);
            assert!(!remote.is_empty(), "{filters:?} matches some items");
            assert_same(&format!("{filters:?}"), &search(&local_s, &args), &remote);
        }
        // Hostile values: each is one literal that matches no item, locally and in Milvus;
        // none widens the result to other items or breaks the expression.
        for hostile in [
            "modality=CT\" or modality != \"",
            "modality=CT' or 1==1 or '",
            "modality=CT\\\" or id >= 0 or modality == \\\"",
            "modality=CT\") or (id >= 0",
            "label=x\n or id >= 0",
            "meta.view=PA\"] or x[\"a",
            "meta.view\"] == \"\" or x[\"a=PA",
            "source=busi\u{7}",
            "modality=ＣＴ",
        ] {
            let args = ["--all-duplicates", "-k", "10", "--filter", hostile, q];
            for index in [local_s.as_str(), url.as_str()] {
                let out = bin()
                    .args(["search", "--json", "--index", index])
                    .args(args)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{hostile:?} on {index}: {stderr}");
                assert_eq!(stdout.trim(), "[]", "{hostile:?} on {index} matched items");
                assert!(
                    stderr.contains("no results: no item has"),
                    "{hostile:?} on {index}: {stderr}"
                );
            }
        }
    });

    timed("group by", || {
        for q in queries {
            for (by, k, offset) in [
                ("patient", "5", "0"),
                ("patient", "4", "3"),
                ("study", "6", "2"),
                ("series", "3", "0"),
            ] {
                let args = [
                    "--all-duplicates",
                    "--group-by",
                    by,
                    "-k",
                    k,
                    "--offset",
                    offset,
                    q.as_str(),
                ];
                let (l, r) = (search(&local_s, &args), search(&url, &args));
                assert_same(&format!("{q} by {by} k={k} offset={offset}"), &l, &r);
                let groups: std::collections::HashSet<&str> =
                    r.iter().map(|h| h["group"].as_str().unwrap()).collect();
                assert_eq!(groups.len(), r.len(), "distinct groups");
            }
        }
        // Filtered and grouped together.
        let args = [
            "--all-duplicates",
            "--group-by",
            "patient",
            "-k",
            "5",
            "--filter",
            "modality=CT",
            queries[3].as_str(),
        ];
        assert_same(
            "CT by patient",
            &search(&local_s, &args),
            &search(&url, &args),
        );
    });

    let remote_ids: Vec<(String, u64)> =
        search(&url, &["--all-duplicates", "-k", "90", queries[0]])
            .iter()
            .map(|h| {
                (
                    h["path"].as_str().unwrap().to_string(),
                    h["id"].as_u64().unwrap(),
                )
            })
            .collect();
    assert_eq!(
        remote_ids.len(),
        ROWS + 1,
        "the manifest's rows and the synthetic image"
    );

    timed("serve", || {
        std::fs::remove_file(&gone).unwrap();
        let srv = serve(&url, &["--no-token"], &dir.join("serve.log"));
        let mut c = Client::new(&srv.addr);
        let seen = std::cell::RefCell::new(String::new());
        let get = |c: &mut Client, path: &str| {
            let r = c.get(path).unwrap();
            seen.borrow_mut().push_str(&r.text());
            r
        };
        let stats = get(&mut c, "/api/stats").json().unwrap();
        assert_eq!(
            (stats["items"].as_u64(), stats["model"].as_str()),
            (Some(ROWS as u64 + 1), Some("dinov2-s")),
            "{stats}"
        );
        // "More like this", filtered, as the CLI ranks it.
        let (qpath, qid) = &remote_ids[0];
        let r = get(&mut c, &format!("/api/search?id={qid}&k=7&modality=CT"))
            .json()
            .unwrap();
        let cli = search(
            &url,
            &[
                "--all-duplicates",
                "-k",
                "7",
                "--filter",
                "modality=CT",
                &format!("id:{qid}"),
            ],
        );
        let brief = |hs: &[Value]| -> Vec<(u64, String, String)> {
            hs.iter()
                .map(|h| {
                    (
                        h["id"].as_u64().unwrap(),
                        format!("{:.4}", h["score"].as_f64().unwrap()),
                        h["label"].to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(brief(r["hits"].as_array().unwrap()), brief(&cli), "{r}");
        assert!(
            r["hits"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h.get("path").is_none()),
            "paths are off by default"
        );
        assert!(r["candidates"].as_u64().unwrap() > 7);
        // Grouped and paged.
        let g = get(
            &mut c,
            &format!("/api/search?id={qid}&k=3&offset=2&group_by=patient"),
        )
        .json()
        .unwrap();
        let cli = search(
            &url,
            &[
                "--all-duplicates",
                "-k",
                "3",
                "--offset",
                "2",
                "--group-by",
                "patient",
                &format!("id:{qid}"),
            ],
        );
        assert_eq!(brief(g["hits"].as_array().unwrap()), brief(&cli), "{g}");
        assert_eq!(g["groups"].as_array().unwrap().len(), 3);
        // An upload, as the CLI's file query.
        let (ty, body) = multipart_file("q.png", &std::fs::read(qpath).unwrap());
        let up = c.post("/api/search?k=5", &ty, &body).unwrap();
        seen.borrow_mut().push_str(&up.text());
        let up = up.json().unwrap();
        let cli = search(&url, &["--all-duplicates", "-k", "5", qpath]);
        assert_eq!(brief(up["hits"].as_array().unwrap()), brief(&cli), "{up}");
        // Hostile filters through the API: an empty page that says why.
        for q in [
            "modality=CT%22%20or%20id%20%3E%3D%200",
            "meta.view%22%5D%20%3D%3D%20%22%22%20or%20x%5B%22a=PA",
        ] {
            let r = get(&mut c, &format!("/api/search?id={qid}&k=5&{q}"));
            assert_eq!(r.status, 200, "{}", r.text());
            let r = r.json().unwrap();
            assert_eq!(
                (r["hits"].as_array().map(Vec::len), r["candidates"].as_u64()),
                (Some(0), Some(0)),
                "{r}"
            );
            assert!(
                r["empty_reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("no item has"),
                "{r}"
            );
        }
        // Item metadata: the salted key, no path; an unknown id is a 404.
        let it = get(&mut c, &format!("/api/items/{qid}")).json().unwrap();
        assert_eq!(it["id"].as_u64(), Some(*qid), "{it}");
        assert!(
            it.get("path").is_none() && it["patient_key"].is_string() && it["label"].is_string(),
            "{it}"
        );
        let missing = get(&mut c, "/api/items/12345");
        assert_eq!(missing.status, 404, "{}", missing.text());
        assert!(
            missing.text().contains("no item 12345"),
            "{}",
            missing.text()
        );
        // Thumbnails: from a readable file, a PNG; from a deleted one, a 404 saying so.
        let th = get(&mut c, &format!("/api/items/{qid}/thumbnail?size=64"));
        assert_eq!((th.status, th.content_type.as_str()), (200, "image/png"));
        let gone_id = remote_ids
            .iter()
            .find(|(p, _)| p.ends_with("synthetic.png"))
            .unwrap()
            .1;
        let th = get(&mut c, &format!("/api/items/{gone_id}/thumbnail"));
        assert_eq!(th.status, 404, "{}", th.text());
        assert!(
            th.text().contains("reading the indexed file"),
            "{}",
            th.text()
        );
        // No raw patient id of the manifest, and no path, anywhere in what was served.
        let text = std::fs::read_to_string(&m).unwrap();
        let raw_ids: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(6))
            .collect();
        assert_eq!(raw_ids.len(), ROWS);
        let seen = seen.into_inner();
        for p in raw_ids {
            assert!(
                !seen.contains(&format!("\"{p}\"")),
                "the API shows patient id {p}"
            );
        }
        assert!(!seen.contains("/images/"), "the API shows a path");
    });

    timed("eval", || {
        let (lj, rj) = (dir.join("local.json"), dir.join("milvus.json"));
        run_ok(
            bin()
                .args(["eval", "--quiet", "--manifest"])
                .arg(&m)
                .arg("--work")
                .arg(dir.join("work"))
                .arg("--json")
                .arg(&lj),
        );
        let out = run_ok(
            bin()
                .args(["eval", "--quiet", "--index", &url, "--manifest"])
                .arg(&m)
                .arg("--json")
                .arg(&rj),
        );
        assert!(out.contains("| dinov2-s | modality |"), "{out}");
        let read = |p: &Path| -> Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let (l, r) = (read(&lj), read(&rj));
        assert_eq!(l["counts"], r["counts"]);
        assert!(l["counts"]["test"].as_u64().unwrap() > 5);
        assert_close("eval", &l, &r);
        // Another model than the collection's is refused, before anything is scored.
        let out = bin()
            .args([
                "eval",
                "--quiet",
                "--model",
                "biomedclip",
                "--index",
                &url,
                "--manifest",
            ])
            .arg(&m)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("was embedded with dinov2-s"),
            "{err}"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Equal JSON, numbers within 1e-6.
fn assert_close(at: &str, a: &Value, b: &Value) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() < 1e-6, "{at}: {x} != {y}");
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{at}");
            for (k, v) in x {
                assert_close(&format!("{at}.{k}"), v, &y[k]);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_close(&format!("{at}[{i}]"), v, w);
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// One synthetic image (its pattern set by `seed`) written as PNG with the encoder's settings
/// `how`: other bytes (another content key), the same decoded pixels (one pixel hash).
fn png_copy(to: &Path, seed: u32, how: u8) {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        let v = (x * (seed % 13 + 1) + y * 5 + seed * 31) % 253;
        image::Rgb([v as u8, (v * 7 % 256) as u8, ((x + seed) * y % 256) as u8])
    });
    let (c, f) = match how {
        0 => (CompressionType::Default, FilterType::Adaptive),
        1 => (CompressionType::Best, FilterType::NoFilter),
        _ => (CompressionType::Fast, FilterType::Sub),
    };
    let out = std::fs::File::create(to).unwrap();
    img.write_with_encoder(PngEncoder::new_with_quality(out, c, f))
        .unwrap();
}

#[test]
fn copies_of_one_image_are_one_hit_listing_the_others_as_locally() {
    let Some(addr) = milvus() else { return };
    let dir = tmp("milvus-copies");
    let url = format!("milvus://{addr}/milvus_copies_{}", std::process::id());
    let _drop = Dropped(url.clone());
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    // Image 0 stored three times, image 1 twice, images 2..8 once.
    for seed in 0..8u32 {
        let copies = match seed {
            0 => 3,
            1 => 2,
            _ => 1,
        };
        for how in 0..copies {
            png_copy(&imgs.join(format!("img{seed}_{how}.png")), seed, how);
        }
    }
    let local = dir.join("local");
    let local_s = local.to_str().unwrap();
    run_ok(
        bin()
            .args(["index", "--quiet", "--index"])
            .arg(&local)
            .arg(&imgs),
    );
    run_ok(
        bin()
            .args(["index", "--quiet", "--index-type", "flat", "--index", &url])
            .arg(&imgs),
    );
    // Each hit: its score and the set of files it stands for (itself and its copies).
    let seen = |hits: &[Value]| -> Vec<(f64, Vec<String>, u64)> {
        hits.iter()
            .map(|h| {
                let mut files = vec![h["path"].as_str().unwrap().to_string()];
                for a in h["also"].as_array().into_iter().flatten() {
                    files.push(a["path"].as_str().unwrap().to_string());
                }
                files.sort();
                let dups = h["duplicates"].as_u64().unwrap_or(0);
                assert_eq!(dups as usize, files.len() - 1, "{h}");
                (h["score"].as_f64().unwrap(), files, dups)
            })
            .collect()
    };
    let same = |what: &str, l: &[Value], r: &[Value]| {
        let (l, r) = (seen(l), seen(r));
        assert_eq!(l.len(), r.len(), "{what}: local {l:?}\nmilvus {r:?}");
        for (a, b) in l.iter().zip(&r) {
            assert!(
                a.1 == b.1 && a.2 == b.2 && (a.0 - b.0).abs() < 1e-4,
                "{what}: local {l:?}\nmilvus {r:?}"
            );
        }
        r
    };
    let q = imgs.join("img0_1.png");
    let q = q.to_str().unwrap();
    for k in ["1", "3", "8", "20"] {
        let args = ["-k", k, q];
        let r = same(
            &format!("k={k}"),
            &search(local_s, &args),
            &search(&url, &args),
        );
        // `k` counts distinct images: 8 in all.
        assert_eq!(r.len(), k.parse::<usize>().unwrap().min(8), "k={k}");
        assert_eq!(
            (r[0].2, r[0].1.len()),
            (2, 3),
            "the query image, stored three times"
        );
    }
    // Page 2 of 3-image pages.
    let args = ["-k", "3", "--offset", "3", q];
    same("page 2", &search(local_s, &args), &search(&url, &args));
    // Every copy when asked: 11 items.
    let all = search(&url, &["--all-duplicates", "-k", "20", q]);
    assert_eq!(all.len(), 11);
    assert!(all.iter().all(|h| h.get("also").is_none()));
    // More like this, by a copy's own id: none of its copies comes back as a result.
    let id = |index: &str| {
        let hits = search(index, &["--all-duplicates", "-k", "20", q]);
        let h = hits
            .iter()
            .find(|h| h["path"].as_str().unwrap().ends_with("/img0_2.png"))
            .unwrap();
        format!("id:{}", h["id"])
    };
    let (lid, rid) = (id(local_s), id(&url));
    let r = same(
        "more like this",
        &search(local_s, &["-k", "8", &lid]),
        &search(&url, &["-k", "8", &rid]),
    );
    assert_eq!(r.len(), 7, "the other seven images");
    assert!(
        r.iter().all(|h| h.1.iter().all(|f| !f.contains("/img0_"))),
        "{r:?}"
    );
    // Grouped by volume (each file its own): copies collapsed before grouping, alike.
    let args = ["-k", "4", "--group-by", "volume", q];
    same("grouped", &search(local_s, &args), &search(&url, &args));
    // Bounded staleness sees the same (the rows were written seconds ago); a bad level is
    // refused by name.
    let args = ["-k", "8", q];
    let bounded = ["--consistency", "bounded", "-k", "8", q];
    same("bounded", &search(&url, &args), &search(&url, &bounded));
    let out = bin()
        .args(["search", "--consistency", "firm", "--index", &url, q])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("strong, bounded or eventually"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
