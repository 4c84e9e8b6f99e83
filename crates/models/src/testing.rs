//! What the tests that compare with Python share. Why here: the parity tests of this crate and
//! the CLI's export tests both run the pinned numpy/tokenizers/pyarrow that `.ci/run` installs,
//! and must find the same interpreter.

use std::path::PathBuf;

/// The Python the tests compare with: `$SIMCASE_PYTHON`, else the repository's `tools/.venv`
/// (what `.ci/run` installs the pinned packages into), else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SIMCASE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}
