//! `simcase report` end to end on ../shared/data/dev.csv with dinov2-s: every figure's numbers
//! agree with the eval JSON the report carries (the P@N curve at N = 1, 3, 5, 10, the scaling
//! curve's last point, the confusion rows against the per-class table, the kNN curve at the
//! tuned k); the page names no file and fetches nothing, in headless Chromium too; an
//! unlabelled manifest gets the figures that need no labels; an existing folder is refused.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FULL: &str = "modality/anatomy/pathology";

/// The dev.csv report, built once for every test here (embedding dev.csv takes minutes).
fn dev_report() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tmp("report-dev").keep(); // shared by this binary's tests
        let out = dir.join("report");
        let o = bin()
            .args([
                "report",
                "--model",
                "dinov2-s",
                "--seeds",
                "3",
                "--manifest",
            ])
            .arg(data().join("dev.csv"))
            .arg("--work")
            .arg(dir.join("work"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "report failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("report: ") && err.contains("index.html"),
            "{err}"
        );
        out
    })
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn close(a: &Value, b: &Value, what: &str) {
    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((x - y).abs() < 1e-12, "{what}: {x} != {y}");
}

#[test]
fn every_figure_agrees_with_the_eval_json_it_was_drawn_from() {
    let out = dev_report();
    let r = json(&out.join("report.json"));
    assert_eq!(r["simcase_report"], 1);
    assert!(r["skipped"].is_null(), "{}", r["skipped"]);
    let m = &r["models"][0];
    assert_eq!(m["model"], "dinov2-s");
    let (eval, an) = (&m["eval"], &m["analysis"]);
    assert_eq!(eval["counts"]["index"], 613, "{}", eval["counts"]);
    assert_eq!(eval["counts"]["test"], 236);

    // The P@N curve passes through eval's P@1/3/5/10, micro and macro, at every level.
    for lvl in ["modality", "modality/anatomy", FULL] {
        let c = &an["curve"][lvl];
        assert_eq!(c["N"].as_array().unwrap().len(), 100);
        for n in [1usize, 3, 5, 10] {
            for k in ["micro", "macro"] {
                close(
                    &c[k][n - 1],
                    &eval["levels"][lvl][format!("P@{n}")][k],
                    &format!("{lvl} P@{n} {k}"),
                );
            }
        }
        // kNN: the test accuracy at the k tuned on val is eval's accuracy.
        let kc = &an["knn_curve"][lvl];
        let k = eval["knn"][lvl]["k"].as_u64().unwrap() as usize;
        assert_eq!(kc["tuned_k"], eval["knn"][lvl]["k"]);
        close(
            &kc["test"][k - 1],
            &eval["knn"][lvl]["accuracy"],
            &format!("{lvl} kNN"),
        );
        close(
            &kc["val"][k - 1],
            &eval["knn"][lvl]["val_accuracy"],
            &format!("{lvl} kNN val"),
        );
    }

    // Adaptation: whiten, lw and lda scored with the same protocol, each with its own P@1,
    // and the default (whiten) does not hurt the classes it never saw.
    let adapted = m["adapted"].as_array().unwrap();
    let methods: Vec<&str> = adapted
        .iter()
        .map(|a| a["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["whiten", "lw", "lda", "frozen+kr"]);
    for a in &adapted[..3] {
        assert!(a.get("error").is_none(), "{a}");
        let p = a["levels"][FULL]["P@1"]["micro"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{a}");
        assert!(a["unseen"]["queries"].as_u64().unwrap() > 0, "{a}");
    }
    assert_ne!(
        adapted[2]["levels"][FULL]["P@1"]["micro"],
        eval["levels"][FULL]["P@1"]["micro"]
    );
    // Re-ranking reorders the frozen model's own top 100: P@1 stays near frozen's (on dev.csv eval gives
    // 0.424 against 0.428 at the full label).
    let kr = &adapted[3];
    assert!(kr["tuned"]["k1"].as_u64().is_some(), "{kr}");
    for lvl in ["modality", FULL] {
        let (a, b) = (
            kr["levels"][lvl]["P@1"]["micro"].as_f64().unwrap(),
            eval["levels"][lvl]["P@1"]["micro"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 0.1, "{lvl}: {a} vs {b}");
    }
    let w = &adapted[0]["unseen"];
    assert_eq!(w["hurts_unseen"], false, "{w}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("<table id=\"adapted\">") && html.contains("<td>lda</td>"));

    // The scaling curve ends at the largest class, where every seed is the whole index.
    let s = &an["scaling"];
    let ns: Vec<u64> = s["n"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(&ns[..6], &[1, 2, 5, 10, 20, 50], "{ns:?}");
    assert_eq!(ns.last(), s["largest_class"].as_u64().as_ref());
    assert_eq!(s["seeds"], 3);
    let last = ns.len() - 1;
    for run in s["P@1"]["runs"][last].as_array().unwrap() {
        close(
            run,
            &eval["levels"][FULL]["P@1"]["micro"],
            "scaling, whole index",
        );
    }
    close(
        &s["full_P@1"],
        &eval["levels"][FULL]["P@1"]["micro"],
        "full P@1",
    );
    for run in s["P@10"]["runs"][last].as_array().unwrap() {
        close(run, &eval["levels"][FULL]["P@10"]["micro"], "scaling P@10");
    }
    // Smaller indexes retrieve worse: one example per class is below the whole index.
    assert!(s["P@1"]["mean"][0].as_f64().unwrap() < s["full_P@1"].as_f64().unwrap());
    let flat = s["flattens_at"].as_u64().unwrap();
    assert!(ns.contains(&flat), "{flat} {ns:?}");

    // The confusion's rows are the per-class table's queries; its diagonal is P@1.
    let classes: Vec<&str> = an["confusion"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let table = an["per_class"].as_array().unwrap();
    assert_eq!(table.len(), classes.len());
    let mut queries = 0;
    for (i, row) in an["confusion"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let row: Vec<u64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let t = table.iter().find(|t| t["class"] == classes[i]).unwrap();
        let sum: u64 = row.iter().sum();
        assert_eq!(sum, t["queries"].as_u64().unwrap(), "{}", classes[i]);
        queries += sum;
        if let Some(p1) = t["P@1"].as_f64() {
            let diag = row[i] as f64 / sum as f64;
            assert!((diag - p1).abs() < 1e-12, "{}: {diag} vs {p1}", classes[i]);
        }
    }
    assert_eq!(queries, 236);
    // Worst first; unscorable classes last.
    let p1s: Vec<f64> = table.iter().filter_map(|t| t["P@1"].as_f64()).collect();
    assert!(p1s.windows(2).all(|w| w[0] <= w[1]), "{p1s:?}");
    assert!(table[p1s.len()..].iter().all(|t| t["P@1"].is_null()));
    // dev.csv's XR/chest/pneumocystis has one image (in train): handled, and noted.
    let singles = an["single_image_classes"].to_string();
    assert!(singles.contains("XR/chest/pneumocystis"), "{singles}");

    // The map covers every scored row; examples show 5 hits marked right or wrong.
    let map = &m["map"];
    assert_eq!(map["points"].as_array().unwrap().len(), 900);
    let ex = an["examples"].as_array().unwrap();
    assert_eq!(ex.len(), 8, "2 per modality");
    for e in ex {
        let hits = e["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 5);
        for h in hits {
            assert_eq!(h["correct"].as_bool().unwrap(), h["label"] == e["label"]);
        }
    }
}

#[test]
fn the_page_inlines_every_figure_and_names_no_file() {
    let out = dev_report();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let figs = out.join("figures");
    let mut names: Vec<String> = std::fs::read_dir(&figs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for f in [
        "pn-curve",
        "modality",
        "levels",
        "knn",
        "scaling",
        "confusion-dinov2-s",
        "map-dinov2-s",
    ] {
        let svg = std::fs::read_to_string(figs.join(format!("{f}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{f}.svg");
        assert!(html.contains(&svg), "{f}.svg is inline in the page");
        let png =
            image::open(figs.join(format!("{f}.png"))).unwrap_or_else(|e| panic!("{f}.png: {e}"));
        assert!(png.width() >= 700 && png.height() >= 400, "{f}.png");
    }
    assert_eq!(names.len(), 14, "{names:?}");
    // Text is drawn in the PNGs (the built-in font): the P@N curve is not just lines.
    let svg = std::fs::read_to_string(figs.join("pn-curve.svg")).unwrap();
    assert!(svg.contains("P@N, modality/anatomy/pathology"));
    // No fetch, no script; thumbnails inline.
    for bad in ["src=\"http", "href=\"http", "<script", "<link", "url("] {
        assert!(!html.contains(bad), "the page has {bad}");
    }
    assert!(html.matches("src=\"data:image/png;base64,").count() >= 8 * 6);
    // No path or patient id of dev.csv in the page or the JSON.
    let rep = std::fs::read_to_string(out.join("report.json")).unwrap();
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    for line in text.lines().skip(1).step_by(37) {
        let cols: Vec<&str> = line.split(',').collect();
        let file = Path::new(cols[0]).file_name().unwrap().to_str().unwrap();
        for (what, s) in [("page", &html), ("report.json", &rep)] {
            assert!(!s.contains(file), "{what} names {file}");
            assert!(
                !s.contains(&format!("\"{}\"", cols[6])),
                "{what} has patient {}",
                cols[6]
            );
        }
    }
    assert!(
        html.contains("flattens at n = "),
        "the scaling rule's result"
    );
    assert!(html.contains("XR/chest/pneumocystis (index only"));
}

#[test]
fn an_existing_folder_is_refused_unless_force_and_force_only_replaces_a_report() {
    let out = dev_report();
    let dir = tmp("report-refuse");
    let again = |to: &Path, force: bool| {
        let mut c = bin();
        c.args(["report", "--quiet", "--seeds", "1", "--manifest"])
            .arg(data().join("dev.csv"))
            .arg("--work")
            .arg(out.parent().unwrap().join("work"))
            .arg("--out")
            .arg(to);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let o = again(out, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("{} already exists", out.display())) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A folder that is not a report is never replaced, even with --force.
    let other = dir.join("photos");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    let o = again(&other, true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a simcase report folder"),
        "{err}"
    );
    assert_eq!(std::fs::read(other.join("keep.txt")).unwrap(), b"mine");
    // An earlier report is replaced with --force (here a copy, so the shared one stays).
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(out.join("report.json"), copy.join("report.json")).unwrap();
    std::fs::write(copy.join("stale.txt"), "old").unwrap();
    let o = again(&copy, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(copy.join("index.html").exists() && !copy.join("stale.txt").exists());
    assert_eq!(
        json(&copy.join("report.json"))["models"][0]["analysis"]["scaling"]["seeds"],
        1
    );
}

#[test]
fn a_manifest_without_labels_gets_the_figures_that_need_none_and_says_which_were_skipped() {
    let dir = tmp("report-unlabelled");
    // 24 dev.csv images, path only.
    let full = manifest(&dir, 24, 37, 0);
    let text = std::fs::read_to_string(&full).unwrap();
    let paths: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let csv = dir.join("paths.csv");
    std::fs::write(&csv, format!("path\n{}\n", paths.join("\n"))).unwrap();
    let out = dir.join("report");
    let o = bin()
        .args(["report", "--model", "dinov2-s", "--manifest"])
        .arg(&csv)
        .arg("--work")
        .arg(dir.join("work"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("skipped the P@N curve"))
        .unwrap_or_else(|| panic!("no skipped line: {err}"));
    assert!(
        line.contains("scaling curve") && line.contains("no `split` column"),
        "{line}"
    );
    let r = json(&out.join("report.json"));
    assert_eq!(r["skipped"].as_str(), Some(line));
    let m = &r["models"][0];
    assert!(m["eval"].is_null() && m["analysis"].is_null());
    assert_eq!(m["map"]["points"].as_array().unwrap().len(), 24);
    let ex = m["examples"].as_array().unwrap();
    assert_eq!(ex.len(), 8);
    for e in ex {
        // Five nearest others, never the query itself, best first.
        let hits = e["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|h| h["id"] != e["id"]));
        let s: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
    }
    let figs: Vec<String> = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(figs.len(), 2, "only the map, as SVG and PNG: {figs:?}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("id=\"skipped\"") && html.contains("Embedding map"));
}

/// The page in headless Debian Chromium (`crates/server/browser/report.test.mjs`), opened from
/// disk: no request but the page itself, no console error, every figure laid out, every
/// thumbnail decoded; the screenshot goes to `target/screenshots/report.png`. Needs
/// `/usr/bin/chromium` and `npm ci` in `crates/server/browser`; skipped without them unless
/// `SIMCASE_BROWSER_TEST=1` or `CI` is set.
#[test]
fn the_report_opens_in_headless_chromium_with_no_request_and_no_error() {
    let out = dev_report();
    let shot = screenshot("report.png");
    let page = std::fs::canonicalize(out.join("index.html")).unwrap();
    let Some(stdout) = browser_script(
        "report.test.mjs",
        &[
            ("SIMCASE_REPORT", page.as_os_str()),
            ("SIMCASE_SCREENSHOT", shot.as_os_str()),
            ("SIMCASE_MIN_FIGURES", "7".as_ref()),
        ],
    ) else {
        return;
    };
    assert!(stdout.contains("no request but the page itself"));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}
