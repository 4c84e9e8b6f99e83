//! The `mlp` adapter: a residual head `x + W₂ relu(W₁ x + b₁) + b₂`, trained full-batch with
//! AdamW in candle on a normalised-softmax proxy loss (one learned proxy per class, started at
//! the class's mean; temperature 0.1). `W₂` and `b₂` start at zero, so epoch 0 is the frozen
//! model; the number of epochs is chosen on val (P@1), checked every 10 epochs, and the
//! weights of the best check are kept. Weights are drawn from a fixed seed, so a fit is
//! repeatable.

use crate::{p1, Adapter, Method, Residual, Sample};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use std::collections::BTreeMap;

const HIDDEN: usize = 256;
const MAX_EPOCHS: usize = 200;
const CHECK_EVERY: usize = 10;
const TEMPERATURE: f64 = 0.1;

fn seeded(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((x >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

pub(crate) fn fit(
    train: &[&Sample],
    val: &[&Sample],
    tuned: &mut BTreeMap<String, f64>,
) -> Result<Adapter> {
    let dev = Device::Cpu;
    let d = train[0].vector.len();
    let n = train.len();
    let mut names: Vec<&str> = train.iter().filter_map(|s| s.label).collect();
    names.sort_unstable();
    names.dedup();
    let y: Vec<u32> = train
        .iter()
        .map(|s| names.binary_search(&s.label.unwrap_or("")).unwrap_or(0) as u32)
        .collect();
    let flat: Vec<f32> = train
        .iter()
        .flat_map(|s| s.vector.iter().copied())
        .collect();
    let x = Tensor::from_vec(flat, (n, d), &dev)?;
    let y = Tensor::from_vec(y.clone(), n, &dev)?;
    // Proxies start at the class means.
    let mut proxies = vec![0f32; names.len() * d];
    let mut counts = vec![0f32; names.len()];
    for s in train {
        let c = names.binary_search(&s.label.unwrap_or("")).unwrap_or(0);
        counts[c] += 1.0;
        for (p, v) in proxies[c * d..(c + 1) * d].iter_mut().zip(s.vector) {
            *p += v;
        }
    }
    for (c, k) in counts.iter().enumerate() {
        proxies[c * d..(c + 1) * d]
            .iter_mut()
            .for_each(|p| *p /= k.max(1.0));
        simcase_models::l2_normalize_in_place(&mut proxies[c * d..(c + 1) * d]);
    }
    let w1 = Var::from_tensor(&Tensor::from_vec(
        seeded(HIDDEN * d, (1.0 / d as f32).sqrt(), 7),
        (HIDDEN, d),
        &dev,
    )?)?;
    let b1 = Var::zeros(HIDDEN, DType::F32, &dev)?;
    let w2 = Var::zeros((d, HIDDEN), DType::F32, &dev)?;
    let b2 = Var::zeros(d, DType::F32, &dev)?;
    let px = Var::from_tensor(&Tensor::from_vec(proxies, (names.len(), d), &dev)?)?;
    let mut opt = AdamW::new(
        vec![w1.clone(), b1.clone(), w2.clone(), b2.clone(), px.clone()],
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let snapshot = || -> Result<Adapter> {
        Ok(Adapter {
            method: Some(Method::Mlp),
            dim_in: d,
            blocks: Vec::new(),
            dim_out: d,
            residual: Some(Residual {
                hidden: HIDDEN,
                w1: w1.as_tensor().flatten_all()?.to_vec1()?,
                b1: b1.as_tensor().to_vec1()?,
                w2: w2.as_tensor().flatten_all()?.to_vec1()?,
                b2: b2.as_tensor().to_vec1()?,
            }),
            mean: Vec::new(),
            linear: Vec::new(),
            tuned: BTreeMap::new(),
        })
    };
    let l2 = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.broadcast_div(
            &t.sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?,
        )
    };
    let start = snapshot()?;
    let mut best = (p1(Some(&start), train, val), 0usize, start);
    for epoch in 1..=MAX_EPOCHS {
        let h = x
            .matmul(&w1.as_tensor().t()?)?
            .broadcast_add(b1.as_tensor())?
            .relu()?;
        let z = (&x
            + h.matmul(&w2.as_tensor().t()?)?
                .broadcast_add(b2.as_tensor())?)?;
        let logits = (l2(&z)?.matmul(&l2(px.as_tensor())?.t()?)? / TEMPERATURE)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        opt.backward_step(&loss)?;
        if epoch % CHECK_EVERY == 0 {
            let a = snapshot()?;
            let p = p1(Some(&a), train, val);
            if p > best.0 {
                best = (p, epoch, a);
            }
        }
    }
    tuned.insert("epochs".into(), best.1 as f64);
    tuned.insert("val_P@1".into(), best.0);
    Ok(best.2)
}
