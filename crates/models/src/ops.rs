//! Fused CPU kernels the encoders need and candle lacks (or computes too loosely), each with a
//! plain-candle fallback so other devices still work.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Layer norm over the last dimension, computed in two passes (mean, then centred variance).
/// candle's fused kernel uses `E[x²] − E[x]²` in f32, which loses digits on ViT residual
/// streams whose outlier channels reach the hundreds.
struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "simcase-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, "layer-norm input")?;
        let w = contiguous(s2, l2, "layer-norm weight")?;
        let b = contiguous(s3, l3, "layer-norm bias")?;
        let n = w.len();
        let mut out = vec![0f32; x.len()];
        let eps = self.eps;
        out.par_chunks_mut(n * 16)
            .zip(x.par_chunks(n * 16))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                    let mean = x.iter().sum::<f32>() / n as f32;
                    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for i in 0..n {
                        o[i] = (x[i] - mean) * inv * w[i] + b[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?
            .apply_op3_no_bwd(w, b, &LayerNorm { eps: eps as f32 })
    } else {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(w)?
            .broadcast_add(b)
    }
}

/// Depthwise 3×3 convolution (padding 1) with bias on channels-last `(b, h, w, c)` data.
/// candle runs grouped convolutions one group at a time; this is one pass, vectorised over c.
struct DepthwiseConv3 {
    stride: usize,
}

impl DepthwiseConv3 {
    fn out_size(&self, n: usize) -> usize {
        (n + 2 - 3) / self.stride + 1
    }
}

impl CustomOp3 for DepthwiseConv3 {
    fn name(&self) -> &'static str {
        "simcase-depthwise-conv3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, "depthwise input")?;
        let k = contiguous(s2, l2, "depthwise kernel")?; // (9, c)
        let bias = contiguous(s3, l3, "depthwise bias")?;
        let (b, h, w, c) = l1.shape().dims4()?;
        let (ho, wo) = (self.out_size(h), self.out_size(w));
        let s = self.stride;
        let mut out = vec![0f32; b * ho * wo * c];
        out.par_chunks_mut(wo * c)
            .enumerate()
            .for_each(|(row, orow)| {
                let (bi, oy) = (row / ho, row % ho);
                let img = &x[bi * h * w * c..(bi + 1) * h * w * c];
                for ox in 0..wo {
                    let o = &mut orow[ox * c..(ox + 1) * c];
                    o.copy_from_slice(bias);
                    for ky in 0..3 {
                        let iy = (oy * s + ky) as isize - 1;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..3 {
                            let ix = (ox * s + kx) as isize - 1;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let px = &img[(iy as usize * w + ix as usize) * c..][..c];
                            let kk = &k[(ky * 3 + kx) * c..][..c];
                            for ((o, p), k) in o.iter_mut().zip(px).zip(kk) {
                                *o += p * k;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, ho, wo, c))))
    }
}

/// `x`: `(b, h, w, c)`; `kernel`: PyTorch `(c, 1, 3, 3)`; returns `(b, h', w', c)`.
pub fn depthwise_conv3(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let c = kernel.dim(0)?;
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        let k = kernel.reshape((c, 9))?.t()?.contiguous()?;
        x.contiguous()?
            .apply_op3_no_bwd(&k, bias, &DepthwiseConv3 { stride })
    } else {
        x.permute((0, 3, 1, 2))?
            .conv2d(kernel, 1, stride, 1, c)?
            .broadcast_add(&bias.reshape((1, c, 1, 1))?)?
            .permute((0, 2, 3, 1))?
            .contiguous()
    }
}

/// PyTorch's cubic convolution weights (A = −0.75) for fractional offset `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let cc1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cc2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)]
}

fn cubic_axis(input: usize, output: usize) -> Vec<(isize, [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let i0 = real.floor();
            (i0 as isize, cubic_weights(real - i0))
        })
        .collect()
}

/// `F.interpolate(mode="bicubic", align_corners=False, antialias=False)` over `planes`
/// stacked `(planes, ih, iw)` → `(planes, oh, ow)`; edge samples are clamped as in PyTorch.
pub fn bicubic_resize_planes(
    src: &[f32],
    planes: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let (ys, xs) = (cubic_axis(ih, oh), cubic_axis(iw, ow));
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut out = vec![0f32; planes * oh * ow];
    for p in 0..planes {
        let img = &src[p * ih * iw..(p + 1) * ih * iw];
        for (oy, (y0, wy)) in ys.iter().enumerate() {
            for (ox, (x0, wx)) in xs.iter().enumerate() {
                let mut rows = [0f32; 4];
                for (r, row) in rows.iter_mut().enumerate() {
                    let y = clamp(y0 - 1 + r as isize, ih);
                    *row = (0..4)
                        .map(|k| img[y * iw + clamp(x0 - 1 + k as isize, iw)] * wx[k])
                        .sum();
                }
                out[p * oh * ow + oy * ow + ox] = (0..4).map(|r| rows[r] * wy[r]).sum();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn layer_norm_matches_reference_and_survives_large_offsets() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1000.0f32, 1001.0, 1002.0, 1003.0]], &dev).unwrap();
        let w = Tensor::new(&[1.0f32, 1.0, 1.0, 1.0], &dev).unwrap();
        let b = Tensor::new(&[0.0f32, 0.0, 0.0, 1.0], &dev).unwrap();
        let y = layer_norm(&x, &w, &b, 1e-6)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // var = 1.25, (x - 1001.5)/sqrt(1.25)
        let want = [-1.3416407, -0.4472136, 0.4472136, 2.3416407];
        for (a, b) in y[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{:?}", y);
        }
    }

    #[test]
    fn depthwise_matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        let (b, h, w, c) = (2, 5, 6, 3);
        let x = Tensor::arange(0f32, (b * h * w * c) as f32, &dev)
            .unwrap()
            .affine(0.01, -0.5)
            .unwrap()
            .reshape((b, h, w, c))
            .unwrap();
        let k = Tensor::arange(0f32, 27.0, &dev)
            .unwrap()
            .affine(0.1, -1.0)
            .unwrap()
            .reshape((c, 1, 3, 3))
            .unwrap();
        let bias = Tensor::new(&[0.5f32, -0.25, 1.0], &dev).unwrap();
        for stride in [1, 2] {
            let got = depthwise_conv3(&x, &k, &bias, stride).unwrap();
            let want = x
                .permute((0, 3, 1, 2))
                .unwrap()
                .conv2d(&k, 1, stride, 1, c)
                .unwrap()
                .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
        }
    }

    /// Values printed by torch 2.15: F.interpolate(arange(16.).view(1,1,4,4), size=(3,3),
    /// mode="bicubic", align_corners=False).
    #[test]
    fn bicubic_matches_torch() {
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = bicubic_resize_planes(&src, 1, 4, 4, 3, 3);
        let want = [
            0.6308, 2.0046, 3.3785, 6.1262, 7.5, 8.8738, 11.6215, 12.9954, 14.3692,
        ];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{out:?}");
        }
    }
}
