//! Manifests, end to end with the real binary and model on a few real images from
//! ../shared/data: labels attached to files already indexed (the README's order: index a
//! folder, then its manifest), disagreements reported and `--relabel`, label-only manifests,
//! headers in any case with any delimiter, and `eval` refusing a manifest without splits
//! before it loads anything.

mod common;
use common::*;
use simcase_index::{ItemMeta, Reader};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A few rows of dev.csv, four per modality, with the image paths made absolute.
fn rows() -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut rdr = csv::Reader::from_path(data().join("dev.csv")).unwrap();
    let header = rdr.headers().unwrap().clone();
    let root = std::fs::canonicalize(data()).unwrap();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for r in rdr.records() {
        let r = r.unwrap();
        let n = per.entry(r[2].to_string()).or_default();
        if *n < 4 {
            *n += 1;
            let mut fields: Vec<String> = r.iter().map(String::from).collect();
            fields[0] = root.join(&r[0]).display().to_string();
            out.push(csv::StringRecord::from(fields));
        }
    }
    assert_eq!(out.len(), 16, "four rows of each of the four modalities");
    (header, out)
}

/// Write `header` and `rows` as a manifest with this delimiter.
fn write_manifest(
    path: &Path,
    delimiter: u8,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> PathBuf {
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_path(path)
        .unwrap();
    w.write_record(header).unwrap();
    for r in rows {
        w.write_record(&r).unwrap();
    }
    w.flush().unwrap();
    path.to_path_buf()
}

/// dev.csv's own columns, for `rows`.
fn full_manifest(path: &Path, header: &csv::StringRecord, rows: &[csv::StringRecord]) -> PathBuf {
    let h: Vec<&str> = header.iter().collect();
    write_manifest(
        path,
        b',',
        &h,
        rows.iter().map(|r| r.iter().map(String::from).collect()),
    )
}

fn index(index: &Path, args: &[&str]) -> Output {
    bin()
        .args(["index", "--quiet", "--index"])
        .arg(index)
        .args(args)
        .output()
        .unwrap()
}

/// stderr of a run that must succeed.
fn ok_stderr(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "simcase failed:\n{stderr}");
    stderr
}

fn summary_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("indexed "))
        .unwrap_or_else(|| panic!("no summary line:\n{stderr}"))
}

/// Every stored item, by path.
fn stored(index: &Path) -> BTreeMap<String, ItemMeta> {
    Reader::open(index)
        .unwrap()
        .items()
        .unwrap()
        .into_iter()
        .map(|it| (it.meta.path.clone(), it.meta))
        .collect()
}

/// `search id:N --filter modality=US --json` results, N being the item stored from `path`.
fn search_us(index: &Path, path: &str) -> Vec<serde_json::Value> {
    let id = Reader::open(index)
        .unwrap()
        .items()
        .unwrap()
        .into_iter()
        .find(|it| it.meta.path == path)
        .unwrap()
        .id;
    let out = run_ok(
        bin()
            .args([
                "search",
                &format!("id:{id}"),
                "--json",
                "-k",
                "20",
                "--filter",
                "modality=US",
            ])
            .arg("--index")
            .arg(index),
    );
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn paths(rows: &[csv::StringRecord]) -> Vec<String> {
    rows.iter().map(|r| r[0].to_string()).collect()
}

#[test]
fn a_manifest_after_a_walk_brings_its_labels_without_decoding_again() {
    let dir = tmp("manifest-after-walk");
    let idx = dir.join("index");
    let (header, rows) = rows();
    let files = paths(&rows);
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let walked = ok_stderr(index(&idx, &files));
    assert!(
        summary_line(&walked).starts_with("indexed 16 new, 0 already present, 0 failed"),
        "{walked}"
    );
    // What the user saw: no item has a modality, so a modality filter finds nothing.
    let us = rows.iter().find(|r| &r[2] == "US").unwrap()[0].to_string();
    assert!(stored(&idx).values().all(|m| m.modality.is_none()));

    // A decode budget of 0 bytes fails any file that is decoded: proof that none is.
    let lone = dir.join("lone.png");
    std::fs::copy(data().join("images/busi/benign_14.png"), &lone).unwrap();
    let refused = index(
        &dir.join("other"),
        &["--decode-budget-mb", "0", lone.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("0 new, 0 already present, 1 failed"),
        "a zero budget must fail a decode: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let m = full_manifest(&dir.join("dev-subset.csv"), &header, &rows);
    let m = m.to_str().unwrap();
    let labelled = ok_stderr(index(&idx, &["--manifest", m, "--decode-budget-mb", "0"]));
    assert!(
        summary_line(&labelled)
            .starts_with("indexed 0 new, 16 labels updated, 0 already present, 0 failed"),
        "{labelled}"
    );
    assert!(!labelled.contains("disagree"), "{labelled}");
    let items = stored(&idx);
    assert_eq!(items.len(), 16);
    for r in &rows {
        let it = &items[&r[0]];
        assert_eq!(it.modality.as_deref(), Some(&r[2]), "{}", &r[0]);
        assert_eq!(it.label.as_deref(), Some(&r[5]));
        assert_eq!(it.split.as_deref(), Some(&r[12]));
        assert_eq!(it.source.as_deref(), Some(&r[1]));
        assert_eq!(it.extra["licence"], r[7].to_string());
        let key = it.patient_key.as_deref().unwrap();
        assert_eq!(key.len(), 16);
        assert_ne!(key, &r[6], "patient ids are stored only as salted keys");
    }
    let hits = search_us(&idx, &us);
    assert_eq!(hits.len(), 3, "the other three US images: {hits:?}");
    assert!(hits.iter().all(|h| h["modality"] == "US"), "{hits:?}");
    // Running it again changes nothing.
    let again = ok_stderr(index(&idx, &["--manifest", m]));
    assert!(
        summary_line(&again)
            .starts_with("indexed 0 new, 0 labels updated, 16 already present, 0 failed"),
        "{again}"
    );
}

#[test]
fn disagreeing_labels_are_reported_and_kept_unless_relabel() {
    let dir = tmp("manifest-disagree");
    let idx = dir.join("index");
    let (header, rows) = rows();
    let m = full_manifest(&dir.join("m.csv"), &header, &rows);
    let first = ok_stderr(index(&idx, &["--manifest", m.to_str().unwrap()]));
    assert!(
        summary_line(&first).starts_with("indexed 16 new, 0 labels updated"),
        "{first}"
    );
    // Two US rows now say MR; another row fills a column that was empty.
    let us: Vec<usize> = (0..rows.len()).filter(|&i| &rows[i][2] == "US").collect();
    let mut edited: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(String::from).collect())
        .collect();
    for &i in &us[..2] {
        edited[i][2] = "MR".into();
        edited[i][5] = edited[i][5].replacen("US/", "MR/", 1);
    }
    let notes = header.iter().position(|h| h == "notes").unwrap();
    let filled = (0..rows.len())
        .find(|&i| rows[i][notes].is_empty() && !us[..2].contains(&i))
        .unwrap();
    edited[filled][notes] = "second reader agrees".into();
    let h: Vec<&str> = header.iter().collect();
    let m2 = write_manifest(&dir.join("m2.csv"), b',', &h, edited);
    let m2 = m2.to_str().unwrap();
    let out = ok_stderr(index(&idx, &["--manifest", m2]));
    assert!(
        summary_line(&out).starts_with("indexed 0 new, 1 labels updated, 15 already present"),
        "{out}"
    );
    let warn = out
        .lines()
        .find(|l| l.contains("disagree"))
        .unwrap_or_else(|| panic!("no disagreement warning:\n{out}"));
    assert!(warn.contains("2 manifest row(s) disagree"), "{warn}");
    assert!(warn.contains("--relabel"), "{warn}");
    assert!(warn.contains(&rows[us[0]][0]), "names the file: {warn}");
    assert!(
        warn.contains("modality stored `US`, manifest `MR`"),
        "{warn}"
    );
    let items = stored(&idx);
    for &i in &us[..2] {
        assert_eq!(items[&rows[i][0]].modality.as_deref(), Some("US"), "kept");
    }
    assert_eq!(
        items[&rows[filled][0]].extra["notes"], "second reader agrees",
        "an empty column is filled without a word"
    );
    let relabelled = ok_stderr(index(&idx, &["--manifest", m2, "--relabel"]));
    assert!(
        summary_line(&relabelled)
            .starts_with("indexed 0 new, 2 labels updated, 14 already present"),
        "{relabelled}"
    );
    let items = stored(&idx);
    for &i in &us[..2] {
        let it = &items[&rows[i][0]];
        assert_eq!(it.modality.as_deref(), Some("MR"));
        assert!(it.label.as_deref().unwrap().starts_with("MR/breast/"));
    }
    assert_eq!(items[&rows[us[2]][0]].modality.as_deref(), Some("US"));
}

#[test]
fn a_label_only_manifest_fills_modality_anatomy_and_pathology() {
    let dir = tmp("manifest-label-only");
    let idx = dir.join("index");
    let (_, rows) = rows();
    let m = write_manifest(
        &dir.join("labels.csv"),
        b',',
        &["path", "label"],
        rows.iter()
            .map(|r| vec![r[0].to_string(), r[5].to_string()]),
    );
    ok_stderr(index(&idx, &["--manifest", m.to_str().unwrap()]));
    let items = stored(&idx);
    for r in &rows {
        let it = &items[&r[0]];
        assert_eq!(
            (
                it.modality.as_deref(),
                it.anatomy.as_deref(),
                it.pathology.as_deref()
            ),
            (Some(&r[2]), Some(&r[3]), Some(&r[4])),
            "{}",
            &r[0]
        );
    }
    let us = rows.iter().find(|r| &r[2] == "US").unwrap()[0].to_string();
    let hits = search_us(&idx, &us);
    assert_eq!(hits.len(), 3, "{hits:?}");
}

#[test]
fn headers_in_any_case_and_semicolons_are_read() {
    let dir = tmp("manifest-semicolon");
    let idx = dir.join("index");
    let (_, rows) = rows();
    // Paths relative to the CSV, as the README says; the CSV sits in a folder of its own.
    let sub = dir.join("lists");
    std::fs::create_dir_all(&sub).unwrap();
    let rel = |p: &str| {
        let up = "../".repeat(sub.components().count() - 1);
        format!("{up}{}", p.trim_start_matches('/'))
    };
    let m = write_manifest(
        &sub.join("semi.csv"),
        b';',
        &["Path", " Modality ", "Anatomy", "PATHOLOGY", "Split"],
        rows.iter().map(|r| {
            vec![
                rel(&r[0]),
                r[2].to_string(),
                r[3].to_string(),
                r[4].to_string(),
                r[12].to_string(),
            ]
        }),
    );
    let out = ok_stderr(index(&idx, &["--manifest", m.to_str().unwrap()]));
    assert!(
        summary_line(&out).starts_with("indexed 16 new, 0 labels updated"),
        "{out}"
    );
    let items = stored(&idx);
    for r in &rows {
        let it = &items[&r[0]];
        assert_eq!(it.modality.as_deref(), Some(&r[2]));
        assert_eq!(
            it.label.as_deref(),
            Some(&r[5]),
            "built from the three columns"
        );
        assert_eq!(it.split.as_deref(), Some(&r[12]));
    }
    // No path column at all: the error says what it found, in one line naming the file.
    let bad = write_manifest(&sub.join("bad.csv"), b';', &["File", "Label"], []);
    let out = index(&idx, &["--manifest", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        line.contains("bad.csv: manifest has no `path` column"),
        "{stderr}"
    );
    assert!(
        line.contains("columns found: file, label; delimiter ';'"),
        "{stderr}"
    );
}

#[test]
fn eval_without_splits_fails_before_loading_any_model() {
    let dir = tmp("manifest-eval-nosplit");
    let (_, rows) = rows();
    let home = dir.join("home");
    let work = dir.join("work");
    let eval = |m: &Path| {
        let t = std::time::Instant::now();
        let out = bin()
            .env("SIMCASE_HOME", &home)
            .args(["eval", "--manifest"])
            .arg(m)
            .arg("--work")
            .arg(&work)
            .output()
            .unwrap();
        (out, t.elapsed())
    };
    let m = write_manifest(
        &dir.join("nosplit.csv"),
        b',',
        &["path", "label"],
        rows.iter()
            .map(|r| vec![r[0].to_string(), r[5].to_string()]),
    );
    let (out, took) = eval(&m);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("nosplit.csv: no `split` column (columns found: path, label"),
        "{stderr}"
    );
    assert!(stderr.contains("`train` rows"), "{stderr}");
    // Nothing was installed (the home is empty: the model would have been fetched), embedded
    // or announced.
    assert!(
        !home.join("models").exists(),
        "a model install was attempted"
    );
    assert!(!work.exists(), "embedding was started");
    assert!(!stderr.contains("installing"), "{stderr}");
    assert!(took.as_secs() < 20, "took {took:?}");
    // Splits, but no test rows.
    let m = write_manifest(
        &dir.join("notest.csv"),
        b',',
        &["path", "label", "split"],
        rows.iter()
            .map(|r| vec![r[0].to_string(), r[5].to_string(), "train".into()]),
    );
    let (out, _) = eval(&m);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "notest.csv: no labelled rows with split `test` (labelled rows by split: train 16)"
        ),
        "{stderr}"
    );
    assert!(!home.join("models").exists() && !work.exists());
}

/// A running server's snapshot sees labels that a manifest added after it started: the
/// refresh compares the metadata generation, not only the row count (which does not change).
#[test]
fn a_running_server_sees_labels_added_by_a_manifest() {
    use simcase_server::client::Client;
    use std::io::{BufRead, BufReader};
    let dir = tmp("manifest-serve");
    let idx = dir.join("index");
    let (header, rows) = rows();
    let files = paths(&rows);
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    ok_stderr(index(&idx, &files));
    let mut child = bin()
        .args(["serve", "--bind", "127.0.0.1:0", "--no-token", "--index"])
        .arg(&idx)
        .env_remove("SIMCASE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Read both lines the server prints, and keep its stdout open while it runs: a closed
    // pipe would end it with SIGPIPE on its next print.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut line, mut page) = (String::new(), String::new());
    out.read_line(&mut line).unwrap();
    out.read_line(&mut page).unwrap();
    let _server = (Kill(child), out);
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("server did not start: {line:?}"))
        .to_string();
    let mut c = Client::new(&addr);
    let us = |c: &mut Client| {
        let v = c.get("/api/stats").unwrap().json().unwrap();
        assert_eq!(v["items"], 16, "{v}");
        v["counts"]["modality"]["US"].as_u64()
    };
    assert_eq!(us(&mut c), None, "no labels yet");
    let m = full_manifest(&dir.join("m.csv"), &header, &rows);
    ok_stderr(index(&idx, &["--manifest", m.to_str().unwrap()]));
    let t = std::time::Instant::now();
    while us(&mut c).is_none() {
        assert!(
            t.elapsed().as_secs() < 15,
            "the server never saw the new labels"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(us(&mut c), Some(4));
}

/// Files given as paths and in the manifest of the same run: whichever is decoded first, the
/// manifest's labels end up on the stored item (the same content seen twice used to drop the
/// second, labelled, copy).
#[test]
fn paths_and_their_manifest_in_one_run_keep_the_labels() {
    let dir = tmp("manifest-same-run");
    let idx = dir.join("index");
    let (header, rows) = rows();
    let rows = &rows[..4];
    let m = full_manifest(&dir.join("m.csv"), &header, rows);
    let mut args: Vec<String> = paths(rows);
    args.extend(["--manifest".into(), m.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ok_stderr(index(&idx, &args));
    assert!(summary_line(&out).starts_with("indexed 4 new"), "{out}");
    let items = stored(&idx);
    assert_eq!(items.len(), 4);
    for r in rows {
        assert_eq!(items[&r[0]].label.as_deref(), Some(&r[5]), "{out}");
    }
}
