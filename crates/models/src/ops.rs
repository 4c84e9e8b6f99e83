//! Fused CPU kernels the encoders need and candle lacks (or computes too loosely), each with a
//! plain-candle fallback so other devices still work.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Sum with eight independent lanes, so the compiler can vectorise it (a single running sum
/// is a serial dependency it may not reorder).
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

#[inline(always)]
fn ln_rows(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let n = w.len();
    for (o, x) in o.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        let mean = sum_lanes(x) / n as f32;
        for (o, x) in o.iter_mut().zip(x) {
            *o = (x - mean) * (x - mean);
        }
        let var = sum_lanes(o) / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..n {
            o[i] = (x[i] - mean) * inv * w[i] + b[i];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn ln_rows_avx2(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    ln_rows(o, x, w, b, eps)
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
        let avx2 = has_avx2();
        out.par_chunks_mut(n * 16)
            .zip(x.par_chunks(n * 16))
            .for_each(|(o, x)| {
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: features detected above.
                    return unsafe { ln_rows_avx2(o, x, w, b, eps) };
                }
                let _ = avx2;
                ln_rows(o, x, w, b, eps)
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

/// A convolution's weight (`{conv}.weight`) and bias with the following BatchNorm (`{bn}.*`)
/// folded in, so inference runs one convolution.
pub(crate) fn conv_bn(
    vb: &VarBuilder,
    conv: &str,
    bn: &str,
    shape: (usize, usize, usize, usize),
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let w = vb.get(shape, &format!("{conv}.weight"))?;
    let c = shape.0;
    let g = vb.get(c, &format!("{bn}.weight"))?;
    let b = vb.get(c, &format!("{bn}.bias"))?;
    let m = vb.get(c, &format!("{bn}.running_mean"))?;
    let v = vb.get(c, &format!("{bn}.running_var"))?;
    let s = (g / (v + eps)?.sqrt()?)?;
    Ok((
        w.broadcast_mul(&s.reshape((c, 1, 1, 1))?)?,
        (b - m.mul(&s)?)?,
    ))
}

/// The activation fused after a convolution or linear layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    /// Exact (erf) GELU.
    Gelu,
    /// `min(max(x, 0), 6)`, as EfficientNet-Lite.
    Relu6,
    /// `x·σ(1.702x)`, as OpenAI CLIP.
    QuickGelu,
    /// `max(x, 0)`.
    Relu,
}

#[inline(always)]
fn act_rows(x: &mut [f32], act: Act) {
    match act {
        Act::None => {}
        Act::Gelu => gelu_rows(x, None),
        Act::Relu6 => x.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Act::QuickGelu => x.iter_mut().for_each(|v| *v /= 1.0 + exp_fast(-1.702 * *v)),
        Act::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn act_rows_avx2(x: &mut [f32], act: Act) {
    act_rows(x, act)
}

fn act_par(x: &mut [f32], act: Act) {
    if act == Act::None {
        return;
    }
    let avx2 = has_avx2();
    x.par_chunks_mut(16384).for_each(|c| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: features detected above.
            return unsafe { act_rows_avx2(c, act) };
        }
        let _ = avx2;
        act_rows(c, act)
    });
}

fn act_tensor(y: Tensor, act: Act) -> candle_core::Result<Tensor> {
    match act {
        Act::None => Ok(y),
        Act::Gelu => y.gelu_erf(),
        Act::Relu6 => y.clamp(0f32, 6f32),
        Act::QuickGelu => y.clone() * candle_nn::ops::sigmoid(&(y * 1.702)?)?,
        Act::Relu => y.relu(),
    }
}

/// Depthwise 3×3 convolution (padding 1) with bias on channels-last `(b, h, w, c)` data.
/// candle runs grouped convolutions one group at a time; this is one pass, vectorised over c.
struct DepthwiseConv {
    k: usize,
    stride: usize,
    /// Zeros before the first row / column; the far side is implied by the output size.
    pad: (usize, usize),
    out: (usize, usize),
    act: Act,
}

impl CustomOp3 for DepthwiseConv {
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
        let k = contiguous(s2, l2, "depthwise kernel")?; // (k·k, c)
        let bias = contiguous(s3, l3, "depthwise bias")?;
        let (b, h, w, c) = l1.shape().dims4()?;
        let (ho, wo) = self.out;
        let mut out = vec![0f32; b * ho * wo * c];
        let avx2 = has_avx2();
        let geo = DwGeometry {
            h,
            w,
            c,
            ho,
            wo,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            act: self.act,
        };
        out.par_chunks_mut(wo * c)
            .enumerate()
            .for_each(|(row, orow)| {
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: features detected above.
                    return unsafe { dw_row_avx2(&geo, x, k, bias, row, orow) };
                }
                let _ = avx2;
                dw_row(&geo, x, k, bias, row, orow)
            });
        Ok((CpuStorage::F32(out), Shape::from((b, ho, wo, c))))
    }
}

struct DwGeometry {
    h: usize,
    w: usize,
    c: usize,
    ho: usize,
    wo: usize,
    k: usize,
    stride: usize,
    pad: (usize, usize),
    act: Act,
}

/// One output row of the depthwise convolution (all batch images stacked as rows).
#[inline(always)]
fn dw_row(g: &DwGeometry, x: &[f32], k: &[f32], bias: &[f32], row: usize, orow: &mut [f32]) {
    let (h, w, c, s) = (g.h, g.w, g.c, g.stride);
    let (bi, oy) = (row / g.ho, row % g.ho);
    let img = &x[bi * h * w * c..(bi + 1) * h * w * c];
    for ox in 0..g.wo {
        let o = &mut orow[ox * c..(ox + 1) * c];
        o.copy_from_slice(bias);
        for ky in 0..g.k {
            let iy = (oy * s + ky) as isize - g.pad.0 as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..g.k {
                let ix = (ox * s + kx) as isize - g.pad.1 as isize;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                let px = &img[(iy as usize * w + ix as usize) * c..][..c];
                let kk = &k[(ky * g.k + kx) * c..][..c];
                for ((o, p), k) in o.iter_mut().zip(px).zip(kk) {
                    *o += p * k;
                }
            }
        }
    }
    act_rows(orow, g.act);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_row_avx2(
    g: &DwGeometry,
    x: &[f32],
    k: &[f32],
    bias: &[f32],
    row: usize,
    orow: &mut [f32],
) {
    dw_row(g, x, k, bias, row, orow)
}

/// `x`: `(b, h, w, c)`; `kernel`: PyTorch `(c, 1, 3, 3)`; padding 1; returns `(b, h', w', c)`,
/// optionally through an exact GELU.
pub fn depthwise_conv3(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    stride: usize,
    gelu: bool,
) -> candle_core::Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    let out = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
    let act = if gelu { Act::Gelu } else { Act::None };
    depthwise_conv(x, kernel, bias, stride, (1, 1), out, act)
}

/// TensorFlow "SAME" geometry for one axis: output `ceil(n / s)`, padding before the data.
pub fn same_padding(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(n);
    (out, total / 2)
}

/// Depthwise `k×k` convolution on channels-last `(b, h, w, c)` with bias and activation;
/// `pad` zeros come before the first row/column, `out` is the output size.
pub fn depthwise_conv(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    stride: usize,
    pad: (usize, usize),
    out: (usize, usize),
    act: Act,
) -> candle_core::Result<Tensor> {
    let (c, _, k, _) = kernel.dims4()?;
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        let kk = kernel.reshape((c, k * k))?.t()?.contiguous()?;
        let op = DepthwiseConv {
            k,
            stride,
            pad,
            out,
            act,
        };
        x.contiguous()?.apply_op3_no_bwd(&kk, bias, &op)
    } else {
        let (_, h, w, _) = x.dims4()?;
        // Pad explicitly (possibly asymmetrically), then a valid convolution.
        let after_h = ((out.0 - 1) * stride + k).saturating_sub(h + pad.0);
        let after_w = ((out.1 - 1) * stride + k).saturating_sub(w + pad.1);
        let xp = x
            .pad_with_zeros(1, pad.0, after_h)?
            .pad_with_zeros(2, pad.1, after_w)?;
        let y = xp
            .permute((0, 3, 1, 2))?
            .conv2d(kernel, 0, stride, 1, c)?
            .broadcast_add(&bias.reshape((1, c, 1, 1))?)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        act_tensor(y, act)
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
            let got = depthwise_conv3(&x, &k, &bias, stride, false).unwrap();
            let got_gelu = depthwise_conv3(&x, &k, &bias, stride, true).unwrap();
            let d = (got_gelu - got.gelu_erf().unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
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

/// Eigen's `generic_fast_erf_float` rational approximation: a few ulp from libm's erf, and
/// branch-free, so the loop vectorises.
#[inline(always)]
fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

#[inline(always)]
fn gelu_rows(x: &mut [f32], bias: Option<&[f32]>) {
    let n = bias.map_or(x.len(), |b| b.len());
    for row in x.chunks_exact_mut(n) {
        if let Some(b) = bias {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
        for v in row.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf_fast(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_rows_avx2(x: &mut [f32], bias: Option<&[f32]>) {
    gelu_rows(x, bias)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Exact (erf) GELU of `x + bias`, in one pass.
struct BiasGelu;

impl candle_core::CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "simcase-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, "gelu input")?;
        let b = contiguous(s2, l2, "gelu bias")?;
        let n = b.len();
        let mut out = x.to_vec();
        let avx2 = has_avx2();
        let run = |c: &mut [f32], b: &[f32]| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: features detected above.
                return unsafe { gelu_rows_avx2(c, Some(b)) };
            }
            let _ = avx2;
            gelu_rows(c, Some(b))
        };
        if n == x.len() {
            // A same-shape addend (residual): split both alike.
            out.par_chunks_mut(16384)
                .zip(b.par_chunks(16384))
                .for_each(|(c, b)| run(c, b));
        } else {
            if n == 0 || x.len() % n != 0 {
                candle_core::bail!("gelu bias length {n} does not divide the input");
            }
            let rows_per_task = (16384 / n).max(1);
            out.par_chunks_mut(n * rows_per_task)
                .for_each(|c| run(c, b));
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `gelu(x + y)` with exact GELU; `y` is a bias (the size of the last dimension) or a
/// tensor of `x`'s shape (a residual).
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op2_no_bwd(bias, &BiasGelu)
    } else {
        x.broadcast_add(bias)?.gelu_erf()
    }
}

/// Cephes-style `exp` for the softmax: 2^n · poly(r), branch-free so it vectorises.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn softmax_rows(s: &mut [f32], n: usize, bias: Option<&[f32]>) {
    for (i, row) in s.chunks_exact_mut(n).enumerate() {
        if let Some(b) = bias {
            for (v, b) in row.iter_mut().zip(&b[i * n..(i + 1) * n]) {
                *v += b;
            }
        }
        let m = max_lanes(row);
        for v in row.iter_mut() {
            *v = exp_fast(*v - m);
        }
        let inv = 1.0 / sum_lanes(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(s: &mut [f32], n: usize, bias: Option<&[f32]>) {
    softmax_rows(s, n, bias)
}

/// Where q, k and v of head `h` sit in a token's fused qkv row.
#[derive(Clone, Copy, Debug)]
pub enum QkvLayout {
    /// `[q(all heads) | k | v]`, as DINOv2/timm `qkv`.
    Blocks,
    /// `[h0: q k v | h1: q k v | ...]`, as TinyViT.
    Interleaved,
}

/// Multi-head self-attention from a fused qkv projection, one (sequence, head) per task:
/// `softmax(q·kᵀ + bias)·v` written straight into `(tokens, heads·hd)` order. The scale is
/// expected to be folded into q. Saves the q/k/v and output transposes of the tensor version.
struct Attention {
    seqs: usize,
    tokens: usize,
    heads: usize,
    layout: QkvLayout,
    bias: Option<std::sync::Arc<Vec<f32>>>,
}

impl candle_core::CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "simcase-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(s, l, "qkv")?;
        let (seqs, n, heads) = (self.seqs, self.tokens, self.heads);
        let d3 = qkv.len() / (seqs * n);
        let d = d3 / 3;
        let hd = d / heads;
        if seqs * n * d3 != qkv.len() || hd * heads != d {
            candle_core::bail!("attention: qkv shape does not match {seqs}x{n}x{heads} heads");
        }
        let mut out = vec![0f32; seqs * n * d];
        let out_ptr = out.as_mut_ptr() as usize;
        let avx2 = has_avx2();
        (0..seqs * heads).into_par_iter().for_each_init(
            || vec![0f32; n * n],
            |scores, task| {
                let (sq, h) = (task / heads, task % heads);
                let base = sq * n * d3;
                let (qo, ko, vo) = match self.layout {
                    QkvLayout::Blocks => (h * hd, d + h * hd, 2 * d + h * hd),
                    QkvLayout::Interleaved => (3 * h * hd, 3 * h * hd + hd, 3 * h * hd + 2 * hd),
                };
                // SAFETY: every pointer stays inside qkv / scores / out for the strides given;
                // tasks write disjoint (sequence, head) blocks of `out`.
                unsafe {
                    gemm::gemm(
                        n,
                        n,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        qkv.as_ptr().add(base + qo),
                        1,
                        d3 as isize,
                        qkv.as_ptr().add(base + ko),
                        d3 as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                let bias = self.bias.as_ref().map(|b| &b[h * n * n..(h + 1) * n * n]);
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    unsafe { softmax_rows_avx2(scores, n, bias) }
                } else {
                    softmax_rows(scores, n, bias)
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = avx2;
                    softmax_rows(scores, n, bias)
                }
                unsafe {
                    let dst = (out_ptr as *mut f32).add(sq * n * d + h * hd);
                    gemm::gemm(
                        n,
                        hd,
                        n,
                        dst,
                        1,
                        d as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        n as isize,
                        qkv.as_ptr().add(base + vo),
                        1,
                        d3 as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((seqs * n, d))))
    }
}

/// Attention over `seqs` sequences of `tokens` tokens; `qkv`: `(seqs·tokens, 3·dim)`;
/// `bias`: optional `(heads, tokens, tokens)` added to the logits. Returns `(seqs·tokens, dim)`.
pub fn attention(
    qkv: &Tensor,
    seqs: usize,
    tokens: usize,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let d = qkv.dim(1)? / 3;
    if qkv.device().is_cpu() && qkv.dtype() == candle_core::DType::F32 {
        let bias = match bias {
            Some(b) => Some(std::sync::Arc::new(b.flatten_all()?.to_vec1::<f32>()?)),
            None => None,
        };
        let op = Attention {
            seqs,
            tokens,
            heads,
            layout,
            bias,
        };
        return qkv.contiguous()?.apply_op1_no_bwd(&op);
    }
    let hd = d / heads;
    let qkv = match layout {
        QkvLayout::Blocks => qkv
            .reshape((seqs, tokens, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?,
        QkvLayout::Interleaved => qkv
            .reshape((seqs, tokens, heads, 3, hd))?
            .permute((3, 0, 2, 1, 4))?,
    };
    let (q, k, v) = (
        qkv.get(0)?.contiguous()?,
        qkv.get(1)?.contiguous()?,
        qkv.get(2)?.contiguous()?,
    );
    let mut att = q.matmul(&k.t()?)?;
    if let Some(b) = bias {
        att = att.broadcast_add(b)?;
    }
    candle_nn::ops::softmax_last_dim(&att)?
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((seqs * tokens, d))
}

#[cfg(test)]
mod fused_tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fast_erf_and_exp_are_accurate() {
        for i in -900..900 {
            let x = i as f32 / 100.0;
            let erf = libm_erf(x as f64);
            assert!(
                (erf_fast(x) as f64 - erf).abs() < 4e-7,
                "erf({x}) = {} vs {erf}",
                erf_fast(x)
            );
            if x < 0.0 {
                let e = (x as f64).exp();
                assert!(((exp_fast(x) as f64 - e) / e).abs() < 3e-7, "exp({x})");
            }
        }
    }

    /// erf by its series / continued fraction is overkill here: use the relation with the
    /// complementary error function via a high-precision f64 rational (W. J. Cody) — simplest is
    /// numerical integration, which is exact enough at f64.
    fn libm_erf(x: f64) -> f64 {
        let steps = 20000;
        let h = x / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..steps {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn bias_gelu_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (3000, 24), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 24, &dev).unwrap();
        let want = x.broadcast_add(&b).unwrap().gelu_erf().unwrap();
        assert!(max_diff(&bias_gelu(&x, &b).unwrap(), &want) < 1e-5);
        let r = Tensor::randn(0f32, 1.0, (3000, 24), &dev).unwrap();
        let want = (&x + &r).unwrap().gelu_erf().unwrap();
        assert!(
            max_diff(&bias_gelu(&x, &r).unwrap(), &want) < 1e-5,
            "residual form"
        );
    }

    #[test]
    fn fused_attention_matches_tensor_version_for_both_layouts() {
        let dev = Device::Cpu;
        let (seqs, n, heads, hd) = (3, 11, 2, 8);
        let qkv = Tensor::randn(0f32, 1.0, (seqs * n, 3 * heads * hd), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (heads, n, n), &dev).unwrap();
        for layout in [QkvLayout::Blocks, QkvLayout::Interleaved] {
            for b in [None, Some(&bias)] {
                let got = attention(&qkv, seqs, n, heads, layout, b).unwrap();
                // Reference through the generic path by moving to a non-fused code path.
                let d = heads * hd;
                let r = match layout {
                    QkvLayout::Blocks => qkv
                        .reshape((seqs, n, 3, heads, hd))
                        .unwrap()
                        .permute((2, 0, 3, 1, 4)),
                    QkvLayout::Interleaved => qkv
                        .reshape((seqs, n, heads, 3, hd))
                        .unwrap()
                        .permute((3, 0, 2, 1, 4)),
                }
                .unwrap();
                let (q, k, v) = (
                    r.get(0).unwrap().contiguous().unwrap(),
                    r.get(1).unwrap().contiguous().unwrap(),
                    r.get(2).unwrap().contiguous().unwrap(),
                );
                let mut att = q.matmul(&k.t().unwrap()).unwrap();
                if let Some(b) = b {
                    att = att.broadcast_add(b).unwrap();
                }
                let want = candle_nn::ops::softmax_last_dim(&att)
                    .unwrap()
                    .matmul(&v)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((seqs * n, d))
                    .unwrap();
                assert!(max_diff(&got, &want) < 1e-5, "{layout:?}");
            }
        }
    }
}

/// `x·wᵀ + b (+ residual)`, optionally through GELU, as one GEMM: the destination is
/// pre-filled with the bias (plus the residual) and the GEMM accumulates into it, so neither
/// the bias nor the residual costs a separate pass over the activations.
struct LinearOp {
    bias: std::sync::Arc<Vec<f32>>,
    act: Act,
}

impl LinearOp {
    fn run(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 || self.bias.len() != n {
            candle_core::bail!("linear: x {m}x{k}, w {n}x{k2}, bias {}", self.bias.len());
        }
        let mut dst = Vec::with_capacity(m * n);
        match residual {
            Some(r) => {
                for row in r.chunks_exact(n) {
                    dst.extend(row.iter().zip(self.bias.iter()).map(|(a, b)| a + b));
                }
            }
            None => {
                for _ in 0..m {
                    dst.extend_from_slice(&self.bias);
                }
            }
        }
        let threads = rayon::current_num_threads();
        let par = if threads > 1 && m * n * k > 1 << 16 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: dims checked above; x is m×k row-major, w is n×k row-major (read as its
        // transpose), dst is m×n row-major.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        act_par(&mut dst, self.act);
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }
}

impl candle_core::CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "simcase-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, "linear input")?;
        let w = contiguous(s2, l2, "linear weight")?;
        self.run(x, l1, w, l2, None)
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "simcase-linear-residual"
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
        let x = contiguous(s1, l1, "linear input")?;
        let w = contiguous(s2, l2, "linear weight")?;
        let r = contiguous(s3, l3, "linear residual")?;
        if r.len() != l1.shape().dims2()?.0 * self.bias.len() {
            candle_core::bail!("linear: residual shape mismatch");
        }
        self.run(x, l1, w, l2, Some(r))
    }
}

/// A linear layer in PyTorch's `(out, in)` weight layout, run through [`LinearOp`] on CPU.
#[derive(Clone, Debug)]
pub struct Linear {
    w: Tensor,
    b: Tensor,
    b_host: Option<std::sync::Arc<Vec<f32>>>,
}

impl Linear {
    pub fn new(w: Tensor, b: Tensor) -> candle_core::Result<Self> {
        let w = w.contiguous()?;
        let b_host = if w.device().is_cpu() && w.dtype() == candle_core::DType::F32 {
            Some(std::sync::Arc::new(b.to_vec1::<f32>()?))
        } else {
            None
        };
        Ok(Self { w, b, b_host })
    }

    pub fn weight(&self) -> &Tensor {
        &self.w
    }

    pub fn bias(&self) -> &Tensor {
        &self.b
    }

    /// Scale each output channel: `diag(s)·(x·wᵀ + b)` stays one GEMM.
    pub fn scale_outputs(&self, s: &Tensor) -> candle_core::Result<Self> {
        Self::new(self.w.broadcast_mul(&s.unsqueeze(1)?)?, self.b.mul(s)?)
    }

    /// `act(x·wᵀ + b (+ residual))`, fused into one pass on CPU.
    pub fn apply(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Act,
    ) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        if let (Some(bias), true) = (&self.b_host, x.device().is_cpu()) {
            let op = LinearOp {
                bias: bias.clone(),
                act,
            };
            return match residual {
                Some(r) => x.apply_op3_no_bwd(&self.w, &r.contiguous()?, &op),
                None => x.apply_op2_no_bwd(&self.w, &op),
            };
        }
        let mut y = x.matmul(&self.w.t()?)?.broadcast_add(&self.b)?;
        if let Some(r) = residual {
            y = (y + r)?;
        }
        act_tensor(y, act)
    }

    /// `x·wᵀ + b` for 2-D `x`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, None, Act::None)
    }

    /// `gelu(x·wᵀ + b)`.
    pub fn forward_gelu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, None, Act::Gelu)
    }

    /// `gelu(residual + x·wᵀ + b)`.
    pub fn forward_residual_gelu(
        &self,
        x: &Tensor,
        residual: &Tensor,
    ) -> candle_core::Result<Tensor> {
        self.apply(x, Some(residual), Act::Gelu)
    }

    /// `residual + x·wᵀ + b`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, Some(residual), Act::None)
    }
}

#[cfg(test)]
mod linear_tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_linear_matches_matmul_bias_residual_gelu() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (70, 33), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (19, 33), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 19, &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (70, 19), &dev).unwrap();
        let lin = Linear::new(w.clone(), b.clone()).unwrap();
        let base = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let diff = |a: Tensor, b: Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(diff(lin.forward(&x).unwrap(), base.clone()) < 1e-4);
        assert!(diff(lin.forward_gelu(&x).unwrap(), base.gelu_erf().unwrap()) < 1e-4);
        assert!(diff(lin.forward_residual(&x, &r).unwrap(), (&base + &r).unwrap()) < 1e-4);
    }
}

#[cfg(test)]
mod depthwise_same_tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (112, 0)); // total 1: all of it after
        assert_eq!(same_padding(28, 5, 2), (14, 1)); // total 3: 1 before, 2 after
        assert_eq!(same_padding(14, 5, 1), (14, 2));
        assert_eq!(same_padding(7, 3, 1), (7, 1));
    }

    #[test]
    fn k5_stride2_same_matches_padded_candle_conv_with_relu6() {
        let dev = Device::Cpu;
        let (b, h, w, c) = (2, 9, 8, 4);
        let x = Tensor::randn(0f32, 2.0, (b, h, w, c), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (c, 1, 5, 5), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
        let (oh, ph) = same_padding(h, 5, 2);
        let (ow, pw) = same_padding(w, 5, 2);
        let got = depthwise_conv(&x, &k, &bias, 2, (ph, pw), (oh, ow), Act::Relu6).unwrap();
        let after_h = (oh - 1) * 2 + 5 - h - ph;
        let after_w = (ow - 1) * 2 + 5 - w - pw;
        let want = x
            .pad_with_zeros(1, ph, after_h)
            .unwrap()
            .pad_with_zeros(2, pw, after_w)
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&k, 0, 2, 1, c)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .clamp(0f32, 6f32)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        assert_eq!(got.dims(), want.dims());
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
    }
}
