//! OpenAI CLIP image towers in open_clip / OpenAI naming (`visual.conv1`,
//! `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
//! `visual.transformer.resblocks.N.*`, `visual.ln_post`, `visual.proj`): pre-norm ViT with an
//! extra `ln_pre`, QuickGELU, CLS pooling after `ln_post`, then `x @ proj`.

use crate::dinov2::{cls_after_blocks, embed_patches, norm, Block};
use crate::ops::{layer_norm, Linear};
use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub embed_dim: usize,
}

impl Config {
    /// OpenAI CLIP ViT-B/16: 768 wide, 12 layers, 512-d embedding.
    pub fn vit_b16() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            width: 768,
            layers: 12,
            heads: 12,
            embed_dim: 512,
        }
    }

    /// OpenAI CLIP ViT-L/14 (the paper's CLIP): 1024 wide, 24 layers, 768-d embedding.
    pub fn vit_l14() -> Self {
        Self {
            image_size: 224,
            patch_size: 14,
            width: 1024,
            layers: 24,
            heads: 16,
            embed_dim: 768,
        }
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

pub struct ClipVision {
    cfg: Config,
    patch: Linear,
    cls: Tensor,
    pos: Tensor,
    ln_pre: (Tensor, Tensor),
    blocks: Vec<Block>,
    ln_post: (Tensor, Tensor),
    /// `(width, embed_dim)`, applied as `x @ proj`.
    proj: Tensor,
}

impl ClipVision {
    /// `vb` at the checkpoint root (the loader looks under `visual.`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let v = vb.pp("visual");
        let (d, p, g) = (cfg.width, cfg.patch_size, cfg.grid());
        let patch = Linear::new(
            v.get((d, 3, p, p), "conv1.weight")?
                .reshape((d, 3 * p * p))?,
            Tensor::zeros(d, DType::F32, vb.device())?,
        )?;
        let pos = v.get((g * g + 1, d), "positional_embedding")?;
        let cls = (v.get(d, "class_embedding")?.reshape((1, d))? + pos.narrow(0, 0, 1)?)?;
        let blocks = (0..cfg.layers)
            .map(|i| Block::load_clip(v.pp(format!("transformer.resblocks.{i}")), d, cfg.heads, 4))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch,
            cls,
            pos: pos.narrow(0, 1, g * g)?.contiguous()?,
            ln_pre: norm(&v, "ln_pre", d)?,
            blocks,
            ln_post: norm(&v, "ln_post", d)?,
            proj: v.get((d, cfg.embed_dim), "proj")?,
        })
    }

    /// `(b, 3, s, s)` pixels (CLIP mean/std) → `(b, embed_dim)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (p, g) = (self.cfg.patch_size, self.cfg.grid());
        let (x, b, n) = embed_patches(pixels, &self.patch, &self.cls, &self.pos, p, g)?;
        let x = layer_norm(&x, &self.ln_pre.0, &self.ln_pre.1, 1e-5)?;
        let cls_out = cls_after_blocks(x, &self.blocks, b, n)?;
        let y = layer_norm(&cls_out, &self.ln_post.0, &self.ln_post.1, 1e-5)?;
        Ok(y.matmul(&self.proj)?)
    }
}
