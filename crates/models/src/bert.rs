//! BERT in Hugging Face `BertModel` naming (`embeddings.*`, `encoder.layer.N.*`), and
//! BiomedCLIP's text tower on top of it: open_clip's `HFTextEncoder` with BiomedBERT-base,
//! the CLS token of the last hidden state, and an MLP projection 768→640→512 without bias
//! (`text.transformer.*`, `text.proj.0`, `text.proj.2`).
//!
//! Padding is never materialised: open_clip pads to 256 and masks the padded keys, which leaves
//! every real token's output exactly as if the sequence stopped at `[SEP]`.

use crate::ops::{attention, layer_norm, Act, DenseLinear, Linear, QkvLayout};
use crate::transformer::{load_linear, norm, qkv_scaled};
use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug, PartialEq)]
/// Shape of a BERT encoder (Hugging Face `BertModel` layout).
pub struct Config {
    /// Rows of `embeddings.word_embeddings.weight`: the WordPiece vocabulary size.
    pub vocab_size: usize,
    /// Width of every token's hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers (`encoder.layer.N`).
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// Width of each layer's feed-forward hidden layer.
    pub intermediate_size: usize,
    /// Rows of `embeddings.position_embeddings.weight`: the longest input in tokens.
    pub max_positions: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
}

impl Config {
    /// `microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract` (BERT-base, uncased, 30522).
    pub fn biomedbert_base() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_layers: 12,
            num_heads: 12,
            intermediate_size: 3072,
            max_positions: 512,
            layer_norm_eps: 1e-12,
        }
    }
}

/// A post-norm encoder layer with q/k/v fused and the attention scale folded into q.
struct Layer {
    qkv: Linear,
    out: Linear,
    norm1: (Tensor, Tensor),
    up: Linear,
    down: Linear,
    norm2: (Tensor, Tensor),
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        let att = vb.pp("attention");
        let part = |n: &str| DenseLinear::load(att.pp("self").pp(n), d, d);
        let qkv = DenseLinear::cat(&[part("query")?, part("key")?, part("value")?])?;
        Ok(Self {
            qkv: qkv_scaled(qkv, d, cfg.num_heads)?,
            out: load_linear(att.pp("output.dense"), d, d)?,
            norm1: norm(&att, "output.LayerNorm", d)?,
            up: load_linear(vb.pp("intermediate.dense"), d, i)?,
            down: load_linear(vb.pp("output.dense"), i, d)?,
            norm2: norm(&vb, "output.LayerNorm", d)?,
        })
    }

    fn forward(&self, x: &Tensor, n: usize, heads: usize, eps: f64) -> Result<Tensor> {
        let o = attention(&self.qkv.forward(x)?, 1, n, heads, QkvLayout::Blocks, None)?;
        let x = layer_norm(
            &self.out.forward_residual(&o, x)?,
            &self.norm1.0,
            &self.norm1.1,
            eps,
        )?;
        let h = self.up.apply(&x, None, Act::Gelu)?;
        let y = self.down.forward_residual(&h, &x)?;
        Ok(layer_norm(&y, &self.norm2.0, &self.norm2.1, eps)?)
    }
}

/// A BERT encoder with weights loaded: token ids in, final hidden states out.
pub struct Bert {
    cfg: Config,
    word: Tensor,
    /// Position embedding plus the type-0 token-type embedding, `(max_positions, d)`.
    pos_type: Tensor,
    norm: (Tensor, Tensor),
    layers: Vec<Layer>,
}

impl Bert {
    /// Loads the weights from `vb` at the `BertModel` root (`embeddings.*`, `encoder.layer.N.*`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let d = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let pos = emb.get((cfg.max_positions, d), "position_embeddings.weight")?;
        let ty = emb.get((2, d), "token_type_embeddings.weight")?;
        Ok(Self {
            word: emb.get((cfg.vocab_size, d), "word_embeddings.weight")?,
            pos_type: pos.broadcast_add(&ty.narrow(0, 0, 1)?)?,
            norm: norm(&emb, "LayerNorm", d)?,
            layers: (0..cfg.num_layers)
                .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
                .collect::<Result<_>>()?,
            cfg: cfg.clone(),
        })
    }

    /// Last hidden state `(n, d)` of one unpadded sequence.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        let n = ids.len();
        ensure!(
            n > 0 && n <= self.cfg.max_positions,
            "BERT takes 1..={} tokens, got {n}",
            self.cfg.max_positions
        );
        ensure!(
            ids.iter().all(|&i| (i as usize) < self.cfg.vocab_size),
            "token id outside the vocabulary of {}",
            self.cfg.vocab_size
        );
        let idx = Tensor::new(ids, self.word.device())?;
        let x = (self.word.index_select(&idx, 0)? + self.pos_type.narrow(0, 0, n)?)?;
        let eps = self.cfg.layer_norm_eps;
        let mut x = layer_norm(&x, &self.norm.0, &self.norm.1, eps)?;
        for l in &self.layers {
            x = l.forward(&x, n, self.cfg.num_heads, eps)?;
        }
        Ok(x)
    }
}

/// BiomedCLIP's text tower.
pub struct BiomedClipText {
    bert: Bert,
    proj_in: Linear,
    proj_out: Linear,
}

impl BiomedClipText {
    /// `vb` at the checkpoint root (the loader looks under `text.`).
    pub fn load(vb: VarBuilder, cfg: &Config, embed_dim: usize) -> Result<Self> {
        let t = vb.pp("text");
        let d = cfg.hidden_size;
        let hidden = (d + embed_dim) / 2;
        let no_bias = |n| Tensor::zeros(n, DType::F32, vb.device());
        Ok(Self {
            bert: Bert::load(t.pp("transformer"), cfg)?,
            proj_in: Linear::new(t.get((hidden, d), "proj.0.weight")?, no_bias(hidden)?)?,
            proj_out: Linear::new(
                t.get((embed_dim, hidden), "proj.2.weight")?,
                no_bias(embed_dim)?,
            )?,
        })
    }

    /// Token ids (`[CLS] … [SEP]`) → `(1, embed_dim)`, unnormalised.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        let cls = self.bert.forward(ids)?.narrow(0, 0, 1)?;
        let h = self.proj_in.apply(&cls, None, Act::Gelu)?;
        Ok(self.proj_out.forward(&h)?)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.bert.word.device()
    }
}

impl crate::TextModel for BiomedClipText {
    fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        BiomedClipText::forward(self, ids)
    }
}
