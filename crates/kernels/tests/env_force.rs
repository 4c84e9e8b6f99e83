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
    println!("INT8={:?}", simcase_kernels::i8_path());
    assert_eq!(k.isa(), selection().isa);
}

/// The int8 path that goes with a selected kernel path on this CPU.
fn int8_for(isa: Isa) -> String {
    let vnni = simcase_kernels::int8::cpu_has_vnni();
    match isa {
        Isa::Portable => "Some(Portable)",
        Isa::Avx512 if vnni => "Some(Avx512Vnni)",
        Isa::Avx2 | Isa::Avx512 => "Some(Avx2)",
    }
    .to_string()
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
    let isa = Isa::parse(name).unwrap();
    // int8 follows the kernels: VNNI under AVX-512 when the CPU has it, else AVX2 on any
    // AVX2 CPU, and the portable twin only when forced.
    let int8 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("INT8="))
        .unwrap_or("");
    assert_eq!(int8, int8_for(isa), "int8 path for {value}");
    (isa, notices.first().unwrap_or(&"").to_string())
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
