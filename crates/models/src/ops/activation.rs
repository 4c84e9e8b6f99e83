//! Activations as candle ops: `gelu(x + y)` fused in one pass on CPU (by
//! `simcase_kernels::gelu_add`), and the plain-tensor form of each [`Act`] for other devices.

use super::{cpu_f32, kernel_err, F32Kernel, Fused};
use candle_core::{Layout, Result, Shape, Tensor};
use simcase_kernels::Act;

/// `act(y)` with candle tensor ops (the non-CPU fallback of the fused layers).
pub(super) fn act_tensor(y: Tensor, act: Act) -> Result<Tensor> {
    match act {
        Act::None => Ok(y),
        Act::Gelu => y.gelu_erf(),
        Act::Relu6 => y.clamp(0f32, 6f32),
        Act::QuickGelu => y.clone() * candle_nn::ops::sigmoid(&(y * 1.702)?)?,
        Act::Relu => y.relu(),
    }
}

/// Exact (erf) GELU of `x + bias`, in one pass.
struct BiasGelu;

impl F32Kernel<2> for BiasGelu {
    const NAME: &'static str = "simcase-bias-gelu";
    const INPUTS: [&'static str; 2] = ["gelu input", "gelu bias"];

    fn run(&self, [(x, l), (b, _)]: [(&[f32], &Layout); 2]) -> Result<(Vec<f32>, Shape)> {
        let mut out = x.to_vec();
        simcase_kernels::gelu_add(&mut out, b).map_err(kernel_err)?;
        Ok((out, l.shape().clone()))
    }
}

/// `gelu(x + y)` with exact GELU; `y` is a bias (the size of the last dimension) or a
/// tensor of `x`'s shape (a residual).
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op2_no_bwd(bias, &Fused(&BiasGelu))
    } else {
        x.broadcast_add(bias)?.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::*;
    use candle_core::Device;

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
    fn a_bias_that_does_not_divide_the_input_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 4), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(5, candle_core::DType::F32, &dev).unwrap();
        let e = bias_gelu(&x, &b).unwrap_err().to_string();
        assert!(e.contains("bias length 5 does not divide"), "{e}");
    }
}
