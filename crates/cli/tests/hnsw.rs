//! The HNSW index type end to end with the real binary: `simcase index --index-type hnsw`
//! converts an index of real images (the default model), `search` and `serve` answer through
//! the graph with the same hits as the exact scan, filters hold, and a bad type is refused.

mod common;
use common::*;
use simcase_server::client::Client;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

fn search_json(index: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        bin()
            .args([
                "search",
                "id:0",
                "-k",
                "5",
                "--json",
                "--all-duplicates",
                "--index",
            ])
            .arg(index)
            .args(extra),
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn hnsw_index_searches_and_serves_like_exact() {
    let dir = tmp("hnsw-serve");
    let m = manifest(&dir, 400, 2, 0);
    let index = dir.join("index");
    index_manifest(&index, &m);
    // 400 rows: auto is flat, the exact answer.
    let exact = search_json(&index, &[]);
    assert!(!index.join("graph.usearch").exists());

    let out = bin()
        .args(["index", "--index"])
        .arg(&index)
        .args(["--index-type", "ivf"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("flat, hnsw, auto"),
        "{err}"
    );

    // Path-less: convert, building the graph (8 candidates a search, so that 5 hits out of
    // 400 rows go through the graph rather than the small-index exact scan). On one thread:
    // the graph, and so what 8 candidates find, is the same every run.
    run_ok(bin().args(["index", "--index"]).arg(&index).args([
        "--index-type",
        "hnsw",
        "--hnsw-ef-search",
        "8",
        "--hnsw-build-threads",
        "1",
    ]));
    assert!(index.join("graph.usearch").exists() && index.join("graph.json").exists());
    let out = bin()
        .args([
            "--log",
            "debug",
            "search",
            "id:0",
            "-k",
            "5",
            "--json",
            "--all-duplicates",
        ])
        .arg("--index")
        .arg(&index)
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("graph walk"),
        "searched through the graph:\n{log}"
    );
    let ann: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&ann), ids(&exact), "HNSW top-5 equals exact");
    for (a, e) in ann
        .as_array()
        .unwrap()
        .iter()
        .zip(exact.as_array().unwrap())
    {
        assert_eq!(a["score"], e["score"], "exact f32 scores");
    }

    // The server answers from the graph, with the same hits, and filters hold.
    let log_path = dir.join("serve.log");
    let mut child = bin()
        .args([
            "--log",
            "debug",
            "serve",
            "--no-token",
            "--bind",
            "127.0.0.1:0",
        ])
        .args(["--ef-search", "8", "--index"])
        .arg(&index)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Kept open to the end: a closed pipe would end the server at its next line.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "server did not start: {line:?}\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        })
        .to_string();
    let mut c = Client::new(&addr);
    let r = c
        .get("/api/search?id=0&k=5&duplicates=all")
        .unwrap()
        .json()
        .unwrap();
    let served: Vec<u64> = r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect();
    assert_eq!(served, ids(&exact), "served HNSW top-5 equals exact: {r}");
    let r = c
        .get("/api/search?id=0&k=5&modality=CT&duplicates=all")
        .unwrap()
        .json()
        .unwrap();
    let hits = r["hits"].as_array().unwrap();
    assert!(!hits.is_empty(), "{r}");
    assert!(hits.iter().all(|h| h["modality"] == "CT"), "{r}");
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("graph walk"),
        "the server searched the graph:\n{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
