//! ResNet-50 in torchvision / timm naming (`conv1`, `bn1`, `layerN.M.conv1..3`, `bnK`,
//! `downsample.0/1`, `fc`), stride on the 3×3 convolution (ResNet v1.5). Two embeddings:
//! the pooled 2048-d features (our default) and the 1000 ImageNet logits (what the paper used).

use crate::ops::{conv_bn as conv_bn_eps, Act, Linear};
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

#[derive(Clone, Copy, Debug, PartialEq)]
/// Which of ResNet's outputs is the embedding.
pub enum Output {
    /// Global-average-pooled features, 2048-d.
    Pooled,
    /// ImageNet logits from `fc`, 1000-d.
    Logits,
}

#[derive(Clone, Debug, PartialEq)]
/// Shape of a ResNet.
pub struct Config {
    /// Square input side the model runs at.
    pub image_size: usize,
    /// Bottleneck blocks in each of the four stages (`layer1`..`layer4`).
    pub layers: [usize; 4],
    /// Which output is the embedding.
    pub output: Output,
}

impl Config {
    /// ResNet-50 (3, 4, 6, 3 blocks) at 224, giving `output`.
    pub fn resnet50(output: Output) -> Self {
        Self {
            image_size: 224,
            layers: [3, 4, 6, 3],
            output,
        }
    }
}

/// Convolution and BatchNorm folded, with torchvision's eps.
fn conv_bn(
    vb: &VarBuilder,
    conv: &str,
    bn: &str,
    shape: (usize, usize, usize, usize),
) -> Result<(Tensor, Tensor)> {
    Ok(conv_bn_eps(vb, conv, bn, shape, 1e-5)?)
}

fn pointwise(vb: &VarBuilder, conv: &str, bn: &str, cin: usize, cout: usize) -> Result<Linear> {
    let (w, b) = conv_bn(vb, conv, bn, (cout, cin, 1, 1))?;
    Ok(Linear::new(w.reshape((cout, cin))?, b)?)
}

/// Full 3×3 convolution (padding 1) on channels-last data, then ReLU.
fn conv3_relu(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize) -> Result<Tensor> {
    let c = b.dim(0)?;
    Ok(x.permute((0, 3, 1, 2))?
        .contiguous()?
        .conv2d(w, 1, stride, 1, 1)?
        .broadcast_add(&b.reshape((1, c, 1, 1))?)?
        .relu()?
        .permute((0, 2, 3, 1))?
        .contiguous()?)
}

struct Bottleneck {
    conv1: Linear,
    conv2: (Tensor, Tensor),
    conv3: Linear,
    down: Option<Linear>,
    stride: usize,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let mid = self.conv1.out_features();
        let y = self
            .conv1
            .apply(&x.reshape((b * h * w, c))?, None, Act::Relu)?
            .reshape((b, h, w, mid))?;
        let y = conv3_relu(&y, &self.conv2.0, &self.conv2.1, self.stride)?;
        let (_, oh, ow, _) = y.dims4()?;
        let shortcut = match &self.down {
            Some(d) => {
                let xs = if self.stride > 1 {
                    let s = self.stride;
                    x.reshape((b, oh, s, ow, s, c))?
                        .narrow(2, 0, 1)?
                        .narrow(4, 0, 1)?
                        .contiguous()?
                } else {
                    x.clone()
                };
                d.forward(&xs.reshape((b * oh * ow, c))?)?
            }
            None => x.reshape((b * h * w, c))?,
        };
        let out = self.conv3.out_features();
        let z = self
            .conv3
            .apply(&y.reshape((b * oh * ow, mid))?, Some(&shortcut), Act::Relu)?;
        Ok(z.reshape((b, oh, ow, out))?)
    }
}

/// A ResNet with weights loaded.
pub struct ResNet {
    cfg: Config,
    stem: (Tensor, Tensor),
    /// Blocks per stage.
    stages: Vec<Vec<Bottleneck>>,
    fc: Linear,
}

impl ResNet {
    /// Loads the weights from `vb` at the checkpoint's root, folding each BatchNorm into its convolution.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let stem = conv_bn(&vb, "conv1", "bn1", (64, 3, 7, 7))?;
        let mut stages = Vec::new();
        let mut cin = 64;
        for (i, &n) in cfg.layers.iter().enumerate() {
            let mid = 64 << i;
            let out = mid * 4;
            let mut blocks = Vec::new();
            for j in 0..n {
                let v = vb.pp(format!("layer{}.{j}", i + 1));
                let stride = if j == 0 && i > 0 { 2 } else { 1 };
                let down = if j == 0 {
                    Some(pointwise(&v, "downsample.0", "downsample.1", cin, out)?)
                } else {
                    None
                };
                blocks.push(Bottleneck {
                    conv1: pointwise(&v, "conv1", "bn1", cin, mid)?,
                    conv2: conv_bn(&v, "conv2", "bn2", (mid, mid, 3, 3))?,
                    conv3: pointwise(&v, "conv3", "bn3", mid, out)?,
                    down,
                    stride,
                });
                cin = out;
            }
            stages.push(blocks);
        }
        let fc = Linear::new(vb.get((1000, 2048), "fc.weight")?, vb.get(1000, "fc.bias")?)?;
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            fc,
        })
    }

    /// Stem and max-pool, then each stage's output (channels-last), for inspection.
    pub fn stages(&self, pixels: &Tensor) -> Result<Vec<Tensor>> {
        let x = pixels
            .conv2d(&self.stem.0, 3, 2, 1, 1)?
            .broadcast_add(&self.stem.1.reshape((1, 64, 1, 1))?)?
            .relu()?;
        // Max-pool 3×3/2 with padding 1: after the ReLU every value is ≥ 0, so zero padding
        // is the same as PyTorch's -inf padding.
        let x = x
            .pad_with_zeros(2, 1, 1)?
            .pad_with_zeros(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        let mut x = x.permute((0, 2, 3, 1))?.contiguous()?;
        let mut outs = vec![x.clone()];
        for stage in &self.stages {
            for blk in stage {
                x = blk.forward(&x)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// `(b, 3, s, s)` ImageNet-normalised pixels → pooled features or logits.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.stages(pixels)?.pop().expect("four stages");
        let (b, h, w, c) = x.dims4()?;
        let pooled = crate::ops::mean_tokens(&x.reshape((b, h * w, c))?)?;
        Ok(match self.cfg.output {
            Output::Pooled => pooled,
            Output::Logits => self.fc.forward(&pooled)?,
        })
    }
}

impl crate::ImageModel for ResNet {
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        ResNet::forward(self, pixels)
    }
}
