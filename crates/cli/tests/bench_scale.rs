//! `simcase bench scale` end to end on the real labelled images (../shared/data) with
//! efficientnet-lite0: the generator's validation against eval's own scores, a small run whose
//! exact engine must match the ground truth, and the synthetic archive written as an index
//! (resuming; f32, and i8 flat then hnsw). Speed is never asserted here.

mod common;
use common::*;
use serde_json::Value;

fn json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn validation(work: &std::path::Path) -> Value {
    let data = data();
    let out = work.join("validate.json");
    run_ok(
        bin()
            .args([
                "bench",
                "scale",
                "--validate",
                "--model",
                "efficientnet-lite0",
            ])
            .args(["--draws", "3", "--work"])
            .arg(work)
            .arg("--manifest")
            .arg(data.join("dev.csv"))
            .arg("--json")
            .arg(&out),
    );
    json(&out)
}

#[test]
fn synthetic_archive_is_validated_benchmarked_and_written_as_an_index() {
    let data = data();
    if !data.join("dev.csv").exists() {
        assert!(!in_ci(), "{} missing", data.display());
        eprintln!("skipped: no {}", data.display());
        return;
    }
    let work = tmp("bench-scale");
    let v = validation(&work);
    // The real P@1 the validation prints is eval's own score of the same embeddings.
    let eval_json = work.join("eval.json");
    run_ok(
        bin()
            .args([
                "eval",
                "--quiet",
                "--model",
                "efficientnet-lite0",
                "--manifest",
            ])
            .arg(data.join("dev.csv"))
            .arg("--work")
            .arg(work.join("eval"))
            .arg("--json")
            .arg(&eval_json),
    );
    let e = json(&eval_json);
    for (i, lvl) in simcase_eval::LEVELS.iter().enumerate() {
        let ours = v["real"][i].as_f64().unwrap();
        let eval = e["levels"][lvl]["P@1"]["micro"].as_f64().unwrap();
        assert!((ours - eval).abs() < 1e-9, "{lvl}: {ours} vs eval {eval}");
        let draws = v["draws"].as_array().unwrap();
        assert_eq!(draws.len(), 3);
        for d in draws {
            let p = d[i].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p) && p > 0.2, "{lvl}: {p}");
        }
    }
    // Not near-copies: synthetic test images are no closer to the real images than real test
    // images are to real train images.
    let syn = v["synth_to_real_nn_cos"].as_f64().unwrap();
    let real = v["real_nn_cos"].as_f64().unwrap();
    assert!(
        syn < real && syn > 0.3,
        "synthetic→real {syn}, real→real {real}"
    );

    // A small run: the exact engine is the ground truth, filters included, and its P@1 is the
    // exact P@1.
    let out = work.join("scale.json");
    let stdout = run_ok(
        bin()
            .args([
                "bench",
                "scale",
                "--data",
                "synthetic",
                "--model",
                "efficientnet-lite0",
            ])
            .args([
                "--rows",
                "6000",
                "--queries",
                "40",
                "--latency-queries",
                "20",
                "--work",
            ])
            .arg(&work)
            .arg("--manifest")
            .arg(data.join("dev.csv"))
            .arg("--json")
            .arg(&out),
    );
    assert!(stdout.contains("CPU: "), "{stdout}");
    assert!(stdout.contains("| simcase exact-f32 |"), "{stdout}");
    let r = json(&out);
    assert_eq!(r["rows"], 6000);
    let exact = &r["simcase"][0];
    assert_eq!(exact["engine"], "exact-f32");
    let st = &exact["settings"][0];
    assert_eq!(st["recall@10"].as_f64(), Some(1.0));
    assert_eq!(st["recall@100"].as_f64(), Some(1.0));
    assert_eq!(st["filtered"]["1%"]["recall@10"].as_f64(), Some(1.0));
    assert_eq!(st["filtered"]["10%"]["recall@10"].as_f64(), Some(1.0));
    assert_eq!(st["p_at_1"], r["exact_p_at_1"]);
    assert!(st["resident_bytes_per_vector"].as_f64().unwrap() > 0.0);
    // The data files are removed unless --keep.
    assert!(!work.join("base.f32").exists());

    // The archive as an index; written again, it resumes (here: nothing left to add) instead
    // of appending a second copy, and it equals a run into a fresh folder (seeded).
    // `bench scale --write-index DIR` of the seeded 4,500-row archive, with extra flags.
    let write_index = |dir: &std::path::Path, extra: &[&str]| {
        run_ok(
            bin()
                .args([
                    "bench",
                    "scale",
                    "--model",
                    "efficientnet-lite0",
                    "--rows",
                    "4500",
                ])
                .args(["--seed", "7", "--work"])
                .arg(&work)
                .arg("--manifest")
                .arg(data.join("dev.csv"))
                .arg("--write-index")
                .arg(dir)
                .args(extra),
        )
    };
    let index = work.join("index");
    for _ in 0..2 {
        write_index(&index, &[]);
    }
    let reader = simcase_index::Reader::open(&index).unwrap();
    assert_eq!(reader.len(), 4500);
    let one = tmp("bench-scale-one");
    write_index(&one.join("index"), &[]);
    let whole = simcase_index::Reader::open(&one.join("index")).unwrap();
    let (mut ten, mut labelled) = (0, 0);
    for id in [0u64, 2999, 3000, 4499] {
        assert_eq!(reader.vector(id), whole.vector(id), "row {id}");
    }
    for id in 0..4500u64 {
        let it = reader.item(id).unwrap().unwrap();
        let m = &it.meta;
        if m.label.is_some() && m.modality.is_some() && m.patient_key.is_some() {
            labelled += 1;
        }
        ten += usize::from(m.source.as_deref() == Some("site-0"));
        assert_eq!(m.split.as_deref(), Some("train"));
    }
    assert_eq!(labelled, 4500);
    assert!((300..600).contains(&ten), "site-0 (10%): {ten}");

    // --precision i8 --index-type flat: i8 rows beside the f32 ones and no graph; written
    // twice, it resumes (nothing added, nothing converted) and holds the same vectors.
    let compact = work.join("index-i8");
    let write = |extra: &[&str]| write_index(&compact, extra);
    for _ in 0..2 {
        let out = write(&["--precision", "i8", "--index-type", "flat"]);
        assert!(out.contains("i8, flat"), "{out}");
    }
    let r = simcase_index::Reader::open(&compact).unwrap();
    assert_eq!(r.len(), 4500);
    assert_eq!(r.precision(), simcase_index::Precision::I8);
    assert_eq!(r.ann_settings().index_type, simcase_index::IndexType::Flat);
    assert!(compact.join("vectors.i8").is_file());
    assert!(!compact.join("graph.usearch").exists());
    assert!(r.graph().is_none());
    for id in [0u64, 2999, 3000, 4499] {
        assert_eq!(r.vector(id), whole.vector(id), "row {id}");
    }
    // It searches (i8 scan, exact re-rank): the exact f32 top-10, scores included.
    let dim = whole.settings().dim;
    let ids: Vec<u64> = (0..4500).step_by(97).collect();
    let qs: Vec<&[f32]> = ids.iter().map(|&i| whole.vector(i).unwrap()).collect();
    let exact = simcase_index::search_rows(whole.vectors(), dim, &qs, 10, None);
    let same = |got: &[Vec<simcase_index::Hit>]| -> usize {
        got.iter()
            .zip(&exact)
            .filter(|(g, e)| {
                g.len() == e.len()
                    && g.iter()
                        .zip(e.iter())
                        .all(|(a, b)| a.row == b.row && (a.score - b.score).abs() < 1e-5)
            })
            .count()
    };
    let got = r.search(&qs, 10, None);
    assert_eq!(same(&got), qs.len(), "i8 flat top-10 differs from exact");
    drop(r);

    // The same folder asked for hnsw: the graph is built over the rows already written and
    // saved; searches go through it. One build thread, so the graph (and each query's hits)
    // is the same on every run: with more, it depends on how the threads interleave.
    let out = write(&["--index-type", "hnsw", "--hnsw-build-threads", "1"]);
    assert!(out.contains("i8, hnsw"), "{out}");
    let r = simcase_index::Reader::open(&compact).unwrap();
    assert_eq!(r.len(), 4500);
    assert_eq!(r.precision(), simcase_index::Precision::I8);
    assert_eq!(r.ann_settings().index_type, simcase_index::IndexType::Hnsw);
    assert!(compact.join("graph.usearch").is_file());
    assert!(compact.join("graph.json").is_file());
    let g = r.graph().expect("a graph");
    assert_eq!(g.covered(), 4500);
    let got = r.search(&qs, 10, None);
    for (q, (h, id)) in got.iter().zip(&ids).enumerate() {
        assert_eq!(
            h.first().map(|h| h.row),
            Some(*id),
            "query {q}: itself first"
        );
    }
    let r10 = simcase_bench::scale::recall(&got, &exact, 10);
    assert!(r10 >= 0.95, "hnsw recall@10 {r10}");
    assert!(
        same(&got) * 10 >= qs.len() * 9,
        "hnsw top-10s equal to exact"
    );
    drop(r);
    let _ = std::fs::remove_dir_all(&one);
    let _ = std::fs::remove_dir_all(&work);
}

/// Issue 12's window: a synthetic draw the size of dev.csv scores P@1 within ±0.05 of the real
/// data at each label level. Not met yet with efficientnet-lite0 (measured +0.059 / +0.058 /
/// +0.190 on 5 draws: the synthetic archive is easier than the real one), so it is run on
/// demand (`--ignored`) rather than left failing.
#[test]
#[ignore = "not met yet: efficientnet-lite0 synthetic P@1 is +0.06/+0.06/+0.19 above the real"]
fn synthetic_p_at_1_is_within_the_window_of_the_real() {
    let work = tmp("bench-scale-window");
    let v = validation(&work);
    for (i, lvl) in simcase_eval::LEVELS.iter().enumerate() {
        let d = v["diff"][i].as_f64().unwrap();
        assert!(d.abs() <= 0.05, "{lvl}: synthetic − real = {d:+.3}");
    }
    let _ = std::fs::remove_dir_all(&work);
}
