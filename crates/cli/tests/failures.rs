//! Failures are never silently lost (issue 11): `simcase index` exits 2 when every file failed
//! (or any, with `--strict`) and sums the failures up by kind; `simcase errors` lists them;
//! `/api/stats` counts them; the index's own files are never read as images; a CSV given as
//! a path gets the `--manifest` hint. The real binary, the real default model, real images.

mod common;
use common::*;
use simcase_server::client::Client;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// The exit status of a run whose files failed.
const FAILED_FILES: i32 = 2;
/// A transfer syntax dicom-rs knows but has no decoder for (MPEG2 Main Profile).
const MPEG2: &str = "1.2.840.10008.1.2.4.100";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `n` real images of dev.csv (every `step`-th row after `skip`), copied into `to` as
/// `imgN.EXT`.
fn real_images(to: &Path, n: usize, step: usize, skip: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(to).unwrap();
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    text.lines()
        .skip(1 + skip)
        .step_by(step)
        .take(n)
        .enumerate()
        .map(|(i, l)| {
            let rel = l.split(',').next().unwrap();
            let ext = Path::new(rel).extension().unwrap().to_string_lossy();
            let dst = to.join(format!("img{i}.{ext}"));
            std::fs::copy(data().join(rel), &dst).unwrap();
            dst
        })
        .collect()
}

/// One explicit-VR little-endian element (values padded to even length).
fn element(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
    }
    let mut out = Vec::new();
    out.extend(group.to_le_bytes());
    out.extend(elem.to_le_bytes());
    out.extend(vr);
    if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
        out.extend([0, 0]);
        out.extend((v.len() as u32).to_le_bytes());
    } else {
        out.extend((v.len() as u16).to_le_bytes());
    }
    out.extend(v);
    out
}

/// A small Part 10 file: a 4x4 8-bit image whose meta group names transfer syntax `ts`, its
/// pixel data encapsulated (one fragment) as compressed syntaxes require.
fn dicom_with_syntax(ts: &str) -> Vec<u8> {
    let mut meta = Vec::new();
    meta.extend(element(0x0002, 0x0001, b"OB", &[0, 1]));
    meta.extend(element(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.7"));
    meta.extend(element(0x0002, 0x0003, b"UI", b"1.2.826.0.1.3680043.9.1"));
    meta.extend(element(0x0002, 0x0010, b"UI", ts.as_bytes()));
    let mut out = vec![0u8; 128];
    out.extend(b"DICM");
    out.extend(element(
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    out.extend(meta);
    let us = |v: u16| v.to_le_bytes();
    out.extend(element(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7"));
    out.extend(element(0x0008, 0x0060, b"CS", b"OT"));
    out.extend(element(0x0028, 0x0002, b"US", &us(1)));
    out.extend(element(0x0028, 0x0004, b"CS", b"MONOCHROME2"));
    out.extend(element(0x0028, 0x0010, b"US", &us(4)));
    out.extend(element(0x0028, 0x0011, b"US", &us(4)));
    out.extend(element(0x0028, 0x0100, b"US", &us(8)));
    out.extend(element(0x0028, 0x0101, b"US", &us(8)));
    out.extend(element(0x0028, 0x0102, b"US", &us(7)));
    out.extend(element(0x0028, 0x0103, b"US", &us(0)));
    // Pixel Data, undefined length: an empty offset table, one fragment, the delimiter.
    out.extend([
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    let item = |body: &[u8]| {
        let mut v = vec![0xFE, 0xFF, 0x00, 0xE0];
        v.extend((body.len() as u32).to_le_bytes());
        v.extend(body);
        v
    };
    out.extend(item(&[]));
    out.extend(item(&[0x55; 16]));
    out.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

/// Files that cannot be indexed, each for a known reason: two truncated PNGs (`corrupt
/// png`), random bytes named `.dcm` and a text file (`not an image`), and a DICOM of a
/// transfer syntax without a decoder.
fn bad_files(to: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(to).unwrap();
    let png = std::fs::read(data().join("images/busi/benign_136.png")).unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let files: [(&str, Vec<u8>); 5] = [
        ("truncated_a.png", png[..200].to_vec()),
        ("truncated_b.png", png[..300].to_vec()),
        ("random.dcm", random),
        ("notes.bin", b"not an image at all\n".to_vec()),
        ("mpeg2.dcm", dicom_with_syntax(MPEG2)),
    ];
    files
        .into_iter()
        .map(|(name, bytes)| {
            let p = to.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

fn index(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(["index", "--quiet"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_run_where_every_file_fails_exits_2_with_a_summary_by_kind() {
    let dir = tmp("fail-all");
    bad_files(&dir.join("bad"));
    let out = index(&dir, &["bad", "--index", "idx"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(FAILED_FILES), "{err}");
    assert!(
        err.contains("indexed 0 new, 0 already present, 5 failed"),
        "{err}"
    );
    // The per-file lines stay: each bad file named once with its reason.
    for name in [
        "truncated_a.png",
        "truncated_b.png",
        "random.dcm",
        "notes.bin",
        "mpeg2.dcm",
    ] {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.contains(name) && !l.contains("e.g."))
            .collect();
        assert_eq!(lines.len(), 1, "{name}:\n{err}");
    }
    // Then the summary: one line per kind, with its count and one example.
    assert!(err.contains("5 files failed:"), "{err}");
    let kind_line = |kind: &str| {
        err.lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_else(|| panic!("no summary line for {kind:?}:\n{err}"))
            .to_string()
    };
    let png = kind_line("corrupt png (2 files), e.g. ");
    assert!(png.contains("truncated_a.png"), "{png}");
    assert!(kind_line("not an image (2 files), e.g. ").contains("bad"));
    kind_line(&format!(
        "unsupported transfer syntax {MPEG2} (1 file), e.g. "
    ));
    assert!(
        err.contains("`simcase errors --index idx` lists them all"),
        "{err}"
    );
    // A manifest-free rerun fails the same way: nothing indexed is not a success.
    let again = index(&dir, &["bad", "--index", "idx"]);
    assert_eq!(
        again.status.code(),
        Some(FAILED_FILES),
        "{}",
        stderr(&again)
    );

    // `simcase errors` lists the five files with their reasons, then a count by kind.
    let out = bin()
        .current_dir(&dir)
        .args(["errors", "--index", "idx", "--by-path"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 5, "{text}");
    let abs = std::fs::canonicalize(dir.join("bad")).unwrap();
    assert!(
        rows[0].contains(&format!("{}/mpeg2.dcm", abs.display())),
        "{text}"
    );
    assert!(rows[0].contains(MPEG2), "{text}");
    assert!(
        rows.iter()
            .any(|r| r.contains("truncated_b.png") && r.contains("corrupt png")),
        "{text}"
    );
    assert!(text.contains("5 files failed in idx, by kind:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["2", "corrupt", "png"]),
        "{text}"
    );

    let out = bin()
        .current_dir(&dir)
        .args(["errors", "--index", "idx", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["total"], 5, "{v}");
    assert_eq!(v["by_kind"]["corrupt png"], 2, "{v}");
    assert_eq!(v["by_kind"]["not an image"], 2, "{v}");
    assert_eq!(
        v["by_kind"][format!("unsupported transfer syntax {MPEG2}")],
        1,
        "{v}"
    );
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 5);
    let notes = errors
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with("/notes.bin"))
        .unwrap();
    assert_eq!(notes["kind"], "not an image");
    assert!(notes["reason"]
        .as_str()
        .unwrap()
        .contains("unsupported format"));
    assert!(notes["at"].as_str().unwrap().starts_with("20"), "{notes}");

    // The server counts them, by kind, and never shows their paths.
    let stats = api_stats(&dir.join("idx"));
    assert_eq!(stats["errors"], 5, "{stats}");
    assert_eq!(stats["errors_by_kind"]["corrupt png"], 2, "{stats}");
    assert_eq!(stats["errors_by_kind"]["not an image"], 2, "{stats}");
    let body = stats.to_string();
    for name in ["truncated_a", "notes.bin", "mpeg2.dcm", "/bad"] {
        assert!(!body.contains(name), "stats show {name}: {body}");
    }
}

/// `GET /api/stats` from `simcase serve` over `index` (loopback, no token, port 0).
fn api_stats(index: &Path) -> serde_json::Value {
    let log = index.with_extension("serve.log");
    let mut child = bin()
        .args(["serve", "--no-token", "--bind", "127.0.0.1:0", "--index"])
        .arg(index)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The pipe stays open until the server is gone: its next line (the page) must not meet
    // a closed pipe (SIGPIPE).
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .map(String::from);
    let stats = addr.map(|a| Client::new(&a).get("/api/stats"));
    let _ = child.kill();
    let _ = child.wait();
    drop(out);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let r = stats
        .unwrap_or_else(|| panic!("server did not start: {line:?}\n{log_text}"))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

#[test]
fn a_mixed_run_exits_0_but_2_with_strict_and_fixed_files_leave_the_errors_list() {
    let dir = tmp("fail-mixed");
    let imgs = dir.join("imgs");
    let good = real_images(&imgs, 3, 97, 0);
    let png = std::fs::read(data().join("images/busi/benign_136.png")).unwrap();
    std::fs::write(imgs.join("broken.png"), &png[..100]).unwrap();
    std::fs::write(imgs.join("dup.png"), &png[..150]).unwrap();
    // Relative paths: the errors table keeps the same (absolute) path as the items, so that
    // a file that indexes later leaves it.
    let out = index(&dir, &["imgs", "--index", "idx"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("indexed 3 new, 0 already present, 2 failed"),
        "{err}"
    );
    assert!(err.contains("2 files failed:"), "{err}");
    assert!(
        err.contains("corrupt png (2 files), e.g. imgs/broken.png"),
        "{err}"
    );

    let strict = index(&dir, &["imgs", "--index", "idx", "--strict"]);
    let err = stderr(&strict);
    assert_eq!(strict.status.code(), Some(FAILED_FILES), "{err}");
    assert!(
        err.contains("indexed 0 new, 3 already present, 2 failed"),
        "{err}"
    );
    let again = index(&dir, &["imgs", "--index", "idx"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));

    // broken.png becomes a new image (it indexes), dup.png a copy of an indexed one (it is
    // found already present): neither is a current failure any more.
    let other = real_images(&dir.join("other"), 1, 1, 450);
    std::fs::copy(&other[0], imgs.join("broken.png")).unwrap();
    std::fs::copy(&good[0], imgs.join("dup.png")).unwrap();
    let fixed = index(&dir, &["imgs", "--index", "idx", "--strict"]);
    let err = stderr(&fixed);
    assert_eq!(fixed.status.code(), Some(0), "{err}");
    assert!(
        err.contains("indexed 1 new, 4 already present, 0 failed"),
        "{err}"
    );
    assert!(!err.contains("failed:"), "{err}");
    let list = bin()
        .current_dir(&dir)
        .args(["errors", "--index", "idx"])
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", stderr(&list));
    assert_eq!(stdout(&list).trim(), "no failed files in idx");
}

#[test]
fn an_index_inside_the_image_folder_is_not_read_as_images() {
    let dir = tmp("fail-inside");
    let imgs = dir.join("imgs");
    real_images(&imgs, 2, 131, 5);
    // Another index elsewhere in the tree (index.sqlite + vectors.f32) is skipped too.
    let old = imgs.join("sub/old-index");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("index.sqlite"), b"SQLite format 3\0").unwrap();
    std::fs::write(old.join("vectors.f32"), [0u8; 8]).unwrap();
    let first = index(&dir, &["imgs", "--index", "imgs/idx"]);
    let err = stderr(&first);
    assert_eq!(first.status.code(), Some(0), "{err}");
    assert!(
        err.contains("indexed 2 new, 0 already present, 0 failed"),
        "{err}"
    );
    // The second run finds idx/index.sqlite, vectors.f32, the lock and the WAL in the walked
    // folder, and must not count them as failed images.
    assert!(imgs.join("idx/vectors.f32").exists());
    let second = index(
        &dir,
        &["imgs", "--index", "imgs/idx", "--strict", "--log", "info"],
    );
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(0), "{err}");
    assert!(
        err.contains("indexed 0 new, 2 already present, 0 failed"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("imgs/idx") && l.contains("an index folder; not walked")),
        "{err}"
    );
    assert!(err.contains("sub/old-index: an index folder"), "{err}");
}

#[test]
fn a_csv_given_as_a_path_gets_the_manifest_hint() {
    let dir = tmp("fail-csv");
    let csv = dir.join("dev.csv");
    std::fs::write(&csv, "path,label\nimg.png,US/breast/benign\n").unwrap();
    let out = bin()
        .current_dir(&dir)
        .args(["index", "dev.csv", "--index", "x"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "error: dev.csv is a CSV file: to index a manifest use --manifest dev.csv"
    );
    assert!(!dir.join("x").exists(), "no index is created");

    // A folder with no image file says so, and what it skipped.
    let notes = dir.join("notes");
    std::fs::create_dir_all(notes.join("deeper")).unwrap();
    std::fs::write(notes.join("a.csv"), "path\n").unwrap();
    std::fs::write(notes.join("b.csv"), "path\n").unwrap();
    std::fs::write(notes.join("deeper/readme.txt"), "hello").unwrap();
    let out = bin()
        .current_dir(&dir)
        .args(["index", "notes", "--index", "x"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "error: notes: no image files found (skipped 3 non-image files: csv, txt)"
    );
}

#[test]
fn an_index_folder_given_as_the_images_is_refused() {
    let dir = tmp("fail-root-index");
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::write(imgs.join("a.png"), b"not read").unwrap();
    let run = |args: &[&str]| {
        let out = bin().current_dir(&dir).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        stderr(&out).trim().to_string()
    };
    assert_eq!(
        run(&["index", "imgs", "--index", "imgs"]),
        "error: imgs is also the --index folder: give the index a folder of its own"
    );
    let old = dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("index.sqlite"), b"SQLite format 3\0").unwrap();
    std::fs::write(old.join("vectors.f32"), [0u8; 8]).unwrap();
    assert_eq!(
        run(&["index", "old", "--index", "new"]),
        "error: old holds a simcase index (index.sqlite, vectors.f32), not images"
    );
}

#[test]
fn index_help_documents_the_exit_statuses() {
    let help = stdout(&bin().args(["index", "--help"]).output().unwrap());
    assert!(help.contains("--strict"), "{help}");
    assert!(help.contains("Exit status: 0"), "{help}");
    assert!(help.contains("2 when every file failed"), "{help}");
    let help = stdout(&bin().args(["--help"]).output().unwrap());
    assert!(help.contains("errors"), "{help}");
}

/// An index in a folder that cannot be written (an archived copy, a read-only mount) is
/// searched, listed and exported all the same, and nothing is written into it.
#[test]
fn an_index_in_a_folder_that_cannot_be_written_is_still_read() {
    let dir = tmp("read-only");
    real_images(&dir.join("imgs"), 3, 97, 0);
    let out = index(&dir, &["imgs", "--index", "idx"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let idx = dir.join("idx");
    let files = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = files(&idx);
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    chmod(&out_dir, 0o777);
    chmod(&idx, 0o555);
    let run = |args: &[&str]| {
        let out = unprivileged(&dir)
            .current_dir(&dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let hits = run(&["search", "id:0", "--index", "idx", "-k", "2"]);
    assert_eq!(
        hits.lines().filter(|l| l.contains("img")).count(),
        2,
        "{hits}"
    );
    assert_eq!(
        run(&["errors", "--index", "idx"]).trim(),
        "no failed files in idx"
    );
    run(&[
        "export",
        "--index",
        "idx",
        "--out",
        "out/rows.npy",
        "--quiet",
    ]);
    assert!(out_dir.join("rows.npy").is_file());
    assert_eq!(files(&idx), before, "the read-only folder was written");
    chmod(&idx, 0o755);
}

/// A folder the walk may not list fails alone (one line, counted, in `errors`) and the rest
/// is indexed; once it can be read its files are indexed and its failure leaves the list.
#[test]
fn a_folder_that_cannot_be_listed_fails_alone_and_leaves_the_list_once_read() {
    let dir = tmp("unlisted");
    chmod(&dir, 0o777);
    let home = readable_home(&dir, "efficientnet-lite0");
    real_images(&dir.join("imgs"), 2, 97, 0);
    real_images(&dir.join("imgs/locked"), 1, 1, 450);
    chmod(&dir.join("imgs/locked"), 0o000);
    let run = |args: &[&str]| {
        unprivileged(&dir)
            .current_dir(&dir)
            .env("SIMCASE_HOME", &home)
            .args(args)
            .output()
            .unwrap()
    };
    let index = [
        "index",
        "imgs",
        "--index",
        "idx",
        "--model",
        "efficientnet-lite0",
        "--quiet",
    ];
    let out = run(&index);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("indexed 2 new, 0 already present, 1 failed"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("imgs/locked: cannot read folder: Permission denied")),
        "{err}"
    );
    let list = stdout(&run(&["errors", "--index", "idx"]));
    assert!(
        list.contains("imgs/locked") && list.contains("unreadable folder"),
        "{list}"
    );
    chmod(&dir.join("imgs/locked"), 0o755);
    let out = run(&index);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("indexed 1 new, 2 already present, 0 failed"),
        "{err}"
    );
    let list = stdout(&run(&["errors", "--index", "idx"]));
    assert_eq!(list.trim(), "no failed files in idx");
}

/// A codec that panics on a malformed file (dicom-rs's RLE decoder, a kept fuzz input) is that
/// file's one-line error, naming it; the panic itself prints nothing more (it printed a line
/// naming dicom-rs's source file and no image).
#[test]
fn a_codec_panic_is_the_files_one_line_error() {
    let dir = tmp("codec-panic");
    let imgs = dir.join("imgs");
    real_images(&imgs, 1, 1, 0);
    let fuzzed = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../imaging/tests/regressions/dicom-rle-panic-2.dcm");
    std::fs::copy(fuzzed, imgs.join("rle.dcm")).unwrap();
    let out = index(&dir, &["imgs", "--index", "idx"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("indexed 1 new, 0 already present, 1 failed"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("rle.dcm")).collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("decoder failed on malformed data")),
        "{err}"
    );
    // As a query: one line, the reason once (it was repeated, once per error in the chain).
    let err = run_fails(
        bin()
            .current_dir(&dir)
            .args(["search", "imgs/rle.dcm", "--index", "idx"]),
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        err.matches("decoder failed on malformed data").count(),
        1,
        "{err}"
    );
    assert!(err.starts_with("error: imgs/rle.dcm: "), "{err}");
}

/// A file named with a line break cannot split or forge a log line: its name is escaped in the
/// warning, the summary and `simcase errors`.
#[test]
fn a_file_name_with_a_line_break_stays_on_one_line() {
    let dir = tmp("newline-name");
    let imgs = dir.join("imgs");
    real_images(&imgs, 1, 1, 0);
    let png = std::fs::read(data().join("images/busi/benign_136.png")).unwrap();
    std::fs::write(imgs.join("a.png\n WARN forged.png"), &png[..100]).unwrap();
    let out = index(&dir, &["imgs", "--index", "idx"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.lines().any(|l| l.starts_with(" WARN forged")), "{err}");
    assert!(
        err.contains("a.png\\n WARN forged.png: corrupt png"),
        "{err}"
    );
    let list = stdout(
        &bin()
            .current_dir(&dir)
            .args(["errors", "--index", "idx"])
            .output()
            .unwrap(),
    );
    let rows: Vec<&str> = list.lines().filter(|l| l.contains("forged")).collect();
    assert_eq!(rows.len(), 1, "{list}");
    assert!(
        rows[0].contains("a.png\\n WARN forged.png  corrupt png"),
        "{list}"
    );
}
