//! Helpers shared by the parity tests: a comparison that fails on NaN, infinite or zero
//! embeddings instead of letting them through, tolerances taken from the README's measured
//! figures, and a guard that the compared inputs are distinguishable at those tolerances.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

/// ../shared/data, or `$SIMCASE_DATA`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SIMCASE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// `tests/fixtures/parity.json`: per model, its reference runtime and, for each parity image,
/// its path under [`data_dir`] and the reference embedding.
pub fn parity_fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `model`'s parity images in `fx` ([`parity_fixture`]): each entry, and the image decoded.
pub fn parity_images(
    fx: &serde_json::Value,
    model: &str,
) -> Vec<(serde_json::Value, simcase_imaging::Decoded)> {
    fx["models"][model]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let path = data_dir().join(r["path"].as_str().unwrap());
            let d = simcase_imaging::decode_path(&path, &Default::default()).unwrap();
            (r.clone(), d)
        })
        .collect()
}

/// Under CI (`CI` set to anything but `false`/`0`), a missing prerequisite fails the test
/// instead of skipping part of it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// How far an embedding may be from its reference: the README's measured figure times a
/// stated margin.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Largest allowed 1 − cosine.
    pub cos_gap: f64,
    /// Largest allowed |got − want| over all components.
    pub max_abs: f64,
}

/// Margin over the README's measured max abs error: float reassociation (another SIMD path,
/// another thread split) moves the last bits, not the order of magnitude.
pub const ABS_MARGIN: f64 = 10.0;
/// Margin on the cosine: the README's printed worst cosine minus this much (the figures are
/// printed to 7 decimals, so anything below 1e-6 would be within their rounding).
pub const COS_MARGIN: f64 = 1e-6;

impl Tolerance {
    /// From the README's worst cosine and max abs error for this model (or image kind).
    pub fn readme(worst_cos: f64, max_abs: f64) -> Self {
        Self {
            cos_gap: (1.0 - worst_cos) + COS_MARGIN,
            max_abs: max_abs * ABS_MARGIN,
        }
    }
}

/// One embedding against its reference.
#[derive(Clone, Copy, Debug)]
pub struct Diff {
    pub cos: f64,
    pub max_abs: f64,
}

/// Compare one embedding with its reference; prints cosine and max abs error. Panics unless
/// both are finite and non-zero: NaN, infinite or zero embeddings never compare as equal.
pub fn compare(name: &str, label: &serde_json::Value, got: &[f32], want: &[f64]) -> Diff {
    assert_eq!(got.len(), want.len(), "{name} {label}: dimension");
    if let Some(i) = got.iter().position(|x| !x.is_finite()) {
        panic!("{name} {label}: component {i} is {} (not finite)", got[i]);
    }
    if let Some(i) = want.iter().position(|x| !x.is_finite()) {
        panic!("{name} {label}: reference component {i} is {}", want[i]);
    }
    let dot: f64 = got.iter().zip(want).map(|(x, y)| *x as f64 * y).sum();
    let ng: f64 = got.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nw: f64 = want.iter().map(|y| y * y).sum::<f64>().sqrt();
    assert!(ng > 0.0, "{name} {label}: the embedding is all zeros");
    assert!(nw > 0.0, "{name} {label}: the reference is all zeros");
    let cos = dot / (ng * nw);
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(
        cos.is_finite() && max_abs.is_finite(),
        "{name} {label}: {cos} {max_abs}"
    );
    println!("{name} {label}: cosine {cos:.7}, max abs err {max_abs:.2e}");
    Diff { cos, max_abs }
}

/// `compare`, then the tolerance. Comparisons are written so that NaN fails them.
pub fn check_within(
    name: &str,
    label: &serde_json::Value,
    got: &[f32],
    want: &[f64],
    tol: Tolerance,
) -> Diff {
    let d = compare(name, label, got, want);
    assert!(
        1.0 - d.cos <= tol.cos_gap,
        "{name} {label}: cosine {:.9} below {:.9}",
        d.cos,
        1.0 - tol.cos_gap
    );
    assert!(
        d.max_abs <= tol.max_abs,
        "{name} {label}: max abs error {:.3e} above {:.3e}",
        d.max_abs,
        tol.max_abs
    );
    d
}

/// How many times the allowed max abs error two different inputs' embeddings must differ by
/// (in some component), so that a model that mixed them up or collapsed them to one output
/// could not pass the parity check.
pub const DISTINCT_FACTOR: f64 = 100.0;

/// Err naming the closest pair unless every pair of `embeddings` differs by at least
/// `DISTINCT_FACTOR × max_abs` in some component.
pub fn distinct(embeddings: &[Vec<f64>], max_abs: f64) -> Result<f64, String> {
    let mut closest = (f64::INFINITY, 0, 0);
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            let d = embeddings[i]
                .iter()
                .zip(&embeddings[j])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            // NaN distances count as no distance at all.
            let d = if d.is_nan() { 0.0 } else { d };
            if d < closest.0 {
                closest = (d, i, j);
            }
        }
    }
    let (d, i, j) = closest;
    let need = DISTINCT_FACTOR * max_abs;
    if d >= need {
        Ok(d)
    } else {
        Err(format!(
            "inputs {i} and {j} differ by at most {d:.3e} per component, under \
             {DISTINCT_FACTOR} x the tolerance {max_abs:.1e} = {need:.1e}: the parity check \
             cannot tell them apart"
        ))
    }
}

/// `distinct` as an assertion, over the references (what the fixture can prove).
pub fn assert_distinct(name: &str, embeddings: &[Vec<f64>], max_abs: f64) {
    assert!(embeddings.len() >= 2, "{name}: need at least 2 inputs");
    match distinct(embeddings, max_abs) {
        Ok(d) => println!("{name}: closest inputs differ by {d:.3e} (tolerance {max_abs:.1e})"),
        Err(e) => panic!("{name}: {e}"),
    }
}
