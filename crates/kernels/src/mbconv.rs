//! An MBConv block (TinyViT's first stage: a 1×1 expansion with GELU, a 3×3 depthwise
//! convolution with GELU, a 1×1 projection with the block's input added, then GELU) made in
//! bands of output rows, so that its expanded intermediates stay in cache.
//!
//! Why: made layer by layer, `litemedsam`'s first stage writes each expanded map (256 × 256
//! pixels × 256 channels, 64 MiB) to memory and reads it back twice a block: the expansion,
//! the depthwise convolution (bound by memory there: 0.87 ns an output against 0.45–0.78 on
//! inputs in cache) and the projection ran 82, 51 and 65 ms an image (two blocks) on one Zen 3
//! core, for 2.1 GMAC in each product. Here a band of 16 output rows expands its 18 input rows
//! (the two rows around it included, computed again by the neighbouring bands: 12% more
//! expansion), and each output row is convolved and projected at once, its depthwise row
//! (256 KiB) still in L2.
//!
//! The values are the unfused layers' bit for bit: each element is the same sum in the same
//! order (the packed products' one depth block per output, the depthwise taps of the rows
//! inside the image only), then the same bias, residual and GELU (test).

use crate::activation::Act;
use crate::depthwise::DwGeometry;
use crate::error::{check, KernelError};
use crate::gemm::{MatMut, MatRef};
use crate::packed_f32::{gemm_packed, Epilogue, PackedF32, Store};
use std::mem::MaybeUninit;

/// Output rows a task makes: its two neighbouring input rows are expanded again by the next
/// band (2/16 more expansion), and 18 expanded rows of `litemedsam`'s first stage (4.5 MiB)
/// stay in L3 beside the other core's.
const BAND_ROWS: usize = 16;

/// The weights of an MBConv block, with its BatchNorms folded in: the expansion `hidden × c`
/// and the projection `c × hidden` packed ([`PackedF32`], PyTorch's `(out, in)`), the depthwise
/// kernel `(9, hidden)` tap-major (as [`crate::depthwise()`] takes it).
pub struct MbConv<'a> {
    /// The 1×1 expansion, `hidden` outputs of `c` inputs.
    pub expand: &'a PackedF32,
    /// Its bias, `hidden`.
    pub expand_bias: &'a [f32],
    /// The 3×3 depthwise kernel, `(9, hidden)`.
    pub depthwise: &'a [f32],
    /// Its bias, `hidden`.
    pub depthwise_bias: &'a [f32],
    /// The 1×1 projection, `c` outputs of `hidden` inputs.
    pub project: &'a PackedF32,
    /// Its bias, `c`.
    pub project_bias: &'a [f32],
}

impl MbConv<'_> {
    /// `gelu(x + project(gelu(depthwise(gelu(expand(x))))))` on channels-last `x`, `(b, h, w,
    /// c)`, the depthwise convolution 3×3 with stride 1 and one zero of padding each side.
    /// `Err` when the shapes do not fit or the CPU lacks AVX2 and FMA (the packed products';
    /// callers check [`crate::packed_f32::available`]).
    pub fn forward(
        &self,
        x: &[f32],
        (b, h, w, c): (usize, usize, usize, usize),
    ) -> Result<Vec<f32>, KernelError> {
        let hid = self.expand.n();
        check(
            x.len() == b * h * w * c
                && self.expand.k() == c
                && self.expand_bias.len() == hid
                && self.depthwise.len() == 9 * hid
                && self.depthwise_bias.len() == hid
                && (self.project.n(), self.project.k()) == (c, hid)
                && self.project_bias.len() == c
                && c > 0
                && hid > 0,
            || {
                format!(
                    "mbconv: input of {} as {b}×{h}×{w}×{c}, expansion {}×{}, depthwise {}, \
                     projection {}×{} do not fit",
                    x.len(),
                    self.expand.n(),
                    self.expand.k(),
                    self.depthwise.len(),
                    self.project.n(),
                    self.project.k()
                )
            },
        )?;
        check(crate::Isa::Avx2.is_available(), || {
            "mbconv: this CPU lacks AVX2 or FMA".to_string()
        })?;
        // SAFETY: `band` writes each row of its band when it returns `Ok` (each row's
        // projection overwrites all of it).
        unsafe {
            crate::buffer::try_par_bands_uninit(b * h, w * c, BAND_ROWS, |first, band| {
                self.band(x, (h, w, c), first, band)
            })
        }
    }

    /// The block made layer by layer with the same kernels, each layer's output written in
    /// full ([`crate::linear_packed`], [`crate::depthwise()`]): the reference [`Self::forward`]
    /// equals, for tests and benchmarks.
    pub fn forward_layers(
        &self,
        x: &[f32],
        (b, h, w, c): (usize, usize, usize, usize),
    ) -> Result<Vec<f32>, KernelError> {
        let hid = self.expand.n();
        let e = crate::linear_packed(
            x,
            (b * h * w, c),
            self.expand,
            self.expand_bias,
            None,
            Act::Gelu,
        )?;
        let g = DwGeometry {
            h,
            w,
            c: hid,
            ho: h,
            wo: w,
            k: 3,
            stride: 1,
            pad: (1, 1),
            act: Act::Gelu,
        };
        let d = crate::depthwise(&g, &e, self.depthwise, self.depthwise_bias)?;
        drop(e);
        crate::linear_packed(
            &d,
            (b * h * w, hid),
            self.project,
            self.project_bias,
            Some(x),
            Act::Gelu,
        )
    }

    /// Output rows `first ..` (of all images' rows stacked) into `band`, whole rows of `w·c`,
    /// split where a band crosses from one image to the next.
    fn band(
        &self,
        x: &[f32],
        (h, w, c): (usize, usize, usize),
        first: usize,
        band: &mut [MaybeUninit<f32>],
    ) -> Result<(), KernelError> {
        let row = w * c;
        let mut done = 0;
        while done < band.len() / row {
            let (image, r0) = ((first + done) / h, (first + done) % h);
            let r1 = h.min(r0 + band.len() / row - done);
            let out = &mut band[done * row..(done + r1 - r0) * row];
            self.rows(
                &x[image * h * row..(image + 1) * h * row],
                (h, w, c),
                r0..r1,
                out,
            )?;
            done += r1 - r0;
        }
        Ok(())
    }

    /// Rows `rows` of one image's output (`img` its input, `h × w × c`) into `out`.
    fn rows(
        &self,
        img: &[f32],
        (h, w, c): (usize, usize, usize),
        rows: std::ops::Range<usize>,
        out: &mut [MaybeUninit<f32>],
    ) -> Result<(), KernelError> {
        let hid = self.expand.n();
        // The expanded rows the depthwise convolution reads: one more each side, inside the
        // image.
        let (lo, hi) = (rows.start.saturating_sub(1), h.min(rows.end + 1));
        let pixels = (hi - lo) * w;
        let a = MatRef::row_major(&img[lo * w * c..hi * w * c], pixels, c)?;
        let gelu = Epilogue {
            bias: self.expand_bias,
            residual: None,
            act: Act::Gelu,
        };
        // SAFETY: the product overwrites (`Store::Finish`): it reads no element before writing
        // it, and writes all of them when it returns `Ok`.
        let expanded = unsafe {
            crate::buffer::try_new_matrix(pixels, hid, |dst| {
                gemm_packed(dst, a, self.expand, 0, Store::Finish(gelu))
            })
        }?;
        // The expanded rows as an image of their own: output row j (image row rows.start + j)
        // reads image rows rows.start + j − 1 .. + 2, which sit at lo onwards; rows outside the
        // image are skipped as padding, as in the whole image.
        let g = DwGeometry {
            h: hi - lo,
            w,
            c: hid,
            ho: rows.len(),
            wo: w,
            k: 3,
            stride: 1,
            pad: (1 + lo - rows.start, 1),
            act: Act::Gelu,
        };
        g.check(&expanded, self.depthwise, self.depthwise_bias)?;
        let kern = crate::kernels();
        // One depthwise row, written whole by the kernel before it is read.
        let mut dw = vec![MaybeUninit::<f32>::uninit(); w * hid];
        for (j, orow) in out.chunks_exact_mut(w * c).enumerate() {
            (kern.depthwise_row)(
                &g,
                &expanded,
                self.depthwise,
                self.depthwise_bias,
                j,
                &mut dw,
            );
            // SAFETY: `depthwise_row` wrote every element of its row (`wo·c`, all of `dw`);
            // `MaybeUninit<f32>` has the layout of `f32`.
            let dwf = unsafe { &*(&dw[..] as *const [MaybeUninit<f32>] as *const [f32]) };
            let r = rows.start + j;
            let residual = &img[r * w * c..(r + 1) * w * c];
            // SAFETY: the product overwrites (`Store::Finish`): it reads no element of the row
            // before writing it, and writes all of it (or fails, and the band is zeroed).
            let dst = unsafe { MatMut::uninit_row_major(orow, w, c) }?;
            let e = Epilogue {
                bias: self.project_bias,
                residual: Some(residual),
                act: Act::Gelu,
            };
            gemm_packed(
                dst,
                MatRef::row_major(dwf, w, hid)?,
                self.project,
                0,
                Store::Finish(e),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panels::lcg;

    /// Bit for bit the layers' values: bands inside an image, at its top and bottom, crossing
    /// from one image to the next (37 rows), an image of one row and of fewer rows than a band,
    /// channels past the depthwise kernel's blocks of 16; on one thread and on three. Shapes
    /// that do not fit are refused.
    #[test]
    fn banded_block_is_the_layers() {
        if !crate::Isa::Avx2.is_available() {
            eprintln!("no AVX2 and FMA here: the packed products cannot run");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(b, h, w, c, hid) in &[
            (2, 37, 9, 16, 64),
            (1, 1, 5, 8, 24),
            (3, 5, 4, 12, 40),
            (1, 40, 7, 20, 80),
        ] {
            let x: Vec<f32> = lcg(b * h * w * c, 1).iter().map(|v| 3.0 * v).collect();
            let (we, be) = (lcg(hid * c, 2), lcg(hid, 3));
            let (wd, bd) = (lcg(9 * hid, 4), lcg(hid, 5));
            let (wp, bp) = (lcg(c * hid, 6), lcg(c, 7));
            let (expand, project) = (
                PackedF32::pack(&we, hid, c).unwrap(),
                PackedF32::pack(&wp, c, hid).unwrap(),
            );
            let m = MbConv {
                expand: &expand,
                expand_bias: &be,
                depthwise: &wd,
                depthwise_bias: &bd,
                project: &project,
                project_bias: &bp,
            };
            let want = m.forward_layers(&x, (b, h, w, c)).unwrap();
            for threads in [1, 3] {
                let got = if threads == 1 {
                    m.forward(&x, (b, h, w, c)).unwrap()
                } else {
                    pool.install(|| m.forward(&x, (b, h, w, c))).unwrap()
                };
                let same = got.len() == want.len()
                    && got
                        .iter()
                        .zip(&want)
                        .all(|(g, e)| g.to_bits() == e.to_bits());
                assert!(same, "{b}×{h}×{w}×{c}, {hid} hidden, {threads} threads");
            }
            assert!(m.forward(&x[1..], (b, h, w, c)).is_err());
            assert!(m.forward(&x, (b, h, w + 1, c)).is_err());
        }
    }
}
