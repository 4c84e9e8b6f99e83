//! candle adapters for the fused CPU kernels the encoders need and candle lacks (or computes
//! too loosely). The numbers come from `simcase-kernels`; each op here checks candle's
//! layouts, calls the kernel on CPU f32, and has a plain-candle fallback so other devices
//! still work.
//!
//! - `norm.rs`: two-pass layer norm.
//! - `activation.rs`: `gelu(x + bias | residual)` and the tensor form of each [`Act`].
//! - `conv.rs`: depthwise convolution (channels-last), BatchNorm folding, "SAME" padding.
//! - `attention.rs`: fused multi-head attention from a qkv projection.
//! - `linear.rs`: [`Linear`], one GEMM with bias, residual and activation fused.

mod activation;
mod attention;
mod conv;
mod linear;
mod norm;

pub use activation::bias_gelu;
pub use attention::attention;
pub(crate) use conv::conv_bn;
pub use conv::{depthwise_conv, depthwise_conv3, same_padding};
pub use linear::Linear;
pub use norm::layer_norm;
pub use simcase_kernels::resize::bicubic_resize_planes;
pub use simcase_kernels::{Act, QkvLayout};

use candle_core::{CpuStorage, Layout, Result};

/// The f32 data of a contiguous CPU tensor, or an error naming `what`.
fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// A kernel's refusal as a candle error.
fn kernel_err(e: simcase_kernels::KernelError) -> candle_core::Error {
    candle_core::Error::msg(e)
}

/// Whether `x` takes the fused CPU path.
fn cpu_f32(x: &candle_core::Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}
