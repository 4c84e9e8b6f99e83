//! `SIMCASE_KERNELS` forces a path: each value is tried in a child process (the selection is
//! made once per process), which reports what it runs on; a path this CPU lacks must fall back
//! with a one-line notice on stderr, an unknown value likewise.

use simcase_kernels::{kernels, selection, Isa, ENV};
use std::process::Command;

const CHILD: &str = "SIMCASE_KERNELS_TEST_CHILD";

/// Run only as a child of the test below: prints the path it runs on.
#[test]
#[ignore = "run by forcing_a_path_through_the_environment in a child process"]
fn child_reports_selection() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let k = kernels();
    // The chosen path runs.
    assert_eq!(k.dot(&[1.0; 20], &[2.0; 20]), 40.0);
    println!("SELECTED={}", k.isa());
    assert_eq!(k.isa(), selection().isa);
}

fn run_child(value: &str) -> (Isa, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_reports_selection",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(ENV, value)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "child for {value}: {stdout}\n{stderr}"
    );
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SELECTED="))
        .unwrap_or_else(|| panic!("child for {value} did not report: {stdout}"));
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("simcase-kernels:"))
        .collect();
    assert!(notices.len() <= 1, "one notice at most: {notices:?}");
    (
        Isa::parse(name).unwrap(),
        notices.first().unwrap_or(&"").to_string(),
    )
}

#[test]
fn forcing_a_path_through_the_environment() {
    let best = Isa::ALL
        .into_iter()
        .rev()
        .find(|i| i.is_available())
        .unwrap();
    for isa in Isa::ALL {
        let (got, notice) = run_child(isa.name());
        match isa.missing_feature() {
            None => {
                assert_eq!(got, isa, "forced {isa}");
                assert_eq!(notice, "", "no notice for a path the CPU has");
            }
            Some(feature) => {
                let fallback = Isa::ALL
                    .into_iter()
                    .rev()
                    .find(|i| *i < isa && i.is_available())
                    .unwrap();
                assert_eq!(got, fallback, "forced {isa} on a CPU without {feature}");
                assert_eq!(
                    notice,
                    format!("simcase-kernels: {ENV}={isa} asks for the {isa} kernels, but this CPU lacks {feature}; using {fallback}")
                );
            }
        }
    }
    let (got, notice) = run_child("auto");
    assert_eq!((got, notice.as_str()), (best, ""));
    let (got, notice) = run_child("avx1024");
    assert_eq!(got, best);
    assert!(
        notice.contains("avx1024 is not one of auto, avx512, avx2, portable"),
        "{notice}"
    );
}
