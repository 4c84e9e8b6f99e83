//! The API under attack, through the real binary over a small index of real images
//! (../shared/data, the default model): `simcase bench fuzz` drives the router in process with
//! generated hostile requests, replaying the kept cases of `tests/fuzz/api_cases.jsonl` first;
//! `simcase bench serve --chaos` soaks a real server process. The two run one after the other
//! (the machine's cores would otherwise make both slow). `SIMCASE_FUZZ_SECS` and
//! `SIMCASE_CHAOS_SECS` set their lengths (default 20 s each).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// 24 labelled images of dev.csv (every 13th row), indexed once with the default model.
fn small_index() -> PathBuf {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let dir = tmp("hardening").keep(); // shared by this binary's tests
            let m = manifest(&dir, 24, 13, 0);
            let index = dir.join("index");
            index_manifest(&index, &m);
            index
        })
        .clone()
}

fn upload() -> PathBuf {
    data().join("images/busi/benign_136.png")
}

fn secs(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| "20".into())
}

/// A number in the line of `text` that starts with `prefix`, just before `word`.
fn number_before(text: &str, word: &str) -> Option<usize> {
    let at = text.find(word)?;
    text[..at].split_whitespace().last()?.parse().ok()
}

#[test]
fn fuzzed_api_never_panics_5xx_stalls_or_balloons() {
    let _g = serial();
    let index = small_index();
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/api_cases.jsonl");
    let pending = index.with_file_name("fuzz-pending.json");
    let _ = std::fs::remove_file(&pending);
    let out = bin()
        .args(["--log", "warn", "bench", "fuzz", "--index"])
        .arg(&index)
        .arg("--keep")
        .arg(&keep)
        .arg("--pending")
        .arg(&pending)
        .arg("--upload")
        .arg(upload())
        .env("SIMCASE_FUZZ_SECS", secs("SIMCASE_FUZZ_SECS"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    if out.status.code().is_none() {
        // Killed by a signal (an abort): the case in flight is the finding; keep it.
        let case = std::fs::read_to_string(&pending).unwrap_or_default();
        let mut c: serde_json::Value =
            serde_json::from_str(case.trim()).unwrap_or(serde_json::Value::Null);
        if c.is_object() {
            c["finding"] = format!("aborted the process ({})", out.status).into();
            let line = c.to_string();
            let have = std::fs::read_to_string(&keep).unwrap_or_default();
            let key = |l: &str| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.remove("finding");
                }
                v
            };
            if !have.lines().any(|l| key(l) == key(&line)) {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&keep)
                    .unwrap();
                writeln!(f, "{line}").unwrap();
            }
        }
        panic!(
            "the fuzzed process died ({}) on {}\n{stdout}\n{tail}",
            out.status,
            case.trim()
        );
    }
    assert!(
        out.status.success(),
        "fuzz findings (kept in {}):\n{stdout}\n{tail}",
        keep.display()
    );
    // It did fuzz: cases were generated and answered.
    let generated = number_before(&stdout, " generated").unwrap_or(0);
    assert!(
        generated >= 20,
        "only {generated} cases generated:\n{stdout}"
    );
    assert!(stdout.contains("findings: 0"), "{stdout}");
    println!("{stdout}");
}

#[test]
fn chaos_soak_keeps_the_server_alive_and_bounded() {
    let _g = serial();
    let index = small_index();
    let out = bin()
        .args(["bench", "serve", "--chaos", "--index"])
        .arg(&index)
        .args(["--secs", &secs("SIMCASE_CHAOS_SECS")])
        .args([
            "--connections",
            "8",
            "--slow-clients",
            "4",
            "--max-bombs",
            "2",
        ])
        .args(["--rss-bound-mb", "2048"])
        .arg("--upload")
        .arg(upload())
        .env_remove("SIMCASE_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaos soak failed:\n{stdout}\n{stderr}"
    );
    // The table's row: requests, valid 2xx/sent, ..., crashes, peak RSS.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no report row:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let requests: usize = cells[1].parse().unwrap();
    let (ok, sent) = cells[2].split_once('/').unwrap();
    let (ok, sent): (usize, usize) = (ok.parse().unwrap(), sent.parse().unwrap());
    assert!(requests >= sent && sent > 0 && ok > 0, "{row}");
    assert_eq!(cells[9], "0", "5xx other than 503: {row}");
    assert_eq!(cells[12], "0", "crashes: {row}");
    let peak: f64 = cells[13].parse().unwrap();
    assert!(peak > 0.0 && peak <= 2048.0, "{row}");
    assert!(stdout.contains("chaos soak passed"), "{stdout}");
    println!("{stdout}");
}
