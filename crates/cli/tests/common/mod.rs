//! Helpers shared by the end-to-end tests of the `simcase` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_simcase"))
}

/// Whether the tests run as root, whom file permissions do not stop.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The binary as a user whom permissions stop: this one, or, when the tests run as root,
/// `nobody` (65534) running a copy kept in `dir` (that user may not enter the build folder).
/// `dir` and what the command reads must be open to that user.
pub fn unprivileged(dir: &Path) -> Command {
    if !is_root() {
        return bin();
    }
    let copy = dir.join("simcase-unprivileged");
    if !copy.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_simcase"), &copy).unwrap();
    }
    let mut cmd = Command::new(copy);
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    cmd
}

/// Sets `path`'s permission bits (e.g. `0o555`: nobody may write it).
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// ../shared/data, or `$SIMCASE_DATA`.
pub fn data() -> PathBuf {
    std::env::var_os("SIMCASE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// A fresh temporary folder for one test, removed when the test passes (indexes, installed
/// weights and server logs add up to gigabytes over the suite); kept when it fails, or with
/// `SIMCASE_KEEP_TMP=1`, to be looked at.
pub fn tmp(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("simcase-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

/// See [`tmp`]: a path that removes its folder when dropped outside a panic.
#[derive(Debug)]
pub struct TmpDir(PathBuf);

impl TmpDir {
    /// The folder, kept: for a fixture that the binary's tests share (built once, in a
    /// `OnceLock`), which must outlive the function that made it.
    pub fn keep(self) -> PathBuf {
        std::mem::take(&mut std::mem::ManuallyDrop::new(self).0)
    }
}

impl std::ops::Deref for TmpDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TmpDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("SIMCASE_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Run `cmd`; fail the test with its stderr unless it succeeds; return its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// As [`run_ok`], for commands whose result is what they say on stderr (warnings, notices).
pub fn run_ok_stderr(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{err}");
    err
}

/// Runs a command that must fail; returns what it said on stderr (the reason, to check).
pub fn run_fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} succeeded:\n{err}");
    err
}

/// `root` filled once by `fill`, safe when several tests (threads) or test binaries
/// (processes) ask at once: the first builds into a private folder and renames it into
/// place, marked by `.complete`; the others wait for it or find it done.
pub fn fetched_once(root: &std::path::Path, fill: impl FnOnce(&std::path::Path)) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if root.join(".complete").exists() {
        return root.to_path_buf();
    }
    let name = root.file_name().unwrap().to_string_lossy().into_owned();
    let partial = root.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    fill(&partial);
    std::fs::write(partial.join(".complete"), "").unwrap();
    // Another process may have won the race meanwhile; its copy is as good as ours.
    if root.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&partial);
    } else {
        let _ = std::fs::remove_dir_all(root);
        if std::fs::rename(&partial, root).is_err() {
            assert!(
                root.join(".complete").exists(),
                "{} not filled",
                root.display()
            );
            let _ = std::fs::remove_dir_all(&partial);
        }
    }
    root.to_path_buf()
}

/// Under CI (`CI` set to anything but `false`/`0`), a missing prerequisite fails a test
/// instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Which of `needles` occur in the bytes of any file in `dir` (the index's `index.sqlite`,
/// its `-wal` and `-shm` while they exist, `vectors.f32`, the lock): `(needle, file)` pairs.
pub fn find_in_files(dir: &std::path::Path, needles: &[&str]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut files = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if !e.file_type().unwrap().is_file() {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(e.path()).unwrap();
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                found.push((n.to_string(), e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    assert!(files >= 2, "{}: {files} files", dir.display());
    found
}

/// A manifest of `n` rows of dev.csv (every `step`-th), with absolute paths.
pub fn manifest(to: &Path, n: usize, step: usize, skip: usize) -> PathBuf {
    let text = std::fs::read_to_string(data().join("dev.csv")).unwrap();
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_string()];
    let root = std::fs::canonicalize(data()).unwrap();
    out.extend(
        lines
            .skip(skip)
            .step_by(step)
            .take(n)
            .map(|l| format!("{}/{l}", root.display())),
    );
    let p = to.join("manifest.csv");
    std::fs::write(&p, out.join("\n") + "\n").unwrap();
    p
}

/// `simcase index --quiet --index INDEX --manifest MANIFEST`, which must succeed.
pub fn index_manifest(index: &Path, manifest: &Path) {
    run_ok(
        bin()
            .args(["index", "--quiet", "--index"])
            .arg(index)
            .arg("--manifest")
            .arg(manifest),
    );
}

/// CRC-32 (IEEE), for the PNG chunks the tests build by hand.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A `simcase serve` on an ephemeral loopback port, killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    /// `HOST:PORT`, from the first line it printed.
    pub addr: String,
    /// The second line it printed: the page's URL (with `#token=…` when it made one).
    pub page: String,
    /// Its stdout, kept open: a closed pipe would kill it on its next line.
    _out: std::io::BufReader<std::process::ChildStdout>,
}

/// Start `simcase serve --bind 127.0.0.1:0 --index INDEX ARGS…` (no `SIMCASE_TOKEN` from the
/// environment), its stderr to `log`, and wait for its two lines.
pub fn serve(index: impl AsRef<std::ffi::OsStr>, args: &[&str], log: &Path) -> Served {
    serve_env(index, args, log, &[])
}

/// [`serve`] with these environment variables set for the server.
pub fn serve_env(
    index: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    log: &Path,
    env: &[(&str, &str)],
) -> Served {
    use std::io::BufRead;
    let mut child = bin()
        .args(["serve", "--bind", "127.0.0.1:0", "--index"])
        .arg(index)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SIMCASE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut page) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| {
            panic!(
                "server did not start: {first:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    out.read_line(&mut page).unwrap();
    Served {
        child,
        addr,
        page: page.trim().to_string(),
        _out: out,
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser test script of `crates/server/browser` run with `env` in headless Chromium
/// (`/usr/bin/chromium`, or `$CHROMIUM`): its stdout once it passed, the test failed with its
/// output otherwise. `None` (skipped, said on stdout) without Chromium or `npm ci` there,
/// unless `SIMCASE_BROWSER_TEST` or `CI` is set, which fails the test instead.
pub fn browser_script(script: &str, env: &[(&str, &std::ffi::OsStr)]) -> Option<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../server/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(&chromium).exists() && dir.join("node_modules/playwright-core").exists();
    if !ready {
        assert!(
            std::env::var_os("SIMCASE_BROWSER_TEST").is_none() && !in_ci(),
            "SIMCASE_BROWSER_TEST or CI is set but {chromium} or {}/node_modules is missing",
            dir.display()
        );
        println!("skipped: no chromium or playwright-core (see .ci/run)");
        return None;
    }
    let mut cmd = Command::new("node");
    cmd.arg(script).current_dir(&dir).env("CHROMIUM", &chromium);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

/// `target/screenshots/NAME`, its folder created and any earlier file removed.
pub fn screenshot(name: &str) -> PathBuf {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join(name);
    let _ = std::fs::remove_file(&shot);
    shot
}

/// `$SIMCASE_HOME`, or its default.
pub fn simcase_home() -> PathBuf {
    std::env::var_os("SIMCASE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/simcase"))
}

/// A `SIMCASE_HOME` in `dir` holding a readable copy of `model`'s installed files (installed
/// first if need be), for [`unprivileged`] runs.
pub fn readable_home(dir: &Path, model: &str) -> PathBuf {
    run_ok(bin().args(["models", "install", model]));
    let (from, home) = (simcase_home().join("models").join(model), dir.join("home"));
    let to = home.join("models").join(model);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        chmod(&to.join(e.file_name()), 0o644);
    }
    home
}

/// The real pydicom-data DICOMs of the demo corpus (installed by `simcase demo` once).
pub fn corpus_dicoms() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = simcase_home().join("corpus/pydicom-data/images");
        if !dir.join("MR2_UNCR.dcm").exists() {
            run_ok(bin().arg("demo"));
        }
        dir
    })
    .clone()
}
