//! A dense 3×3 convolution, stride 1, padding 1, on channels-last data by Winograd's
//! F(2×2, 3×3): each 2×2 block of output pixels comes from a 4×4 input tile through 16
//! channel products instead of 36, so the GEMM work is 16/36 of im2col's, and the 9× copy of
//! the input that im2col makes is gone. `litemedsam`'s neck (256 → 256 channels on a 64×64
//! grid, 2.4 of its ~35 GMAC) is such a convolution.
//!
//! With `d` a 4×4 input tile and `g` a 3×3 kernel (Lavin & Gray, 2016):
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, where
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]` and
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`. Summed over the input channels, the 16 element-wise
//! products become 16 matrix products `M_ξ = V_ξ · U_ξ` (tiles × channels by channels ×
//! outputs), which run on [`sgemm`]. The kernel's transform `U = G g Gᵀ` is made once, in
//! f64 and rounded once; the input's and output's transforms are additions and
//! subtractions only. Against the direct sums the result differs by float reassociation:
//! a few units in the last place of the inputs' scale (the test bounds it).
//!
//! The work goes in bands of tile rows, one rayon task each, with the band's 16 transformed
//! input matrices and 16 products in per-thread scratch (~1 MiB at 256 channels), so they
//! stay near the core that uses them.

use crate::error::{check, KernelError};
use crate::gemm::{sgemm, MatMut, MatRef, Threads};
use rayon::prelude::*;

/// Tiles a band aims at: enough rows for the products to run at full speed, few enough that
/// a band's scratch stays in L2 and the bands spread over the cores. Past 48 the `gemm` crate
/// copies each `U_ξ` into packed panels at every product: `litemedsam`'s neck on one Zen 4
/// core took 22.3 ms at 32 tiles, 23.8 at 64 and 24.0 at 128 (im2col and one GEMM: 69 ms).
const BAND_TILES: usize = 32;

/// A 3×3 kernel's Winograd transform: 16 matrices `U_ξ`, each `c × o` row-major (the layout
/// [`sgemm`] multiplies without copying), with the bias.
#[derive(Clone, Debug)]
pub struct Winograd3 {
    c: usize,
    o: usize,
    u: Vec<f32>,
    bias: Vec<f32>,
}

impl Winograd3 {
    /// From a PyTorch `(o, c, 3, 3)` weight, row-major, and `o` biases.
    pub fn new(w: &[f32], (o, c): (usize, usize), bias: &[f32]) -> Result<Self, KernelError> {
        check(w.len() == o * c * 9 && bias.len() == o, || {
            format!(
                "winograd: weight of {} is not {o}×{c}×3×3, or {} biases for {o} outputs",
                w.len(),
                bias.len()
            )
        })?;
        // `G` applied to three values: (v0, ½(v0 + v1 + v2), ½(v0 − v1 + v2), v2).
        let gv = |v: [f64; 3]| {
            [
                v[0],
                0.5 * (v[0] + v[1] + v[2]),
                0.5 * (v[0] - v[1] + v[2]),
                v[2],
            ]
        };
        let mut u = vec![0f32; 16 * c * o];
        for oi in 0..o {
            for ci in 0..c {
                let g = &w[(oi * c + ci) * 9..][..9];
                // G g, column by column: `cols[s][r]` is row r of column s (4 × 3).
                let cols = [0, 1, 2].map(|s| gv([0, 1, 2].map(|r| f64::from(g[r * 3 + s]))));
                // (G g) Gᵀ, row by row: 4 × 4.
                for r in 0..4 {
                    let t = gv([cols[0][r], cols[1][r], cols[2][r]]);
                    for (s, v) in t.into_iter().enumerate() {
                        u[((r * 4 + s) * c + ci) * o + oi] = v as f32;
                    }
                }
            }
        }
        Ok(Self {
            c,
            o,
            u,
            bias: bias.to_vec(),
        })
    }

    /// Input channels.
    pub fn c(&self) -> usize {
        self.c
    }

    /// Output channels.
    pub fn o(&self) -> usize {
        self.o
    }

    /// The convolution of `x`, `(b, h, w, c)` channels-last, zero-padded by 1: `(b, h, w, o)`
    /// channels-last, bias added.
    pub fn conv(
        &self,
        x: &[f32],
        (b, h, w): (usize, usize, usize),
    ) -> Result<Vec<f32>, KernelError> {
        let (c, o) = (self.c, self.o);
        check(x.len() == b * h * w * c, || {
            format!("winograd: input of {} is not {b}×{h}×{w}×{c}", x.len())
        })?;
        let mut y = vec![0f32; b * h * w * o];
        if y.is_empty() {
            return Ok(y);
        }
        // Tiles across and the tile rows per band.
        let tw = w.div_ceil(2);
        let rows = BAND_TILES.div_ceil(tw).max(1);
        let image = h * w * o;
        let band = 2 * rows * w * o;
        y.par_chunks_mut(image)
            .enumerate()
            .flat_map(|(bi, img)| {
                img.par_chunks_mut(band)
                    .enumerate()
                    .map(move |(k, out)| (bi, k * rows, out))
            })
            .try_for_each_init(Scratch::default, |s, (bi, ty, out)| {
                let xi = &x[bi * h * w * c..][..h * w * c];
                self.band(s, xi, (h, w), ty, out)
            })?;
        Ok(y)
    }

    /// Tile rows from `ty` of one image `x` (`h × w × c`) into `out`, the output rows
    /// `2·ty..` (whole rows, at most `2·rows`).
    fn band(
        &self,
        s: &mut Scratch,
        x: &[f32],
        (h, w): (usize, usize),
        ty: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let (c, o) = (self.c, self.o);
        let tw = w.div_ceil(2);
        let out_rows = out.len() / (w * o);
        let tile_rows = out_rows.div_ceil(2);
        let t = tile_rows * tw;
        s.v.resize(16 * t * c, 0.0);
        s.m.resize(16 * t * o, 0.0);
        s.zero.resize(c, 0.0);
        s.r.resize((16 * c).max(8 * o), 0.0);
        // Bᵀ d B for every tile, into V_ξ (t × c).
        for i in 0..tile_rows {
            for j in 0..tw {
                let tile = i * tw + j;
                // The tile's 16 input pixels, zero outside the image.
                let px = |a: usize, b: usize| -> &[f32] {
                    let (y, xx) = (2 * (ty + i) + a, 2 * j + b);
                    match (y.checked_sub(1), xx.checked_sub(1)) {
                        (Some(y), Some(xx)) if y < h && xx < w => &x[(y * w + xx) * c..][..c],
                        _ => &s.zero,
                    }
                };
                // Bᵀ d: along each column, the four rows combined.
                for col in 0..4 {
                    let (d0, d1, d2, d3) = (px(0, col), px(1, col), px(2, col), px(3, col));
                    let (r0, rest) = s.r[col * 4 * c..].split_at_mut(c);
                    let (r1, rest) = rest.split_at_mut(c);
                    let (r2, r3) = rest.split_at_mut(c);
                    transform_in(d0, d1, d2, d3, [r0, r1, r2, &mut r3[..c]]);
                }
                // (Bᵀ d) B: along each row a, the four columns combined, into V_{4a+b}.
                for a in 0..4 {
                    let at = |col: usize| &s.r[(col * 4 + a) * c..][..c];
                    let mut dst: [&mut [f32]; 4] = Default::default();
                    let mut rest = &mut s.v[(4 * a * t + tile) * c..];
                    for (q, d) in dst.iter_mut().enumerate() {
                        let (head, tail) = rest.split_at_mut(if q < 3 { t * c } else { c });
                        *d = &mut head[..c];
                        rest = tail;
                    }
                    transform_in(at(0), at(1), at(2), at(3), dst);
                }
            }
        }
        // M_ξ = V_ξ · U_ξ.
        for xi in 0..16 {
            let a = MatRef::row_major(&s.v[xi * t * c..][..t * c], t, c)?;
            let u = MatRef::row_major(&self.u[xi * c * o..][..c * o], c, o)?;
            let m = MatMut::row_major(&mut s.m[xi * t * o..][..t * o], t, o)?;
            sgemm(m, false, a, u, Threads::One)?;
        }
        // Aᵀ M A + bias for every tile, into its 2×2 output pixels inside the image.
        for i in 0..tile_rows {
            for j in 0..tw {
                let tile = i * tw + j;
                let m = |xi: usize| &s.m[(xi * t + tile) * o..][..o];
                // Aᵀ M: along each column, rows 0+1+2 and 1−2−3.
                for col in 0..4 {
                    let (s0, s1) = s.r[col * 2 * o..][..2 * o].split_at_mut(o);
                    transform_out(m(col), m(4 + col), m(8 + col), m(12 + col), s0, s1);
                }
                for a in 0..2 {
                    let y = 2 * i + a;
                    if y >= out_rows {
                        continue;
                    }
                    let row = &s.r[..8 * o];
                    let at = |col: usize| &row[(col * 2 + a) * o..][..o];
                    let x0 = 2 * j;
                    let (p0, p1) = out[(y * w + x0) * o..].split_at_mut(o);
                    let p1 = if x0 + 1 < w { Some(&mut p1[..o]) } else { None };
                    finish_out(at(0), at(1), at(2), at(3), &self.bias, p0, p1);
                }
            }
        }
        Ok(())
    }
}

/// A band's working memory, kept by each rayon task across the bands it runs.
#[derive(Default)]
struct Scratch {
    /// The 16 transformed input matrices, `t × c` each.
    v: Vec<f32>,
    /// The 16 products, `t × o` each.
    m: Vec<f32>,
    /// One tile's half-transformed values: 16 vectors of `c` on the way in, 8 of `o` on the
    /// way out.
    r: Vec<f32>,
    /// A pixel outside the image.
    zero: Vec<f32>,
}

/// `Bᵀ` applied across four vectors: `(d0 − d2, d1 + d2, d2 − d1, d1 − d3)`.
#[inline]
fn transform_in(d0: &[f32], d1: &[f32], d2: &[f32], d3: &[f32], out: [&mut [f32]; 4]) {
    let n = d0.len();
    let [o0, o1, o2, o3] = out;
    let (d1, d2, d3) = (&d1[..n], &d2[..n], &d3[..n]);
    let (o0, o1, o2, o3) = (&mut o0[..n], &mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for i in 0..n {
        o0[i] = d0[i] - d2[i];
        o1[i] = d1[i] + d2[i];
        o2[i] = d2[i] - d1[i];
        o3[i] = d1[i] - d3[i];
    }
}

/// `Aᵀ` applied across four vectors: `(m0 + m1 + m2, m1 − m2 − m3)`.
#[inline]
fn transform_out(m0: &[f32], m1: &[f32], m2: &[f32], m3: &[f32], s0: &mut [f32], s1: &mut [f32]) {
    let n = m0.len();
    let (m1, m2, m3) = (&m1[..n], &m2[..n], &m3[..n]);
    let (s0, s1) = (&mut s0[..n], &mut s1[..n]);
    for i in 0..n {
        s0[i] = m0[i] + m1[i] + m2[i];
        s1[i] = m1[i] - m2[i] - m3[i];
    }
}

/// One output row of a tile: `Aᵀ` across its four columns plus the bias, into the left pixel
/// `p0` and, when inside the image, the right one `p1`.
#[inline]
fn finish_out(
    c0: &[f32],
    c1: &[f32],
    c2: &[f32],
    c3: &[f32],
    bias: &[f32],
    p0: &mut [f32],
    p1: Option<&mut [f32]>,
) {
    let n = c0.len();
    let (c1, c2, c3, bias) = (&c1[..n], &c2[..n], &c3[..n], &bias[..n]);
    let p0 = &mut p0[..n];
    for i in 0..n {
        p0[i] = bias[i] + (c0[i] + c1[i] + c2[i]);
    }
    if let Some(p1) = p1 {
        let p1 = &mut p1[..n];
        for i in 0..n {
            p1[i] = bias[i] + (c1[i] - c2[i] - c3[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::lcg;

    /// The direct convolution in f64: `(b, h, w, c)` → `(b, h, w, o)`, padding 1.
    fn direct(
        x: &[f32],
        (b, h, w, c): (usize, usize, usize, usize),
        k: &[f32],
        bias: &[f32],
    ) -> Vec<f64> {
        let o = bias.len();
        let mut y = vec![0f64; b * h * w * o];
        for bi in 0..b {
            for yy in 0..h {
                for xx in 0..w {
                    for oi in 0..o {
                        let mut s = f64::from(bias[oi]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (Some(iy), Some(ix)) =
                                    ((yy + ky).checked_sub(1), (xx + kx).checked_sub(1))
                                else {
                                    continue;
                                };
                                if iy >= h || ix >= w {
                                    continue;
                                }
                                for ci in 0..c {
                                    s += f64::from(x[((bi * h + iy) * w + ix) * c + ci])
                                        * f64::from(k[((oi * c + ci) * 3 + ky) * 3 + kx]);
                                }
                            }
                        }
                        y[((bi * h + yy) * w + xx) * o + oi] = s;
                    }
                }
            }
        }
        y
    }

    /// Against the direct sums in f64, on even and odd sides (the last tile row and column
    /// then reach past the image), one pixel, several bands and a batch; the error stays at
    /// float rounding of the inputs' scale.
    #[test]
    fn equals_the_direct_convolution() {
        for (b, h, w, c, o) in [
            (1, 1, 1, 2, 3),
            (2, 5, 7, 3, 4),
            (1, 8, 8, 16, 16),
            (2, 19, 9, 24, 40),
            (1, 30, 33, 20, 8),
        ] {
            let x = lcg(b * h * w * c, 1);
            let k = lcg(o * c * 9, 2);
            let bias = lcg(o, 3);
            let conv = Winograd3::new(&k, (o, c), &bias).unwrap();
            let got = conv.conv(&x, (b, h, w)).unwrap();
            let want = direct(&x, (b, h, w, c), &k, &bias);
            assert_eq!(got.len(), want.len());
            // Each output sums 9·c products of values below 1 in magnitude.
            let bound = 1e-6 * (9 * c) as f64;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(*g) - w).abs() <= bound,
                    "{b}×{h}×{w}×{c}→{o} at {i}: {g} vs {w}"
                );
            }
        }
    }

    /// The bands do not depend on the thread count: 1 and 3 threads give the same bits.
    #[test]
    fn threads_do_not_change_the_result() {
        let (b, h, w, c, o) = (1, 40, 12, 8, 8);
        let x = lcg(b * h * w * c, 4);
        let conv = Winograd3::new(&lcg(o * c * 9, 5), (o, c), &lcg(o, 6)).unwrap();
        let run = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(|| conv.conv(&x, (b, h, w)).unwrap())
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        assert!(Winograd3::new(&[0.0; 17], (1, 2), &[0.0]).is_err());
        assert!(Winograd3::new(&[0.0; 18], (1, 2), &[0.0, 1.0]).is_err());
        let conv = Winograd3::new(&[0.0; 18], (1, 2), &[0.0]).unwrap();
        assert!(conv.conv(&[0.0; 7], (1, 2, 2)).is_err());
        assert_eq!(conv.conv(&[], (0, 2, 2)).unwrap(), Vec::<f32>::new());
    }
}
