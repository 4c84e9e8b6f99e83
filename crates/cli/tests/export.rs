//! `simcase export` end to end: real images of dev.csv indexed with the real default model,
//! exported to `.npy` and `.parquet`, and read back by numpy (`np.load`) and pyarrow
//! (`pq.read_table`) in a Python process: the same ids, labels, splits and salted patient keys
//! as the index, paths only with `--show-paths`, and vectors whose dot products rank the items
//! exactly as `simcase search` does, with the same scores. Refusals: an existing file without
//! `--force`, and an extension that is neither format.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

/// Reads each export and prints, per file: ids, text columns, whether paths are there, and
/// for each query row the top 5 other rows by dot product (id, score).
const READ_BACK: &str = r#"
import json, sys
import numpy as np
import pyarrow.parquet as pq

queries = json.loads(sys.argv[1])
out = {}
for f in sys.argv[2:]:
    if f.endswith(".npy"):
        a = np.load(f)
        ids = a["id"].astype(np.uint64).tolist()
        vec = a["vector"]
        cols = {n: [None if v == "" else str(v) for v in a[n]] for n in a.dtype.names
                if n not in ("id", "vector")}
    else:
        d = pq.read_table(f).to_pydict()
        ids = [int(i) for i in d.pop("id")]
        vec = np.array(d.pop("vector"), dtype=np.float32)
        cols = d
    assert vec.dtype == np.float32 and vec.shape == (len(ids), vec.shape[1]), vec.shape
    top = {}
    for q in queries:
        r = ids.index(q)
        s = vec @ vec[r]
        s[r] = -np.inf
        order = np.argsort(-s, kind="stable")[:5]
        top[str(q)] = [[ids[i], float(s[i])] for i in order]
    out[f] = {"ids": ids, "cols": cols, "top": top, "dim": int(vec.shape[1])}
print(json.dumps(out))
"#;

fn export(index: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["export", "--index"])
        .arg(index)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn exports_read_back_in_numpy_and_pyarrow_and_rank_as_search_does() {
    let dir = tmp("export");
    let m = manifest(&dir, 30, 31, 2);
    let index = dir.join("idx");
    index_manifest(&index, &m);
    // Identical files among the rows are one item.
    let n = simcase_index::Reader::open(&index).unwrap().len();
    assert!(n >= 25, "{n} items");
    let (npy, pq, pq_paths) = (
        dir.join("e.npy"),
        dir.join("e.parquet"),
        dir.join("paths.parquet"),
    );
    for (out, extra) in [
        (&npy, &[][..]),
        (&pq, &[][..]),
        (&pq_paths, &["--show-paths"][..]),
    ] {
        let o = export(&index, out, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let want = format!("exported {n} items (384-d dinov2-s)");
        assert!(err.contains(&want), "{err}");
    }
    // Refusals, in one line, leaving the file as it was.
    let before = std::fs::read(&npy).unwrap();
    let o = export(&index, &npy, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: {} exists: give --force to replace it",
            npy.display()
        )
    );
    assert_eq!(std::fs::read(&npy).unwrap(), before);
    let o = export(&index, &dir.join("e.csv"), &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("must end in .npy or .parquet"));
    assert!(export(&index, &npy, &["--force", "--quiet"])
        .status
        .success());
    assert_eq!(
        std::fs::read(&npy).unwrap(),
        before,
        "the same export again"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // What the index says: search by each query item (every other item a candidate).
    let queries = [0u64, 11, n as u64 - 1];
    let search = |q: u64| -> Vec<Value> {
        let out = run_ok(
            bin()
                .args(["search", "--json", "--all-duplicates", "-k", "5", "--index"])
                .arg(&index)
                .arg(format!("id:{q}")),
        );
        serde_json::from_str::<Vec<Value>>(&out).unwrap()
    };
    let py = simcase_models::testing::python();
    let o = std::process::Command::new(&py)
        .arg("-c")
        .arg(READ_BACK)
        .arg(serde_json::to_string(&queries).unwrap())
        .args([&npy, &pq, &pq_paths])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", py.display()));
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("ModuleNotFoundError") && !in_ci() {
        eprintln!(
            "skipping the read-back: {} lacks numpy or pyarrow ({err})",
            py.display()
        );
        return;
    }
    assert!(o.status.success(), "{err}");
    let got: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = simcase_index::Reader::open(&index).unwrap();
    let items = r.items().unwrap();
    for f in [&npy, &pq, &pq_paths] {
        let g = &got[f.to_str().unwrap()];
        let what = f.display();
        assert_eq!(g["dim"], 384, "{what}");
        let ids: Vec<u64> = items.iter().map(|it| it.id).collect();
        assert_eq!(g["ids"], serde_json::json!(ids), "{what}");
        let col = |name: &str| g["cols"][name].as_array().unwrap().clone();
        for (i, it) in items.iter().enumerate() {
            let m = &it.meta;
            for (name, want) in [
                ("label", &m.label),
                ("split", &m.split),
                ("modality", &m.modality),
                ("patient_key", &m.patient_key),
            ] {
                assert_eq!(col(name)[i].as_str(), want.as_deref(), "{what} {name} {i}");
            }
            assert!(m.label.is_some() && m.patient_key.is_some(), "{m:?}");
        }
        let paths = g["cols"].get("path");
        if *f == pq_paths {
            let p: Vec<&str> = paths
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            let want: Vec<&str> = items.iter().map(|it| it.meta.path.as_str()).collect();
            assert_eq!(p, want);
        } else {
            assert!(
                paths.is_none(),
                "{what}: paths exported without --show-paths"
            );
        }
        for q in queries {
            let hits = search(q);
            let top = g["top"][q.to_string()].as_array().unwrap();
            assert_eq!(hits.len(), top.len());
            for (h, t) in hits.iter().zip(top) {
                let (score, want) = (t[1].as_f64().unwrap(), h["score"].as_f64().unwrap());
                assert!(
                    h["id"] == t[0] && (score - want).abs() < 1e-5,
                    "{what} query {q}: search {hits:?}\nexport {top:?}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
