//! Deterministic "random" weights shared with `tools/make_seeded_fixtures.py`, so parity tests
//! can run full-size architectures whose real weights are not reachable here (BiomedCLIP,
//! CLIP, ViT-B) without committing hundreds of MB of weights: both sides generate the same
//! values from a counter-based hash and only inputs and outputs are committed.

use candle_core::{Device, Tensor};
use std::collections::HashMap;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Norm scales (LayerNorm, BatchNorm) and BatchNorm running variances start at 1; everything
/// else around 0.
fn base(name: &str, shape: &[usize]) -> f32 {
    let module = name.rsplit('.').nth(1).unwrap_or("");
    let norm_weight = shape.len() == 1
        && name.ends_with(".weight")
        && (module.to_ascii_lowercase().contains("norm")
            || module.starts_with("ln")
            || module.starts_with("bn"));
    if norm_weight || name.ends_with(".running_var") {
        1.0
    } else {
        0.0
    }
}

/// How far values spread around their base.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spread {
    /// Every parameter uniform in ±scale.
    Fixed(f32),
    /// Matrices and kernels He-uniform (±√(6 / fan-in)), so deep ReLU networks keep their
    /// signal; vectors ±scale.
    FanIn(f32),
}

/// Tensors for `(name, shape)` pairs, filled in sorted-name order from one stream.
pub fn weights(seed: u64, params: &[(String, Vec<usize>)], scale: f32) -> HashMap<String, Tensor> {
    weights_with(seed, params, Spread::Fixed(scale))
}

/// As [`weights`], with a choice of spread.
pub fn weights_with(
    seed: u64,
    params: &[(String, Vec<usize>)],
    spread: Spread,
) -> HashMap<String, Tensor> {
    let mut sorted: Vec<&(String, Vec<usize>)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut offset = 0u64;
    let mut out = HashMap::new();
    for (name, shape) in sorted {
        let n: usize = shape.iter().product();
        let b = base(name, shape);
        let scale = match spread {
            Spread::FanIn(_) if shape.len() >= 2 => {
                let fan_in: usize = shape[1..].iter().product();
                (6.0 / fan_in.max(1) as f32).sqrt()
            }
            Spread::FanIn(s) | Spread::Fixed(s) => s,
        };
        let v: Vec<f32> = (0..n as u64)
            .map(|i| {
                let z = splitmix64((seed << 40).wrapping_add(offset + i));
                let u = (z >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0;
                b + scale * u
            })
            .collect();
        offset += n as u64;
        let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).expect("shape matches");
        out.insert(name.clone(), t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_stable_and_norms_start_at_one() {
        // Pinned values: the Python generator must produce these too.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        let p = vec![
            ("a.norm.weight".to_string(), vec![2]),
            ("a.bn1.weight".to_string(), vec![2]),
            ("a.bn1.running_var".to_string(), vec![2]),
            ("a.proj.weight".to_string(), vec![2, 2]),
        ];
        let w = weights(7, &p, 0.05);
        for k in ["a.norm.weight", "a.bn1.weight", "a.bn1.running_var"] {
            let n = w[k].to_vec1::<f32>().unwrap();
            assert!(n.iter().all(|v| (v - 1.0).abs() <= 0.05), "{k}");
        }
        let m = w["a.proj.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(m.iter().all(|v| v.abs() <= 0.05) && m.iter().any(|v| *v != 0.0));
    }
}
