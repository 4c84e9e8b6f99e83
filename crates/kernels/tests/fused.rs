//! The fused entry points (sgemm, linear, attention, layer norm, GELU, depthwise) against
//! naive f64 loops, over random shapes and strides, and their refusals of shapes that do not
//! fit.

mod common;
use common::Rng;
use simcase_kernels::{
    attention, attention_first, depthwise, gelu_add, layer_norm, linear, sgemm, Act, DwGeometry,
    MatMut, MatRef, QkvLayout, Threads,
};

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: [{i}] {g} vs {w}"
        );
    }
}

#[test]
fn sgemm_matches_naive_for_random_shapes_strides_and_transposes() {
    let mut r = Rng(10);
    for case in 0..120 {
        let (m, n, k) = (r.size(1, 40), r.size(1, 40), r.size(0, 70));
        let (ta, tb) = (r.next().is_multiple_of(2), r.next().is_multiple_of(2));
        let (pad_a, pad_b, pad_d) = (r.size(0, 3), r.size(0, 3), r.size(0, 3));
        // a stored (m×k) or (k×m) with padded rows; likewise b.
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let a_store = r.vec(ar * (ac + pad_a) + 1, 1.0);
        let a = MatRef::new(&a_store, ar, ac, ac + pad_a, 1).unwrap();
        let a = if ta { a.t() } else { a };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        let b_store = r.vec(br * (bc + pad_b) + 1, 1.0);
        let b = MatRef::new(&b_store, br, bc, bc + pad_b, 1).unwrap();
        let b = if tb { b.t() } else { b };
        let at = |i: usize, p: usize| {
            (if ta {
                a_store[p * (ac + pad_a) + i]
            } else {
                a_store[i * (ac + pad_a) + p]
            }) as f64
        };
        let bt = |p: usize, j: usize| {
            (if tb {
                b_store[j * (bc + pad_b) + p]
            } else {
                b_store[p * (bc + pad_b) + j]
            }) as f64
        };
        let accumulate = r.next().is_multiple_of(2);
        let ld = n + pad_d;
        let mut d = r.vec(m * ld, 1.0);
        let before = d.clone();
        let threads = if r.next().is_multiple_of(2) {
            Threads::One
        } else {
            Threads::Rayon(2)
        };
        sgemm(
            MatMut::new(&mut d, m, n, ld, 1).unwrap(),
            accumulate,
            a,
            b,
            threads,
        )
        .unwrap();
        for i in 0..m {
            for j in 0..ld {
                let got = d[i * ld + j] as f64;
                if j >= n {
                    assert_eq!(
                        got,
                        before[i * ld + j] as f64,
                        "case {case}: padding untouched"
                    );
                    continue;
                }
                let mut want: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                if accumulate {
                    want += before[i * ld + j] as f64;
                }
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + k as f64),
                    "case {case} {m}x{n}x{k} ta={ta} tb={tb} acc={accumulate}: ({i},{j}) {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn linear_matches_naive_with_bias_residual_and_activation() {
    let mut r = Rng(11);
    for case in 0..40 {
        let (m, k, n) = (r.size(1, 50), r.size(1, 40), r.size(1, 30));
        let (x, w, b, res) = (
            r.vec(m * k, 1.0),
            r.vec(n * k, 1.0),
            r.vec(n, 1.0),
            r.vec(m * n, 1.0),
        );
        for (residual, act) in [(None, Act::None), (Some(res.as_slice()), Act::Relu)] {
            let got = linear(&x, (m, k), &w, &b, residual, act).unwrap();
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut v = b[j] as f64
                        + (0..k)
                            .map(|p| x[i * k + p] as f64 * w[p * n + j] as f64)
                            .sum::<f64>();
                    if let Some(rz) = residual {
                        v += rz[i * n + j] as f64;
                    }
                    want[i * n + j] = if act == Act::Relu { v.max(0.0) } else { v };
                }
            }
            close(&got, &want, 1e-5, &format!("case {case} {m}x{k}->{n}"));
        }
    }
    assert!(linear(&[1.0; 6], (2, 3), &[1.0; 5], &[0.0; 2], None, Act::None).is_err());
    assert!(linear(
        &[1.0; 6],
        (2, 3),
        &[1.0; 6],
        &[0.0; 2],
        Some(&[0.0; 3]),
        Act::None
    )
    .is_err());
}

fn attention_ref(
    qkv: &[f32],
    seqs: usize,
    n: usize,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let d3 = qkv.len() / (seqs * n);
    let (d, hd) = (d3 / 3, d3 / 3 / heads);
    let mut out = vec![0f64; seqs * n * d];
    for s in 0..seqs {
        for h in 0..heads {
            let (qo, ko, vo) = match layout {
                QkvLayout::Blocks => (h * hd, d + h * hd, 2 * d + h * hd),
                QkvLayout::Interleaved => (3 * h * hd, 3 * h * hd + hd, 3 * h * hd + 2 * hd),
            };
            let at = |t: usize, o: usize, c: usize| qkv[(s * n + t) * d3 + o + c] as f64;
            for i in 0..n {
                let mut l: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd).map(|c| at(i, qo, c) * at(j, ko, c)).sum::<f64>()
                            + bias.map_or(0.0, |b| b[(h * n + i) * n + j] as f64)
                    })
                    .collect();
                let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                l.iter_mut().for_each(|v| *v = (*v - m).exp());
                let z: f64 = l.iter().sum();
                for c in 0..hd {
                    out[(s * n + i) * d + h * hd + c] =
                        (0..n).map(|j| l[j] / z * at(j, vo, c)).sum();
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_naive_for_both_layouts() {
    let mut r = Rng(12);
    // Random small shapes, then litemedsam's windows (49 tokens, 32 channels a head: whole
    // panels) and more keys than one depth block of the packed product (600).
    let fixed = [(1, 49, 2, 32), (1, 600, 1, 16)];
    for case in 0..32usize {
        let (seqs, n, heads, hd) = match fixed.get(case.wrapping_sub(30)) {
            Some(&shape) => shape,
            None => (r.size(1, 3), r.size(1, 20), r.size(1, 4), r.size(1, 9)),
        };
        let qkv = r.vec(seqs * n * 3 * heads * hd, 1.0);
        let bias = r.vec(heads * n * n, 1.0);
        for layout in [QkvLayout::Blocks, QkvLayout::Interleaved] {
            for b in [None, Some(bias.as_slice())] {
                let got = attention(&qkv, seqs, n, heads, layout, b).unwrap();
                let want = attention_ref(&qkv, seqs, n, heads, layout, b);
                close(
                    &got,
                    &want,
                    1e-5,
                    &format!("case {case} {layout:?} bias {}", b.is_some()),
                );
            }
        }
    }
    assert!(attention(&[0.0; 10], 1, 2, 1, QkvLayout::Blocks, None).is_err());
    assert!(attention(&[0.0; 12], 1, 2, 1, QkvLayout::Blocks, Some(&[0.0; 3])).is_err());
    assert!(attention(&[0.0; 12], 1, 2, 0, QkvLayout::Blocks, None).is_err());
}

/// The first-token attention is row 0 of each sequence of the full attention's reference,
/// from the same q, k and v split into its two inputs.
#[test]
fn first_token_attention_is_row_0_of_the_full_attention() {
    let mut r = Rng(13);
    for case in 0..30 {
        let (seqs, n, heads, hd) = (r.size(1, 3), r.size(1, 20), r.size(1, 4), r.size(1, 9));
        let d = heads * hd;
        let qkv = r.vec(seqs * n * 3 * d, 1.0);
        let q: Vec<f32> = (0..seqs)
            .flat_map(|s| qkv[s * n * 3 * d..][..d].to_vec())
            .collect();
        let kv: Vec<f32> = qkv.chunks(3 * d).flat_map(|t| t[d..].to_vec()).collect();
        let got = attention_first(&q, &kv, seqs, n, heads).unwrap();
        let full = attention_ref(&qkv, seqs, n, heads, QkvLayout::Blocks, None);
        let want: Vec<f64> = (0..seqs)
            .flat_map(|s| full[s * n * d..][..d].to_vec())
            .collect();
        close(&got, &want, 1e-5, &format!("case {case}"));
    }
    assert!(attention_first(&[0.0; 4], &[0.0; 15], 1, 2, 1).is_err());
    assert!(attention_first(&[0.0; 4], &[0.0; 16], 1, 2, 3).is_err());
    assert!(attention_first(&[0.0; 4], &[0.0; 16], 1, 2, 0).is_err());
    assert!(attention_first(&[0.0; 4], &[0.0; 16], 1, 2, 1).is_ok());
}

/// Layer norm against an f64 two-pass reference, over row counts below, at and far past one
/// task (16 rows) and the parallel threshold, on one thread and on three: every row lands in
/// its place, none left unwritten.
#[test]
fn layer_norm_matches_naive_in_every_band() {
    let mut r = Rng(17);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for (rows, n) in [(1, 5), (16, 7), (17, 384), (257, 384), (300, 130)] {
        let x: Vec<f32> = r.vec(rows * n, 4.0).iter().map(|v| v + 100.0).collect();
        let (w, b) = (r.vec(n, 1.0), r.vec(n, 1.0));
        let want: Vec<f64> = x
            .chunks(n)
            .flat_map(|row| {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                let inv = 1.0 / (var + 1e-6).sqrt();
                row.iter()
                    .zip(w.iter().zip(&b))
                    .map(|(&v, (&w, &b))| (v as f64 - mean) * inv * w as f64 + b as f64)
                    .collect::<Vec<_>>()
            })
            .collect();
        let serial = layer_norm(&x, &w, &b, 1e-6).unwrap();
        close(&serial, &want, 1e-4, &format!("{rows}×{n}"));
        let parallel = pool.install(|| layer_norm(&x, &w, &b, 1e-6)).unwrap();
        assert_eq!(parallel, serial, "{rows}×{n}: three threads");
    }
}

#[test]
fn parallel_entry_points_check_their_shapes() {
    assert!(layer_norm(&[1.0; 6], &[1.0; 4], &[0.0; 4], 1e-6).is_err());
    assert!(layer_norm(&[1.0; 6], &[1.0; 3], &[0.0; 2], 1e-6).is_err());
    assert!(layer_norm(&[1.0; 6], &[], &[], 1e-6).is_err());
    let out = layer_norm(&[1.0, 2.0, 3.0, 5.0, 5.0, 5.0], &[1.0; 3], &[0.5; 3], 1e-6).unwrap();
    let s = (2.0f32 / 3.0).sqrt();
    close(
        &out,
        &[
            0.5 - 1.0 / s as f64,
            0.5,
            0.5 + 1.0 / s as f64,
            0.5,
            0.5,
            0.5,
        ],
        1e-5,
        "ln",
    );
    let mut x = vec![1f32; 6];
    assert!(gelu_add(&mut x, &[0.0; 4]).is_err());
    assert!(gelu_add(&mut x, &[]).is_err());
    gelu_add(&mut x, &[0.0, -1.0, -2.0]).unwrap();
    close(
        &x,
        &[0.841345, 0.0, -0.158655, 0.841345, 0.0, -0.158655],
        1e-5,
        "gelu bias",
    );
    let g = DwGeometry {
        h: 2,
        w: 2,
        c: 2,
        ho: 2,
        wo: 2,
        k: 3,
        stride: 1,
        pad: (1, 1),
        act: Act::None,
    };
    assert!(depthwise(&g, &[1.0; 7], &[1.0; 18], &[0.0; 2]).is_err());
    assert!(depthwise(&g, &[1.0; 8], &[1.0; 9], &[0.0; 2]).is_err());
    // All-ones 3×3 kernel on a 2×2 all-ones image: every output sees the 4 pixels.
    let y = depthwise(&g, &[1.0; 8], &[1.0; 18], &[0.5, -0.5]).unwrap();
    assert_eq!(y, [4.5, 3.5, 4.5, 3.5, 4.5, 3.5, 4.5, 3.5]);
}

/// `depthwise` writes its output straight into fresh memory (no zero fill first), so every
/// element must come from the kernel: against naive f64 sums over random geometries, with
/// channel counts that take the 4-block groups, single 16-lane blocks and the scalar tail,
/// strides 1 and 2, padding or none, and a batch.
#[test]
fn depthwise_matches_naive_sums() {
    let mut r = Rng(11);
    for case in 0..40 {
        let k = [1, 3, 5][r.size(0, 2)];
        let (h, w) = (r.size(1, 9), r.size(1, 9));
        let c = [3, 16, 35, 64, 83, 130][r.size(0, 5)];
        let stride = r.size(1, 2);
        let pad = (r.size(0, k / 2), r.size(0, k / 2));
        let ho = (h + 2 * pad.0).saturating_sub(k) / stride + 1;
        let wo = (w + 2 * pad.1).saturating_sub(k) / stride + 1;
        let g = DwGeometry {
            h,
            w,
            c,
            ho,
            wo,
            k,
            stride,
            pad,
            act: Act::None,
        };
        let images = r.size(1, 2);
        let x = r.vec(images * h * w * c, 2.0);
        let (kern, bias) = (r.vec(k * k * c, 1.0), r.vec(c, 0.5));
        // A freed block of NaNs of the output's size, which malloc is likely to hand back:
        // an element the kernel did not write then fails the comparison.
        drop(std::hint::black_box(vec![f32::NAN; images * ho * wo * c]));
        let got = depthwise(&g, &x, &kern, &bias).unwrap();
        let mut want = Vec::with_capacity(got.len());
        for b in 0..images {
            for oy in 0..ho {
                for ox in 0..wo {
                    for ch in 0..c {
                        let mut s = bias[ch] as f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (oy * stride + ky, ox * stride + kx);
                                if iy < pad.0 || ix < pad.1 || iy - pad.0 >= h || ix - pad.1 >= w {
                                    continue;
                                }
                                let (iy, ix) = (iy - pad.0, ix - pad.1);
                                s += x[((b * h + iy) * w + ix) * c + ch] as f64
                                    * kern[(ky * k + kx) * c + ch] as f64;
                            }
                        }
                        want.push(s);
                    }
                }
            }
        }
        close(&got, &want, 1e-5, &format!("depthwise case {case}: {g:?}"));
    }
}
