"""The main job: prune a BERT-style encoder, analyze it, compile it for the host CPU and for sparse-accel.

1. 16x1 blocks at density 0.1: analysis, then the host CPU build, sparse and
   dense, timed against onnxruntime on the same pruned model.
2. 2:4 weights: compiled for the ``sparse-accel`` device and for its dense
   baseline, run in the bundled simulator: cycles, energy, the per-layer
   report and the accuracy of the int8 model against onnxruntime.

Run with ``make demo`` (or ``python -m tvm_sparse.demo``).
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import tvm
from tvm import relax

from . import accel, analyze, build
from .accel.run_report import RunReport, run_report
from .prune import prune_onnx
from .testing import bert_encoder, median_seconds
from .threads import use_available_cpus


def _median_ms(fn) -> float:
    return median_seconds(fn) * 1e3


def main() -> None:
    use_available_cpus()  # TVM's thread pool on every CPU (unless TVM_NUM_THREADS says otherwise)
    print("== model: BERT-style encoder (hidden 384, 12 heads, FFN 1536, 128 tokens, 2 layers)")
    model, _ = prune_onnx(bert_encoder(layers=2), "block:16x1", density=0.1)
    print("   every projection and FFN weight pruned to 16x1 blocks at density 0.1\n")

    print("== analysis")
    print(analyze(model).to_table(), "\n")

    x = np.random.default_rng(0).standard_normal((1, 128, 384)).astype("float32")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
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
        print(
            f"   {label:6s} build: compiled in {compile_s:.1f}s, {results[label][0]:.2f} ms, max |error| vs onnxruntime {results[label][1]:.2e}"
        )
    sparse_ms, dense_ms = results["sparse"][0], results["dense"][0]
    print(f"   onnxruntime (same pruned model, 2 threads): {ort_ms:.2f} ms\n")
    print("== result (host CPU)")
    print(f"   sparse vs dense build: {dense_ms / sparse_ms:.2f}x faster")
    print(f"   sparse vs onnxruntime: {ort_ms / sparse_ms:.2f}x faster\n")
    device_demo(x)


def device_demo(x: np.ndarray) -> None:
    print("== compile for sparse-accel (the same encoder, weights pruned to 2:4)")
    model, _ = prune_onnx(bert_encoder(layers=2), "nm:2:4")
    reference = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    reports = {}
    for device in ("sparse-accel", "sparse-accel-dense"):
        start = time.perf_counter()
        result = accel.compile(model, device, calibration={"x": x})
        compile_s = time.perf_counter() - start
        with accel.profile() as runs:
            out = relax.VirtualMachine(result.executable, tvm.cpu())["main"](
                tvm.runtime.tensor(x)
            ).numpy()
        cosine = float((out * reference).sum() / np.linalg.norm(out) / np.linalg.norm(reference))
        reports[device] = run_report(runs, result.placements)
        on_device = sum(p.target == "device" for p in result.placements)
        print(
            f"   {device:18s} compiled in {compile_s:.1f}s ({on_device} of {len(result.placements)} layers on the device), "
            f"{reports[device]['total_cycles']} cycles, {reports[device]['total_energy_pj'] / 1e6:.1f} uJ, cosine vs onnxruntime {cosine:.4f}"
        )
    print("\n== device report (sparse-accel, the first 6 layers)")
    doc = reports["sparse-accel"]
    print(RunReport(doc, layers=doc["layers"][:6]).to_table(), "\n")
    sparse, dense = reports["sparse-accel"], reports["sparse-accel-dense"]
    print("== result (sparse-accel, simulated)")
    print(
        f"   2:4 vs the dense baseline device: {dense['total_cycles'] / sparse['total_cycles']:.2f}x fewer cycles, "
        f"{dense['total_energy_pj'] / sparse['total_energy_pj']:.2f}x less energy"
    )


if __name__ == "__main__":
    main()
