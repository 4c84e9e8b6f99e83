//! Full-size parity for architectures without reachable weights: both sides fill the real
//! config with the same deterministic weights (`simcase_models::seeded`), and these tests check
//! the candle forward against the PyTorch outputs in `tests/fixtures/seeded.json`
//! (from `tools/make_seeded_fixtures.py`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use simcase_imaging::decode_path;
use simcase_models::{
    dinov2, l2_normalize, seeded, vit, Preprocess, CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD,
};
mod common;

use common::compare;
use std::path::PathBuf;

/// The fixture entry `name`, and a VarBuilder over its seeded weights.
fn fixture(name: &str) -> (serde_json::Value, VarBuilder<'static>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seeded.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let m = fx["models"][name].clone();
    let params: Vec<(String, Vec<usize>)> = serde_json::from_value(m["params"].clone()).unwrap();
    let scale = fx["scale"].as_f64().unwrap() as f32;
    let spread = match m["spread"].as_str() {
        Some("fan_in") => seeded::Spread::FanIn(scale),
        _ => seeded::Spread::Fixed(scale),
    };
    let weights = seeded::weights_with(fx["seed"].as_u64().unwrap(), &params, spread);
    (
        m,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )
}

/// Embed the fixture's images with `forward` and compare: cosine ≥ 0.9999 per image.
fn check(
    name: &str,
    m: &serde_json::Value,
    pre: Preprocess,
    dim: usize,
    forward: impl Fn(&Tensor) -> Tensor,
) {
    let s = pre.size;
    let mut worst = 1.0f64;
    let mut seen: Vec<Vec<f32>> = Vec::new();
    for r in m["images"].as_array().unwrap() {
        let p = common::data_dir().join(r["path"].as_str().unwrap());
        let img = decode_path(&p, &Default::default()).unwrap();
        let x = Tensor::from_vec(pre.apply(&img.image), (1, 3, s, s), &Device::Cpu).unwrap();
        let got = l2_normalize(forward(&x).squeeze(0).unwrap().to_vec1::<f32>().unwrap());
        let want: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
        assert_eq!(got.len(), dim);
        let cos = compare(name, &r["path"], &got, &want);
        worst = worst.min(cos);
        seen.push(got);
    }
    // The images must not collapse to one embedding, or the comparison would prove little.
    let c01: f32 = seen[0].iter().zip(&seen[1]).map(|(a, b)| a * b).sum();
    assert!(
        c01 < 0.99999,
        "{name}: different images give the same embedding"
    );
    println!("{name}: worst cosine {worst:.7} vs {}", m["reference"]);
    assert!(worst >= 0.9999, "{name}: cosine {worst}");
}

#[test]
fn biomedclip_vision_tower_matches_timm() {
    let (m, vb) = fixture("biomedclip-vision");
    let model = vit::Vit::load(vb, &vit::Config::biomedclip_vision()).unwrap();
    let pre = Preprocess {
        size: 224,
        mean_std: Some((CLIP_MEAN, CLIP_STD)),
    };
    check("biomedclip-vision", &m, pre, 512, |x| {
        model.forward(x).unwrap()
    });
}

#[test]
fn dinov2_base_at_224_matches_transformers() {
    let (m, vb) = fixture("dinov2-b");
    let model = dinov2::Dinov2::load(vb, &dinov2::Config::vit_base()).unwrap();
    let pre = Preprocess {
        size: 224,
        mean_std: Some((IMAGENET_MEAN, IMAGENET_STD)),
    };
    check("dinov2-b", &m, pre, 768, |x| model.forward(x).unwrap());
}

#[test]
fn rad_dino_at_518_matches_transformers() {
    let (m, vb) = fixture("rad-dino");
    let model = dinov2::Dinov2::load(vb, &dinov2::Config::rad_dino()).unwrap();
    let pre = Preprocess {
        size: 518,
        mean_std: Some((IMAGENET_MEAN, IMAGENET_STD)),
    };
    check("rad-dino", &m, pre, 768, |x| model.forward(x).unwrap());
}

fn clip(name: &str, cfg: simcase_models::clip::Config) {
    let (m, vb) = fixture(name);
    let dim = cfg.embed_dim;
    let model = simcase_models::clip::ClipVision::load(vb, &cfg).unwrap();
    let pre = Preprocess {
        size: 224,
        mean_std: Some((CLIP_MEAN, CLIP_STD)),
    };
    check(name, &m, pre, dim, |x| model.forward(x).unwrap());
}

#[test]
fn clip_vit_b16_image_tower_matches_open_clip() {
    clip("clip-vit-b16", simcase_models::clip::Config::vit_b16());
}

#[test]
fn clip_vit_l14_image_tower_matches_open_clip() {
    clip("clip-vit-l14", simcase_models::clip::Config::vit_l14());
}

fn resnet(name: &str, output: simcase_models::resnet::Output, dim: usize) {
    let (m, vb) = fixture(name);
    let cfg = simcase_models::resnet::Config::resnet50(output);
    let model = simcase_models::resnet::ResNet::load(vb, &cfg).unwrap();
    let pre = Preprocess {
        size: 224,
        mean_std: Some((IMAGENET_MEAN, IMAGENET_STD)),
    };
    check(name, &m, pre, dim, |x| model.forward(x).unwrap());
}

#[test]
fn resnet50_pooled_features_match_timm() {
    resnet(
        "resnet50-pooled",
        simcase_models::resnet::Output::Pooled,
        2048,
    );
}

#[test]
fn resnet50_logits_match_timm() {
    resnet(
        "resnet50-logits",
        simcase_models::resnet::Output::Logits,
        1000,
    );
}
