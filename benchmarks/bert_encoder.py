"""A pruned BERT-style encoder: tvm-sparse vs onnxruntime vs tvm-sparse's dense build.

The encoder (hidden 384, 12 heads, FFN 1536, 128 tokens, 6 layers by default)
is built with ``onnx.helper``; every projection and FFN weight is pruned to
16x1 blocks at density 0.1. All three run the same pruned ONNX model, with 2
threads, in one process; outputs are checked against onnxruntime.

Run: ``python benchmarks/bert_encoder.py [--layers N] [--hidden H --ffn F]
[--block 16x1] [--density 0.1]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
import tvm
from tvm import relax

from tvm_sparse import build
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import bert_encoder, median_seconds

THREADS = 2


def median_ms(fn, repeat: int) -> float:
    return median_seconds(fn, repeat) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=1536)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--block", default="16x1")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    model = bert_encoder(
        hidden=args.hidden, heads=args.heads, ffn=args.ffn, seq=args.seq, layers=args.layers
    )
    model, _ = prune_onnx(model, f"block:{args.block}", args.density)
    x = np.random.default_rng(0).standard_normal((1, args.seq, args.hidden)).astype("float32")
    print(
        f"encoder: hidden {args.hidden}, heads {args.heads}, FFN {args.ffn}, {args.seq} tokens, {args.layers} layers; "
        f"weights block {args.block} density {args.density}; {THREADS} threads"
    )

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    reference = session.run(None, {"x": x})[0]
    ort_ms = median_ms(lambda: session.run(None, {"x": x}), args.repeat)
    print(f"onnxruntime {ort.__version__}: {ort_ms:8.2f} ms")

    results = {}
    for label, sparsify in (("tvm-sparse", True), ("tvm-sparse dense build", False)):
        start = time.perf_counter()
        exe = build(
            model,
            target={
                "kind": "llvm",
                "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                "num-cores": THREADS,
            },
            sparsify=sparsify,
        )
        compile_s = time.perf_counter() - start
        vm = relax.VirtualMachine(exe, tvm.cpu())
        xt = tvm.runtime.tensor(x)
        err = float(np.abs(vm["main"](xt).numpy() - reference).max())
        results[label] = median_ms(lambda: vm["main"](xt), args.repeat)
        print(
            f"{label}: {results[label]:8.2f} ms   (compile {compile_s:.1f}s, max |err| vs onnxruntime {err:.2e})"
        )
    sparse_ms = results["tvm-sparse"]
    print(f"speedup over onnxruntime: {ort_ms / sparse_ms:.2f}x")
    print(f"speedup over the dense build: {results['tvm-sparse dense build'] / sparse_ms:.2f}x")


if __name__ == "__main__":
    main()
