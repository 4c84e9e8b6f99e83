//! Layer norm over the last dimension as a candle op, computed in two passes by
//! `simcase_kernels::layer_norm` (candle's fused kernel uses `E[x²] − E[x]²` in f32, which
//! loses digits on ViT residual streams whose outlier channels reach the hundreds).

use super::{contiguous, cpu_f32, kernel_err};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};

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
        let mut out = vec![0f32; x.len()];
        simcase_kernels::layer_norm(&mut out, x, w, b, self.eps).map_err(kernel_err)?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `(x − mean) / sqrt(var + eps) · w + b` over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if cpu_f32(x) {
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
