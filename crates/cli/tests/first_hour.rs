//! What a researcher met in the first hour with simcase (issue 11), through the real binary:
//! colour codes in a redirected log, `NO_COLOR` ignored, and a user-weights model whose
//! "not installed" error never mentioned `--hub`.

mod common;
use common::{bin, in_ci, tmp};
use std::path::Path;
use std::process::{Command, Output};

/// A folder with one file that fails to decode (its warning is the log line under test).
fn bad_input(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    src
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_redirected_log_has_no_colour_codes() {
    let dir = tmp("log-colour");
    let src = bad_input(&dir);
    // stdout and stderr are pipes here; the progress bar is left on (no --quiet).
    let out = bin()
        .args(["index", "--index"])
        .arg(dir.join("idx"))
        .arg(&src)
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("broken.png"), "no warning logged:\n{err}");
    assert!(err.contains("WARN"), "no warning logged:\n{err}");
    assert!(
        !err.contains("\x1b["),
        "colour codes in a redirected log: {err:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `script` (util-linux) runs the command on a pseudo-terminal; its stdout is the terminal's
/// output. `None` when `script` is missing.
fn on_a_terminal(cmd: &str, no_color: Option<&str>) -> Option<String> {
    let mut c = Command::new("script");
    c.args(["-qefc", cmd, "/dev/null"]).env_remove("NO_COLOR");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    let dir = tmp("no-color");
    let src = bad_input(&dir);
    let cmd = |n: usize| {
        format!(
            "'{}' index --quiet --index '{}' '{}'",
            env!("CARGO_BIN_EXE_simcase"),
            dir.join(format!("idx{n}")).display(),
            src.display()
        )
    };
    let Some(plain) = on_a_terminal(&cmd(0), None) else {
        assert!(!in_ci(), "`script` (util-linux) is needed for this test");
        eprintln!("skipped: no `script` to run the binary on a terminal");
        return;
    };
    // On a terminal, the log is coloured: this is what NO_COLOR must turn off.
    assert!(plain.contains("broken.png"), "{plain:?}");
    assert!(
        plain.contains("\x1b["),
        "no colour on a terminal: {plain:?}"
    );
    // Any non-empty value turns it off; an empty one does not (no-color.org).
    let off = on_a_terminal(&cmd(1), Some("1")).unwrap();
    assert!(off.contains("broken.png"), "{off:?}");
    assert!(!off.contains("\x1b["), "colour despite NO_COLOR=1: {off:?}");
    let empty = on_a_terminal(&cmd(2), Some("")).unwrap();
    assert!(
        empty.contains("\x1b["),
        "NO_COLOR= (empty) turned colour off: {empty:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every user-weights model (biomedclip, clip-vit-*, dinov2-b, rad-dino, …), asked for by
/// `index --model` on an empty `$SIMCASE_HOME`, fails at once naming both ways to install it,
/// without touching the network (pip and the hub point at a closed port).
#[test]
fn a_missing_user_weights_model_names_hub_and_from() {
    let dir = tmp("user-weights");
    let src = bad_input(&dir);
    let users: Vec<_> = simcase_models::catalogue()
        .into_iter()
        .filter(|s| matches!(s.source, simcase_models::Source::User { .. }))
        .collect();
    assert!(users.iter().any(|s| s.name == "biomedclip"));
    for spec in users {
        let home = dir.join(format!("home-{}", spec.name));
        std::fs::create_dir_all(&home).unwrap();
        let started = std::time::Instant::now();
        let out = bin()
            .env("SIMCASE_HOME", &home)
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .args(["index", "--quiet", "--index"])
            .arg(dir.join(format!("idx-{}", spec.name)))
            .args(["--model", spec.name])
            .arg(&src)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{}: {err}", spec.name);
        for want in [
            format!("simcase models install {} --hub", spec.name),
            format!("simcase models install {} --from DIR", spec.name),
        ] {
            assert!(
                err.contains(&want),
                "{}: {want:?} missing from {err:?}",
                spec.name
            );
        }
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("error:"), "{}: {err:?}", spec.name);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{}: took {:?}",
            spec.name,
            started.elapsed()
        );
        // Nothing was installed or half-written.
        assert!(
            !home.join("models").join(spec.name).exists(),
            "{}: an install folder was left",
            spec.name
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
