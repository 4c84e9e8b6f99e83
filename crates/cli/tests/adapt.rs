//! `simcase adapt` and `simcase eval --adapt` on real dev.csv images (breast ultrasound and
//! brain MRI, 7 classes) with dinov2-s: a view is stored with the index and reloads to the same
//! map; the supervised methods refuse an index without labels or splits and a val split too
//! small to tune on, by name; eval scores adapted and fused spaces with the protocol unchanged
//! and reports the leave-classes-out check.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A manifest of dev.csv's BUSI and brain-MRI rows (7 classes): per class, up to `train`
/// train rows, `val` val rows and `test` test rows, at most `val_cap` val rows in all;
/// absolute paths.
fn subset(dir: &Path, train: usize, val: usize, test: usize, val_cap: usize) -> PathBuf {
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    let mut lines = text.lines();
    let mut rows = vec![lines.next().unwrap().to_string()];
    let root = std::fs::canonicalize(data()).unwrap();
    let mut taken: std::collections::HashMap<(String, String), usize> = Default::default();
    let mut vals = 0;
    for l in lines.filter(|l| l.contains(",busi,") || l.contains(",brain_tumor_mri,")) {
        let cols: Vec<&str> = l.split(',').collect();
        let (label, split) = (cols[5].to_string(), cols[cols.len() - 1].to_string());
        let cap = match split.as_str() {
            "train" => train,
            "val" if vals < val_cap => val,
            "test" => test,
            _ => 0,
        };
        let n = taken.entry((label, split.clone())).or_default();
        if *n < cap {
            *n += 1;
            vals += usize::from(split == "val");
            rows.push(format!("{}/{l}", root.display()));
        }
    }
    let p = dir.join("m.csv");
    std::fs::write(&p, rows.join("\n") + "\n").unwrap();
    p
}

fn adapt(index: &Path, method: &str) -> std::process::Output {
    bin()
        .args(["adapt", "--method", method, "--index"])
        .arg(index)
        .output()
        .unwrap()
}

#[test]
fn a_view_is_stored_with_its_index_and_reloads_to_the_same_map() {
    let dir = tmp("adapt-view");
    let m = subset(&dir, 10, 3, 0, 99);
    let index = dir.join("idx");
    index_manifest(&index, &m);
    for method in ["whiten", "lw", "lda", "mlp"] {
        let o = adapt(&index, method);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{method}: {err}");
        assert!(
            err.contains(&format!("view {method}: {method} of dinov2-s"))
                && err.contains("learned from 70 train rows (7 classes)"),
            "{err}"
        );
        let v = simcase_adapt::view::load_for(&index, method, "dinov2-s", 384).unwrap();
        assert_eq!(v.adapter.method_name(), method);
        assert_eq!(v.meta["train_rows"], 70);
        assert_eq!(v.meta["val_rows"], 21);
        // The stored map applies to the index's vectors: unit vectors of its width.
        let reader = simcase_index::Reader::open(&index).unwrap();
        let y = v.adapter.apply(reader.vector(0).unwrap());
        assert_eq!(y.len(), v.adapter.dim_out);
        assert!((y.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
        // LDA keeps at most classes − 1 directions; the others keep the width.
        if method == "lda" {
            assert!(v.adapter.dim_out <= 6, "{}", v.adapter.dim_out);
        } else {
            assert_eq!(v.adapter.dim_out, 384);
        }
    }
    // Refused for another model, naming both.
    let e = simcase_adapt::view::load_for(&index, "lw", "litemedsam", 256)
        .unwrap_err()
        .to_string();
    assert!(e.contains("built for dinov2-s (384-d)"), "{e}");
}

#[test]
fn supervised_methods_refuse_an_index_without_labels_or_a_val_split_too_small() {
    let dir = tmp("adapt-refuse");
    // Files only: no labels, no splits. Whitening still learns; the others say why not.
    let plain = dir.join("plain");
    let imgs: Vec<PathBuf> = std::fs::read_dir(data().join("images/busi"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .take(12)
        .collect();
    run_ok(
        bin()
            .args(["index", "--quiet", "--index"])
            .arg(&plain)
            .args(&imgs),
    );
    let o = adapt(&plain, "lw");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("no row has a split") && err.contains("only `whiten` works without"),
        "{err}"
    );
    let o = adapt(&plain, "whiten");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Labelled, but 3 val rows: too few to tune on.
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let m = subset(&small, 3, 1, 0, 3);
    index_manifest(&small.join("idx"), &m);
    let o = adapt(&small.join("idx"), "mlp");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("the val split is too small to tune mlp on: 3 labelled val row(s)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn eval_scores_adapted_and_fused_spaces_and_the_classes_adaptation_never_saw() {
    let dir = tmp("adapt-eval");
    let m = subset(&dir, 10, 3, 4, 99);
    let json = dir.join("r.json");
    let out = run_ok(
        bin()
            .args([
                "eval",
                "--quiet",
                "--group-by",
                "none",
                "--model",
                "dinov2-s",
                "--adapt",
                "whiten",
                "--adapt",
                "lw",
                "--leave-classes-out",
                "--rerank",
                "aqe",
                "--rerank",
                "kr",
                "--manifest",
            ])
            .arg(&m)
            .arg("--work")
            .arg(dir.join("work"))
            .arg("--json")
            .arg(&json),
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let models = v["models"].as_object().unwrap();
    let names: Vec<&String> = models.keys().collect();
    assert_eq!(
        names,
        [
            "dinov2-s",
            "dinov2-s+aqe",
            "dinov2-s+kr",
            "dinov2-s:lw",
            "dinov2-s:whiten"
        ]
    );
    for rr in ["dinov2-s+aqe", "dinov2-s+kr"] {
        // Re-ranking reports its latency beside the plain search's (measured, not compared
        // here: timings under a loaded CI are no test).
        let c = &models[rr]["rerank"];
        assert_eq!(c["space"], rr);
        let (plain, ms) = (c["search_ms"].as_f64().unwrap(), c["ms"].as_f64().unwrap());
        assert!(
            plain > 0.0 && ms > 0.0 && plain.is_finite() && ms.is_finite(),
            "{c}"
        );
        assert!(c["knobs"]
            .as_str()
            .unwrap()
            .contains(if rr.ends_with("kr") { "k1" } else { "alpha" }));
    }
    for (name, r) in models {
        // The protocol unchanged: the same counts and every P@N in [0, 1].
        assert_eq!(r["counts"]["index"], 70, "{name}");
        assert_eq!(r["counts"]["test"], 28, "{name}");
        for lvl in ["modality", "modality/anatomy", "modality/anatomy/pathology"] {
            let p = r["levels"][lvl]["P@1"]["micro"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{name} {lvl}");
        }
    }
    let lw = &models["dinov2-s:lw"]["adapter"];
    assert_eq!(lw["train_rows"], 70);
    assert_eq!(lw["val_rows"], 21);
    assert!(lw["tuned"]["shrinkage"].is_number());
    // 20% of 7 classes, rounded up: 2 held out; the record says what happened to them.
    let lco = v["leave_classes_out"].as_array().unwrap();
    assert_eq!(lco.len(), 2);
    for r in lco {
        assert_eq!(r["held_out_classes"].as_array().unwrap().len(), 2);
        assert_eq!(r["queries"], 8, "4 test rows per class listed");
        let d = r["adapted_P@1"].as_f64().unwrap() - r["frozen_P@1"].as_f64().unwrap();
        assert!((d - r["delta"].as_f64().unwrap()).abs() < 1e-12);
        assert_eq!(r["hurts_unseen"].as_bool().unwrap(), d < -0.02);
    }
    assert!(
        out.contains("| dinov2-s:lw | modality/anatomy/pathology |"),
        "{out}"
    );
    assert!(out.contains("Leave classes out"), "{out}");
    assert!(out.contains("| dinov2-s+kr | k1 "), "{out}");
}

/// `simcase search` with `--json`: the hits' (id, score), in order.
fn search_hits(index: &Path, args: &[&str]) -> Vec<(u64, f32)> {
    let out = run_ok(
        bin()
            .args(["search", "--json", "--all-duplicates", "--index"])
            .arg(index)
            .args(args),
    );
    let hits: Value = serde_json::from_str(&out).unwrap();
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_u64().unwrap(),
                h["score"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

/// Every row but `skip`, by cosine to `q` (rows of `dim`), best first.
fn by_cosine(rows: &[f32], dim: usize, q: &[f32], skip: u64) -> Vec<(u64, f32)> {
    let mut all: Vec<(u64, f32)> = rows
        .chunks(dim)
        .enumerate()
        .filter(|&(i, _)| i as u64 != skip)
        .map(|(i, r)| (i as u64, r.iter().zip(q).map(|(a, b)| a * b).sum()))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all
}

#[test]
fn search_applies_a_view_and_reranks_as_computed_by_hand() {
    let dir = tmp("adapt-search");
    let m = subset(&dir, 10, 3, 0, 99);
    let index = dir.join("idx");
    index_manifest(&index, &m);
    let o = adapt(&index, "lda");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reader = simcase_index::Reader::open(&index).unwrap();
    let (dim, raw) = (reader.settings().dim, reader.vectors().to_vec());
    let q = 5u64;
    let qv = &raw[q as usize * dim..(q as usize + 1) * dim];

    // In the view: the query's and every row's mapped vectors, ranked by cosine.
    let view = simcase_adapt::view::load(&index, "lda").unwrap();
    let mapped: Vec<f32> = raw
        .chunks(dim)
        .flat_map(|r| view.adapter.apply(r))
        .collect();
    let d = view.adapter.dim_out;
    let want = by_cosine(&mapped, d, &mapped[q as usize * d..(q as usize + 1) * d], q);
    let got = search_hits(&index, &["id:5", "-k", "8", "--view", "lda"]);
    assert_eq!(got.len(), 8);
    let score: std::collections::HashMap<u64, f32> = want.iter().copied().collect();
    for (i, (id, s)) in got.iter().enumerate() {
        assert!(
            (s - want[i].1).abs() < 1e-4,
            "rank {i}: {got:?} vs {want:?}"
        );
        assert!(
            (s - score[id]).abs() < 1e-4,
            "id {id}: {s} vs {}",
            score[id]
        );
    }
    // In the view, `kr` uses the knobs adapt tuned on val there (recorded with the view).
    let k = &view.meta["rerank"]["kr"];
    let tuned = simcase_query::rerank::Kr {
        k1: k["k1"].as_u64().unwrap() as usize,
        k2: k["k2"].as_u64().unwrap() as usize,
        lambda: k["lambda"].as_f64().unwrap() as f32,
    };
    assert!(
        [10, 20].contains(&tuned.k1) && [3, 6].contains(&tuned.k2),
        "{k}"
    );
    let qm = &mapped[q as usize * d..(q as usize + 1) * d];
    let short: Vec<&[f32]> = want
        .iter()
        .map(|&(id, _)| &mapped[id as usize * d..(id as usize + 1) * d])
        .collect();
    let kr = tuned.rerank(qm, &short);
    let kr_score: std::collections::HashMap<u64, f32> =
        kr.iter().map(|&(i, s)| (want[i].0, s)).collect();
    let got = search_hits(
        &index,
        &["id:5", "-k", "6", "--view", "lda", "--rerank", "kr"],
    );
    for (i, (id, s)) in got.iter().enumerate() {
        assert!(
            (kr_score[id] - kr[i].1).abs() < 1e-5,
            "rank {i}: {got:?} vs {kr:?}"
        );
        assert!(
            (s - score[id]).abs() < 1e-4,
            "id {id} keeps its cosine in the view"
        );
    }

    // The plain search ranks the model's embeddings: other scores.
    let plain = search_hits(&index, &["id:5", "-k", "8"]);
    let cos = by_cosine(&raw, dim, qv, q);
    assert!((plain[0].1 - cos[0].1).abs() < 1e-4 && (plain[0].1 - got[0].1).abs() > 1e-3);

    // k-reciprocal: the best 100 (here all 90 others) reordered by −d*, cosine scores kept.
    let short: Vec<&[f32]> = cos
        .iter()
        .map(|&(id, _)| &raw[id as usize * dim..(id as usize + 1) * dim])
        .collect();
    let kr = simcase_query::rerank::Kr::PAPER.rerank(qv, &short);
    let kr_score: std::collections::HashMap<u64, f32> =
        kr.iter().map(|&(i, s)| (cos[i].0, s)).collect();
    let got = search_hits(&index, &["id:5", "-k", "10", "--rerank", "kr"]);
    assert_eq!(got.len(), 10);
    let cos_of: std::collections::HashMap<u64, f32> = cos.iter().copied().collect();
    for (i, (id, s)) in got.iter().enumerate() {
        assert!(
            (kr_score[id] - kr[i].1).abs() < 1e-5,
            "rank {i}: {got:?} vs {kr:?}"
        );
        assert!((s - cos_of[id]).abs() < 1e-4, "id {id} keeps its cosine");
    }

    // αQE: the query plus its 3 nearest, weighted by score³, ranked again.
    let nb: Vec<(&[f32], f32)> = cos[..3]
        .iter()
        .map(|&(id, s)| (&raw[id as usize * dim..(id as usize + 1) * dim], s))
        .collect();
    let e = simcase_query::rerank::alpha_qe(qv, &nb, 3, 3.0);
    let want = by_cosine(&raw, dim, &e, q);
    let got = search_hits(&index, &["id:5", "-k", "6", "--rerank", "aqe"]);
    for (i, (_, s)) in got.iter().enumerate() {
        assert!(
            (s - want[i].1).abs() < 1e-4,
            "rank {i}: {got:?} vs {want:?}"
        );
    }

    // An unknown view: one line naming the parameter and the views there are.
    let err = run_fails(
        bin()
            .args(["search", "id:5", "--view", "nosuch", "--index"])
            .arg(&index),
    );
    assert!(
        err.contains("view: no view \"nosuch\" (views of this index: lda)"),
        "{err}"
    );
}

/// Each row's vector by content id (hash), so rows of two indexes of the same files pair up.
fn by_hash(index: &Path) -> (usize, std::collections::HashMap<String, (u64, Vec<f32>)>) {
    let r = simcase_index::Reader::open(index).unwrap();
    let rows = r
        .items()
        .unwrap()
        .into_iter()
        .map(|it| {
            let v = r.vector(it.id).unwrap().to_vec();
            (it.meta.hash, (it.id, v))
        })
        .collect();
    (r.settings().dim, rows)
}

#[test]
fn a_fused_index_holds_both_models_and_adapt_weighs_or_picks_them_without_embedding_again() {
    let dir = tmp("adapt-fused");
    let m = subset(&dir, 5, 2, 1, 99);
    let (fused, lite, dino) = (dir.join("fused"), dir.join("lite"), dir.join("dino"));
    for (index, model) in [
        (&fused, "efficientnet-lite0+dinov2-s"),
        (&lite, "efficientnet-lite0"),
        (&dino, "dinov2-s"),
    ] {
        run_ok(
            bin()
                .args(["index", "--quiet", "--model", model, "--index"])
                .arg(index)
                .arg("--manifest")
                .arg(&m),
        );
    }
    // Fusion dimensions: each row is the two models' rows side by side, each times 1/√2.
    let (df, f) = by_hash(&fused);
    let ((dl, l), (dd, d)) = (by_hash(&lite), by_hash(&dino));
    assert_eq!((dl, dd, df), (1280, 384, 1280 + 384));
    assert_eq!(f.len(), l.len());
    assert!(f.len() > 30, "{} rows", f.len());
    let r = 1.0 / 2f32.sqrt();
    for (hash, (_, v)) in &f {
        let want: Vec<f32> = l[hash].1.iter().chain(&d[hash].1).map(|x| x * r).collect();
        let worst = v
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{hash}: off by {worst}");
    }

    // A file query is embedded by both models, each with its own input: the file's own row
    // comes first, at cosine 1.
    let first = std::fs::read_to_string(&m).unwrap();
    let file = first
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let top = search_hits(&fused, &[&file, "-k", "1"]);
    assert!(top[0].1 > 0.9999, "{top:?}");

    // A view that keeps only dinov2-s searches as the dinov2-s index does.
    let o = bin()
        .args([
            "adapt", "--model", "dinov2-s", "--method", "none", "--index",
        ])
        .arg(&fused)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (qhash, (qf, _)) = f.iter().min_by_key(|(_, (id, _))| *id).unwrap();
    let qd = d[qhash].0;
    let ff = |h: &[(u64, f32)]| -> Vec<(String, f32)> {
        let hash_of: std::collections::HashMap<u64, &String> =
            f.iter().map(|(h, (id, _))| (*id, h)).collect();
        h.iter().map(|(id, s)| (hash_of[id].clone(), *s)).collect()
    };
    let fd = |h: &[(u64, f32)]| -> Vec<(String, f32)> {
        let hash_of: std::collections::HashMap<u64, &String> =
            d.iter().map(|(h, (id, _))| (*id, h)).collect();
        h.iter().map(|(id, s)| (hash_of[id].clone(), *s)).collect()
    };
    let picked = ff(&search_hits(
        &fused,
        &[&format!("id:{qf}"), "-k", "6", "--view", "dinov2-s"],
    ));
    let alone = fd(&search_hits(&dino, &[&format!("id:{qd}"), "-k", "6"]));
    assert_eq!(picked.len(), 6);
    for ((ha, sa), (hb, sb)) in picked.iter().zip(&alone) {
        assert!((sa - sb).abs() < 1e-4, "{picked:?} vs {alone:?}");
        // Ties aside, the same rows in the same order.
        assert!(
            ha == hb || (sa - sb).abs() < 1e-6,
            "{picked:?} vs {alone:?}"
        );
    }

    // Both models, weights tuned on val: the view records them and searches with them.
    let o = bin()
        .args([
            "adapt",
            "--model",
            "efficientnet-lite0+dinov2-s",
            "--method",
            "none",
        ])
        .arg("--index")
        .arg(&fused)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(
            "models of efficientnet-lite0+dinov2-s kept, with their weights: efficientnet-lite0 0."
        ),
        "{err}"
    );
    let view = simcase_adapt::view::load(&fused, "efficientnet-lite0_dinov2-s").unwrap();
    let w: Vec<f64> = view.meta["fusion"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(w.len(), 2);
    assert!((w[0] + w[1] - 1.0).abs() < 1e-6, "{w:?}");
    assert!(view.meta["fusion"]["val_P@1"].as_f64().is_some());
    assert_eq!(view.adapter.method_name(), "none");
    // By hand: each row's parts weighted, normalised, ranked by cosine.
    let (raw, n) = {
        let rd = simcase_index::Reader::open(&fused).unwrap();
        (rd.vectors().to_vec(), rd.len())
    };
    let mapped: Vec<f32> = raw
        .chunks(df)
        .flat_map(|row| {
            let mut v: Vec<f32> = row[..1280]
                .iter()
                .map(|x| x * w[0] as f32)
                .chain(row[1280..].iter().map(|x| x * w[1] as f32))
                .collect();
            let len = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= len);
            v
        })
        .collect();
    assert_eq!(mapped.len(), n * df);
    let qv = &mapped[*qf as usize * df..(*qf as usize + 1) * df];
    let want = by_cosine(&mapped, df, qv, *qf);
    let got = search_hits(
        &fused,
        &[
            &format!("id:{qf}"),
            "-k",
            "5",
            "--view",
            "efficientnet-lite0_dinov2-s",
        ],
    );
    for (i, (_, s)) in got.iter().enumerate() {
        assert!(
            (s - want[i].1).abs() < 1e-4,
            "rank {i}: {got:?} vs {want:?}"
        );
    }

    // The server loads both models: an upload is embedded by each, and searches in the view.
    {
        let srv = serve(&fused, &["--no-token"], &dir.join("serve.log"));
        let mut c = simcase_server::client::Client::new(&srv.addr);
        let stats = c.get("/api/stats").unwrap().json().unwrap();
        assert_eq!(stats["model"], "efficientnet-lite0+dinov2-s", "{stats}");
        let (ty, body) =
            simcase_server::client::multipart_file("q.jpg", &std::fs::read(&file).unwrap());
        let r = c
            .post(
                "/api/search?k=1&view=efficientnet-lite0_dinov2-s",
                &ty,
                &body,
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json().unwrap();
        assert!(v["hits"][0]["score"].as_f64().unwrap() > 0.9999, "{v}");
        assert_eq!(v["view"], "efficientnet-lite0_dinov2-s");
    }

    // A method on top learns on the weighted rows; the view still takes the index's rows.
    let o = bin()
        .args([
            "adapt",
            "--model",
            "efficientnet-lite0+dinov2-s",
            "--method",
            "lw",
        ])
        .args(["--name", "fused-lw", "--index"])
        .arg(&fused)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = simcase_adapt::view::load(&fused, "fused-lw").unwrap();
    assert_eq!((v.adapter.dim_in, v.adapter.dim_mid()), (df, df));
    assert_eq!(v.adapter.blocks.len(), 2);
    assert_eq!(
        search_hits(
            &fused,
            &[&format!("id:{qf}"), "-k", "3", "--view", "fused-lw"]
        )
        .len(),
        3
    );

    // A model the index does not hold is refused, naming what it holds.
    let err = run_fails(
        bin()
            .args([
                "adapt",
                "--model",
                "litemedsam",
                "--method",
                "none",
                "--index",
            ])
            .arg(&fused),
    );
    assert!(
        err.contains(
            "the index holds efficientnet-lite0+dinov2-s; --model litemedsam names litemedsam"
        ),
        "{err}"
    );
    // So is `none` without --model: it would keep the rows as they are.
    let o = adapt(&fused, "none");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--method none keeps the rows"));
}
