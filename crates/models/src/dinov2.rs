//! DINOv2 ViT in Hugging Face `Dinov2Model` naming (`embeddings.*`, `encoder.layer.N.*`,
//! `layernorm.*`). Embedding = CLS token after the final layer norm.
//!
//! Speed notes: activations stay 2-D `(batch·tokens, dim)` so every linear layer is one GEMM;
//! q/k/v are fused into one GEMM with the attention scale folded into q, and LayerScale is folded
//! into the projection weights at load, which removes three elementwise passes per block.

use crate::ops::{bicubic_resize_planes, layer_norm, Linear};
use crate::transformer::{cls_after_blocks, embed_patches, norm, Block};
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug, PartialEq)]
/// Shape of a DINOv2 ViT.
pub struct Config {
    /// Square input side the model runs at.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Width of every token's hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers (`encoder.layer.N`).
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// MLP hidden width as a multiple of `hidden_size`.
    pub mlp_ratio: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
}

impl Config {
    /// ViT-S/14 run at 224 (position grid interpolated from the checkpoint's 37×37).
    pub fn vit_small() -> Self {
        Self {
            image_size: 224,
            patch_size: 14,
            hidden_size: 384,
            num_layers: 12,
            num_heads: 6,
            mlp_ratio: 4,
            layer_norm_eps: 1e-6,
        }
    }

    /// ViT-B/14, the paper's DINOv2 (and RAD-DINO's layout).
    pub fn vit_base() -> Self {
        Self {
            hidden_size: 768,
            num_heads: 12,
            ..Self::vit_small()
        }
    }

    /// RAD-DINO (Microsoft's chest X-ray DINOv2): the ViT-B/14 layout at its native 518.
    pub fn rad_dino() -> Self {
        Self {
            image_size: 518,
            ..Self::vit_base()
        }
    }

    /// Patches per side of the input.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// A DINOv2 ViT with weights loaded.
pub struct Dinov2 {
    cfg: Config,
    /// Patch projection as a GEMM: `(dim, 3·p·p)`.
    patch: Linear,
    /// CLS token plus its position embedding, `(1, dim)`.
    cls: Tensor,
    /// Patch position embeddings at this config's grid, `(grid², dim)`.
    pos: Tensor,
    blocks: Vec<Block>,
    norm: (Tensor, Tensor),
}

impl Dinov2 {
    /// Loads the weights from `vb` at the `Dinov2Model` root, interpolating positions to this config's grid.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let emb = vb.pp("embeddings");
        let patch = Linear::new(
            emb.get((d, 3, p, p), "patch_embeddings.projection.weight")?
                .reshape((d, 3 * p * p))?,
            emb.get(d, "patch_embeddings.projection.bias")?,
        )?;
        let pos_all = emb.get_unchecked_dtype("position_embeddings", DType::F32)?;
        let (_, npos, pd) = pos_all.dims3()?;
        ensure!(pd == d, "position embeddings have dim {pd}, expected {d}");
        let src_grid = ((npos - 1) as f64).sqrt() as usize;
        ensure!(
            src_grid * src_grid + 1 == npos,
            "position embeddings are not a square grid"
        );
        let cls = (emb.get((1, 1, d), "cls_token")?.reshape((1, d))?
            + pos_all.narrow(1, 0, 1)?.reshape((1, d))?)?;
        let grid = cfg.grid();
        let patch_pos = pos_all.narrow(1, 1, npos - 1)?.reshape((npos - 1, d))?;
        let pos = if src_grid == grid {
            patch_pos
        } else {
            // Same as HF `interpolate_pos_encoding`: bicubic, align_corners=False, planes per channel.
            let planes = patch_pos
                .t()?
                .contiguous()?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let out = bicubic_resize_planes(&planes, d, src_grid, src_grid, grid, grid);
            Tensor::from_vec(out, (d, grid * grid), vb.device())?
                .t()?
                .contiguous()?
        };
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                Block::load_dinov2(
                    vb.pp(format!("encoder.layer.{i}")),
                    d,
                    cfg.num_heads,
                    cfg.mlp_ratio,
                    cfg.layer_norm_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch,
            cls,
            pos,
            blocks,
            norm: norm(&vb, "layernorm", d)?,
        })
    }

    /// `pixels`: `(b, 3, size, size)`, normalised. Returns the CLS features `(b, dim)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (p, g) = (self.cfg.patch_size, self.cfg.grid());
        let (x, b, n) = embed_patches(pixels, &self.patch, &self.cls, &self.pos, p, g)?;
        let cls_out = cls_after_blocks(x, &self.blocks, b, n)?;
        Ok(layer_norm(
            &cls_out,
            &self.norm.0,
            &self.norm.1,
            self.cfg.layer_norm_eps,
        )?)
    }
}

impl crate::ImageModel for Dinov2 {
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        Dinov2::forward(self, pixels)
    }
}
