//! `--embed-precision`: an index records the arithmetic its vectors were embedded in; a query
//! embedded at another precision is searched with a warning; adding vectors at another
//! precision marks the index mixed. bf16 needs AVX512_BF16 or the portable kernels: the bf16
//! runs force `SIMCASE_KERNELS=portable`, so every machine checks the same behaviour.

mod common;
use common::*;
use std::path::Path;

fn precision_of(index: &Path) -> String {
    simcase_index::Reader::open(index)
        .unwrap()
        .settings()
        .embedding_precision()
        .to_string()
}

/// `simcase` on the portable kernels, the one path that has bf16 on every CPU.
fn portable() -> std::process::Command {
    let mut cmd = bin();
    cmd.env(simcase_kernels::ENV, "portable");
    cmd
}

#[test]
fn an_index_records_its_embedding_precision_and_other_queries_are_warned() {
    let dir = tmp("precision");
    let m = manifest(&dir, 6, 150, 3);
    let index = dir.join("idx");
    let err = run_ok_stderr(
        portable()
            .args(["index", "--quiet", "--embed-precision", "bf16", "--index"])
            .arg(&index)
            .arg("--manifest")
            .arg(&m),
    );
    assert_eq!(precision_of(&index), "bf16", "{err}");
    let query = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    // A file query embedded at f32 against the index.
    let err = run_ok_stderr(bin().args(["search", "--index"]).arg(&index).arg(&query));
    assert!(
        err.contains("was embedded at bf16 precision and queries are embedded at f32"),
        "{err}"
    );
    // At the index's own precision, or by a stored item: no warning.
    let err = run_ok_stderr(
        portable()
            .args(["search", "--embed-precision", "bf16", "--index"])
            .arg(&index)
            .arg(&query),
    );
    assert!(!err.contains("warning"), "{err}");
    let err = run_ok_stderr(bin().args(["search", "--index"]).arg(&index).arg("id:0"));
    assert!(!err.contains("warning"), "{err}");
    // More vectors at f32: a bf16 index becomes mixed, and says so.
    let more = dir.join("more");
    std::fs::create_dir_all(&more).unwrap();
    let m2 = manifest(&more, 2, 150, 40);
    let err = run_ok_stderr(
        bin()
            .args(["index", "--quiet", "--index"])
            .arg(&index)
            .arg("--manifest")
            .arg(&m2),
    );
    assert_eq!(precision_of(&index), "mixed");
    assert!(err.contains("now recorded as mixed"), "{err}");
    // A precision not offered for a model (measured out of bounds) is refused, with why.
    let err = run_fails(
        portable()
            .args([
                "index",
                "--quiet",
                "--model",
                "efficientnet-lite0",
                "--embed-precision",
                "bf16",
                "--index",
            ])
            .arg(dir.join("effnet"))
            .arg("--manifest")
            .arg(&m2),
    );
    assert!(
        err.contains("--embed-precision bf16 is not offered for efficientnet-lite0: on dev.csv"),
        "{err}"
    );
    // A precision that does not exist is refused by name.
    let err = run_fails(
        bin()
            .args(["search", "--embed-precision", "int4", "--index"])
            .arg(&index)
            .arg("id:0"),
    );
    assert!(
        err.contains("unknown precision \"int4\": f32, bf16 or int8"),
        "{err}"
    );
}
