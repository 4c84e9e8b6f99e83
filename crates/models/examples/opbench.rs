//! Micro-benchmark of the ops a ViT-S/14 block spends its time in (batch 16, 257 tokens).
use candle_core::{Device, Tensor};
use std::time::Instant;

fn time<F: FnMut() -> Tensor>(name: &str, flops: f64, mut f: F) {
    f();
    let t = Instant::now();
    let n = 5;
    for _ in 0..n {
        std::hint::black_box(f());
    }
    let s = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "{name:<28} {:>8.2} ms  {:>7.1} GFLOP/s",
        s * 1e3,
        flops / s / 1e9
    );
}

fn main() -> candle_core::Result<()> {
    let d = Device::Cpu;
    let (b, n, c) = (16usize, 257usize, 384usize);
    let x = Tensor::randn(0f32, 1.0, (b * n, c), &d)?;
    let w1 = Tensor::randn(0f32, 1.0, (4 * c, c), &d)?;
    let h = Tensor::randn(0f32, 1.0, (b * n, 4 * c), &d)?;
    let att = Tensor::randn(0f32, 1.0, (b, 6, n, n), &d)?;
    let q = Tensor::randn(0f32, 1.0, (b, 6, n, 64), &d)?;
    let lw = Tensor::ones(c, candle_core::DType::F32, &d)?;
    let lb = Tensor::zeros(c, candle_core::DType::F32, &d)?;
    let fl = 2.0 * (b * n * c * 4 * c) as f64;
    time("matmul x·w1ᵀ (fc1)", fl, || {
        x.matmul(&w1.t().unwrap()).unwrap()
    });
    let w1c = w1.t().unwrap().contiguous().unwrap();
    time("matmul x·w1 (contig)", fl, || x.matmul(&w1c).unwrap());
    time("gelu_erf fc1 out", 0.0, || h.gelu_erf().unwrap());
    time("gelu (tanh) fc1 out", 0.0, || h.gelu().unwrap());
    let bias = Tensor::zeros(4 * c, candle_core::DType::F32, &d)?;
    time("bias add", 0.0, || h.broadcast_add(&bias).unwrap());
    time("softmax_last_dim", 0.0, || {
        candle_nn::ops::softmax_last_dim(&att).unwrap()
    });
    time("q·kᵀ", 2.0 * (b * 6 * n * n * 64) as f64, || {
        q.matmul(&q.t().unwrap()).unwrap()
    });
    time("layer_norm (ours)", 0.0, || {
        simcase_models::ops::layer_norm(&x, &lw, &lb, 1e-6).unwrap()
    });
    time("permute+contiguous qkv", 0.0, || {
        x.reshape((b, n, 6, 64))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    });
    Ok(())
}
