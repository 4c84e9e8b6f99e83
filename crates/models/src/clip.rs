//! OpenAI CLIP image towers in open_clip / OpenAI naming (`visual.conv1`,
//! `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
//! `visual.transformer.resblocks.N.*`, `visual.ln_post`, `visual.proj`): pre-norm ViT with an
//! extra `ln_pre`, QuickGELU, CLS pooling after `ln_post`, then `x @ proj`.

use crate::ops::{layer_norm, Linear};
use crate::transformer::{cls_after_blocks, embed_patches, norm, Block};
use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug, PartialEq)]
/// Shape of an OpenAI CLIP image tower.
pub struct Config {
    /// Square input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels (`visual.conv1`'s kernel and stride).
    pub patch_size: usize,
    /// Transformer width.
    pub width: usize,
    /// Number of residual blocks (`visual.transformer.resblocks.N`).
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Output width of `visual.proj`: the shared image-text embedding size.
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

    /// Patches per side of the input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// An OpenAI CLIP image tower with weights loaded.
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

/// The text tower of an OpenAI CLIP model.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    /// Rows of `token_embedding.weight`: the BPE vocabulary size.
    pub vocab_size: usize,
    /// Rows of `positional_embedding`: the longest text in tokens.
    pub context_length: usize,
    /// Transformer width.
    pub width: usize,
    /// Number of residual blocks (`transformer.resblocks.N`).
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Output width of `text_projection`: the shared image-text embedding size.
    pub embed_dim: usize,
}

impl TextConfig {
    /// ViT-B/16's text tower: 512 wide, 8 heads, 12 layers.
    pub fn vit_b16() -> Self {
        Self {
            vocab_size: 49408,
            context_length: 77,
            width: 512,
            layers: 12,
            heads: 8,
            embed_dim: 512,
        }
    }

    /// ViT-L/14's text tower: 768 wide, 12 heads, 12 layers.
    pub fn vit_l14() -> Self {
        Self {
            width: 768,
            heads: 12,
            embed_dim: 768,
            ..Self::vit_b16()
        }
    }
}

/// OpenAI CLIP's causal text transformer (`token_embedding`, `positional_embedding`,
/// `transformer.resblocks.N.*`, `ln_final`, `text_projection`), pooled at the end-of-text
/// token. Only the tokens up to it are run: under the causal mask later padding cannot reach it.
pub struct ClipText {
    cfg: TextConfig,
    token: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    ln_final: (Tensor, Tensor),
    proj: Tensor,
}

impl ClipText {
    /// Loads the weights from `vb` at the checkpoint's root (`token_embedding`, `transformer.*`, `text_projection`).
    pub fn load(vb: VarBuilder, cfg: &TextConfig) -> Result<Self> {
        let w = cfg.width;
        Ok(Self {
            token: vb.get((cfg.vocab_size, w), "token_embedding.weight")?,
            pos: vb.get((cfg.context_length, w), "positional_embedding")?,
            blocks: (0..cfg.layers)
                .map(|i| {
                    Block::load_clip(vb.pp(format!("transformer.resblocks.{i}")), w, cfg.heads, 4)
                })
                .collect::<Result<_>>()?,
            ln_final: norm(&vb, "ln_final", w)?,
            proj: vb.get((w, cfg.embed_dim), "text_projection")?,
            cfg: cfg.clone(),
        })
    }

    /// Token ids ending with the end-of-text token → `(1, embed_dim)`, unnormalised.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        let n = ids.len();
        anyhow::ensure!(
            n > 0 && n <= self.cfg.context_length,
            "CLIP takes 1..={} tokens, got {n}",
            self.cfg.context_length
        );
        anyhow::ensure!(
            ids.iter().all(|&i| (i as usize) < self.cfg.vocab_size),
            "token id outside the vocabulary of {}",
            self.cfg.vocab_size
        );
        let dev = self.token.device();
        let idx = Tensor::new(ids, dev)?;
        let mut x = (self.token.index_select(&idx, 0)? + self.pos.narrow(0, 0, n)?)?;
        let mask: Vec<f32> = (0..self.cfg.heads * n * n)
            .map(|i| if i % n > (i / n) % n { -1e9 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (self.cfg.heads, n, n), dev)?;
        for b in &self.blocks {
            x = b.forward_biased(&x, 1, n, Some(&mask))?;
        }
        let last = x.narrow(0, n - 1, 1)?;
        let y = layer_norm(&last, &self.ln_final.0, &self.ln_final.1, 1e-5)?;
        Ok(y.matmul(&self.proj)?)
    }
}

impl crate::ImageModel for ClipVision {
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        ClipVision::forward(self, pixels)
    }
}

impl crate::TextModel for ClipText {
    fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        ClipText::forward(self, ids)
    }
}
