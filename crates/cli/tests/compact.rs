//! `simcase index --precision`: a real f32 index built from ../shared/data converted to i8,
//! f16 and back in place, searched the same each time; a damaged compact file noticed (one
//! warning) and rebuilt; leftovers of an interrupted conversion removed; bad input refused.

mod common;
use common::*;
use std::path::Path;

/// `search id:0 -k 8` as (id, score) pairs, and the command's stderr.
fn search(index: &Path) -> (Vec<(u64, f64)>, String) {
    let out = bin()
        .args(["search", "id:0", "--json", "-k", "8", "--index"])
        .arg(index)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = v
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_u64().unwrap(), h["score"].as_f64().unwrap()))
        .collect();
    (hits, stderr)
}

fn same(a: &[(u64, f64)], b: &[(u64, f64)]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "{a:?} vs {b:?}");
        assert!((x.1 - y.1).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

fn index(index: &Path, args: &[&str]) -> std::process::Output {
    bin()
        .args(["index", "--quiet", "--index"])
        .arg(index)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_f32_index_is_converted_in_place_and_back_with_the_same_results() {
    if !data().join("dev.csv").exists() {
        assert!(!in_ci(), "no data at {}", data().display());
        eprintln!("skipped: no data");
        return;
    }
    let dir = tmp("compact-cli");
    let idx = dir.join("index");
    // 60 items: more than the 8 + 32 candidates a compact search re-ranks, so the compact
    // scan really chooses.
    let m = manifest(&dir, 60, 3, 0);
    index_manifest(&idx, &m);
    let (base, _) = search(&idx);
    assert_eq!(base.len(), 8);

    let out = index(&idx, &["--precision", "i8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("from f32 to i8 (60 items"), "{err}");
    assert!(idx.join("vectors.i8").exists());
    let r = simcase_index::Reader::open(&idx).unwrap();
    assert_eq!(r.precision(), simcase_index::Precision::I8);
    assert_eq!(r.compact().unwrap().len(), 60);
    drop(r);
    let (i8, _) = search(&idx);
    same(&i8, &base);

    // Nothing left to do: a clear error.
    let out = index(&idx, &["--precision", "i8"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already at precision i8: nothing to do"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A corrupt header: noticed with one warning, rebuilt, same answers.
    let file = idx.join("vectors.i8");
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    bad[0] = b'X';
    std::fs::write(&file, &bad).unwrap();
    let (hits, err) = search(&idx);
    same(&hits, &base);
    assert_eq!(
        err.matches("bad magic; rebuilding it from vectors.f32")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), good, "rebuilt on disk");
    // Truncated: the uncovered rows are searched exactly, and a writer re-appends them.
    std::fs::write(&file, &good[..good.len() - 25 * good.len() / 100]).unwrap();
    let (hits, _) = search(&idx);
    same(&hits, &base);

    // A temporary file left by a conversion killed mid-write is removed; f16 next.
    std::fs::write(idx.join("vectors.f16.tmp"), b"half-written").unwrap();
    let out = index(&idx, &["--precision", "f16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!idx.join("vectors.f16.tmp").exists());
    assert!(!file.exists() && idx.join("vectors.f16").exists());
    same(&search(&idx).0, &base);

    // Back to f32, then new files added to an i8 index are covered by its compact file.
    let out = index(&idx, &["--precision", "f32"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("from f16 to f32"), "{err}");
    assert!(!idx.join("vectors.f16").exists());
    same(&search(&idx).0, &base);
    let more = dir.join("more");
    std::fs::create_dir_all(&more).unwrap();
    let m2 = manifest(&more, 10, 3, 1);
    let out = index(
        &idx,
        &["--precision", "i8", "--manifest", m2.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("from f32 to i8 (60 items") && err.contains("indexed 10 new"),
        "{err}"
    );
    let r = simcase_index::Reader::open(&idx).unwrap();
    assert_eq!((r.len(), r.compact().unwrap().len()), (70, 70));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_precisions_and_empty_runs_are_clear_errors() {
    let dir = tmp("compact-bad");
    let out = index(&dir.join("index"), &["--precision", "bf16", "x.png"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown precision \"bf16\": choose one of f32, f16, i8"),
        "{err}"
    );
    // No paths and nothing to convert.
    let out = index(&dir.join("index"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to index"));
    // Converting a folder that holds no index.
    let out = index(&dir.join("index"), &["--precision", "i8"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a simcase index"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
