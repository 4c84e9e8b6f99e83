//! Dot products of an f32 query with compact rows: IEEE half-precision (`u16` bits) and 8-bit
//! integers (the codes of a scalar quantiser). The portable versions here are the reference
//! every SIMD path is tested against; they run in eight lanes like `reduce.rs`, so that the
//! compiler vectorises them on any target.

/// The f32 value of half-precision bits (exact: every f16 is an f32).
#[inline(always)]
pub fn f16_value(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// The half-precision bits nearest to `x` (round to nearest, ties to even; overflow to ±∞).
#[inline]
pub fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// Inner product of `q` with the row `x` over the common length, in eight lanes, each row
/// element read as f32 by `value`: the frame of both portable kernels below.
#[inline(always)]
fn dot_lanes<T: Copy>(q: &[f32], x: &[T], value: impl Fn(T) -> f32) -> f32 {
    let n = q.len().min(x.len());
    let (q, x) = (&q[..n], &x[..n]);
    let mut acc = [0f32; 8];
    let (cq, cx) = (q.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = cq
        .remainder()
        .iter()
        .zip(cx.remainder())
        .map(|(a, &b)| a * value(b))
        .sum();
    for (a, b) in cq.zip(cx) {
        for i in 0..8 {
            acc[i] += a[i] * value(b[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Inner product of `q` with half-precision `x` over the common length, in eight lanes.
#[inline(always)]
pub(crate) fn dot_f16_lanes(q: &[f32], x: &[u16]) -> f32 {
    dot_lanes(q, x, f16_value)
}

/// Inner product of `q` with the integers `x` over the common length, in eight lanes.
#[inline(always)]
pub(crate) fn dot_i8_lanes(q: &[f32], x: &[i8]) -> f32 {
    dot_lanes(q, x, |c| c as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{Isa, Kernels};

    /// Deterministic values in [-1, 1).
    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    const LENGTHS: [usize; 10] = [0, 1, 7, 15, 16, 33, 383, 384, 512, 1000];

    /// The exact sum in f64, for a tolerance that scales with the magnitudes summed.
    fn exact(q: &[f32], x: impl Iterator<Item = f32>) -> (f64, f64) {
        q.iter().zip(x).fold((0.0, 0.0), |(s, m), (&a, b)| {
            (s + a as f64 * b as f64, m + (a as f64 * b as f64).abs())
        })
    }

    #[test]
    fn f16_conversion_round_trips_and_rounds_to_nearest() {
        for bits in 0..=u16::MAX {
            let v = f16_value(bits);
            if v.is_nan() {
                assert!(f16_value(f16_bits(v)).is_nan());
            } else {
                assert_eq!(f16_bits(v), bits, "{bits:#06x}");
            }
        }
        assert_eq!(f16_value(f16_bits(1.0 / 3.0)), 0.33325195);
        assert_eq!(f16_value(f16_bits(1e6)), f32::INFINITY);
        assert_eq!(f16_value(0x0001), 2f32.powi(-24), "smallest subnormal");
    }

    #[test]
    fn every_path_matches_portable_and_the_exact_sum_f16() {
        let portable = Kernels::for_isa(Isa::Portable).unwrap();
        let mut ran = 0;
        for isa in Isa::ALL {
            let Some(k) = Kernels::for_isa(isa) else {
                continue;
            };
            ran += 1;
            for &n in &LENGTHS {
                let q = pseudo(n, n as u64 + 1);
                // Full f16 range of row values, subnormals included at small n.
                let x: Vec<u16> = pseudo(n, n as u64 + 99)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| f16_bits(v * if i % 5 == 0 { 1e-6 } else { 3.0 }))
                    .collect();
                let (want, mag) = exact(&q, x.iter().map(|&b| f16_value(b)));
                let tol = 1e-5 * mag + 1e-6;
                let got = k.dot_f16(&q, &x) as f64;
                let reference = portable.dot_f16(&q, &x) as f64;
                assert!((got - want).abs() <= tol, "{isa} n={n}: {got} vs {want}");
                assert!((got - reference).abs() <= 2.0 * tol, "{isa} n={n}");
                // Longer slices are cut to the common length.
                let mut longer = x.clone();
                longer.push(f16_bits(1000.0));
                assert_eq!(k.dot_f16(&q, &longer), k.dot_f16(&q, &x), "{isa} n={n}");
            }
        }
        assert!(ran >= 1);
        assert_eq!(ran, Isa::ALL.iter().filter(|i| i.is_available()).count());
    }

    #[test]
    fn every_path_matches_portable_and_the_exact_sum_i8() {
        let portable = Kernels::for_isa(Isa::Portable).unwrap();
        for isa in Isa::ALL {
            let Some(k) = Kernels::for_isa(isa) else {
                continue;
            };
            for &n in &LENGTHS {
                let q = pseudo(n, n as u64 + 7);
                // Every code, -128 and 127 included, in a varying order.
                let x: Vec<i8> = (0..n).map(|i| ((i * 37 + n) % 256) as u8 as i8).collect();
                let (want, mag) = exact(&q, x.iter().map(|&c| c as f32));
                let tol = 1e-5 * mag + 1e-6;
                let got = k.dot_i8(&q, &x) as f64;
                let reference = portable.dot_i8(&q, &x) as f64;
                assert!((got - want).abs() <= tol, "{isa} n={n}: {got} vs {want}");
                assert!((got - reference).abs() <= 2.0 * tol, "{isa} n={n}");
                let mut longer = x.clone();
                longer.push(127);
                assert_eq!(k.dot_i8(&q, &longer), k.dot_i8(&q, &x), "{isa} n={n}");
                if n > 0 {
                    // A single changed code moves the result by its query weight.
                    let mut y = x.clone();
                    y[n - 1] = y[n - 1].wrapping_add(1);
                    let d = k.dot_i8(&q, &y) as f64 - got;
                    let w = q[n - 1] as f64 * (y[n - 1] as f64 - x[n - 1] as f64);
                    assert!((d - w).abs() <= 2.0 * tol + 1e-6, "{isa} n={n}: {d} vs {w}");
                }
            }
        }
    }
}
