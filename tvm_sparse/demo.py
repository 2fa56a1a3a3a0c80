"""The main job: prune a BERT-style encoder, analyze it, compile it sparse and dense, compare.

Run with ``make demo`` (or ``python -m tvm_sparse.demo``).
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import tvm
from tvm import relax

from . import analyze, build
from .prune import prune_onnx
from .testing import bert_encoder, median_seconds


def _median_ms(fn) -> float:
    return median_seconds(fn) * 1e3


def main() -> None:
    print("== model: BERT-style encoder (hidden 384, 12 heads, FFN 1536, 128 tokens, 2 layers)")
    model, _ = prune_onnx(bert_encoder(layers=2), "block:16x1", density=0.1)
    print("   every projection and FFN weight pruned to 16x1 blocks at density 0.1\n")

    print("== analysis")
    print(analyze(model).to_table(), "\n")

    x = np.random.default_rng(0).standard_normal((1, 128, 384)).astype("float32")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference = session.run(None, {"x": x})[0]
    ort_ms = _median_ms(lambda: session.run(None, {"x": x}))

    print("== compile for the host CPU (llvm)")
    results = {}
    for label, sparsify in (("sparse", True), ("dense", False)):
        start = time.perf_counter()
        exe = build(model, sparsify=sparsify)
        compile_s = time.perf_counter() - start
        vm = relax.VirtualMachine(exe, tvm.cpu())
        xt = tvm.runtime.tensor(x)
        out = vm["main"](xt).numpy()
        results[label] = (_median_ms(lambda: vm["main"](xt)), float(np.abs(out - reference).max()))
        print(f"   {label:6s} build: compiled in {compile_s:.1f}s, {results[label][0]:.2f} ms, max |error| vs onnxruntime {results[label][1]:.2e}")
    sparse_ms, dense_ms = results["sparse"][0], results["dense"][0]
    print(f"   onnxruntime (same pruned model, 2 threads): {ort_ms:.2f} ms\n")
    print("== result")
    print(f"   sparse vs dense build: {dense_ms / sparse_ms:.2f}x faster")
    print(f"   sparse vs onnxruntime: {ort_ms / sparse_ms:.2f}x faster")


if __name__ == "__main__":
    main()
