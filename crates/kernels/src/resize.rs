//! PyTorch's bicubic resize (`F.interpolate(mode="bicubic", align_corners=False,
//! antialias=False)`), used to fit position embeddings to another grid at load.

/// PyTorch's cubic convolution weights (A = −0.75) for fractional offset `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let cc1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cc2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)]
}

fn cubic_axis(input: usize, output: usize) -> Vec<(isize, [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let i0 = real.floor();
            (i0 as isize, cubic_weights(real - i0))
        })
        .collect()
}

/// Resizes `planes` stacked `(planes, ih, iw)` to `(planes, oh, ow)`; edge samples are clamped
/// as in PyTorch. An input shorter than `planes·ih·iw` (or an empty axis) gives zeros.
pub fn bicubic_resize_planes(
    src: &[f32],
    planes: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; planes * oh * ow];
    if ih == 0 || iw == 0 || src.len() < planes * ih * iw {
        return out;
    }
    let (ys, xs) = (cubic_axis(ih, oh), cubic_axis(iw, ow));
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    for p in 0..planes {
        let img = &src[p * ih * iw..(p + 1) * ih * iw];
        for (oy, (y0, wy)) in ys.iter().enumerate() {
            for (ox, (x0, wx)) in xs.iter().enumerate() {
                let mut rows = [0f32; 4];
                for (r, row) in rows.iter_mut().enumerate() {
                    let y = clamp(y0 - 1 + r as isize, ih);
                    *row = (0..4)
                        .map(|k| img[y * iw + clamp(x0 - 1 + k as isize, iw)] * wx[k])
                        .sum();
                }
                out[p * oh * ow + oy * ow + ox] = (0..4).map(|r| rows[r] * wy[r]).sum();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by torch 2.15: F.interpolate(arange(16.).view(1,1,4,4), size=(3,3),
    /// mode="bicubic", align_corners=False).
    #[test]
    fn bicubic_matches_torch() {
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = bicubic_resize_planes(&src, 1, 4, 4, 3, 3);
        let want = [
            0.6308, 2.0046, 3.3785, 6.1262, 7.5, 8.8738, 11.6215, 12.9954, 14.3692,
        ];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{out:?}");
        }
    }

    #[test]
    fn short_input_gives_zeros_not_a_panic() {
        assert_eq!(bicubic_resize_planes(&[1.0; 15], 1, 4, 4, 2, 2), [0.0; 4]);
    }
}
