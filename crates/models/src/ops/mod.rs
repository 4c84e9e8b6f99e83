//! candle adapters for the fused CPU kernels the encoders need and candle lacks (or computes
//! too loosely). The numbers come from `simcase-kernels`; each op here checks candle's
//! layouts, calls the kernel on CPU f32, and has a plain-candle fallback so other devices
//! still work.
//!
//! - `norm.rs`: two-pass layer norm.
//! - `activation.rs`: `gelu(x + bias | residual)` and the tensor form of each [`Act`].
//! - `conv.rs`: depthwise convolution (channels-last), BatchNorm folding, "SAME" padding.
//! - `attention.rs`: fused multi-head attention from a qkv projection, over sequences or the
//!   windows of a grid.
//! - `linear.rs`: [`Linear`], one GEMM with bias, residual and activation fused.
//! - `pool.rs`: the mean over a sequence's tokens.

mod activation;
mod attention;
mod conv;
mod linear;
mod norm;
mod pool;

pub use activation::bias_gelu;
pub use attention::{
    attention, attention_first, window_attention, window_attention_block, WindowBias,
};
pub(crate) use conv::conv_bn;
pub use conv::{depthwise_conv, depthwise_conv3, mbconv, same_padding, DenseConv, Depthwise};
pub use linear::{DenseLinear, Linear};
pub use norm::layer_norm;
pub use pool::mean_tokens;
pub use simcase_kernels::resize::bicubic_resize_planes;
pub use simcase_kernels::{Act, QkvLayout, WindowGrid};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape};

/// A fused CPU kernel over `N` f32 inputs, as one op of this module computes it: [`Fused`]
/// does the storage and layout checks that every op shares, then calls [`F32Kernel::run`].
trait F32Kernel<const N: usize> {
    /// candle's name of the op.
    const NAME: &'static str;
    /// What each input is, for the error when one is not contiguous.
    const INPUTS: [&'static str; N];
    /// The output values and shape from each input's contiguous data and its layout.
    fn run(&self, inputs: [(&[f32], &Layout); N]) -> Result<(Vec<f32>, Shape)>;
}

/// A kernel as a candle op (`CustomOp1/2/3`, by the kernel's arity).
struct Fused<'a, K>(&'a K);

impl<K> Fused<'_, K> {
    /// Each input's f32 data (contiguous, or an error naming it), then the kernel.
    fn cpu<const N: usize>(
        &self,
        inputs: [(&CpuStorage, &Layout); N],
    ) -> Result<(CpuStorage, Shape)>
    where
        K: F32Kernel<N>,
    {
        let mut views: [(&[f32], &Layout); N] = inputs.map(|(_, l)| (&[][..], l));
        for (view, ((s, l), what)) in views.iter_mut().zip(inputs.into_iter().zip(K::INPUTS)) {
            view.0 = contiguous(s, l, what)?;
        }
        let (out, shape) = self.0.run(views)?;
        Ok((CpuStorage::F32(out), shape))
    }
}

impl<K: F32Kernel<1>> CustomOp1 for Fused<'_, K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu([(s, l)])
    }
}

impl<K: F32Kernel<2>> CustomOp2 for Fused<'_, K> {
    fn name(&self) -> &'static str {
        <K as F32Kernel<2>>::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu([(s1, l1), (s2, l2)])
    }
}

impl<K: F32Kernel<3>> CustomOp3 for Fused<'_, K> {
    fn name(&self) -> &'static str {
        <K as F32Kernel<3>>::NAME
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
        self.cpu([(s1, l1), (s2, l2), (s3, l3)])
    }
}

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

/// The largest absolute difference between two tensors of one shape (the ops' tests).
#[cfg(test)]
fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
