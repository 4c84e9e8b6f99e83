//! The pre-norm transformer block every ViT and CLIP tower here shares, with one loader per
//! checkpoint naming (Hugging Face DINOv2, timm, OpenAI CLIP), and the ViT plumbing around it:
//! patch embedding as one GEMM and CLS pooling. One block, so a kernel change reaches every
//! transformer model at once.

use crate::ops::{attention, attention_first, layer_norm, Act, DenseLinear, Linear, QkvLayout};
use anyhow::{ensure, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

pub(crate) fn load_linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(DenseLinear::load(vb, in_dim, out_dim)?.build()?)
}

/// A pre-norm transformer block (timm / HF ViT layout) with q/k/v fused and the attention
/// scale and any LayerScale folded into the weights.
pub(crate) struct Block {
    norm1: (Tensor, Tensor),
    qkv: Linear,
    proj: Linear,
    norm2: (Tensor, Tensor),
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    eps: f64,
    act: Act,
    /// `qkv` split into its q and its k, v rows, made at the first [`Block::forward_cls`]
    /// (only a last block runs that).
    cls_split: std::sync::OnceLock<(Linear, Linear)>,
}

/// A `[q | k | v]` projection as a layer, the attention scale `head_dim^-1/2` folded into its
/// q rows.
pub(crate) fn qkv_scaled(qkv: DenseLinear, d: usize, heads: usize) -> Result<Linear> {
    let scale = 1.0 / ((d / heads) as f32).sqrt();
    let s: Vec<f32> = (0..3 * d)
        .map(|i| if i < d { scale } else { 1.0 })
        .collect();
    let s = Tensor::from_vec(s, 3 * d, qkv.b.device())?;
    Ok(qkv.scale_outputs(&s)?.build()?)
}

pub(crate) fn norm(vb: &VarBuilder, name: &str, dim: usize) -> Result<(Tensor, Tensor)> {
    let vb = vb.pp(name);
    Ok((vb.get(dim, "weight")?, vb.get(dim, "bias")?))
}

impl Block {
    /// Hugging Face `Dinov2Model` naming (`attention.attention.{query,key,value}`,
    /// `attention.output.dense`, `layer_scale{1,2}.lambda1`, `mlp.fc{1,2}`), LayerScale folded
    /// into the output projections.
    pub(crate) fn load_dinov2(
        vb: VarBuilder,
        d: usize,
        heads: usize,
        mlp_ratio: usize,
        eps: f64,
    ) -> Result<Self> {
        let att = vb.pp("attention.attention");
        let part = |name: &str| DenseLinear::load(att.pp(name), d, d);
        let qkv = DenseLinear::cat(&[part("query")?, part("key")?, part("value")?])?;
        let qkv = qkv_scaled(qkv, d, heads)?;
        let ls1 = vb.get(d, "layer_scale1.lambda1")?;
        let ls2 = vb.get(d, "layer_scale2.lambda1")?;
        let hidden = d * mlp_ratio;
        Ok(Self {
            norm1: norm(&vb, "norm1", d)?,
            qkv,
            proj: DenseLinear::load(vb.pp("attention.output.dense"), d, d)?
                .scale_outputs(&ls1)?
                .build()?,
            norm2: norm(&vb, "norm2", d)?,
            fc1: load_linear(vb.pp("mlp.fc1"), d, hidden)?,
            fc2: DenseLinear::load(vb.pp("mlp.fc2"), hidden, d)?
                .scale_outputs(&ls2)?
                .build()?,
            heads,
            eps,
            act: Act::Gelu,
            cls_split: Default::default(),
        })
    }

    /// timm naming (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`), no
    /// LayerScale: the layout of `vit_base_patch16_224` and BiomedCLIP's image tower.
    pub(crate) fn load_timm(
        vb: VarBuilder,
        d: usize,
        heads: usize,
        mlp: usize,
        eps: f64,
    ) -> Result<Self> {
        let qkv = qkv_scaled(DenseLinear::load(vb.pp("attn.qkv"), d, 3 * d)?, d, heads)?;
        Ok(Self {
            norm1: norm(&vb, "norm1", d)?,
            qkv,
            proj: load_linear(vb.pp("attn.proj"), d, d)?,
            norm2: norm(&vb, "norm2", d)?,
            fc1: load_linear(vb.pp("mlp.fc1"), d, d * mlp)?,
            fc2: load_linear(vb.pp("mlp.fc2"), d * mlp, d)?,
            heads,
            eps,
            act: Act::Gelu,
            cls_split: Default::default(),
        })
    }

    /// OpenAI CLIP / open_clip naming (`ln_1`, `attn.in_proj_*`, `attn.out_proj`, `ln_2`,
    /// `mlp.c_fc`, `mlp.c_proj`), QuickGELU, LayerNorm eps 1e-5.
    pub(crate) fn load_clip(vb: VarBuilder, d: usize, heads: usize, mlp: usize) -> Result<Self> {
        let attn = vb.pp("attn");
        let qkv = DenseLinear {
            w: attn.get((3 * d, d), "in_proj_weight")?,
            b: attn.get(3 * d, "in_proj_bias")?,
        };
        let qkv = qkv_scaled(qkv, d, heads)?;
        Ok(Self {
            norm1: norm(&vb, "ln_1", d)?,
            qkv,
            proj: load_linear(attn.pp("out_proj"), d, d)?,
            norm2: norm(&vb, "ln_2", d)?,
            fc1: load_linear(vb.pp("mlp.c_fc"), d, d * mlp)?,
            fc2: load_linear(vb.pp("mlp.c_proj"), d * mlp, d)?,
            heads,
            eps: 1e-5,
            act: Act::QuickGelu,
            cls_split: Default::default(),
        })
    }

    /// `x`: `(b·n, d)`.
    pub(crate) fn forward(&self, x: &Tensor, b: usize, n: usize) -> Result<Tensor> {
        self.forward_biased(x, b, n, None)
    }

    /// As `forward`, with `bias` `(heads, n, n)` added to the attention logits (a causal mask).
    pub(crate) fn forward_biased(
        &self,
        x: &Tensor,
        b: usize,
        n: usize,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = layer_norm(x, &self.norm1.0, &self.norm1.1, self.eps)?;
        let qkv = self.qkv.forward(&h)?;
        let o = attention(&qkv, b, n, self.heads, QkvLayout::Blocks, bias)?;
        let x = self.proj.forward_residual(&o, x)?;
        let h = layer_norm(&x, &self.norm2.0, &self.norm2.1, self.eps)?;
        let h = self.fc1.apply(&h, None, self.act)?;
        Ok(self.fc2.forward_residual(&h, &x)?)
    }

    /// As `forward`, keeping only each sequence's CLS row (row 0): `(b, d)`. The keys and
    /// values are still every token's, but the query, the attention, the projection, the MLP
    /// and the residuals run on `b` rows instead of `b·n`, which is exact (row-wise ops) and
    /// spares about 80% of a final block's GEMMs and nearly all of its attention.
    pub(crate) fn forward_cls(&self, x: &Tensor, b: usize, n: usize) -> Result<Tensor> {
        let h = layer_norm(x, &self.norm1.0, &self.norm1.1, self.eps)?;
        let (q, kv) = self.cls_split()?;
        let kv = kv.forward(&h)?;
        let q = q.forward(&cls_rows(&h, b, n)?)?;
        let o = attention_first(&q, &kv, b, n, self.heads)?;
        let x = self.proj.forward_residual(&o, &cls_rows(x, b, n)?)?;
        let h = layer_norm(&x, &self.norm2.0, &self.norm2.1, self.eps)?;
        let h = self.fc1.apply(&h, None, self.act)?;
        Ok(self.fc2.forward_residual(&h, &x)?)
    }

    /// The q rows and the k, v rows of `qkv` as two layers (made once).
    fn cls_split(&self) -> Result<&(Linear, Linear)> {
        if let Some(s) = self.cls_split.get() {
            return Ok(s);
        }
        let d = self.qkv.out_features() / 3;
        let w = self.qkv.weight()?;
        let rows = |from: usize, len: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.narrow(0, from, len)?,
                self.qkv.bias().narrow(0, from, len)?,
            )?)
        };
        let split = (rows(0, d)?, rows(d, 2 * d)?);
        Ok(self.cls_split.get_or_init(|| split))
    }
}

/// Row 0 of each of `b` sequences of `n` rows: `(b·n, d)` -> `(b, d)`.
fn cls_rows(x: &Tensor, b: usize, n: usize) -> Result<Tensor> {
    let d = x.dim(1)?;
    Ok(x.reshape((b, n, d))?
        .narrow(1, 0, 1)?
        .squeeze(1)?
        .contiguous()?)
}

/// Tokens of a ViT input: `(b, 3, g·p, g·p)` patchified with one GEMM (im2col of the stride-p
/// convolution), position embeddings added, the CLS row (`cls`, position included) prepended.
/// Returns `(b·n, d)` rows with `n = g² + 1`.
pub(crate) fn embed_patches(
    pixels: &Tensor,
    patch: &Linear,
    cls: &Tensor,
    pos: &Tensor,
    p: usize,
    g: usize,
) -> Result<(Tensor, usize, usize)> {
    let (b, c, h, w) = pixels.dims4()?;
    ensure!(
        c == 3 && h == g * p && w == g * p,
        "expected (b, 3, {s}, {s}) input, got {:?}",
        pixels.dims(),
        s = g * p
    );
    let d = cls.dim(1)?;
    let cols = pixels
        .reshape((b, 3, g, p, g, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b * g * g, 3 * p * p))?;
    let patches = patch
        .forward(&cols)?
        .reshape((b, g * g, d))?
        .broadcast_add(pos)?;
    let cls = cls.unsqueeze(0)?.broadcast_as((b, 1, d))?;
    let n = g * g + 1;
    Ok((
        Tensor::cat(&[&cls, &patches], 1)?.reshape((b * n, d))?,
        b,
        n,
    ))
}

/// Run `blocks` over `(b·n, d)` tokens and return each sequence's CLS row, `(b, d)`. The last
/// block computes only what the CLS row needs (see [`Block::forward_cls`]).
pub(crate) fn cls_after_blocks(
    mut x: Tensor,
    blocks: &[Block],
    b: usize,
    n: usize,
) -> Result<Tensor> {
    let Some((last, rest)) = blocks.split_last() else {
        return cls_rows(&x, b, n);
    };
    for blk in rest {
        x = blk.forward(&x, b, n)?;
    }
    last.forward_cls(&x, b, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    /// The last block on the CLS rows only gives each sequence's CLS row of the full block,
    /// for several sequences (so that the rows picked are 0, n, 2n, …), to float rounding.
    #[test]
    fn cls_only_last_block_matches_the_full_block() {
        let dev = Device::Cpu;
        let (d, heads, mlp, b, n) = (32, 4, 2, 3, 17);
        let mut t = HashMap::new();
        let mut put = |name: &str, shape: &[usize]| {
            t.insert(
                name.to_string(),
                Tensor::randn(0f32, 0.3, shape, &dev).unwrap(),
            );
        };
        for ln in ["norm1", "norm2"] {
            put(&format!("{ln}.weight"), &[d]);
            put(&format!("{ln}.bias"), &[d]);
        }
        put("attn.qkv.weight", &[3 * d, d]);
        put("attn.qkv.bias", &[3 * d]);
        put("attn.proj.weight", &[d, d]);
        put("attn.proj.bias", &[d]);
        put("mlp.fc1.weight", &[d * mlp, d]);
        put("mlp.fc1.bias", &[d * mlp]);
        put("mlp.fc2.weight", &[d, d * mlp]);
        put("mlp.fc2.bias", &[d]);
        let vb = VarBuilder::from_tensors(t, DType::F32, &dev);
        let blk = Block::load_timm(vb, d, heads, mlp, 1e-6).unwrap();
        let x = Tensor::randn(0f32, 1.0, (b * n, d), &dev).unwrap();
        let full = cls_rows(&blk.forward(&x, b, n).unwrap(), b, n).unwrap();
        let cls = blk.forward_cls(&x, b, n).unwrap();
        assert_eq!(cls.dims(), &[b, d]);
        let diff = (full - cls)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "max difference {diff}");
        // `cls_after_blocks` takes the CLS path for its last (here only) block.
        let two = [blk];
        let via = cls_after_blocks(x.clone(), &two, b, n).unwrap();
        let by_hand = two[0].forward_cls(&x, b, n).unwrap();
        assert_eq!(
            via.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            by_hand.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
