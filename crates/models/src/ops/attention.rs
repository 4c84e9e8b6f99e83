//! Multi-head self-attention from a fused qkv projection as a candle op (by
//! `simcase_kernels::attention`: one (sequence, head) per task, written straight into token
//! order), with the plain-tensor version for other devices.

use super::{cpu_f32, kernel_err, F32Kernel, Fused, Linear};
use candle_core::{Layout, Result, Shape, Tensor};
use simcase_kernels::{PackedF32, QkvLayout, WindowGrid};
use std::sync::Arc;

struct Attention {
    seqs: usize,
    tokens: usize,
    heads: usize,
    layout: QkvLayout,
    bias: Option<Arc<Vec<f32>>>,
}

impl F32Kernel<1> for Attention {
    const NAME: &'static str = "simcase-attention";
    const INPUTS: [&'static str; 1] = ["qkv"];

    fn run(&self, [(qkv, _)]: [(&[f32], &Layout); 1]) -> Result<(Vec<f32>, Shape)> {
        let out = simcase_kernels::attention(
            qkv,
            self.seqs,
            self.tokens,
            self.heads,
            self.layout,
            self.bias.as_deref().map(|b| b.as_slice()),
        )
        .map_err(kernel_err)?;
        let d = qkv.len() / (self.seqs * self.tokens) / 3;
        Ok((out, Shape::from((self.seqs * self.tokens, d))))
    }
}

/// Attention over `seqs` sequences of `tokens` tokens; `qkv`: `(seqs·tokens, 3·dim)`;
/// `bias`: optional `(heads, tokens, tokens)` added to the logits. The scale is expected to be
/// folded into q. Returns `(seqs·tokens, dim)`.
pub fn attention(
    qkv: &Tensor,
    seqs: usize,
    tokens: usize,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let d = qkv.dim(1)? / 3;
    if cpu_f32(qkv) {
        let bias = match bias {
            Some(b) => Some(Arc::new(b.flatten_all()?.to_vec1::<f32>()?)),
            None => None,
        };
        let op = Attention {
            seqs,
            tokens,
            heads,
            layout,
            bias,
        };
        return qkv.contiguous()?.apply_op1_no_bwd(&Fused(&op));
    }
    let hd = d / heads;
    let qkv = match layout {
        QkvLayout::Blocks => qkv
            .reshape((seqs, tokens, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?,
        QkvLayout::Interleaved => qkv
            .reshape((seqs, tokens, heads, 3, hd))?
            .permute((3, 0, 2, 1, 4))?,
    };
    let (q, k, v) = (
        qkv.get(0)?.contiguous()?,
        qkv.get(1)?.contiguous()?,
        qkv.get(2)?.contiguous()?,
    );
    let mut att = q.matmul(&k.t()?)?;
    if let Some(b) = bias {
        att = att.broadcast_add(b)?;
    }
    candle_nn::ops::softmax_last_dim(&att)?
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((seqs * tokens, d))
}

/// The `(tokens, dim)` shape of a window attention's output over `grid`.
fn rows_shape(grid: WindowGrid, dim: usize) -> Shape {
    Shape::from((grid.batch * grid.height * grid.width, dim))
}

/// A window attention's bias over window positions, `(heads, n, n)`, with the host copy the
/// CPU kernels read made once, when the model loads: a block's forward copied it out of its
/// tensor at every call (768 KiB a block for `litemedsam`'s 14-sided windows).
pub struct WindowBias {
    tensor: Tensor,
    /// `tensor`'s values, where it is f32 on the CPU.
    host: Option<Vec<f32>>,
}

impl WindowBias {
    /// `tensor`: `(heads, n, n)`.
    pub fn new(tensor: Tensor) -> Result<Self> {
        let host = cpu_f32(&tensor)
            .then(|| tensor.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        Ok(Self { tensor, host })
    }

    /// The bias as a tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The bias as the kernels take it: the copy made at load, or one made now for a tensor
    /// that is not f32 on the CPU.
    fn host(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        Ok(match &self.host {
            Some(v) => std::borrow::Cow::Borrowed(&v[..]),
            None => std::borrow::Cow::Owned(
                self.tensor
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            ),
        })
    }
}

/// An optional window bias as the kernels take it.
fn host_bias(bias: Option<&WindowBias>) -> Result<Option<std::borrow::Cow<'_, [f32]>>> {
    bias.map(WindowBias::host).transpose()
}

struct WindowAttention<'a> {
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<std::borrow::Cow<'a, [f32]>>,
}

impl F32Kernel<2> for WindowAttention<'_> {
    const NAME: &'static str = "simcase-window-attention";
    const INPUTS: [&'static str; 2] = ["qkv", "padding token's qkv"];

    fn run(&self, [(qkv, _), (pad, _)]: [(&[f32], &Layout); 2]) -> Result<(Vec<f32>, Shape)> {
        let out = simcase_kernels::window_attention(
            qkv,
            pad,
            self.grid,
            self.heads,
            self.layout,
            self.bias.as_deref(),
        )
        .map_err(kernel_err)?;
        Ok((out, rows_shape(self.grid, pad.len() / 3)))
    }
}

/// Window attention over a channels-last grid: `qkv` `(b·h·w, 3·dim)` holds the grid's tokens
/// in grid order, `pad` `(3·dim)` the qkv of a padding token, which fills the windows past the
/// grid's bottom and right edges; `bias`: optional, over `ws²` positions. Returns `(b·h·w, dim)`,
/// as padding, partitioning into windows, [`attention`] and cropping would (which is what
/// other devices than the CPU do).
pub fn window_attention(
    qkv: &Tensor,
    pad: &Tensor,
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&WindowBias>,
) -> Result<Tensor> {
    if cpu_f32(qkv) && cpu_f32(pad) {
        let bias = host_bias(bias)?;
        let op = WindowAttention {
            grid,
            heads,
            layout,
            bias,
        };
        return qkv
            .contiguous()?
            .apply_op2_no_bwd(&pad.flatten_all()?.contiguous()?, &Fused(&op));
    }
    let WindowGrid {
        batch: b,
        height: h,
        width: w,
        window: ws,
    } = grid;
    let d3 = qkv.dim(1)?;
    let (pb, pr) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let pad = pad.flatten_all()?;
    let mut x = qkv.reshape((b, h, w, d3))?;
    if pb > 0 {
        x = Tensor::cat(&[&x, &pad.broadcast_as((b, pb, w, d3))?], 1)?;
    }
    if pr > 0 {
        x = Tensor::cat(&[&x, &pad.broadcast_as((b, h + pb, pr, d3))?], 2)?;
    }
    let (nh, nw) = grid.tiles();
    let windows = x
        .reshape((b, nh, ws, nw, ws, d3))?
        .transpose(2, 3)?
        .contiguous()?
        .reshape((b * nh * nw * ws * ws, d3))?;
    let y = attention(
        &windows,
        b * nh * nw,
        ws * ws,
        heads,
        layout,
        bias.map(WindowBias::tensor),
    )?;
    let d = d3 / 3;
    y.reshape((b, nh, nw, ws, ws, d))?
        .transpose(2, 3)?
        .reshape((b, nh * ws, nw * ws, d))?
        .narrow(1, 0, h)?
        .narrow(2, 0, w)?
        .contiguous()?
        .reshape((b * h * w, d))
}

struct WindowAttentionBlock<'a> {
    qkv: (&'a PackedF32, &'a [f32]),
    proj: (&'a PackedF32, &'a [f32]),
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<std::borrow::Cow<'a, [f32]>>,
}

impl F32Kernel<3> for WindowAttentionBlock<'_> {
    const NAME: &'static str = "simcase-window-attention-block";
    const INPUTS: [&'static str; 3] = ["normalised tokens", "block input", "padding token's qkv"];

    fn run(
        &self,
        [(x, _), (residual, _), (pad, _)]: [(&[f32], &Layout); 3],
    ) -> Result<(Vec<f32>, Shape)> {
        let out = simcase_kernels::OutProjection {
            weight: self.proj.0,
            bias: self.proj.1,
            residual,
        };
        let out = simcase_kernels::window_attention_block(
            x,
            self.qkv,
            out,
            pad,
            self.grid,
            self.heads,
            self.layout,
            self.bias.as_deref(),
        )
        .map_err(kernel_err)?;
        Ok((out, rows_shape(self.grid, pad.len() / 3)))
    }
}

/// An attention block's residual branch over windows: `x + proj(window_attention(qkv(h)))`,
/// `h` `(b·h·w, dim)` the normalised tokens and `x` the block's input, both in grid order;
/// `pad` `(3·dim)` the qkv of a padding token. Where both projections run packed f32, one
/// kernel makes the branch (`simcase_kernels::window_attention_block`: window by window where
/// that pays, the same values bit for bit); elsewhere candle's layers, over the whole grid.
#[allow(clippy::too_many_arguments)]
pub fn window_attention_block(
    h: &Tensor,
    x: &Tensor,
    (qkv, proj): (&Linear, &Linear),
    pad: &Tensor,
    grid: WindowGrid,
    heads: usize,
    layout: QkvLayout,
    bias: Option<&WindowBias>,
) -> Result<Tensor> {
    match qkv.f32_panels().zip(proj.f32_panels()) {
        Some((qkv, proj)) if cpu_f32(h) && cpu_f32(x) && cpu_f32(pad) => {
            let bias = host_bias(bias)?;
            let op = WindowAttentionBlock {
                qkv,
                proj,
                grid,
                heads,
                layout,
                bias,
            };
            h.contiguous()?.apply_op3_no_bwd(
                &x.contiguous()?,
                &pad.flatten_all()?.contiguous()?,
                &Fused(&op),
            )
        }
        _ => {
            let o = window_attention(&qkv.forward(h)?, pad, grid, heads, layout, bias)?;
            proj.forward_residual(&o, x)
        }
    }
}

struct AttentionFirst {
    seqs: usize,
    tokens: usize,
    heads: usize,
}

impl F32Kernel<2> for AttentionFirst {
    const NAME: &'static str = "simcase-attention-first";
    const INPUTS: [&'static str; 2] = ["first-token queries", "keys and values"];

    fn run(&self, [(q, _), (kv, _)]: [(&[f32], &Layout); 2]) -> Result<(Vec<f32>, Shape)> {
        let out = simcase_kernels::attention_first(q, kv, self.seqs, self.tokens, self.heads)
            .map_err(kernel_err)?;
        Ok((out, Shape::from((self.seqs, q.len() / self.seqs))))
    }
}

/// Attention for each sequence's first token only: `q` `(seqs, dim)` holds the first tokens'
/// queries (scale folded in), `kv` `(seqs·tokens, 2·dim)` every token's `[k | v]`. Returns
/// `(seqs, dim)`, row 0 of each sequence of [`attention`].
pub fn attention_first(
    q: &Tensor,
    kv: &Tensor,
    seqs: usize,
    tokens: usize,
    heads: usize,
) -> Result<Tensor> {
    if cpu_f32(q) && cpu_f32(kv) {
        let op = AttentionFirst {
            seqs,
            tokens,
            heads,
        };
        return q
            .contiguous()?
            .apply_op2_no_bwd(&kv.contiguous()?, &Fused(&op));
    }
    let d = q.dim(1)?;
    let hd = d / heads;
    let q = q.reshape((seqs, heads, 1, hd))?;
    let kv = kv
        .reshape((seqs, tokens, 2, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    let (k, v) = (kv.get(0)?.contiguous()?, kv.get(1)?.contiguous()?);
    candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?
        .matmul(&v)?
        .reshape((seqs, d))
}

#[cfg(test)]
mod tests {
    use super::super::max_diff;
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_attention_matches_tensor_version_for_both_layouts() {
        let dev = Device::Cpu;
        let (seqs, n, heads, hd) = (3, 11, 2, 8);
        let qkv = Tensor::randn(0f32, 1.0, (seqs * n, 3 * heads * hd), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (heads, n, n), &dev).unwrap();
        for layout in [QkvLayout::Blocks, QkvLayout::Interleaved] {
            for b in [None, Some(&bias)] {
                let got = attention(&qkv, seqs, n, heads, layout, b).unwrap();
                // Reference through the generic path by moving to a non-fused code path.
                let d = heads * hd;
                let r = match layout {
                    QkvLayout::Blocks => qkv
                        .reshape((seqs, n, 3, heads, hd))
                        .unwrap()
                        .permute((2, 0, 3, 1, 4)),
                    QkvLayout::Interleaved => qkv
                        .reshape((seqs, n, heads, 3, hd))
                        .unwrap()
                        .permute((3, 0, 2, 1, 4)),
                }
                .unwrap();
                let (q, k, v) = (
                    r.get(0).unwrap().contiguous().unwrap(),
                    r.get(1).unwrap().contiguous().unwrap(),
                    r.get(2).unwrap().contiguous().unwrap(),
                );
                let mut att = q.matmul(&k.t().unwrap()).unwrap();
                if let Some(b) = b {
                    att = att.broadcast_add(b).unwrap();
                }
                let want = candle_nn::ops::softmax_last_dim(&att)
                    .unwrap()
                    .matmul(&v)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((seqs * n, d))
                    .unwrap();
                assert!(max_diff(&got, &want) < 1e-5, "{layout:?}");
            }
        }
    }

    /// The fused first-token attention (f32 on CPU) and the tensor version (taken for f64)
    /// give row 0 of each sequence of the full attention.
    #[test]
    fn first_token_attention_is_row_0_of_attention_on_both_paths() {
        let (seqs, n, heads, hd) = (3, 11, 4, 8);
        let d = heads * hd;
        let qkv = Tensor::randn(0f32, 1.0, (seqs * n, 3 * d), &Device::Cpu).unwrap();
        let full = attention(&qkv, seqs, n, heads, QkvLayout::Blocks, None).unwrap();
        let want = full
            .reshape((seqs, n, d))
            .unwrap()
            .get_on_dim(1, 0)
            .unwrap();
        let q = qkv
            .reshape((seqs, n, 3 * d))
            .unwrap()
            .get_on_dim(1, 0)
            .unwrap()
            .narrow(1, 0, d)
            .unwrap();
        let kv = qkv.narrow(1, d, 2 * d).unwrap();
        let fused = attention_first(&q, &kv, seqs, n, heads).unwrap();
        assert!(max_diff(&fused, &want) < 1e-5);
        let f64 = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
        let plain = attention_first(&f64(&q), &f64(&kv), seqs, n, heads)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        assert!(max_diff(&plain, &want) < 1e-5);
    }

    /// The block's residual branch through the kernel (where the projections are packed: the
    /// AVX2 path) is candle's layers bit for bit, on one thread and on two.
    #[test]
    fn window_block_by_window_is_the_layers() {
        let dev = Device::Cpu;
        let (heads, hd, dim_in) = (2, 8, 12);
        let d = heads * hd;
        let grid = WindowGrid {
            batch: 2,
            height: 9,
            width: 10,
            window: 4,
        };
        let tokens = 2 * 9 * 10;
        let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let qkv = Linear::new(randn(&[3 * d, dim_in]), randn(&[3 * d])).unwrap();
        let proj = Linear::new(randn(&[d, d]), randn(&[d])).unwrap();
        let (h, x, pad) = (
            randn(&[tokens, dim_in]),
            randn(&[tokens, d]),
            randn(&[3 * d]),
        );
        let bias = WindowBias::new(randn(&[heads, 16, 16])).unwrap();
        let layout = QkvLayout::Interleaved;
        let o = window_attention(
            &qkv.forward(&h).unwrap(),
            &pad,
            grid,
            heads,
            layout,
            Some(&bias),
        );
        let want = proj.forward_residual(&o.unwrap(), &x).unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| {
                let layers = (&qkv, &proj);
                window_attention_block(&h, &x, layers, &pad, grid, heads, layout, Some(&bias))
            });
            let (got, want) = (got.unwrap(), want.clone());
            let bits = |t: Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.into_iter().map(f32::to_bits).collect()
            };
            assert_eq!(got.dims(), want.dims());
            assert!(bits(got) == bits(want), "{threads} threads");
        }
    }

    /// The fused window attention (f32 on CPU) and the tensor version (taken for f64: pad,
    /// partition, attend, crop) agree on a grid that the window does not divide.
    #[test]
    fn window_attention_fused_and_tensor_versions_agree() {
        let (heads, hd) = (2, 8);
        let d3 = 3 * heads * hd;
        let grid = WindowGrid {
            batch: 2,
            height: 5,
            width: 6,
            window: 4,
        };
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (2 * 5 * 6, d3), &dev).unwrap();
        let pad = Tensor::randn(0f32, 1.0, d3, &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (heads, 16, 16), &dev).unwrap();
        let f64 = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
        let (bias, bias64) = (
            WindowBias::new(bias.clone()).unwrap(),
            WindowBias::new(f64(&bias)).unwrap(),
        );
        for layout in [QkvLayout::Blocks, QkvLayout::Interleaved] {
            let fused = window_attention(&qkv, &pad, grid, heads, layout, Some(&bias)).unwrap();
            assert_eq!(fused.dims(), &[60, heads * hd]);
            let plain =
                window_attention(&f64(&qkv), &f64(&pad), grid, heads, layout, Some(&bias64))
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap();
            assert!(max_diff(&fused, &plain) < 1e-5, "{layout:?}");
        }
    }

    #[test]
    fn a_qkv_that_does_not_fit_the_heads_is_an_error() {
        let qkv = Tensor::zeros((4, 9), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = attention(&qkv, 2, 2, 2, QkvLayout::Blocks, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}
