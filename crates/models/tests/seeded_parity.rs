//! Full-size parity for architectures without reachable weights: both sides fill the real
//! config with the same deterministic weights (`simcase_models::seeded`), and this test checks
//! the candle forward against the PyTorch outputs in `tests/fixtures/seeded.json`
//! (from `tools/make_seeded_fixtures.py`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use simcase_imaging::decode_path;
use simcase_models::{l2_normalize, seeded, vit, Preprocess, CLIP_MEAN, CLIP_STD};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    std::env::var_os("SIMCASE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

#[test]
fn biomedclip_vision_tower_matches_timm() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seeded.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let m = &fx["models"]["biomedclip-vision"];
    let params: Vec<(String, Vec<usize>)> = serde_json::from_value(m["params"].clone()).unwrap();
    let weights = seeded::weights(
        fx["seed"].as_u64().unwrap(),
        &params,
        fx["scale"].as_f64().unwrap() as f32,
    );
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = vit::Vit::load(vb, &vit::Config::biomedclip_vision()).unwrap();
    let pre = Preprocess {
        size: 224,
        mean_std: Some((CLIP_MEAN, CLIP_STD)),
    };
    let refs = m["images"].as_array().unwrap();
    let mut worst = 1.0f64;
    for r in refs {
        let img = decode_path(
            &data_dir().join(r["path"].as_str().unwrap()),
            &Default::default(),
        )
        .unwrap();
        let x = Tensor::from_vec(pre.apply(&img.image), (1, 3, 224, 224), &Device::Cpu).unwrap();
        let got = l2_normalize(
            model
                .forward(&x)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        let want: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
        assert_eq!(got.len(), 512);
        let cos: f64 = got.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
        let max_abs = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        println!(
            "biomedclip-vision {}: cosine {cos:.7}, max abs err {max_abs:.2e}",
            r["path"]
        );
        worst = worst.min(cos);
    }
    assert!(worst >= 0.9999, "cosine {worst}");
}
