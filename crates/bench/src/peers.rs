//! The peer runtimes (PyTorch, onnxruntime, FAISS) from `tools/bench_peers.py`, run on the same
//! cores in the same run so that the printed ratios compare like with like.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Run `tools/bench_peers.py ARGS` with `$SIMCASE_PYTHON` (default `python3`) and parse the
/// JSON object it prints.
pub fn run(args: &[String]) -> Result<serde_json::Value> {
    let python = std::env::var("SIMCASE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/bench_peers.py");
    eprintln!(
        "running peers: {python} tools/bench_peers.py {}",
        args.join(" ")
    );
    let out = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !out.status.success() {
        bail!(
            "bench_peers.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("bench_peers.py printed something other than JSON")
}
