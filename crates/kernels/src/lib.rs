//! Numeric CPU kernels shared by `simcase-models` and `simcase-index`, behind one runtime
//! dispatch over AVX-512, AVX2+FMA and portable code (`SIMCASE_KERNELS` forces a path).
//!
//! - [`dispatch`]: the instruction sets, the CPU probe, the environment variable, the table.
//! - `portable.rs`, `avx2.rs`, `avx512.rs`: one file per instruction set, each a table of
//!   the same row kernels (plus hand-written intrinsics where the compiler's loops are not
//!   enough: the dot product).
//! - By concern: `reduce.rs` (sum, max, dot in eight lanes), `compact.rs` (dot products
//!   with f16 and i8 rows, for compact vector files), [`norm`] (layer norm),
//!   [`activation`] (GELU, QuickGELU, ReLU, ReLU6, `erf`, `exp`), `softmax.rs`, [`buffer`] (output
//!   buffers pre-filled or written in parallel), [`heap`] (malloc keeping freed blocks for the
//!   next forward pass), [`depthwise`] (depthwise convolution), [`attention`] (fused
//!   multi-head attention), [`linear`] (fused linear layer), [`gemm`] (the checked sgemm every
//!   matrix product goes through), [`packed_f32`] (f32 weights packed once, on `gemm`'s AVX2
//!   micro-kernels), [`winograd`] (3×3 convolutions by Winograd's F(2×2, 3×3)),
//!   [`resize`] (bicubic resize).
//!
//! The parallel entry points (`layer_norm`, `gelu_add`, `attention`, …) split work with rayon
//! and run the selected path's row kernels; [`kernels`] gives the row kernels themselves.

/// Instantiates the row kernels for one instruction set with FMA: each generic
/// `#[inline(always)]` kernel is wrapped in a `#[target_feature]` function, so the compiler
/// vectorises it for those features (the `erf` and `exp` behind GELU, QuickGELU and softmax
/// with fused multiply-adds), and the wrappers go in a [`Kernels`] table named `TABLE`.
macro_rules! isa_table {
    ($isa:expr, $features:literal, $dot:ident, $dot_f16:ident, $dot_i8:ident) => {
        #[target_feature(enable = $features)]
        fn layer_norm_rows(
            o: &mut [std::mem::MaybeUninit<f32>],
            x: &[f32],
            w: &[f32],
            b: &[f32],
            eps: f32,
        ) {
            crate::norm::layer_norm_rows(o, x, w, b, eps)
        }
        #[target_feature(enable = $features)]
        fn gelu_rows(x: &mut [f32], bias: Option<&[f32]>) {
            crate::activation::gelu_rows::<true>(x, bias)
        }
        #[target_feature(enable = $features)]
        fn act_rows(x: &mut [f32], act: crate::activation::Act) {
            crate::activation::act_rows::<true>(x, act)
        }
        #[target_feature(enable = $features)]
        fn quantise_row(x: &[f32], out: &mut [u8]) -> (f32, i32) {
            crate::int8::quantise_row(x, out)
        }
        #[target_feature(enable = $features)]
        fn softmax_rows(s: &mut [f32], n: usize, bias: Option<&[f32]>) {
            crate::softmax::softmax_rows::<true>(s, n, bias)
        }
        #[target_feature(enable = $features)]
        fn depthwise_row(
            g: &crate::depthwise::DwGeometry,
            x: &[f32],
            k: &[f32],
            bias: &[f32],
            row: usize,
            out: &mut [std::mem::MaybeUninit<f32>],
        ) {
            crate::depthwise::depthwise_row::<true>(g, x, k, bias, row, out)
        }

        /// This instruction set's table. Only [`crate::Kernels::for_isa`] hands it out, after
        /// finding every feature it is compiled for on the CPU.
        pub(crate) static TABLE: crate::dispatch::Kernels = crate::dispatch::Kernels {
            isa: $isa,
            // SAFETY: (this and each entry below) the table is reached only through
            // `Kernels::for_isa`, which checks `Isa::is_available` (the CPU has every feature in
            // `$features`) before handing it out, so the `#[target_feature]` calls are sound.
            dot: |a, b| unsafe { $dot(a, b) },
            // SAFETY: as above (`Isa::features` includes F16C for these paths).
            dot_f16: |q, x| unsafe { $dot_f16(q, x) },
            // SAFETY: as above.
            dot_i8: |q, x| unsafe { $dot_i8(q, x) },
            // SAFETY: as above.
            layer_norm_rows: |o, x, w, b, eps| unsafe { layer_norm_rows(o, x, w, b, eps) },
            // SAFETY: as above.
            gelu_rows: |x, bias| unsafe { gelu_rows(x, bias) },
            // SAFETY: as above.
            act_rows: |x, act| unsafe { act_rows(x, act) },
            // SAFETY: as above.
            softmax_rows: |s, n, bias| unsafe { softmax_rows(s, n, bias) },
            // SAFETY: as above.
            quantise_row: |x, out| unsafe { quantise_row(x, out) },
            // SAFETY: as above.
            depthwise_row: |g, x, k, bias, row, out| unsafe {
                depthwise_row(g, x, k, bias, row, out)
            },
        };
    };
}
pub(crate) use isa_table;

pub mod activation;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod bf16;
pub mod buffer;
mod compact;
pub mod depthwise;
pub mod dispatch;
mod error;
pub mod gemm;
pub mod heap;
pub mod int8;
pub mod linear;
pub mod mbconv;
pub mod norm;
pub mod packed_f32;
mod panels;
mod portable;
mod reduce;
pub mod resize;
mod softmax;
pub mod winograd;

pub use activation::{activate, gelu_add, Act};
pub use attention::{
    attention, attention_first, by_window, window_attention, window_attention_block,
    window_attention_projected, OutProjection, QkvLayout, WindowGrid,
};
pub use bf16::{bf16_path, Bf16Path, PackedBf16};
pub use compact::{f16_bits, f16_value};
pub use depthwise::{depthwise, DwGeometry};
pub use dispatch::{dot, dot_f16, dot_i8, kernels, selection, Isa, Kernels, Selection, ENV};
pub use error::KernelError;
pub use gemm::{sgemm, MatMut, MatRef, Threads};
pub use int8::{i8_path, I8Path, PackedI8};
pub use linear::{linear, linear_bf16, linear_i8, linear_packed};
pub use mbconv::MbConv;
pub use norm::layer_norm;
pub use packed_f32::PackedF32;
pub use reduce::mean_rows;
pub use winograd::Winograd3;
