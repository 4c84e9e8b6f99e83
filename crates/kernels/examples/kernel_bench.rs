//! Times each row kernel on every path this CPU has, at the sizes the encoders and the search
//! use, and prints the speed-up over the portable path. Single-threaded, best of several runs.
//!
//! `cargo run --release -p simcase-kernels --example kernel_bench`

use simcase_kernels::{Act, DwGeometry, Isa, Kernels};
use std::hint::black_box;
use std::time::Instant;

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

/// Best time of `reps` runs of `f`, in microseconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let paths: Vec<&Kernels> = Isa::ALL
        .iter()
        .filter_map(|&i| Kernels::for_isa(i))
        .collect();
    for isa in Isa::ALL {
        if let Some(f) = isa.missing_feature() {
            println!("skipped: CPU lacks {f} ({isa} path)");
        }
    }
    // dinov2-s: 257 tokens × 384, MLP 1536, 6 heads; search rows of 512.
    let (tokens, dim, hidden, heads) = (257, 384, 1536, 6);
    let x = data(tokens * dim, 1);
    let (w, b) = (data(dim, 2), data(dim, 3));
    let h = data(tokens * hidden, 4);
    let hb = data(hidden, 5);
    let scores = data(heads * tokens * tokens, 6);
    let rows = data(2048 * 512, 7);
    let q = data(512, 8);
    let g = DwGeometry {
        h: 56,
        w: 56,
        c: 128,
        ho: 56,
        wo: 56,
        k: 3,
        stride: 1,
        pad: (1, 1),
        act: Act::Gelu,
    };
    let img = data(56 * 56 * 128, 9);
    let (dk, db) = (data(9 * 128, 10), data(128, 11));

    println!("| kernel | size | path | µs | vs portable |");
    println!("|---|---|---|---:|---:|");
    let mut base = std::collections::HashMap::new();
    let mut row = |name: &str, size: &str, k: &Kernels, us: f64| {
        let p = *base.entry(name.to_string()).or_insert(us);
        println!(
            "| {name} | {size} | {} | {us:.1} | {:.2}x |",
            k.isa(),
            p / us
        );
    };
    for k in &paths {
        let mut out = vec![0f32; x.len()];
        let us = best(50, || {
            k.layer_norm_rows(&mut out, black_box(&x), &w, &b, 1e-6)
        });
        row("layer_norm_rows", "257×384", k, us);
    }
    for k in &paths {
        let mut y = h.clone();
        let us = best(20, || {
            y.copy_from_slice(&h);
            k.gelu_rows(black_box(&mut y), Some(&hb))
        });
        row("gelu_rows (bias)", "257×1536", k, us);
    }
    for k in &paths {
        let mut s = scores.clone();
        let us = best(20, || {
            s.copy_from_slice(&scores);
            k.softmax_rows(black_box(&mut s), tokens, None)
        });
        row("softmax_rows", "6×257×257", k, us);
    }
    // TinyViT's 7×7 windows: rows of 49, not a multiple of the vector width.
    let win = data(32 * 4 * 49 * 49, 12);
    for k in &paths {
        let mut s = win.clone();
        let us = best(20, || {
            s.copy_from_slice(&win);
            k.softmax_rows(black_box(&mut s), 49, None)
        });
        row("softmax_rows (window)", "32×4×49×49", k, us);
    }
    for k in &paths {
        let mut y = h.clone();
        let us = best(20, || {
            y.copy_from_slice(&h);
            k.act_rows(black_box(&mut y), Act::QuickGelu)
        });
        row("act_rows (QuickGELU)", "257×1536", k, us);
    }
    // With its GELU, and without (the convolution alone).
    for (name, act) in [
        ("depthwise_row (3×3, GELU)", Act::Gelu),
        ("depthwise_row (3×3)", Act::None),
    ] {
        let g = DwGeometry { act, ..g };
        for k in &paths {
            let mut out = vec![0f32; 56 * 128];
            let us = best(5, || {
                for r in 0..56 {
                    k.depthwise_row(&g, &img, &dk, &db, r, black_box(&mut out));
                }
            });
            row(name, "56×56×128", k, us);
        }
    }
    for k in &paths {
        let us = best(20, || {
            let mut s = 0f32;
            for r in rows.chunks_exact(512) {
                s += k.dot(black_box(&q), r);
            }
            black_box(s);
        });
        row("dot", "2048 rows × 512", k, us);
    }
    for k in &paths {
        let mut codes = vec![0u8; hidden];
        let us = best(20, || {
            for row in h.chunks_exact(hidden) {
                black_box(k.quantise_row(black_box(row), &mut codes));
            }
        });
        row("quantise_row (int8)", "257×1536", k, us);
    }
    linear_layers(&x, &h);
    packed_f32_layers();
    dense_conv3();
    mbconv_block();
    window_attention_blocks();
}

/// `litemedsam`'s attention blocks' residual branch, per stage (one image): layer by layer,
/// the whole grid's qkv projection, the windows, and the output projection with the residual
/// (`linear_packed`, `window_attention`, `linear_packed`), against each window projected,
/// attended and projected out by its task (`window_attention_projected`); on one thread and on
/// all.
fn window_attention_blocks() {
    use simcase_kernels::{
        linear_packed, window_attention, window_attention_projected, OutProjection, PackedF32,
        QkvLayout, WindowGrid,
    };
    if !simcase_kernels::packed_f32::available() {
        println!("\nskipped: window attention by window (the AVX2 path is not selected)");
        return;
    }
    println!();
    println!(
        "| window attention block | grid, dim, heads, window | threads | layer by layer ms | \
         by window ms | ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let shapes = [(128, 128, 4, 7usize), (64, 160, 5, 14), (64, 320, 10, 7)];
    for (side, dim, heads, ws) in shapes {
        let tokens = side * side;
        let x = data(tokens * dim, 41);
        let weight = |n: usize, seed: u32| {
            let w: Vec<f32> = data(n * dim, seed).iter().map(|v| v * 0.1).collect();
            PackedF32::pack(&w, n, dim).unwrap()
        };
        let (w, wo) = (weight(3 * dim, 42), weight(dim, 46));
        let (wb, pad, bo) = (data(3 * dim, 43), data(3 * dim, 44), data(dim, 47));
        let residual = data(tokens * dim, 48);
        let bias = data(heads * ws.pow(4), 45);
        let grid = WindowGrid {
            batch: 1,
            height: side,
            width: side,
            window: ws,
        };
        let out = OutProjection {
            weight: &wo,
            bias: &bo,
            residual: &residual,
        };
        let layout = QkvLayout::Interleaved;
        let threads = rayon::current_num_threads();
        for t in [1, threads] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            let (apart, fused) = pool.install(|| {
                let apart = best(5, || {
                    let qkv = linear_packed(black_box(&x), (tokens, dim), &w, &wb, None, Act::None);
                    let o = window_attention(&qkv.unwrap(), &pad, grid, heads, layout, Some(&bias));
                    let y = linear_packed(
                        &o.unwrap(),
                        (tokens, dim),
                        &wo,
                        &bo,
                        Some(&residual),
                        Act::None,
                    );
                    black_box(y.unwrap());
                });
                let fused = best(5, || {
                    let x = black_box(&x);
                    let y = window_attention_projected(
                        x,
                        (&w, &wb),
                        Some(out),
                        &pad,
                        grid,
                        heads,
                        layout,
                        Some(&bias),
                    );
                    black_box(y.unwrap());
                });
                (apart, fused)
            });
            println!(
                "| litemedsam | {side}×{side}, {dim}, {heads}, {ws} | {t} | {:.2} | {:.2} | {:.2}x |",
                apart / 1e3,
                fused / 1e3,
                apart / fused
            );
            if threads == 1 {
                break;
            }
        }
    }
}

/// `litemedsam`'s first-stage MBConv block (256×256 pixels, 64 → 256 → 64 channels) on one
/// thread: made layer by layer (two packed products and the depthwise convolution, each
/// output written to memory) against in bands of rows (`MbConv`).
fn mbconv_block() {
    use simcase_kernels::{MbConv, PackedF32};
    if !simcase_kernels::packed_f32::available() {
        println!("\nskipped: the MBConv block (the AVX2 path is not selected)");
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (h, w, c, hid) = (256, 256, 64, 256);
    let x = data(h * w * c, 31);
    let (expand, project) = (
        PackedF32::pack(&data(hid * c, 32), hid, c).unwrap(),
        PackedF32::pack(&data(c * hid, 33), c, hid).unwrap(),
    );
    let (be, bp) = (data(hid, 34), data(c, 35));
    let (taps, bd) = (data(9 * hid, 36), data(hid, 37));
    let m = MbConv {
        expand: &expand,
        expand_bias: &be,
        depthwise: &taps,
        depthwise_bias: &bd,
        project: &project,
        project_bias: &bp,
    };
    let (layers, banded) = pool.install(|| {
        let layers = best(3, || {
            black_box(m.forward_layers(black_box(&x), (1, h, w, c)).unwrap());
        });
        let banded = best(3, || {
            black_box(m.forward(black_box(&x), (1, h, w, c)).unwrap());
        });
        (layers, banded)
    });
    println!();
    println!("| MBConv block | size | layer by layer ms | in bands ms | ratio |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| litemedsam stage 0 | {h}×{w}×{c} → {hid} → {c} | {:.1} | {:.1} | {:.2}x |",
        layers / 1e3,
        banded / 1e3,
        layers / banded
    );
}

/// f32 linear layers on one thread, the weight as stored (`linear`, the `gemm` crate packing
/// it at each call, once per band of a large output) against packed once (`linear_packed`,
/// the AVX2 path's): `litemedsam`'s banded layers at 4096 rows and `dinov2-s`'s at 257.
fn packed_f32_layers() {
    use simcase_kernels::{linear, linear_packed, PackedF32};
    if !simcase_kernels::packed_f32::available() {
        println!("\nskipped: packed f32 layers (the AVX2 path is not selected)");
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!();
    println!("| f32 linear layer | m×k → n | as stored GMAC/s | packed once GMAC/s | ratio |");
    println!("|---|---|---:|---:|---:|");
    for (name, m, k, n) in [
        ("litemedsam stage 3 fc1", 4096, 320, 1280),
        ("litemedsam stage 3 qkv", 4096, 320, 960),
        ("litemedsam stage 3 fc2", 4096, 1280, 320),
        ("litemedsam stage 2 fc1", 4096, 160, 640),
        ("dinov2-s qkv", 257, 384, 1152),
        ("dinov2-s fc2", 257, 1536, 384),
    ] {
        let x = data(m * k, 21);
        let w = data(n * k, 22);
        let b = data(n, 23);
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let packed = PackedF32::pack(&w, n, k).unwrap();
        let macs = (m * n * k) as f64 / 1e3;
        let (plain, packed) = pool.install(|| {
            let plain = best(5, || {
                black_box(linear(black_box(&x), (m, k), &wt, &b, None, Act::None).unwrap());
            });
            let packed = best(5, || {
                black_box(
                    linear_packed(black_box(&x), (m, k), &packed, &b, None, Act::None).unwrap(),
                );
            });
            (plain, packed)
        });
        println!(
            "| {name} | {m}×{k} → {n} | {:.1} | {:.1} | {:.2}x |",
            macs / plain,
            macs / packed,
            plain / packed
        );
    }
}

/// `litemedsam`'s neck, a 3×3 convolution of 256 → 256 channels on a 64×64 grid, on one
/// thread: im2col and one GEMM (what `DenseConv` runs at bf16 and int8) against Winograd's
/// F(2×2, 3×3) (what it runs at f32).
fn dense_conv3() {
    use simcase_kernels::{sgemm, MatMut, MatRef, Threads, Winograd3};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (h, w, c, o) = (64, 64, 256, 256);
    let x = data(h * w * c, 14);
    let k = data(o * c * 9, 15);
    let bias = data(o, 16);
    // The (ky, kx, c) × o weight of the im2col product.
    let mut wt = vec![0f32; 9 * c * o];
    for (oi, ci, t) in
        (0..o).flat_map(|oi| (0..c).flat_map(move |ci| (0..9).map(move |t| (oi, ci, t))))
    {
        wt[(t * c + ci) * o + oi] = k[(oi * c + ci) * 9 + t];
    }
    let im2col = pool.install(|| {
        best(3, || {
            let mut cols = vec![0f32; h * w * 9 * c];
            for (yo, xo, t) in
                (0..h).flat_map(|y| (0..w).flat_map(move |x| (0..9).map(move |t| (y, x, t))))
            {
                let (iy, ix) = (yo + t / 3, xo + t % 3);
                if (1..=h).contains(&iy) && (1..=w).contains(&ix) {
                    let at = ((yo * w + xo) * 9 + t) * c;
                    cols[at..at + c].copy_from_slice(&x[((iy - 1) * w + ix - 1) * c..][..c]);
                }
            }
            let mut y: Vec<f32> = bias.iter().copied().cycle().take(h * w * o).collect();
            let a = MatRef::row_major(&cols, h * w, 9 * c).unwrap();
            let b = MatRef::row_major(&wt, 9 * c, o).unwrap();
            sgemm(
                MatMut::row_major(&mut y, h * w, o).unwrap(),
                true,
                a,
                b,
                Threads::One,
            )
            .unwrap();
            black_box(y);
        })
    });
    let wg = Winograd3::new(&k, (o, c), &bias).unwrap();
    let winograd = pool.install(|| {
        best(3, || {
            black_box(wg.conv(black_box(&x), (1, h, w)).unwrap());
        })
    });
    println!();
    println!("| 3×3 convolution | size | im2col + GEMM ms | Winograd F(2×2, 3×3) ms | ratio |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| litemedsam neck | {h}×{w}×{c} → {o} | {:.1} | {:.1} | {:.2}x |",
        im2col / 1e3,
        winograd / 1e3,
        im2col / winograd
    );
}

/// dinov2-s's four linear layers, one image (257 tokens), single-threaded: f32 through the
/// `gemm` crate against each int8 path this CPU has, in GMAC/s.
fn linear_layers(x: &[f32], h: &[f32]) {
    use simcase_kernels::{i8_path, linear, linear_i8, I8Path, PackedI8};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut paths = vec![I8Path::Portable];
    if let Some(p) = i8_path().filter(|&p| p != I8Path::Portable) {
        paths.push(p);
    }
    if Isa::Avx2.is_available() && !paths.contains(&I8Path::Avx2) {
        paths.push(I8Path::Avx2);
    }
    println!();
    println!("| linear layer | m×k → n | f32 GMAC/s | int8 path | GMAC/s | vs f32 |");
    println!("|---|---|---:|---|---:|---:|");
    // Batch 1 (257 tokens) and batch 16.
    let (x16, h16) = (x.repeat(16), h.repeat(16));
    for (name, input, k, n) in [
        ("qkv", x, 384, 1152),
        ("proj", x, 384, 384),
        ("fc1", x, 384, 1536),
        ("fc2", h, 1536, 384),
        ("qkv b16", &x16[..], 384, 1152),
        ("fc2 b16", &h16[..], 1536, 384),
    ] {
        let m = input.len() / k;
        let w = data(n * k, 12);
        let b = data(n, 13);
        let macs = (m * n * k) as f64 / 1e3;
        let f32_us = pool.install(|| {
            best(10, || {
                black_box(linear(black_box(input), (m, k), &w, &b, None, Act::None).unwrap());
            })
        });
        let packed = PackedI8::pack(&w, n, k).unwrap();
        for &path in &paths {
            let reps = if path == I8Path::Portable { 2 } else { 10 };
            let us = pool.install(|| {
                best(reps, || {
                    black_box(
                        linear_i8(black_box(input), (m, k), &packed, &b, None, Act::None, path)
                            .unwrap(),
                    );
                })
            });
            println!(
                "| {name} | {m}×{k} → {n} | {:.1} | {path:?} | {:.1} | {:.2}x |",
                macs / f32_us,
                macs / us,
                f32_us / us
            );
        }
    }
}
