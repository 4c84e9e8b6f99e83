//! Every file of pydicom's own test files (the pinned pydicom wheel) and of pydicom-data
//! through decode and through `simcase index`: each decodes or fails with a one-line reason,
//! none panics, and ingest records every failure without losing what it indexed. Prints the
//! per-transfer-syntax table that the README carries.

mod common;
use common::{bin, fetched_once};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// (package, version, wheel SHA-256, member prefix)
const WHEELS: [(&str, &str, &str, &str); 2] = [
    (
        "pydicom",
        "3.0.1",
        "db32f78b2641bd7972096b8289111ddab01fb221610de8d7afa835eb938adb41",
        "pydicom/data/test_files/",
    ),
    (
        "pydicom-data",
        "1.0.0",
        "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
        "data_store/data/",
    ),
];

/// The files of both test sets, unpacked once per target dir.
fn corpus() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dicom-corpus");
    fetched_once(&root, |root| {
        for (pkg, ver, sha, prefix) in WHEELS {
            let dir = root.join(pkg);
            std::fs::create_dir_all(&dir).unwrap();
            let wheel = simcase_models::pip_fetch(pkg, ver, sha, &dir).unwrap();
            let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
            for i in 0..zip.len() {
                let mut f = zip.by_index(i).unwrap();
                let name = f.name().to_string();
                let Some(rel) = name.strip_prefix(prefix) else {
                    continue;
                };
                if name.ends_with('/') || rel.is_empty() {
                    continue;
                }
                let out = dir.join(rel.replace('/', "__"));
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).unwrap();
                std::fs::write(out, bytes).unwrap();
            }
            std::fs::remove_file(&wheel).unwrap();
        }
    })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn every_pydicom_test_file_decodes_or_fails_in_one_line() {
    let root = corpus();
    // syntax -> (decoded, failed, failure reasons)
    let mut table: BTreeMap<String, (usize, usize, Vec<String>)> = BTreeMap::new();
    let mut total = 0;
    for (pkg, ..) in WHEELS {
        for path in files(&root.join(pkg)) {
            total += 1;
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let r = std::panic::catch_unwind(|| {
                simcase_imaging::decode_bytes(&bytes, &Default::default())
            })
            .unwrap_or_else(|_| panic!("{pkg}/{name}: decoding panicked"));
            let syntax = match simcase_imaging::sniff(&bytes) {
                Some(simcase_imaging::Format::Dicom) => simcase_imaging::transfer_syntax(&bytes)
                    .unwrap_or_else(|| "(no transfer syntax)".into()),
                Some(f) => f.name().to_string(),
                None => "(not DICOM/PNG/JPEG)".into(),
            };
            let row = table.entry(syntax).or_default();
            match r {
                Ok(d) => {
                    assert!(d.image.width > 0 && d.image.height > 0);
                    assert!(
                        d.image
                            .data
                            .iter()
                            .all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
                        "{name}: pixel values outside [0, 1]"
                    );
                    row.0 += 1;
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.is_empty() && !msg.contains('\n'), "{name}: {msg:?}");
                    row.1 += 1;
                    row.2.push(format!("{name}: {msg}"));
                }
            }
        }
    }
    println!("| transfer syntax | decoded | clear error |\n|---|---:|---:|");
    for (s, (ok, bad, _)) in &table {
        println!("| {s} | {ok} | {bad} |");
    }
    for (s, (_, _, why)) in &table {
        for w in why {
            println!("  {s}: {w}");
        }
    }
    assert!(total > 200, "{total} files");
}

/// The same files through `simcase index`: every failure is one row of the errors table and
/// one log line naming the file, and every decodable file is indexed.
#[test]
fn ingest_of_the_pydicom_test_sets_completes() {
    let root = corpus();
    let index = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dicom-corpus-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&index);
    let out = bin()
        .args(["index", "--quiet", "--index"])
        .arg(&index)
        .arg(root.join("pydicom"))
        .arg(root.join("pydicom-data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let reader = simcase_index::Reader::open(&index).unwrap();
    let errors = reader.errors().unwrap();
    let decodable = [root.join("pydicom"), root.join("pydicom-data")]
        .iter()
        .flat_map(|d| files(d))
        .map(|p| {
            let all = simcase_imaging::DecodeOptions {
                frames: simcase_imaging::FrameSelect::All,
                ..Default::default()
            };
            simcase_imaging::decode_items(&std::fs::read(p).unwrap(), &all).map_or(0, |v| v.len())
        })
        .sum::<usize>();
    assert!(reader.len() > 50, "{} items", reader.len());
    // Every frame is an item; byte-identical files are stored once, so items can be fewer.
    assert!(reader.len() <= decodable);
    for (path, reason) in &errors {
        assert!(!reason.contains('\n'), "{path}: {reason:?}");
        let name = Path::new(path).file_name().unwrap().to_string_lossy();
        assert!(stderr.contains(name.as_ref()), "{name} failed silently");
    }
    println!(
        "{} items, {} errors, {decodable} decodable images",
        reader.len(),
        errors.len()
    );
    std::fs::remove_dir_all(&index).unwrap();
}

/// Multi-frame objects: every frame an item with its frame number (or one with `middle`),
/// and `--keep-phi` as the only way patient names reach the index.
#[test]
fn frames_become_items_and_phi_needs_keep_phi() {
    let root = corpus();
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("frames-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 30 frames of JPEG baseline YBR colour; 2 frames of RLE RGB.
    for f in ["examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm"] {
        std::fs::copy(root.join("pydicom").join(f), src.join(f)).unwrap();
    }
    let run = |index: &Path, extra: &[&str]| {
        let out = bin()
            .args(["index", "--quiet", "--index"])
            .arg(index)
            .args(extra)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        simcase_index::Reader::open(index).unwrap().items().unwrap()
    };
    let all = run(&dir.join("all"), &[]);
    let ybr: Vec<_> = all
        .iter()
        .filter(|i| i.meta.path.ends_with("examples_ybr_color.dcm"))
        .collect();
    assert_eq!(ybr.len(), 30);
    let mut frames: Vec<u64> = ybr
        .iter()
        .map(|i| i.meta.extra["frame"].as_u64().unwrap())
        .collect();
    frames.sort();
    assert_eq!(frames, (0..30).collect::<Vec<_>>());
    assert!(ybr.iter().all(|i| i.meta.extra["frames"] == 30));
    assert_eq!(all.len(), 32);
    let mid = run(&dir.join("mid"), &["--frames", "middle"]);
    assert_eq!(mid.len(), 2);
    assert!(mid.iter().any(|i| i.meta.extra["frame"] == 15));
    let stride = run(&dir.join("stride"), &["--frames", "stride:10"]);
    assert_eq!(stride.len(), 3 + 1);

    // PHI: by default only the salted key; with --keep-phi the operator's choice is stored.
    let dump = |items: &[simcase_index::Item]| serde_json::to_string(items).unwrap();
    assert!(
        !dump(&all).contains("Lestrade"),
        "patient name stored without --keep-phi"
    );
    assert!(all
        .iter()
        .all(|i| i.meta.extra.get("patient_name").is_none()));
    assert!(all.iter().any(|i| i.meta.patient_key.is_some()));
    let kept = run(&dir.join("phi"), &["--keep-phi", "--frames", "first"]);
    assert!(
        kept.iter().any(
            |i| i.meta.extra.get("patient_name").and_then(|v| v.as_str()) == Some("Lestrade^G")
        ),
        "{}",
        dump(&kept)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Pixel values against pydicom (`tools/make_dicom_fixtures.py`): after the same modality and
/// VOI transforms, within 1 grey level of 255 at 200 sampled positions per file.
#[test]
fn pixels_match_pydicom_within_one_grey_level() {
    let root = corpus();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pydicom_pixels.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    let files = fx["files"].as_array().unwrap();
    assert!(files.len() >= 20);
    for f in files {
        let name = f["file"].as_str().unwrap();
        let p = ["pydicom", "pydicom-data"]
            .iter()
            .map(|d| root.join(d).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} not in the corpus"));
        let d = simcase_imaging::decode_bytes(&std::fs::read(&p).unwrap(), &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, h) = (d.image.width, d.image.height);
        assert_eq!(
            (h as u64, w as u64),
            (f["rows"].as_u64().unwrap(), f["columns"].as_u64().unwrap()),
            "{name}: size"
        );
        let (mut worst, mut at) = (0i64, String::new());
        for (pos, want) in f["positions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(f["values"].as_array().unwrap())
        {
            let (r, c) = (
                pos[0].as_u64().unwrap() as usize,
                pos[1].as_u64().unwrap() as usize,
            );
            let got: Vec<i64> = (0..3)
                .map(|ch| (d.image.data[ch * w * h + r * w + c] * 255.0).round() as i64)
                .collect();
            for (ch, g) in got.iter().enumerate() {
                let diff = (g - want[ch].as_i64().unwrap()).abs();
                if diff > worst {
                    (worst, at) = (diff, format!(" at ({r}, {c}): {got:?} vs {want}"));
                }
            }
        }
        println!(
            "{name} ({}, {}): max diff {worst} grey levels{at}",
            f["transfer_syntax"].as_str().unwrap(),
            f["photometric"].as_str().unwrap()
        );
        if worst > 1 {
            failures.push(format!("{name}: {worst}"));
        }
    }
    assert!(
        failures.is_empty(),
        "differ from pydicom by more than 1 grey level: {failures:?}"
    );
}
