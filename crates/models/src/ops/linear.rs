//! [`Linear`]: a linear layer in PyTorch's `(out, in)` weight layout that runs on CPU as one
//! GEMM with the bias, the residual and the activation fused (`simcase_kernels::linear`), and
//! as plain candle elsewhere.

use super::activation::act_tensor;
use super::{kernel_err, F32Kernel, Fused};
use candle_core::{Layout, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use simcase_kernels::{Act, Bf16Path, I8Path, PackedBf16, PackedF32, PackedI8};
use std::sync::{Arc, OnceLock};

/// `act(x·wᵀ + b (+ residual))` as one candle op.
struct LinearOp<'a> {
    bias: std::sync::Arc<Vec<f32>>,
    act: Act,
    /// The weight packed for the process's precision, used in place of the f32 input.
    packed: Option<PackedRef<'a>>,
}

impl LinearOp<'_> {
    /// `act(x·wᵀ + b (+ residual))` after checking that the shapes chain; `w` is the `(in,
    /// out)` weight, absent when the layer keeps only its packed form.
    fn fused(
        &self,
        (x, xl): (&[f32], &Layout),
        w: Option<(&[f32], &Layout)>,
        residual: Option<&[f32]>,
    ) -> Result<(Vec<f32>, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (b, act) = (&self.bias[..], self.act);
        let n = b.len();
        let dst = match (self.packed, w) {
            (Some(PackedRef::Bf16(p, path)), _) => {
                simcase_kernels::linear_bf16(x, (m, k), p, b, residual, act, path)
            }
            (Some(PackedRef::I8(p, path)), _) => {
                simcase_kernels::linear_i8(x, (m, k), p, b, residual, act, path)
            }
            (Some(PackedRef::F32(p)), _) => {
                simcase_kernels::linear_packed(x, (m, k), p, b, residual, act)
            }
            (None, Some((w, wl))) => {
                // The weight comes as `(in, out)` ([`Linear::new`]).
                let (k2, n2) = wl.shape().dims2()?;
                if k != k2 || n2 != n {
                    candle_core::bail!("linear: x {m}x{k}, w {n2}x{k2}, bias {n}");
                }
                simcase_kernels::linear(x, (m, k), w, b, residual, act)
            }
            (None, None) => candle_core::bail!("linear: no weight for x {m}x{k}"),
        }
        .map_err(kernel_err)?;
        Ok((dst, Shape::from((m, n))))
    }
}

impl F32Kernel<2> for LinearOp<'_> {
    const NAME: &'static str = "simcase-linear";
    const INPUTS: [&'static str; 2] = ["linear input", "linear weight"];

    fn run(&self, [x, w]: [(&[f32], &Layout); 2]) -> Result<(Vec<f32>, Shape)> {
        self.fused(x, Some(w), None)
    }
}

impl F32Kernel<3> for LinearOp<'_> {
    const NAME: &'static str = "simcase-linear-residual";
    const INPUTS: [&'static str; 3] = ["linear input", "linear weight", "linear residual"];

    fn run(&self, [x, w, (r, _)]: [(&[f32], &Layout); 3]) -> Result<(Vec<f32>, Shape)> {
        self.fused(x, Some(w), Some(r))
    }
}

/// [`LinearOp`] on a weight held only in panels: the input (and the residual) alone.
struct PackedOp<'a>(LinearOp<'a>);

impl F32Kernel<1> for PackedOp<'_> {
    const NAME: &'static str = "simcase-linear-packed";
    const INPUTS: [&'static str; 1] = ["linear input"];

    fn run(&self, [x]: [(&[f32], &Layout); 1]) -> Result<(Vec<f32>, Shape)> {
        self.0.fused(x, None, None)
    }
}

impl F32Kernel<2> for PackedOp<'_> {
    const NAME: &'static str = "simcase-linear-packed-residual";
    const INPUTS: [&'static str; 2] = ["linear input", "linear residual"];

    fn run(&self, [x, (r, _)]: [(&[f32], &Layout); 2]) -> Result<(Vec<f32>, Shape)> {
        self.0.fused(x, None, Some(r))
    }
}

/// A weight packed for the process's precision, with the path it runs on.
#[derive(Clone, Copy)]
enum PackedRef<'a> {
    Bf16(&'a PackedBf16, Bf16Path),
    I8(&'a PackedI8, I8Path),
    /// f32 in panels, on the AVX2 path ([`simcase_kernels::packed_f32`]).
    F32(&'a PackedF32),
}

/// How a [`Linear`] holds its f32 weight.
#[derive(Clone, Debug)]
enum Weight {
    /// `(in, out)` contiguous: the layout `simcase_kernels::linear` takes (consecutive output
    /// channels adjacent, which the `gemm` crate's packing reads in order), and `x·wt` on other
    /// devices. The `(out, in)` weight is its transpose, a view.
    Dense(Tensor),
    /// Only in panels (f32 on CPU where the AVX2 path is selected,
    /// [`simcase_kernels::packed_f32::available`]): a second, dense copy would cost as much
    /// memory again (88 MB for `dinov2-s`). [`Linear::weight`] unpacks it.
    Packed(Arc<PackedF32>),
}

/// A linear layer's `(out, in)` weight and `(out,)` bias as loaded, before [`Linear::new`]
/// packs them: what load-time folding (q, k and v concatenated, per-channel scales) works on,
/// so that each layer is packed once, from its final weight. Folding a built [`Linear`]
/// instead unpacked and packed its weight again at every step.
#[derive(Clone, Debug)]
pub struct DenseLinear {
    /// `(out, in)`.
    pub w: Tensor,
    /// `(out,)`.
    pub b: Tensor,
}

impl DenseLinear {
    /// `vb`'s `weight` `(out_dim, in_dim)` and `bias` `(out_dim,)`.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            w: vb.get((out_dim, in_dim), "weight")?,
            b: vb.get(out_dim, "bias")?,
        })
    }

    /// The layers' outputs one after another, as one layer (`[q | k | v]`).
    pub fn cat(parts: &[DenseLinear]) -> Result<Self> {
        let (w, b): (Vec<&Tensor>, Vec<&Tensor>) = parts.iter().map(|p| (&p.w, &p.b)).unzip();
        Ok(Self {
            w: Tensor::cat(&w, 0)?,
            b: Tensor::cat(&b, 0)?,
        })
    }

    /// Each output channel scaled by `s`: `diag(s)·(x·wᵀ + b)`.
    pub fn scale_outputs(self, s: &Tensor) -> Result<Self> {
        Ok(Self {
            w: self.w.broadcast_mul(&s.unsqueeze(1)?)?,
            b: self.b.mul(s)?,
        })
    }

    /// The layer, packed where the process multiplies packed weights.
    pub fn build(self) -> Result<Linear> {
        Linear::new(self.w, self.b)
    }
}

/// A linear layer in PyTorch's `(out, in)` weight layout, run on CPU through [`LinearOp`]
/// (a dense weight) or [`PackedOp`] (panels only).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Weight,
    b: Tensor,
    b_host: Option<std::sync::Arc<Vec<f32>>>,
    /// The weight as bf16, packed at its first use at bf16 ([`crate::precision`]).
    bf16: Arc<OnceLock<PackedBf16>>,
    /// The weight as int8, packed at its first use at int8.
    i8: Arc<OnceLock<PackedI8>>,
}

impl Linear {
    /// A layer from an `(out, in)` weight and an `(out,)` bias.
    pub fn new(w: Tensor, b: Tensor) -> candle_core::Result<Self> {
        let host = w.device().is_cpu() && w.dtype() == candle_core::DType::F32;
        let b_host = if host {
            Some(std::sync::Arc::new(b.to_vec1::<f32>()?))
        } else {
            None
        };
        let weight = if host && simcase_kernels::packed_f32::available() {
            let (n, k) = w.dims2()?;
            let data = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            Weight::Packed(Arc::new(PackedF32::pack(&data, n, k).map_err(kernel_err)?))
        } else {
            Weight::Dense(w.t()?.contiguous()?)
        };
        Ok(Self {
            weight,
            b,
            b_host,
            bf16: Arc::default(),
            i8: Arc::default(),
        })
    }

    /// The f32 weight in panels and the bias, where the process runs f32 on the AVX2 path
    /// (the weight packed, [`simcase_kernels::packed_f32::available`]): what a fused block of
    /// packed products takes (`simcase_kernels::MbConv`). `None` elsewhere.
    pub fn f32_panels(&self) -> Option<(&PackedF32, &[f32])> {
        match (&self.weight, &self.b_host, crate::precision()) {
            (Weight::Packed(p), Some(b), crate::Precision::F32) => Some((p, &b[..])),
            _ => None,
        }
    }

    /// The weight packed for the process's precision (packed once, at the first call), or
    /// `None` where `simcase_kernels::linear` reads the dense f32 weight.
    fn packed(&self) -> candle_core::Result<Option<PackedRef<'_>>> {
        let f32_panels = match &self.weight {
            Weight::Packed(p) => Some(PackedRef::F32(p)),
            Weight::Dense(_) => None,
        };
        Ok(match crate::precision() {
            crate::Precision::F32 => f32_panels,
            crate::Precision::Bf16 => match simcase_kernels::bf16_path() {
                Some(path) => Some(PackedRef::Bf16(
                    self.pack(&self.bf16, PackedBf16::pack)?,
                    path,
                )),
                None => f32_panels,
            },
            crate::Precision::Int8 => match simcase_kernels::i8_path() {
                Some(path) => Some(PackedRef::I8(self.pack(&self.i8, PackedI8::pack)?, path)),
                None => f32_panels,
            },
        })
    }

    /// `cell`'s packed weight, packed by `pack(w, n, k)` on the first call.
    fn pack<'s, P>(
        &self,
        cell: &'s OnceLock<P>,
        pack: fn(&[f32], usize, usize) -> std::result::Result<P, simcase_kernels::KernelError>,
    ) -> candle_core::Result<&'s P> {
        if let Some(p) = cell.get() {
            return Ok(p);
        }
        let (n, k) = (self.out_features(), self.in_features());
        let w = match &self.weight {
            Weight::Packed(p) => p.unpack(),
            Weight::Dense(wt) => wt.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
        };
        let packed = pack(&w, n, k).map_err(kernel_err)?;
        Ok(cell.get_or_init(|| packed))
    }

    /// The `(out, in)` weight (unpacked, as a new tensor, when the layer keeps only panels).
    pub fn weight(&self) -> candle_core::Result<Tensor> {
        match &self.weight {
            Weight::Dense(wt) => wt.t(),
            Weight::Packed(p) => Tensor::from_vec(p.unpack(), (p.n(), p.k()), self.b.device()),
        }
    }

    /// Output channels.
    pub fn out_features(&self) -> usize {
        match &self.weight {
            Weight::Dense(wt) => wt.dims()[1],
            Weight::Packed(p) => p.n(),
        }
    }

    /// Inputs per output.
    pub fn in_features(&self) -> usize {
        match &self.weight {
            Weight::Dense(wt) => wt.dims()[0],
            Weight::Packed(p) => p.k(),
        }
    }

    /// The `(out,)` bias.
    pub fn bias(&self) -> &Tensor {
        &self.b
    }

    /// Scale each output channel: `diag(s)·(x·wᵀ + b)` stays one GEMM.
    pub fn scale_outputs(&self, s: &Tensor) -> candle_core::Result<Self> {
        DenseLinear {
            w: self.weight()?,
            b: self.b.clone(),
        }
        .scale_outputs(s)?
        .build()
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
                packed: self.packed()?,
            };
            let r = residual.map(Tensor::contiguous).transpose()?;
            return match (&self.weight, r) {
                (Weight::Dense(wt), Some(r)) => x.apply_op3_no_bwd(wt, &r, &Fused(&op)),
                (Weight::Dense(wt), None) => x.apply_op2_no_bwd(wt, &Fused(&op)),
                (Weight::Packed(_), Some(r)) => x.apply_op2_no_bwd(&r, &Fused(&PackedOp(op))),
                (Weight::Packed(_), None) => x.apply_op1_no_bwd(&Fused(&PackedOp(op))),
            };
        }
        let wt = match &self.weight {
            Weight::Dense(wt) => wt.clone(),
            // Panels are made only for a CPU weight, whose bias is then on the host: this arm
            // is an input on another device, which candle refuses below as it did before.
            Weight::Packed(_) => self.weight()?.t()?,
        };
        let mut y = x.matmul(&wt)?.broadcast_add(&self.b)?;
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
mod tests {
    use super::super::max_diff;
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
        let diff = |a: Tensor, b: Tensor| max_diff(&a, &b);
        assert!(diff(lin.forward(&x).unwrap(), base.clone()) < 1e-4);
        assert!(diff(lin.forward_gelu(&x).unwrap(), base.gelu_erf().unwrap()) < 1e-4);
        assert!(diff(lin.forward_residual(&x, &r).unwrap(), (&base + &r).unwrap()) < 1e-4);
    }

    /// However the layer holds its weight (panels only on the AVX2 path), it gives it back
    /// exactly, with its shape, and scaling its outputs scales the product.
    #[test]
    fn weight_comes_back_and_scaling_scales() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (37, 20), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 37, &dev).unwrap();
        let lin = Linear::new(w.clone(), b).unwrap();
        assert_eq!(
            matches!(lin.weight, Weight::Packed(_)),
            simcase_kernels::packed_f32::available()
        );
        assert_eq!((lin.out_features(), lin.in_features()), (37, 20));
        let back = lin.weight().unwrap();
        assert_eq!(back.dims(), &[37, 20]);
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let s = Tensor::randn(0f32, 1.0, 37, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (9, 20), &dev).unwrap();
        let want = lin.forward(&x).unwrap().broadcast_mul(&s).unwrap();
        let got = lin.scale_outputs(&s).unwrap().forward(&x).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
    }

    /// Folding at load before the layer is built (q, k and v concatenated, then scaled) gives
    /// the layer built from the folded weight and bias written out by hand, bit for bit, and
    /// the layer that folding the built parts gave before (`Linear::scale_outputs` on their
    /// unpacked concatenation).
    #[test]
    fn folding_before_building_equals_folding_built_layers() {
        let dev = Device::Cpu;
        let part = || DenseLinear {
            w: Tensor::randn(0f32, 1.0, (24, 40), &dev).unwrap(),
            b: Tensor::randn(0f32, 1.0, 24, &dev).unwrap(),
        };
        let parts = [part(), part(), part()];
        let s = Tensor::randn(0f32, 1.0, 72, &dev).unwrap();
        let (ws, bs): (Vec<&Tensor>, Vec<&Tensor>) = parts.iter().map(|p| (&p.w, &p.b)).unzip();
        let by_hand = Linear::new(
            Tensor::cat(&ws, 0)
                .unwrap()
                .broadcast_mul(&s.unsqueeze(1).unwrap())
                .unwrap(),
            (Tensor::cat(&bs, 0).unwrap() * &s).unwrap(),
        )
        .unwrap();
        let built: Vec<Linear> = parts.iter().map(|p| p.clone().build().unwrap()).collect();
        let weights: Vec<Tensor> = built.iter().map(|l| l.weight().unwrap()).collect();
        let biases: Vec<&Tensor> = built.iter().map(Linear::bias).collect();
        let old = Linear::new(
            Tensor::cat(&weights, 0).unwrap(),
            Tensor::cat(&biases, 0).unwrap(),
        )
        .unwrap()
        .scale_outputs(&s)
        .unwrap();
        let new = DenseLinear::cat(&parts)
            .unwrap()
            .scale_outputs(&s)
            .unwrap()
            .build()
            .unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!((new.out_features(), new.in_features()), (72, 40));
        let x = Tensor::randn(0f32, 1.0, (11, 40), &dev).unwrap();
        for other in [&by_hand, &old] {
            assert_eq!(bits(&new.weight().unwrap()), bits(&other.weight().unwrap()));
            assert_eq!(bits(new.bias()), bits(other.bias()));
            assert_eq!(
                bits(&new.forward(&x).unwrap()),
                bits(&other.forward(&x).unwrap())
            );
        }
    }
}
