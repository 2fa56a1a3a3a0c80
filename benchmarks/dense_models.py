"""Unpruned models: tvm-sparse's dense build vs onnxruntime, side by side in one process.

A model nobody pruned, compiled by tvm-sparse, should be a fair deployment
choice. Two models built with ``onnx.helper`` and generated weights:

* ``bert``: a BERT-base-style encoder (hidden 768, 12 heads, FFN 3072, 128
  tokens, 4 layers by default);
* ``resnet``: ResNet-50 (bottlenecks 3-4-6-3, BatchNorm unfolded in the ONNX
  file) on a 224x224 image by default.

Both run fp32 with 2 threads; outputs are checked against onnxruntime. Run:
``python benchmarks/dense_models.py [--model bert|resnet|all] [--layers N]
[--image S]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
import tvm
from tvm import relax

from tvm_sparse import build
from tvm_sparse.testing import bert_encoder, median_seconds, resnet

THREADS = 2


def compare(label: str, model, x: np.ndarray, repeat: int = 10, sparsify: bool = False) -> None:
    """Time onnxruntime and tvm-sparse (dense build, or with ``sparsify`` the sparse one) on one model,
    alternating three rounds so that both see the same machine load; print the best medians."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    reference = session.run(None, {"x": x})[0]
    start = time.perf_counter()
    vm = relax.VirtualMachine(build(model, sparsify=sparsify), tvm.cpu())
    compile_s = time.perf_counter() - start
    xt = tvm.runtime.tensor(x)
    error = float(np.abs(vm["main"](xt).numpy() - reference).max() / np.abs(reference).max())
    ort_ms, tvm_ms = [], []
    for _ in range(3):
        ort_ms.append(median_seconds(lambda: session.run(None, {"x": x}), repeat) * 1e3)
        tvm_ms.append(median_seconds(lambda: vm["main"](xt), repeat) * 1e3)
    ort_best, tvm_best = min(ort_ms), min(tvm_ms)
    print(
        f"{label}: onnxruntime {ort.__version__} {ort_best:8.2f} ms | tvm-sparse {'sparse' if sparsify else 'dense'} {tvm_best:8.2f} ms "
        f"(compile {compile_s:.0f}s, max rel. error {error:.1e}) | tvm-sparse / onnxruntime = {tvm_best / ort_best:.2f} "
        f"({ort_best / tvm_best:.2f}x onnxruntime's speed)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bert", "resnet", "all"), default="all")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.model in ("bert", "all"):
        model = bert_encoder(hidden=768, heads=12, ffn=3072, seq=128, layers=args.layers)
        x = rng.standard_normal((1, 128, 768)).astype("float32")
        compare(f"BERT-base encoder, {args.layers} layers, 128 tokens", model, x, args.repeat)
    if args.model in ("resnet", "all"):
        model = resnet(image=args.image)
        x = rng.standard_normal((1, 3, args.image, args.image)).astype("float32")
        compare(f"ResNet-50, {args.image}x{args.image}", model, x, args.repeat)


if __name__ == "__main__":
    main()
