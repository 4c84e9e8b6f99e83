//! Convolution helpers: the depthwise convolution as a candle op (channels-last, one pass
//! vectorised over channels, by `simcase_kernels::depthwise`), a dense convolution as one GEMM
//! over channels-last patches, BatchNorm folded into a convolution at load, and TensorFlow's
//! "SAME" padding geometry.

use super::activation::act_tensor;
use super::{cpu_f32, kernel_err, F32Kernel, Fused, Linear};
use candle_core::{Layout, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use simcase_kernels::{Act, DwGeometry, Winograd3};

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

/// Depthwise `k×k` convolution with bias on channels-last `(b, h, w, c)` data.
struct DepthwiseConv {
    k: usize,
    stride: usize,
    /// Zeros before the first row / column; the far side is implied by the output size.
    pad: (usize, usize),
    out: (usize, usize),
    act: Act,
}

impl F32Kernel<3> for DepthwiseConv {
    const NAME: &'static str = "simcase-depthwise-conv3";
    const INPUTS: [&'static str; 3] = ["depthwise input", "depthwise kernel", "depthwise bias"];

    /// `x`: `(b, h, w, c)`; `k`: `(k·k, c)`; `bias`: `(c,)`.
    fn run(
        &self,
        [(x, l), (k, _), (bias, _)]: [(&[f32], &Layout); 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let (b, h, w, c) = l.shape().dims4()?;
        let (ho, wo) = self.out;
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
        let out = simcase_kernels::depthwise(&geo, x, k, bias).map_err(kernel_err)?;
        Ok((out, Shape::from((b, ho, wo, c))))
    }
}

/// [`simcase_kernels::MbConv`] as a candle op on `(b, h, w, c)` channels-last input.
struct MbConvOp<'a>(&'a simcase_kernels::MbConv<'a>);

impl F32Kernel<1> for MbConvOp<'_> {
    const NAME: &'static str = "simcase-mbconv";
    const INPUTS: [&'static str; 1] = ["mbconv input"];

    fn run(&self, [(x, l)]: [(&[f32], &Layout); 1]) -> Result<(Vec<f32>, Shape)> {
        let dims = l.shape().dims4()?;
        let out = self.0.forward(x, dims).map_err(kernel_err)?;
        Ok((out, l.shape().clone()))
    }
}

/// An MBConv block made in bands of output rows (see [`simcase_kernels::mbconv`]): `x` is
/// `(b, h, w, c)` channels-last f32 on the CPU.
pub fn mbconv(x: &Tensor, block: &simcase_kernels::MbConv) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Fused(&MbConvOp(block)))
}

/// A dense `k×k` convolution with zero padding on channels-last `(b, h, w, c)` data, run as
/// one matrix product: each output pixel's `k·k·c` input patch is a row (im2col) and the
/// weight, reordered at load to `(out, ky, kx, c)`, is a [`Linear`] layer. The output is
/// channels-last as it comes, with no permute, and the product runs on the GEMM (and the
/// precision) every linear layer runs on. candle's `conv2d` took the channels-first detour.
///
/// A 3×3 convolution with stride 1 and padding 1 runs, at f32, by Winograd's F(2×2, 3×3)
/// instead (`simcase_kernels::winograd`): 16/36 of the multiplications and no patch copy.
/// `litemedsam`'s neck takes a third of the time (`kernel_bench`: 69 → 22 ms on one Zen 4
/// core) and the whole model 3.5% less CPU (46.0 → 44.4 s over 24 images, perf stat).
pub struct DenseConv {
    lin: Linear,
    /// The `(out, in, k, k)` weight as loaded, for candle's convolution off the CPU.
    w: Tensor,
    k: usize,
    stride: usize,
    pad: usize,
    /// The weight's Winograd transform, made at the first call that takes that path.
    winograd: std::sync::OnceLock<Winograd3>,
}

impl DenseConv {
    /// From a PyTorch `(out, in, k, k)` weight and an optional `(out,)` bias.
    pub fn new(w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize) -> Result<Self> {
        let (o, c, k, k2) = w.dims4()?;
        if k != k2 {
            candle_core::bail!("DenseConv: a square kernel is expected, got {k}×{k2}");
        }
        let rows = w.permute((0, 2, 3, 1))?.reshape((o, k * k * c))?;
        let b = match b {
            Some(b) => b.clone(),
            None => Tensor::zeros(o, w.dtype(), w.device())?,
        };
        Ok(Self {
            lin: Linear::new(rows, b)?,
            w: w.clone(),
            k,
            stride,
            pad,
            winograd: std::sync::OnceLock::new(),
        })
    }

    /// Whether a CPU f32 input goes through [`Winograd3`]: a 3×3 kernel, stride 1, padding 1,
    /// at f32 precision (at bf16 and int8 the patches take the linear layer's packed weights).
    fn winograd_takes(&self) -> bool {
        (self.k, self.stride, self.pad) == (3, 1, 1) && crate::precision() == crate::Precision::F32
    }

    /// The weight's Winograd transform, made on the first call.
    fn winograd(&self) -> Result<&Winograd3> {
        if let Some(t) = self.winograd.get() {
            return Ok(t);
        }
        let (o, c, _, _) = self.w.dims4()?;
        let w = self.w.flatten_all()?.to_vec1::<f32>()?;
        let b = self.lin.bias().to_vec1::<f32>()?;
        let t = Winograd3::new(&w, (o, c), &b).map_err(kernel_err)?;
        Ok(self.winograd.get_or_init(|| t))
    }

    /// `x`: `(b, h, w, c)`; returns `(b, h', w', out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (k, s, p) = (self.k, self.stride, self.pad);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("DenseConv: a {h}×{w} input is smaller than the {k}×{k} kernel");
        }
        if !cpu_f32(x) {
            // Elsewhere (a GPU): candle's convolution, channels-first.
            let y = x
                .permute((0, 3, 1, 2))?
                .conv2d(&self.w, p, s, 1, 1)?
                .broadcast_add(&self.lin.bias().reshape((1, (), 1, 1))?)?;
            return y.permute((0, 2, 3, 1))?.contiguous();
        }
        if self.winograd_takes() {
            return x
                .contiguous()?
                .apply_op1_no_bwd(&Fused(&WinogradOp(self.winograd()?)));
        }
        let cols = x.contiguous()?.apply_op1_no_bwd(&Fused(&Patches {
            k,
            stride: s,
            pad: p,
        }))?;
        let (_, ho, wo, _) = cols.dims4()?;
        let y = self.lin.forward(&cols.reshape((b * ho * wo, k * k * c))?)?;
        y.reshape((b, ho, wo, ()))
    }
}

/// [`Winograd3`]'s convolution as a candle op: `(b, h, w, c)` → `(b, h, w, o)`.
struct WinogradOp<'a>(&'a Winograd3);

impl F32Kernel<1> for WinogradOp<'_> {
    const NAME: &'static str = "simcase-winograd-conv3";
    const INPUTS: [&'static str; 1] = ["convolution input"];

    fn run(&self, [(x, l)]: [(&[f32], &Layout); 1]) -> Result<(Vec<f32>, Shape)> {
        let (b, h, w, c) = l.shape().dims4()?;
        if c != self.0.c() {
            candle_core::bail!(
                "convolution: {c} input channels, the kernel takes {}",
                self.0.c()
            );
        }
        let y = self.0.conv(x, (b, h, w)).map_err(kernel_err)?;
        Ok((y, Shape::from((b, h, w, self.0.o()))))
    }
}

/// im2col on channels-last data: `(b, h, w, c)` → `(b, h', w', k·k·c)`, each output pixel's
/// patch in `(ky, kx, c)` order, zeros where it reaches past the edge.
struct Patches {
    k: usize,
    stride: usize,
    pad: usize,
}

impl F32Kernel<1> for Patches {
    const NAME: &'static str = "simcase-patches";
    const INPUTS: [&'static str; 1] = ["convolution input"];

    fn run(&self, [(x, l)]: [(&[f32], &Layout); 1]) -> Result<(Vec<f32>, Shape)> {
        let (b, h, w, c) = l.shape().dims4()?;
        let (k, s, p) = (self.k, self.stride, self.pad);
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let row = wo * k * k * c;
        // Each output row is zeroed (the padding's taps stay zero) and filled while in cache.
        let fill = |by: usize, o: &mut [f32]| -> Result<()> {
            let (bi, yo) = (by / ho, by % ho);
            for ky in 0..k {
                // The input row this tap reads, if inside the image.
                let Some(y) = (yo * s + ky).checked_sub(p).filter(|&y| y < h) else {
                    continue;
                };
                let src = &x[(bi * h + y) * w * c..][..w * c];
                for xo in 0..wo {
                    for kx in 0..k {
                        let Some(xi) = (xo * s + kx).checked_sub(p).filter(|&xi| xi < w) else {
                            continue;
                        };
                        let at = ((xo * k + ky) * k + kx) * c;
                        o[at..at + c].copy_from_slice(&src[xi * c..][..c]);
                    }
                }
            }
            Ok(())
        };
        let out = simcase_kernels::buffer::par_bands(b * ho, row, 1, |_| std::iter::empty(), fill)?;
        Ok((out, Shape::from((b, ho, wo, k * k * c))))
    }
}

/// A depthwise convolution's folded weights: PyTorch's `(c, 1, k, k)` kernel and its bias
/// `(c,)`, with the kernel also tap-major, `(k·k, c)`, as the CPU kernels take it, transposed
/// once when the model loads (it was at every call).
pub struct Depthwise {
    kernel: Tensor,
    taps: Tensor,
    bias: Tensor,
}

impl Depthwise {
    /// `kernel`: `(c, 1, k, k)`, square; `bias`: `(c,)`.
    pub fn new(kernel: Tensor, bias: Tensor) -> Result<Self> {
        let (c, one, k, k2) = kernel.dims4()?;
        if one != 1 || k != k2 || bias.dims() != [c] {
            candle_core::bail!(
                "depthwise: kernel {:?} and bias {:?} are not (c, 1, k, k) and (c,)",
                kernel.dims(),
                bias.dims()
            );
        }
        let taps = kernel.reshape((c, k * k))?.t()?.contiguous()?;
        Ok(Self { kernel, taps, bias })
    }

    /// The kernel tap-major, `(k·k, c)`.
    pub fn taps(&self) -> &Tensor {
        &self.taps
    }

    /// The bias, `(c,)`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Whether the weights are f32 on the CPU (the kernels' form).
    pub fn on_cpu_f32(&self) -> bool {
        cpu_f32(&self.taps) && cpu_f32(&self.bias)
    }
}

/// `x`: `(b, h, w, c)`; a 3 × 3 kernel, padding 1; returns `(b, h', w', c)`, optionally
/// through an exact GELU.
pub fn depthwise_conv3(x: &Tensor, dw: &Depthwise, stride: usize, gelu: bool) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    let out = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
    let act = if gelu { Act::Gelu } else { Act::None };
    depthwise_conv(x, dw, stride, (1, 1), out, act)
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
    dw: &Depthwise,
    stride: usize,
    pad: (usize, usize),
    out: (usize, usize),
    act: Act,
) -> Result<Tensor> {
    let (c, _, k, _) = dw.kernel.dims4()?;
    if cpu_f32(x) {
        let op = DepthwiseConv {
            k,
            stride,
            pad,
            out,
            act,
        };
        x.contiguous()?
            .apply_op3_no_bwd(&dw.taps, &dw.bias, &Fused(&op))
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
            .conv2d(&dw.kernel, 0, stride, 1, c)?
            .broadcast_add(&dw.bias.reshape((1, c, 1, 1))?)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        act_tensor(y, act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
            let dw = Depthwise::new(k.clone(), bias.clone()).unwrap();
            let got = depthwise_conv3(&x, &dw, stride, false).unwrap();
            let got_gelu = depthwise_conv3(&x, &dw, stride, true).unwrap();
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

    /// The im2col product equals candle's channels-first convolution: kernel 1, 3 and 5,
    /// stride 1 and 2, padding 0 to 2, with and without a bias, on odd sizes so that the
    /// last row and column of patches reach past the edge. The case (3, 1, 1) runs through
    /// the Winograd path (the process is at f32), with a last tile row and column cut by
    /// the odd sides.
    #[test]
    fn dense_conv_matches_candle_conv2d() {
        let dev = Device::Cpu;
        let (b, h, w, c, o) = (2, 9, 7, 5, 6);
        let x = Tensor::randn(0f32, 1.0, (b, h, w, c), &dev).unwrap();
        for (k, stride, pad) in [(3, 1, 1), (3, 2, 1), (3, 1, 0), (5, 2, 2), (1, 1, 0)] {
            let wt = Tensor::randn(0f32, 0.5, (o, c, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
            for with_bias in [false, true] {
                let conv = DenseConv::new(&wt, with_bias.then_some(&bias), stride, pad).unwrap();
                let got = conv.forward(&x).unwrap();
                let mut want = x
                    .permute((0, 3, 1, 2))
                    .unwrap()
                    .conv2d(&wt, pad, stride, 1, 1)
                    .unwrap();
                if with_bias {
                    want = want
                        .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
                        .unwrap();
                }
                let want = want.permute((0, 2, 3, 1)).unwrap();
                assert_eq!(got.dims(), want.dims(), "k {k} stride {stride} pad {pad}");
                let d = super::super::max_diff(&got, &want.contiguous().unwrap());
                assert!(d < 1e-4, "k {k} stride {stride} pad {pad}: {d}");
            }
        }
    }

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
        let dw = Depthwise::new(k.clone(), bias.clone()).unwrap();
        let got = depthwise_conv(&x, &dw, 2, (ph, pw), (oh, ow), Act::Relu6).unwrap();
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
