//! The portable path: the kernels as plain Rust, compiled for the target's baseline. It is the
//! reference every other path is tested against, and the only path off x86-64.

use crate::dispatch::{Isa, Kernels};

/// The portable table: safe functions, so it needs no CPU check.
pub(crate) static TABLE: Kernels = Kernels {
    isa: Isa::Portable,
    dot: crate::reduce::dot_lanes,
    dot_f16: crate::compact::dot_f16_lanes,
    dot_i8: crate::compact::dot_i8_lanes,
    layer_norm_rows: crate::norm::layer_norm_rows,
    gelu_rows: crate::activation::gelu_rows::<false>,
    act_rows: crate::activation::act_rows::<false>,
    softmax_rows: crate::softmax::softmax_rows::<false>,
    quantise_row: crate::int8::quantise_row,
    depthwise_row: crate::depthwise::depthwise_row::<false>,
};
