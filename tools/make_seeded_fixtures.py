#!/usr/bin/env python3
"""Parity fixtures for architectures whose real weights are not reachable here.

The PyTorch reference is built at full size, its parameters are filled with the same
deterministic values that `simcase_models::seeded::weights` generates (a SplitMix64 counter
hash over the parameters in sorted-name order), and a few real images from ../shared/data are
embedded. Only parameter names/shapes, inputs and outputs are committed:
crates/models/tests/fixtures/seeded.json.

  biomedclip-vision: timm `vit_base_patch16_224` trunk (CLS pooling, as open_clip's TimmModel
      with timm_pool="") + bias-free Linear 768->512, under open_clip's names
      (`visual.trunk.*`, `visual.head.proj.weight`); OpenAI CLIP mean/std at 224.
  dinov2-b: transformers `Dinov2Model` ViT-B/14 (37x37 position grid, LayerScale), run at 224
      (bicubic position interpolation) with ImageNet mean/std; CLS after the final norm.
  rad-dino: the same layout at its native 518 (no interpolation), as RAD-DINO is used.
  clip-vit-b16, clip-vit-l14: open_clip `ViT-B-16-quickgelu` / `ViT-L-14-quickgelu` image
      towers (OpenAI CLIP layout, `visual.*` names); CLIP mean/std at 224.
  resnet50-pooled, resnet50-logits: timm `resnet50` (torchvision names), ImageNet mean/std at
      224; global-average-pooled 2048-d features, and the 1000 logits of `fc`.

Usage: python3 tools/make_seeded_fixtures.py [--data ../shared/data]
Needs: pip install torch timm transformers open_clip_torch numpy pillow
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_parity_fixtures import decode, l2, preprocess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/models/tests/fixtures/seeded.json"
SEED = 1234
SCALE = np.float32(0.05)
# PNGs only: they decode bit-identically in PIL and simcase, so the comparison is the model's.
IMAGES = [
    "images/pyradiomics_volumes/lung2_z022.png",
    "images/busi/benign_136.png",
    "images/knee_oa_xray/kl0_9003815L.png",
]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

M1 = np.uint64(0x9E3779B97F4A7C15)
M2 = np.uint64(0xBF58476D1CE4E5B9)
M3 = np.uint64(0x94D049BB133111EB)


def splitmix64(z):
    z = z + M1
    z = (z ^ (z >> np.uint64(30))) * M2
    z = (z ^ (z >> np.uint64(27))) * M3
    return z ^ (z >> np.uint64(31))


def base(name, shape):
    module = name.split(".")[-2] if "." in name else ""
    norm_weight = len(shape) == 1 and name.endswith(".weight") and (
        "norm" in module.lower() or module.startswith("ln") or module.startswith("bn")
    )
    return np.float32(1.0 if norm_weight or name.endswith(".running_var") else 0.0)


def seeded(params, fan_in=False):
    """{name: np.ndarray} for {name: shape}, as the Rust generator makes them; `fan_in`:
    matrices and kernels He-uniform, +-sqrt(6 / fan_in) (Rust: `Spread::FanIn`)."""
    out, offset = {}, 0
    with np.errstate(over="ignore"):
        for name in sorted(params):
            shape = params[name]
            n = int(np.prod(shape)) if shape else 1
            idx = np.arange(offset, offset + n, dtype=np.uint64) + np.uint64(SEED << 40)
            u = (splitmix64(idx) >> np.uint64(40)).astype(np.float32) / np.float32(16777216.0)
            u = u * np.float32(2.0) - np.float32(1.0)
            scale = SCALE
            if fan_in and len(shape) >= 2:
                scale = np.sqrt(np.float32(6.0) / np.float32(max(int(np.prod(shape[1:])), 1)), dtype=np.float32)
            out[name] = (base(name, shape) + np.float32(scale) * u).reshape(shape)
            offset += n
    return out


class BiomedClipVision(torch.nn.Module):
    def __init__(self):
        super().__init__()
        import timm

        self.trunk = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        self.head = torch.nn.Module()
        self.head.proj = torch.nn.Linear(768, 512, bias=False)

    def forward(self, x):
        return self.head.proj(self.trunk(x))


def embed_all(model, data, size, mean_std, pool):
    out = []
    with torch.no_grad():
        for rel in IMAGES:
            x = preprocess(decode(data / rel), size, mean_std)
            out.append({"path": rel, "embedding": l2(pool(model(x))[0])})
    return out


# transformers 5 renamed DINOv2's attention projections; checkpoints on the hub (and simcase)
# keep the original names, so the fixture uses those.
CHECKPOINT_NAMES = {
    ".attention.q_proj.": ".attention.attention.query.",
    ".attention.k_proj.": ".attention.attention.key.",
    ".attention.v_proj.": ".attention.attention.value.",
    ".attention.o_proj.": ".attention.output.dense.",
}


def checkpoint_name(k):
    for new, old in CHECKPOINT_NAMES.items():
        k = k.replace(new, old)
    return k


def seeded_load(model, prefix="", fan_in=False):
    sd = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    names = {prefix + checkpoint_name(k): k for k in sd}
    params = {ck: list(sd[k].shape) for ck, k in names.items()}
    values = seeded(params, fan_in)
    # Integer buffers (BatchNorm's num_batches_tracked) keep their values.
    model.load_state_dict({names[ck]: torch.from_numpy(v) for ck, v in values.items()}, strict=False)
    return sorted(params.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    data = Path(ap.parse_args().data)
    torch.set_num_threads(2)
    models = {}
    model = BiomedClipVision().eval()
    params = seeded_load(model, "visual.")
    models["biomedclip-vision"] = {
        "reference": f"timm vit_base_patch16_224 + Linear(768, 512, bias=False), torch {torch.__version__}",
        "params": params,
        "images": embed_all(model, data, 224, (CLIP_MEAN, CLIP_STD), lambda y: y),
    }
    import transformers
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       image_size=518, patch_size=14, layerscale_value=1.0)
    dino = Dinov2Model(cfg).eval()
    params = seeded_load(dino)
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    pool = lambda out: out.pooler_output  # CLS token after the final layer norm
    ref = f"transformers {transformers.__version__} Dinov2Model (ViT-B/14), torch {torch.__version__}"
    for name, size in (("dinov2-b", 224), ("rad-dino", 518)):
        models[name] = {
            "reference": ref,
            "image_size": size,
            "params": params,
            "images": embed_all(dino, data, size, imagenet, pool),
        }
    import open_clip
    import timm

    for name, arch in (("clip-vit-b16", "ViT-B-16-quickgelu"), ("clip-vit-l14", "ViT-L-14-quickgelu")):
        visual = open_clip.create_model(arch, pretrained=None).visual.eval()
        params = seeded_load(visual, "visual.")
        models[name] = {
            "reference": f"open_clip {open_clip.__version__} {arch} image tower, torch {torch.__version__}",
            "params": params,
            "images": embed_all(visual, data, 224, (CLIP_MEAN, CLIP_STD), lambda y: y),
        }
        del visual
    resnet = timm.create_model("resnet50", pretrained=False).eval()
    params = seeded_load(resnet, fan_in=True)  # He-uniform: a deep ReLU net keeps its signal
    ref = f"timm {timm.__version__} resnet50, torch {torch.__version__}"
    pooled = lambda y: y.mean(dim=(2, 3))
    for name, fn, pool in (
        ("resnet50-pooled", resnet.forward_features, pooled),
        ("resnet50-logits", resnet, lambda y: y),
    ):
        models[name] = {
            "reference": ref,
            "spread": "fan_in",
            "params": params,
            "images": embed_all(fn, data, 224, imagenet, pool),
        }
    fixture = {
        "generator": "tools/make_seeded_fixtures.py",
        "seed": SEED,
        "scale": float(SCALE),
        "models": models,
    }
    OUT.write_text(json.dumps(fixture, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
