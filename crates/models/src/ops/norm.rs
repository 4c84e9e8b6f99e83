//! Layer norm over the last dimension as a candle op, computed in two passes by
//! `simcase_kernels::layer_norm` (candle's fused kernel uses `E[x²] − E[x]²` in f32, which
//! loses digits on ViT residual streams whose outlier channels reach the hundreds).

use super::{cpu_f32, kernel_err, F32Kernel, Fused};
use candle_core::{Layout, Result, Shape, Tensor, D};

struct LayerNorm {
    eps: f32,
}

impl F32Kernel<3> for LayerNorm {
    const NAME: &'static str = "simcase-layer-norm";
    const INPUTS: [&'static str; 3] = ["layer-norm input", "layer-norm weight", "layer-norm bias"];

    fn run(&self, [(x, l), (w, _), (b, _)]: [(&[f32], &Layout); 3]) -> Result<(Vec<f32>, Shape)> {
        let out = simcase_kernels::layer_norm(x, w, b, self.eps).map_err(kernel_err)?;
        Ok((out, l.shape().clone()))
    }
}

/// `(x − mean) / sqrt(var + eps) · w + b` over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?
            .apply_op3_no_bwd(w, b, &Fused(&LayerNorm { eps: eps as f32 }))
    } else {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(w)?
            .broadcast_add(b)
    }
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
    fn mismatched_weight_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 4), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::ones(3, candle_core::DType::F32, &dev).unwrap();
        let e = layer_norm(&x, &w, &w, 1e-6).unwrap_err().to_string();
        assert!(e.contains("whole rows of 3"), "{e}");
    }
}
