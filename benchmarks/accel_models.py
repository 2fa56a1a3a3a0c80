"""Whole pruned models on the simulated sparse-accel device vs its dense baseline.

A ResNet-50-style CNN and a BERT-style encoder (onnx.helper, generated
weights, realistic layer sizes) are pruned with each pattern, compiled for
``sparse-accel`` and for ``sparse-accel-dense`` (the same model, the same
int8 quantization, dense encodings only) and run once in the simulator. The
script prints device cycles and energy over all device layers, their ratios,
the accuracy of the int8 model against onnxruntime, and compile times.

For the CNN, the script also compares the original model on the dense device
with its decomposed form (rank 4, 80% of the coefficients pruned) on the
ESCALATE-like variant, over the 3x3 convolutions its engine runs: fused (the
maps stay on chip) and in two steps through DRAM (the variant without its
maps buffer).

Run: ``python benchmarks/accel_models.py [--model resnet|bert|decomposed|all] [--image 224] [--breakdown]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
import tvm
from tvm import relax

from tvm_sparse import accel
from tvm_sparse.accel import Device, load_device
from tvm_sparse.accel.run_report import run_report
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import bert_encoder, resnet

PATTERNS = (("2:4", "nm:2:4", None), ("16x16 blocks, density 0.1", "block:16x16", 0.1))
#: Device layer modes of a decomposed convolution's steps on the engine (``fused``: both in one layer).
ENGINE_MODES = ("fused", "basis", "basis-first")


def simulate(model, device, x: np.ndarray):
    start = time.perf_counter()
    result = accel.compile(model, device, calibration={"x": x})
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    with accel.profile() as runs:
        out = relax.VirtualMachine(result.executable, tvm.cpu())["main"](
            tvm.runtime.tensor(x)
        ).numpy()
    return out, run_report(runs, result.placements), compile_s, time.perf_counter() - start


def benchmark(label: str, model, x: np.ndarray) -> None:
    for name, pattern, density in PATTERNS:
        pruned, _ = prune_onnx(model, pattern, density)
        reference = ort.InferenceSession(
            pruned.SerializeToString(), providers=["CPUExecutionProvider"]
        ).run(None, {"x": x})[0]
        _, dense, dense_compile, _ = simulate(pruned, "sparse-accel-dense", x)
        out, sparse, sparse_compile, run_s = simulate(pruned, "sparse-accel", x)
        cosine = float((out * reference).sum() / np.linalg.norm(out) / np.linalg.norm(reference))
        modes = sorted({layer.get("mode", "host") for layer in sparse["layers"]})
        print(
            f"{label}, {name}: dense device {dense['total_cycles']} cycles {dense['total_energy_pj'] / 1e6:.0f} uJ | "
            f"sparse-accel {sparse['total_cycles']} cycles {sparse['total_energy_pj'] / 1e6:.0f} uJ (modes {'/'.join(modes)}) | "
            f"{dense['total_cycles'] / sparse['total_cycles']:.2f}x fewer cycles, {dense['total_energy_pj'] / sparse['total_energy_pj']:.2f}x less energy | "
            f"cosine vs onnxruntime {cosine:.4f} | compile {sparse_compile:.0f}s (dense device {dense_compile:.0f}s), simulated run {run_s:.1f}s",
            flush=True,
        )


def engine_totals(report: dict, names: set) -> dict:
    """Cycles, MACs issued (millions), energy (uJ) and DRAM bytes (MB) of the device layers whose name starts
    with one of ``names`` (a decomposed layer's parts, or the original convolution)."""
    layers = [
        layer
        for layer in report["layers"]
        if layer["runs_on"] == "device" and any(layer["name"].startswith(n) for n in names)
    ]
    return {
        "cycles": sum(layer["cycles"] for layer in layers),
        "macs": sum(layer["macs_issued"] for layer in layers) / 1e6,
        "energy": sum(layer["energy_pj"] for layer in layers) / 1e6,
        "dram": sum(
            layer["dram_read_bytes"] + layer["dram_read_metadata_bytes"] + layer["dram_write_bytes"]
            for layer in layers
        )
        / 1e6,
    }


def print_breakdown(dense: dict, sparse: dict, engine: set) -> None:
    """Per engine layer: the dense convolution's cycles, and those of its parts in the order they run."""
    for name in sorted(engine):
        whole = engine_totals(dense, {name})["cycles"]
        parts = [
            layer
            for layer in sparse["layers"]
            if layer["runs_on"] == "device" and layer["name"].startswith(name)
        ]
        cells = " | ".join(
            f"{layer['mode'] if layer['mode'] in ENGINE_MODES else 'coefficient GEMM'} {layer['cycles']} ({layer['pe_utilization']:.0%} PE)"
            for layer in parts
        )
        print(f"  {name}: dense {whole} cycles | {cells}")


def two_step_variant() -> Device:
    """``sparse-accel-escalate`` without the fused dataflow: the maps of each decomposed layer go through DRAM."""
    doc = load_device("sparse-accel-escalate").to_dict()
    for field in ("maps_buffer_bytes", "basis_macs_per_cycle"):
        del doc["sparse_modes"]["decomposed_conv"][field]
    doc["name"] = "sparse-accel-escalate (two steps)"
    return Device.from_dict(doc)


def decomposed(label: str, model, x: np.ndarray, breakdown: bool = False) -> None:
    """The original model on the dense device vs the decomposed one (rank 4, 80% of the coefficients pruned
    in 16x16 blocks) on the ESCALATE-like variant, fused and in two steps through DRAM, over the 3x3
    convolutions the engine runs."""
    pruned, layers = prune_onnx(model, "decompose:rank=4,coef-density=0.2,coef-block=16x16")
    reference = ort.InferenceSession(
        pruned.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    _, dense, _, _ = simulate(model, "sparse-accel-dense", x)
    _, two_steps, _, _ = simulate(pruned, two_step_variant(), x)
    out, sparse, compile_s, run_s = simulate(pruned, "sparse-accel-escalate", x)
    engine = {
        layer["name"].rsplit(".", 1)[0]
        for layer in sparse["layers"]
        if layer.get("mode") in ENGINE_MODES
    }
    base = engine_totals(dense, engine)
    cosine = float((out * reference).sum() / np.linalg.norm(out) / np.linalg.norm(reference))
    print(
        f"{label}, decomposed rank 4, 80% coefficients pruned, over the {len(engine)} 3x3 layers the engine runs:"
    )
    print(f"  {'':28s} {'cycles':>10s} {'MACs (M)':>9s} {'energy uJ':>10s} {'DRAM MB':>8s}")
    for name, report in (
        ("original, dense device", dense),
        ("decomposed, two steps", two_steps),
        ("decomposed, fused", sparse),
    ):
        t = engine_totals(report, engine)
        print(
            f"  {name:28s} {t['cycles']:10d} {t['macs']:9.1f} {t['energy']:10.1f} {t['dram']:8.2f}   "
            f"{base['cycles'] / t['cycles']:.2f}x fewer cycles, {base['macs'] / t['macs']:.2f}x fewer MACs, {base['energy'] / t['energy']:.2f}x less energy"
        )
    print(
        f"  whole model {dense['total_cycles']} -> {sparse['total_cycles']} cycles ({dense['total_cycles'] / sparse['total_cycles']:.2f}x), "
        f"{dense['total_energy_pj'] / sparse['total_energy_pj']:.2f}x less energy | cosine vs onnxruntime (decomposed model) {cosine:.4f} | "
        f"compile {compile_s:.0f}s, simulated run {run_s:.1f}s",
        flush=True,
    )
    if breakdown:
        print_breakdown(dense, sparse, engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        choices=("resnet", "bert", "decomposed", "all"),
        default="all",
        help="decomposed: only the decomposed ResNet-50 on the ESCALATE-like variant",
    )
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="per decomposed layer: cycles of the dense conv and of its two parts",
    )
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    if opts.model in ("bert", "all"):
        model = bert_encoder(hidden=768, heads=12, ffn=3072, seq=128, layers=opts.layers)
        benchmark(
            f"BERT-base encoder ({opts.layers} layers)",
            model,
            rng.standard_normal((1, 128, 768)).astype("float32"),
        )
    if opts.model in ("resnet", "decomposed", "all"):
        model, x = (
            resnet(image=opts.image),
            rng.standard_normal((1, 3, opts.image, opts.image)).astype("float32"),
        )
        if opts.model != "decomposed":
            benchmark(f"ResNet-50 ({opts.image}x{opts.image})", model, x)
        decomposed(f"ResNet-50 ({opts.image}x{opts.image})", model, x, opts.breakdown)


if __name__ == "__main__":
    main()
