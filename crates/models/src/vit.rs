//! ViT in timm naming (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.*`, `norm`), CLS
//! pooling, with an optional bias-free projection: `vit_base_patch16_224` (ImageNet-21k ViT-B/16)
//! and BiomedCLIP's image tower (open_clip `visual.trunk` + `visual.head.proj`, 768→512).

use crate::ops::{layer_norm, Linear};
use crate::transformer::{cls_after_blocks, embed_patches, norm, Block};
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

#[derive(Clone, Debug, PartialEq)]
/// Shape of a timm ViT, with an optional projection.
pub struct Config {
    /// Square input side the model runs at.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Width of every token's hidden state.
    pub hidden_size: usize,
    /// Number of transformer blocks (`blocks.N`).
    pub num_layers: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// MLP hidden width as a multiple of `hidden_size`.
    pub mlp_ratio: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// Output width of a bias-free linear projection after pooling (CLIP-style towers).
    pub proj: Option<usize>,
    /// Prefix of the trunk in the checkpoint (`visual.trunk` for open_clip).
    pub trunk: &'static str,
    /// Name of the projection weight (`visual.head.proj.weight` for open_clip).
    pub proj_name: &'static str,
}

impl Config {
    /// timm `vit_base_patch16_224` (e.g. the in21k checkpoint), CLS token after the final norm.
    pub fn vit_base_patch16_224() -> Self {
        Self {
            image_size: 224,
            patch_size: 16,
            hidden_size: 768,
            num_layers: 12,
            num_heads: 12,
            mlp_ratio: 4,
            layer_norm_eps: 1e-6,
            proj: None,
            trunk: "",
            proj_name: "",
        }
    }

    /// BiomedCLIP's image tower (`microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`):
    /// the timm ViT-B/16 trunk and a 768→512 projection without bias.
    pub fn biomedclip_vision() -> Self {
        Self {
            proj: Some(512),
            trunk: "visual.trunk",
            proj_name: "visual.head.proj.weight",
            ..Self::vit_base_patch16_224()
        }
    }

    /// Patches per side of the input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// A timm ViT with weights loaded.
pub struct Vit {
    cfg: Config,
    patch: Linear,
    /// CLS token plus its position embedding, `(1, dim)`.
    cls: Tensor,
    /// Patch position embeddings, `(grid², dim)`.
    pos: Tensor,
    blocks: Vec<Block>,
    norm: (Tensor, Tensor),
    proj: Option<Tensor>,
}

impl Vit {
    /// Loads the weights from `vb` at the checkpoint's root (the trunk under `trunk`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let t = if cfg.trunk.is_empty() {
            vb.clone()
        } else {
            vb.pp(cfg.trunk)
        };
        let (d, p, g) = (cfg.hidden_size, cfg.patch_size, cfg.grid());
        let patch = Linear::new(
            t.get((d, 3, p, p), "patch_embed.proj.weight")?
                .reshape((d, 3 * p * p))?,
            t.get(d, "patch_embed.proj.bias")?,
        )?;
        let pos = t
            .get((1, g * g + 1, d), "pos_embed")?
            .reshape((g * g + 1, d))?;
        let cls = (t.get((1, 1, d), "cls_token")?.reshape((1, d))? + pos.narrow(0, 0, 1)?)?;
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                Block::load_timm(
                    t.pp(format!("blocks.{i}")),
                    d,
                    cfg.num_heads,
                    cfg.mlp_ratio,
                    cfg.layer_norm_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let proj = match cfg.proj {
            Some(out) => Some(vb.get((out, d), cfg.proj_name)?),
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            patch,
            cls,
            pos: pos.narrow(0, 1, g * g)?.contiguous()?,
            blocks,
            norm: norm(&t, "norm", d)?,
            proj,
        })
    }

    /// `(b, 3, s, s)` normalised pixels → pooled (and projected) features.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (p, g) = (self.cfg.patch_size, self.cfg.grid());
        let (x, b, n) = embed_patches(pixels, &self.patch, &self.cls, &self.pos, p, g)?;
        let cls_out = cls_after_blocks(x, &self.blocks, b, n)?;
        let y = layer_norm(
            &cls_out,
            &self.norm.0,
            &self.norm.1,
            self.cfg.layer_norm_eps,
        )?;
        Ok(match &self.proj {
            Some(w) => y.matmul(&w.t()?)?,
            None => y,
        })
    }
}

impl crate::ImageModel for Vit {
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        Vit::forward(self, pixels)
    }
}
