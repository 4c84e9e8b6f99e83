//! Fusion of frozen models (`--model a+b`): an index whose rows are several models'
//! L2-normalised embeddings side by side. Why in the index, and with equal weights: the weights
//! that suit an archive are tuned later on its own val rows (`simcase adapt --model a+b`, a
//! view), and `adapt` can then also weigh or drop any part without embedding anything again,
//! which it could not if the index held one blend. Each part is scaled by `1/√n`, so a fused
//! row is unit length and its cosine is the mean of the parts' cosines.
//!
//! [`ModelSet`] is the typed `a+b` name; [`Fused`] is the encoder that runs every part on its
//! own input (each model keeps its own resize and normalisation, see [`Preprocess::also`]).

use crate::{l2_normalize_in_place, Encoder, ModelId, Preprocess, UnknownModel};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use std::fmt;
use std::str::FromStr;

/// Most models one fused index holds.
pub const MAX_PARTS: usize = 4;

/// One catalogue model, or several fused (`a+b`): what an index's rows are embeddings of.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelSet(Vec<ModelId>);

impl ModelSet {
    /// A single model.
    pub fn one(m: ModelId) -> Self {
        Self(vec![m])
    }

    /// The models, in the order their values sit in a row.
    pub fn parts(&self) -> &[ModelId] {
        &self.0
    }

    /// The model, when there is only one.
    pub fn single(&self) -> Option<ModelId> {
        match self.0.as_slice() {
            [m] => Some(*m),
            _ => None,
        }
    }

    /// The model whose text tower embeds into this set's space: the one model, when it has a
    /// text tower (a fused space has none).
    pub fn text_model(&self) -> Option<ModelId> {
        self.single().filter(|m| m.spec().text.is_some())
    }

    /// A row's width: the parts' widths added.
    pub fn dim(&self) -> usize {
        self.0.iter().map(|m| m.spec().dim).sum()
    }

    /// Where each part's values sit in a row: `(model, first value, width)`.
    pub fn blocks(&self) -> Vec<(ModelId, usize, usize)> {
        let mut at = 0;
        self.0
            .iter()
            .map(|&m| {
                let d = m.spec().dim;
                at += d;
                (m, at - d, d)
            })
            .collect()
    }

    /// Refuses `p` when a model of the set is not offered at it
    /// ([`crate::precision::offered`], whose message says why).
    pub fn check_precision(&self, p: crate::Precision) -> Result<()> {
        for &m in &self.0 {
            crate::precision::offered(m, p).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// Load every part (installed models) and, for several, fuse them; a precision a part is
    /// not offered at ([`ModelSet::check_precision`]) is refused first.
    pub fn load(&self, device: &Device) -> Result<Box<dyn Encoder>> {
        self.check_precision(crate::precision())?;
        let parts = self
            .0
            .iter()
            .map(|&m| crate::load(m, device))
            .collect::<Result<Vec<_>>>()?;
        Fused::wrap(parts)
    }
}

impl fmt::Display for ModelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|m| m.name()).collect();
        f.write_str(&names.join("+"))
    }
}

impl From<ModelId> for ModelSet {
    fn from(m: ModelId) -> Self {
        Self::one(m)
    }
}

impl FromStr for ModelSet {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = Vec::new();
        for p in s.split('+') {
            let m: ModelId = p
                .parse()
                .map_err(|e: UnknownModel| anyhow::anyhow!("{e} (fuse models with a+b)"))?;
            if parts.contains(&m) {
                bail!("model {s:?} names {m} twice");
            }
            parts.push(m);
        }
        if parts.len() > MAX_PARTS {
            bail!(
                "model {s:?} fuses {} models; at most {MAX_PARTS}",
                parts.len()
            );
        }
        Ok(Self(parts))
    }
}

/// Several encoders run on the same image, their embeddings concatenated, each scaled by
/// `1/√n`: a unit vector whose cosine with another is the mean of the parts' cosines.
pub struct Fused {
    name: String,
    parts: Vec<Box<dyn Encoder>>,
    pre: Preprocess,
    dim: usize,
}

impl Fused {
    /// One encoder as it is; several fused. Fails for none, or parts on different devices.
    pub fn wrap(mut parts: Vec<Box<dyn Encoder>>) -> Result<Box<dyn Encoder>> {
        if parts.len() < 2 {
            return parts
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no model to load"));
        }
        let d0 = parts[0].device().location();
        if parts.iter().any(|p| p.device().location() != d0) {
            bail!("fused models must run on one device");
        }
        let name = parts
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>()
            .join("+");
        let mut pre = parts[0].preprocess().clone();
        pre.also = parts[1..].iter().map(|p| p.preprocess().clone()).collect();
        let dim = parts.iter().map(|p| p.dim()).sum();
        Ok(Box::new(Fused {
            name,
            parts,
            pre,
            dim,
        }))
    }
}

impl Encoder for Fused {
    fn name(&self) -> &str {
        &self.name
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn preprocess(&self) -> &Preprocess {
        &self.pre
    }
    fn features(&self, _pixels: &Tensor) -> Result<Tensor> {
        bail!(
            "{}: a fused encoder takes one input per model, through `embed`",
            self.name
        )
    }
    fn device(&self) -> &Device {
        self.parts[0].device()
    }

    fn embed(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let lens: Vec<usize> = self
            .parts
            .iter()
            .map(|p| p.preprocess().own_len())
            .collect();
        let total: usize = lens.iter().sum();
        for x in inputs {
            anyhow::ensure!(
                x.len() == total,
                "{}: input of {} values, not the {total} its models take",
                self.name,
                x.len()
            );
        }
        let w = 1.0 / (self.parts.len() as f32).sqrt();
        let mut out: Vec<Vec<f32>> = inputs
            .iter()
            .map(|_| Vec::with_capacity(self.dim))
            .collect();
        let mut at = 0;
        for (p, &n) in self.parts.iter().zip(&lens) {
            let mine: Vec<Vec<f32>> = inputs.iter().map(|x| x[at..at + n].to_vec()).collect();
            for (o, v) in out.iter_mut().zip(p.embed(&mine)?) {
                o.extend(v.iter().map(|x| x * w));
            }
            at += n;
        }
        // Each part is unit length already; this only removes rounding (and keeps a part that
        // embedded to zeros from leaving the row short of unit length).
        out.iter_mut().for_each(|v| l2_normalize_in_place(v));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy encoder: its features are the per-channel means of its input, times `gain`.
    struct Means {
        name: &'static str,
        pre: Preprocess,
        gain: [f32; 3],
    }

    impl Encoder for Means {
        fn name(&self) -> &str {
            self.name
        }
        fn dim(&self) -> usize {
            3
        }
        fn preprocess(&self) -> &Preprocess {
            &self.pre
        }
        fn features(&self, pixels: &Tensor) -> Result<Tensor> {
            let m = pixels.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?;
            let g = Tensor::new(&self.gain, pixels.device())?.unsqueeze(0)?;
            Ok(m.broadcast_mul(&g)?)
        }
        fn device(&self) -> &Device {
            &Device::Cpu
        }
    }

    #[test]
    fn a_model_set_parses_names_and_refuses_repeats_and_unknowns() {
        let s: ModelSet = "efficientnet-lite0+litemedsam".parse().unwrap();
        assert_eq!(s.parts(), [ModelId::EfficientNetLite0, ModelId::LiteMedSam]);
        assert_eq!(s.to_string(), "efficientnet-lite0+litemedsam");
        assert_eq!(s.single(), None);
        let (de, dl) = (
            ModelId::EfficientNetLite0.spec().dim,
            ModelId::LiteMedSam.spec().dim,
        );
        assert_eq!(s.dim(), de + dl);
        assert_eq!(
            s.blocks(),
            vec![
                (ModelId::EfficientNetLite0, 0, de),
                (ModelId::LiteMedSam, de, dl)
            ]
        );
        let one: ModelSet = "dinov2-s".parse().unwrap();
        assert_eq!(one.single(), Some(ModelId::Dinov2S));
        let e = "dinov2-s+dinov2-s".parse::<ModelSet>().unwrap_err();
        assert!(e.to_string().contains("names dinov2-s twice"), "{e}");
        let e = "dinov2-s+nope".parse::<ModelSet>().unwrap_err();
        assert!(e.to_string().contains("unknown model \"nope\""), "{e}");
        assert!("dinov2-s+".parse::<ModelSet>().is_err());
    }

    #[test]
    fn fused_embeddings_are_the_parts_side_by_side_scaled_by_one_over_root_n() {
        let a = Means {
            name: "a",
            pre: Preprocess::new(4, None),
            gain: [1.0, 2.0, 3.0],
        };
        let b = Means {
            name: "b",
            pre: Preprocess::new(2, Some(([0.5; 3], [0.25; 3]))),
            gain: [-1.0, 0.5, 4.0],
        };
        let img = simcase_imaging::Image {
            width: 5,
            height: 3,
            data: (0..45).map(|i| (i % 7) as f32 / 7.0).collect(),
        };
        let (ea, eb) = (
            a.embed_images(&[&img]).unwrap(),
            b.embed_images(&[&img]).unwrap(),
        );
        let fused = Fused::wrap(vec![Box::new(a), Box::new(b)]).unwrap();
        assert_eq!(fused.name(), "a+b");
        assert_eq!(fused.dim(), 6);
        let input = fused.preprocess().apply(&img);
        assert_eq!(input.len(), 3 * 16 + 3 * 4);
        let got = fused.embed(&[input.clone(), input]).unwrap();
        let r = 1.0 / 2f32.sqrt();
        let want: Vec<f32> = ea[0].iter().chain(&eb[0]).map(|x| x * r).collect();
        for row in &got {
            for (g, w) in row.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{row:?} vs {want:?}");
            }
        }
        let e = fused.embed(&[vec![0.0; 5]]).unwrap_err().to_string();
        assert!(e.contains("input of 5 values, not the 60"), "{e}");
    }
}
