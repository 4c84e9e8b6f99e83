//! Every kernel path against the portable one, over random sizes (tails included) and random
//! NaN-free values; and the portable kernels against f64 references. A path this CPU lacks is
//! reported as skipped on stderr (past the test harness's capture), never silently passed.

use simcase_kernels::{
    activation::{erf_fast, exp_fast},
    Act, DwGeometry, Isa, Kernels,
};
use std::io::Write;

mod common;
use common::Rng;

const CASES: u64 = 300;

/// The portable table and every other path this CPU has; the others are reported skipped.
fn paths(what: &str) -> (&'static Kernels, Vec<&'static Kernels>) {
    let portable = Kernels::for_isa(Isa::Portable).expect("portable always runs");
    let mut others = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512] {
        match (Kernels::for_isa(isa), isa.missing_feature()) {
            (Some(k), _) => others.push(k),
            (None, missing) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: CPU lacks {} ({isa} path of {what})",
                    missing.unwrap_or("?")
                );
            }
        }
    }
    (portable, others)
}

/// Bitwise equality, with the first differing index in the message.
fn same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: [{i}] {} vs portable {}", got[i], want[i]);
    }
}

/// Within rounding of portable: the kernels whose `erf` or `exp` fuse their multiply-adds on
/// the SIMD paths (the portable path does not). Element `i` may differ by `tol·scale[i]`.
fn close(got: &[f32], want: &[f32], scale: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(
            (g - w).abs() <= tol * s,
            "{what}: [{i}] {g} vs portable {w} (scale {s})"
        );
    }
}

/// The scale of GELU's rounding: `½x·(1 + erf)` cancels for negative `x`, where both forms
/// are off by about an ulp of `x` (at `x = −5.4` the result is `−2·10⁻⁷` and either form may
/// give `−10⁻⁶`), so the tolerance follows the input, not the output.
fn gelu_scale(input: &[f32]) -> Vec<f32> {
    input.iter().map(|x| x.abs().max(1.0)).collect()
}

/// A length that is a multiple of 64 plus any tail, or small, or a few vector widths.
fn length(r: &mut Rng) -> usize {
    match r.size(0, 3) {
        0 => r.size(0, 17),
        1 => r.size(0, 130),
        2 => 64 * r.size(1, 16) + r.size(0, 63),
        _ => r.size(500, 2100),
    }
}

#[test]
fn dot_on_every_path_matches_portable_and_f64() {
    let (portable, others) = paths("dot");
    let mut r = Rng(1);
    for case in 0..CASES {
        let n = length(&mut r);
        let extra = r.size(0, 3); // b may be longer
        let (a, b) = (r.vec(n, 2.0), r.vec(n + extra, 2.0));
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        let tol = 1e-6 * mag + 1e-6;
        let p = portable.dot(&a, &b);
        assert!(
            (p as f64 - exact).abs() <= tol,
            "case {case} n={n}: portable {p} vs {exact}"
        );
        for k in &others {
            let g = k.dot(&a, &b);
            assert!(
                (g as f64 - p as f64).abs() <= 2.0 * tol,
                "case {case} n={n}: {} {g} vs portable {p}",
                k.isa()
            );
            assert_eq!(
                k.dot(&b, &a).to_bits(),
                g.to_bits(),
                "{} dot is symmetric",
                k.isa()
            );
        }
    }
    for k in others.iter().chain([&portable]) {
        assert_eq!(k.dot(&[], &[1.0]), 0.0);
        assert_eq!(k.dot(&[3.0; 100], &[0.5; 100]), 150.0);
    }
}

#[test]
fn layer_norm_on_every_path_equals_portable_bitwise() {
    let (portable, others) = paths("layer_norm_rows");
    let mut r = Rng(2);
    for case in 0..CASES {
        let (rows, n) = (r.size(1, 5), r.size(1, 200));
        let offset = r.f(300.0);
        let x: Vec<f32> = r.vec(rows * n, 4.0).iter().map(|v| v + offset).collect();
        let (w, b) = (r.vec(n, 2.0), r.vec(n, 1.0));
        let mut want = vec![0f32; x.len()];
        portable.layer_norm_rows(&mut want, &x, &w, &b, 1e-6);
        for k in &others {
            let mut got = vec![0f32; x.len()];
            k.layer_norm_rows(&mut got, &x, &w, &b, 1e-6);
            same_bits(&got, &want, &format!("case {case} {rows}x{n} {}", k.isa()));
        }
    }
}

/// ReLU and ReLU6 bit for bit; GELU and QuickGELU within rounding (their multiply-adds are
/// fused on the SIMD paths; `activation`'s unit tests hold each path to the same code with and
/// without `mul_add` bit for bit).
#[test]
fn activations_on_every_path_equal_portable() {
    let (portable, others) = paths("gelu_rows/act_rows");
    let mut r = Rng(3);
    for case in 0..CASES {
        let n = r.size(1, 150);
        let rows = r.size(1, 4);
        let x = r.vec(rows * n, 8.0);
        let bias = r.vec(n, 1.0);
        for bias in [None, Some(bias.as_slice())] {
            let mut want = x.clone();
            portable.gelu_rows(&mut want, bias);
            // GELU's input: x plus the bias.
            let mut input = x.clone();
            if let Some(b) = bias {
                for row in input.chunks_mut(n) {
                    row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
            }
            for k in &others {
                let mut got = x.clone();
                k.gelu_rows(&mut got, bias);
                close(
                    &got,
                    &want,
                    &gelu_scale(&input),
                    4e-7,
                    &format!("case {case} gelu {} bias {}", k.isa(), bias.is_some()),
                );
            }
        }
        for act in [Act::None, Act::Gelu, Act::Relu6, Act::QuickGelu, Act::Relu] {
            let mut want = x.clone();
            portable.act_rows(&mut want, act);
            for k in &others {
                let mut got = x.clone();
                k.act_rows(&mut got, act);
                let what = format!("case {case} {act:?} {}", k.isa());
                match act {
                    Act::Gelu | Act::QuickGelu => close(&got, &want, &gelu_scale(&x), 4e-7, &what),
                    _ => same_bits(&got, &want, &what),
                }
            }
        }
    }
}

/// Within rounding: the SIMD paths' `exp` fuses its multiply-adds.
#[test]
fn softmax_on_every_path_equals_portable() {
    let (portable, others) = paths("softmax_rows");
    let mut r = Rng(4);
    for case in 0..CASES {
        let (rows, n) = (r.size(1, 6), r.size(1, 300));
        let s = r.vec(rows * n, 20.0);
        let bias = r.vec(rows * n, 3.0);
        for bias in [None, Some(bias.as_slice())] {
            let mut want = s.clone();
            portable.softmax_rows(&mut want, n, bias);
            for k in &others {
                let mut got = s.clone();
                k.softmax_rows(&mut got, n, bias);
                let what = format!("case {case} {rows}x{n} {}", k.isa());
                close(&got, &want, &want, 1e-6, &what);
            }
        }
    }
}

/// Bit for bit, but for a fused GELU (within rounding; see the activations).
#[test]
fn depthwise_on_every_path_equals_portable() {
    let (portable, others) = paths("depthwise_row");
    let mut r = Rng(5);
    for case in 0..CASES / 3 {
        let k = [1, 3, 5][r.size(0, 2)];
        let (h, w, c) = (r.size(1, 9), r.size(1, 9), r.size(1, 70));
        let stride = r.size(1, 2);
        let pad = (r.size(0, k / 2), r.size(0, k / 2));
        let ho = (h + 2 * pad.0).saturating_sub(k) / stride + 1;
        let wo = (w + 2 * pad.1).saturating_sub(k) / stride + 1;
        let act = [Act::None, Act::Gelu, Act::Relu6][r.size(0, 2)];
        let g = DwGeometry {
            h,
            w,
            c,
            ho,
            wo,
            k,
            stride,
            pad,
            act,
        };
        let images = r.size(1, 2);
        let x = r.vec(images * h * w * c, 2.0);
        let (kern, bias) = (r.vec(k * k * c, 1.0), r.vec(c, 0.5));
        let run_with = |kt: &Kernels, g: &DwGeometry| -> Vec<f32> {
            let mut out = vec![f32::NAN; images * ho * wo * c];
            for (row, o) in out.chunks_mut(wo * c).enumerate() {
                kt.depthwise_row(g, &x, &kern, &bias, row, o);
            }
            out
        };
        let run = |kt: &Kernels| run_with(kt, &g);
        let want = run(portable);
        // The sums before the activation, which every path makes bit for bit.
        let sums = run_with(
            portable,
            &DwGeometry {
                act: Act::None,
                ..g
            },
        );
        assert!(
            want.iter().all(|v| v.is_finite()),
            "case {case}: every output written"
        );
        for kt in &others {
            let what = format!("case {case} {g:?} {}", kt.isa());
            match act {
                Act::Gelu => close(&run(kt), &want, &gelu_scale(&sums), 4e-7, &what),
                _ => same_bits(&run(kt), &want, &what),
            }
        }
    }
}

/// erf by Simpson integration in f64: slow, but exact enough to judge an f32 approximation.
fn erf_ref(x: f64) -> f64 {
    let steps = 20000;
    let h = x / steps as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..steps {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

/// Both forms, with and without fused multiply-adds.
#[test]
fn fast_erf_and_exp_are_accurate() {
    for i in -900..900 {
        let x = i as f32 / 100.0;
        let erf = erf_ref(x as f64);
        for (name, got) in [("", erf_fast::<false>(x)), (" fused", erf_fast::<true>(x))] {
            assert!(
                (got as f64 - erf).abs() < 4e-7,
                "erf{name}({x}) = {got} vs {erf}"
            );
        }
        if x < 0.0 {
            let e = (x as f64).exp();
            for (name, got) in [("", exp_fast::<false>(x)), (" fused", exp_fast::<true>(x))] {
                assert!(
                    ((got as f64 - e) / e).abs() < 3e-7,
                    "exp{name}({x}) = {got}"
                );
            }
        }
    }
    // The clamps' ends: 2^n enters the exponent field by an integer add, which must give a
    // normal float there (a subnormal or an infinity would be a wrong exponent field).
    for x in [-1e30f32, -1000.0, -86.5, -86.0, 87.5, 88.0, 1000.0] {
        let e = (x.clamp(-86.5, 88.0) as f64).exp();
        for (name, got) in [("", exp_fast::<false>(x)), (" fused", exp_fast::<true>(x))] {
            assert!(
                got.is_normal() && ((got as f64 - e) / e).abs() < 3e-7,
                "exp{name}({x}) = {got} vs {e}"
            );
        }
    }
}

#[test]
fn portable_kernels_match_f64_references() {
    let k = Kernels::for_isa(Isa::Portable).unwrap();
    let mut r = Rng(6);
    for _ in 0..50 {
        let n = r.size(1, 300);
        let offset = r.f(1000.0);
        let x: Vec<f32> = r.vec(n, 3.0).iter().map(|v| v + offset).collect();
        let (w, b) = (r.vec(n, 2.0), r.vec(n, 1.0));
        let mut got = vec![0f32; n];
        k.layer_norm_rows(&mut got, &x, &w, &b, 1e-6);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        for i in 0..n {
            let want = (x[i] as f64 - mean) / (var + 1e-6).sqrt() * w[i] as f64 + b[i] as f64;
            assert!(
                (got[i] as f64 - want).abs() < 2e-3 * (1.0 + want.abs()),
                "ln n={n} offset {offset}"
            );
        }

        let s = r.vec(n, 30.0);
        let mut got = s.clone();
        k.softmax_rows(&mut got, n, None);
        let m = s.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let z: f64 = s.iter().map(|&v| (v as f64 - m).exp()).sum();
        for i in 0..n {
            let want = (s[i] as f64 - m).exp() / z;
            assert!(
                (got[i] as f64 - want).abs() < 1e-6 + 1e-5 * want,
                "softmax n={n}"
            );
        }
    }
    let mut g = vec![-3.0f32, -1.0, 0.0, 0.5, 2.0];
    k.gelu_rows(&mut g, None);
    for (x, got) in [-3.0f64, -1.0, 0.0, 0.5, 2.0].into_iter().zip(g) {
        let want = 0.5 * x * (1.0 + erf_ref(x / 2f64.sqrt()));
        assert!(
            (got as f64 - want).abs() < 1e-6,
            "gelu({x}) = {got} vs {want}"
        );
    }
}

#[test]
fn row_kernels_ignore_arguments_that_do_not_fit() {
    for isa in Isa::ALL {
        let Some(k) = Kernels::for_isa(isa) else {
            continue;
        };
        let mut out = vec![7f32; 5];
        k.layer_norm_rows(&mut out, &[1.0; 5], &[1.0; 2], &[0.0; 2], 1e-6);
        assert_eq!(out, [7.0; 5], "{isa}: 5 is not whole rows of 2");
        k.layer_norm_rows(&mut out, &[1.0; 5], &[], &[], 1e-6);
        let mut s = vec![1f32; 6];
        k.softmax_rows(&mut s, 3, Some(&[0.0; 3]));
        assert_eq!(s, [1.0; 6], "{isa}: bias shorter than the rows");
        k.softmax_rows(&mut s, 0, None);
        k.gelu_rows(&mut [], None);
        k.gelu_rows(&mut s, Some(&[]));
        assert_eq!(s, [1.0; 6]);
        let g = DwGeometry {
            h: 2,
            w: 2,
            c: 1,
            ho: 2,
            wo: 2,
            k: 3,
            stride: 1,
            pad: (1, 1),
            act: Act::None,
        };
        let mut o = vec![9f32; 2];
        k.depthwise_row(&g, &[1.0; 4], &[1.0; 9], &[0.0], 2, &mut o);
        assert_eq!(o, [9.0; 2], "{isa}: row 2 is past one image");
    }
}
