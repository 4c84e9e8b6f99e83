//! Micro-benchmark: GEMM rate of the fused linear op on DINOv2-S's shapes (batch 1 and 16).
use candle_core::{DType, Device, Tensor};
use simcase_models::ops::Linear;
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    simcase_models::init_runtime();
    let d = Device::Cpu;
    for b in [1usize, 16] {
        let m = b * 257;
        for (name, k, n) in [
            ("qkv", 384, 1152),
            ("proj", 384, 384),
            ("fc1", 384, 1536),
            ("fc2", 1536, 384),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &d)?;
            let lin = Linear::new(
                Tensor::randn(0f32, 1.0, (n, k), &d)?,
                Tensor::zeros(n, DType::F32, &d)?,
            )?;
            lin.forward(&x)?;
            let reps = if b == 1 { 50 } else { 5 };
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(lin.forward(&x)?);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "b={b:<2} {name:<5} {m}x{k}x{n}: {:>6.1} GFLOP/s",
                2.0 * (m * k * n) as f64 / s / 1e9
            );
        }
    }
    Ok(())
}
