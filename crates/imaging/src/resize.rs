//! Bilinear resize that reproduces PyTorch's
//! `F.interpolate(mode="bilinear", align_corners=False, antialias=False)` on CPU,
//! so embeddings match the reference pipelines the models were evaluated with.

use crate::Image;

/// Source indices and weights along one axis, as PyTorch's `compute_indices_weights_linear`.
fn axis_weights(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| {
            let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let l1 = (real - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Resize every plane of `img` to `out_w × out_h`.
pub fn resize_bilinear(img: &Image, out_w: usize, out_h: usize) -> Image {
    let (w, h) = (img.width, img.height);
    let xs = axis_weights(w, out_w);
    let ys = axis_weights(h, out_h);
    let mut data = vec![0f32; 3 * out_w * out_h];
    for c in 0..3 {
        let src = &img.data[c * w * h..(c + 1) * w * h];
        let dst = &mut data[c * out_w * out_h..(c + 1) * out_w * out_h];
        for (oy, &(y0, y1, wy0, wy1)) in ys.iter().enumerate() {
            let r0 = &src[y0 * w..(y0 + 1) * w];
            let r1 = &src[y1 * w..(y1 + 1) * w];
            let row = &mut dst[oy * out_w..(oy + 1) * out_w];
            for (o, &(x0, x1, wx0, wx1)) in row.iter_mut().zip(&xs) {
                *o = wy0 * (wx0 * r0[x0] + wx1 * r0[x1]) + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]);
            }
        }
    }
    Image::new(out_w, out_h, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch: interpolate(arange(4.).view(1,1,1,4), size=(1,6), mode="bilinear",
    /// align_corners=False); note the clamps at both edges.
    #[test]
    fn upsample_matches_torch() {
        let img = Image::from_gray(4, 1, &[0.0, 1.0, 2.0, 3.0]);
        let out = resize_bilinear(&img, 6, 1);
        let want = [0.0, 0.5, 1.1666667, 1.8333333, 2.5, 3.0];
        for (a, b) in out.data[..6].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", &out.data[..6]);
        }
    }

    /// torch: interpolate(arange(8.).view(1,1,1,8), size=(1,3)) = [0.8333, 3.5, 6.1667].
    #[test]
    fn downsample_matches_torch_without_antialias() {
        let img = Image::from_gray(8, 1, &[0., 1., 2., 3., 4., 5., 6., 7.]);
        let out = resize_bilinear(&img, 3, 1);
        let want = [0.8333333, 3.5, 6.1666665];
        for (a, b) in out.data[..3].iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{:?}", &out.data[..3]);
        }
    }
}
