//! Helpers shared by the parity tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

/// ../shared/data, or `$SIMCASE_DATA`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SIMCASE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

/// Cosine of one embedding against its reference; prints it with the max abs error.
pub fn compare(name: &str, label: &serde_json::Value, got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{name} {label}: dimension");
    let dot: f64 = got.iter().zip(want).map(|(x, y)| *x as f64 * y).sum();
    let ng: f64 = got.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nw: f64 = want.iter().map(|y| y * y).sum::<f64>().sqrt();
    let cos = dot / (ng * nw);
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    println!("{name} {label}: cosine {cos:.7}, max abs err {max_abs:.2e}");
    cos
}
