//! eval's embedding cache over a manifest that lists one file content under several rows
//! (other names, patients, splits, even labels; dev.csv has 9 such pairs): a second run adds
//! nothing, relabels nothing and leaves the index's metadata generation alone, and each row
//! keeps its own label, split and group for scoring, run after run. Real images from
//! ../shared/data, embedded with efficientnet-lite0.

use simcase_eval::protocol::{cache_manifest, embed_manifest, Options, Row};
use simcase_index::Reader;
use simcase_models::ModelId;
use simcase_query::GroupBy;
use std::path::PathBuf;

fn data() -> PathBuf {
    std::env::var_os("SIMCASE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// (label, split, id, group) of each row, in manifest order.
fn view(rows: &[Row]) -> Vec<(String, String, u64, String)> {
    rows.iter()
        .map(|r| {
            (
                r.label().to_string(),
                r.split().to_string(),
                r.id(),
                r.group().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_repeated_file_is_stored_once_and_a_second_run_changes_nothing() {
    let data = data();
    let images = [
        "images/brain_tumor_mri/Te-no_0175.jpg",
        "images/busi/malignant_16.png",
        "images/iqothnccd_lung_ct/Normal_case_235.jpg",
    ];
    if !images.iter().all(|p| data.join(p).is_file()) {
        assert!(!in_ci(), "{} missing", data.display());
        eprintln!("skipped: no {}", data.display());
        return;
    }
    let model = ModelId::EfficientNetLite0;
    if !simcase_models::installed(model).unwrap() {
        if let Err(e) = simcase_models::install(&model.spec(), None) {
            assert!(!in_ci(), "installing {model}: {e:#}");
            eprintln!("skipped: {model} not installed ({e:#})");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("simcase-eval-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // a.jpg twice more under other names, patients, splits and (once) another label.
    let bytes = std::fs::read(data.join(images[0])).unwrap();
    for name in ["a.jpg", "a-copy.jpg", "a-val.jpg"] {
        std::fs::write(dir.join(name), &bytes).unwrap();
    }
    std::fs::copy(data.join(images[1]), dir.join("b.png")).unwrap();
    std::fs::copy(data.join(images[2]), dir.join("c.jpg")).unwrap();
    let manifest = dir.join("m.csv");
    std::fs::write(
        &manifest,
        "path,label,split,patient_id\n\
         a.jpg,MR/brain/normal,train,p-a\n\
         b.png,US/breast/malignant,train,p-b\n\
         a-copy.jpg,MR/brain/normal,test,p-copy\n\
         c.jpg,CT/chest/normal,test,p-c\n\
         a-val.jpg,MR/brain/glioma,val,p-val\n",
    )
    .unwrap();
    let opts = Options {
        manifest: manifest.clone(),
        work: Some(dir.join("work")),
        batch: 8,
        quiet: true,
    };

    let (reader, rows, missing) = embed_manifest(&opts, model, Some(GroupBy::Patient)).unwrap();
    assert_eq!(missing, 0);
    assert_eq!(reader.len(), 3, "one item per file content");
    let first = view(&rows);
    let salt = reader.settings().clone();
    let expect = [
        ("MR/brain/normal", "train", "p-a"),
        ("US/breast/malignant", "train", "p-b"),
        ("MR/brain/normal", "test", "p-copy"),
        ("CT/chest/normal", "test", "p-c"),
        ("MR/brain/glioma", "val", "p-val"),
    ];
    assert_eq!(first.len(), expect.len());
    for (got, (label, split, patient)) in first.iter().zip(expect) {
        assert_eq!(got.0, label);
        assert_eq!(got.1, split);
        assert_eq!(got.3, salt.patient_key(patient), "{got:?}: its own patient");
    }
    // The three rows of a.jpg's content share one item (one embedding).
    assert_eq!(first[0].2, first[2].2);
    assert_eq!(first[0].2, first[4].2);
    assert_ne!(first[0].2, first[1].2);
    // That item carries the first row's values.
    let stored = reader.item(first[0].2).unwrap().unwrap().meta;
    assert_eq!(stored.label.as_deref(), Some("MR/brain/normal"));
    assert_eq!(stored.split.as_deref(), Some("train"));
    assert_eq!(stored.patient_key, Some(salt.patient_key("p-a")));
    let version = reader.version();
    drop(reader);

    // The second caching run: nothing embedded, relabelled or disagreeing (so no warning),
    // and the metadata generation unchanged.
    let (index, s) = cache_manifest(&opts, model).unwrap();
    assert_eq!(
        (s.added, s.updated, s.disagreed, s.failed),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.skipped, 3, "{s:?}");
    let reader = Reader::open(&index).unwrap();
    assert_eq!(reader.version(), version, "the second run rewrote metadata");
    let again = reader.item(first[0].2).unwrap().unwrap().meta;
    assert_eq!(again.split.as_deref(), Some("train"));
    assert_eq!(again.patient_key, Some(salt.patient_key("p-a")));
    drop(reader);

    // And a third, through eval's own entry point: the same rows, labels and groups.
    let (reader, rows, _) = embed_manifest(&opts, model, Some(GroupBy::Patient)).unwrap();
    assert_eq!(view(&rows), first);
    assert_eq!(reader.version(), version);
    drop(reader);
    let _ = std::fs::remove_dir_all(&dir);
}
