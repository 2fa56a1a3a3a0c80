"""Models as people export them, dense and pruned, against onnxruntime: one dynamic library each.

The exporter-style corpus of :mod:`tvm_sparse.testing.exported` at benchmark
sizes (BERT-base widths, 224x224 images, 1 s of 16 kHz audio). Each model is
compiled ONCE by tvm-sparse with its symbolic dimensions left symbolic, then
run at batch 1 and batch 8 from that one library; onnxruntime runs the same
ONNX file. Every timing runs in its own process, the engines alternating over
rounds (:mod:`engines`); ratios are tvm-sparse time / onnxruntime time
(below 1: tvm-sparse is faster). Outputs are checked against onnxruntime.

Then the pruned BERT (every projection and FFN weight 16x1 blocks at density
0.1) with a dynamic sequence length, at 32, 128 and 384 tokens: the dynamic
library against a static build for each length and onnxruntime.

Targets: every dense model <= 1.2x onnxruntime's time at batch 1 and 8; the
pruned dynamic BERT within 10% of the static builds and faster than
onnxruntime at each length; no compute-heavy operator on TVM's default
lowering (the last column).

Run: ``python benchmarks/exported_models.py [--models NAME,...] [--rounds 3] [--runs 10] [--skip-pruned]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(__file__))

from engines import load_outputs, machine, time_engines  # noqa: E402

import tvm_sparse  # noqa: E402
from tvm_sparse.analysis.slow_path import DefaultScheduleWarning  # noqa: E402
from tvm_sparse.errors import ModelError  # noqa: E402
from tvm_sparse.prune import prune_onnx  # noqa: E402
from tvm_sparse.testing import exported  # noqa: E402

BATCHES = (1, 8)
#: name -> (builder at benchmark size, sizes of the non-batch symbolic dimensions)
MODELS = {
    "torch_bert": (
        lambda: exported.torch_bert(
            vocab=30522, hidden=768, heads=12, ffn=3072, layers=4, max_position=512
        ),
        {"sequence": 128},
    ),
    "tf2onnx_cnn": (lambda: exported.tf2onnx_cnn(image=224, width=64, classes=1000), {}),
    "keras2onnx_cnn": (lambda: exported.keras2onnx_cnn(image=224, width=64, classes=1000), {}),
    "torch_audio_cnn": (
        lambda: exported.torch_audio_cnn(width=128, classes=35),
        {"samples": 16000},
    ),
    "torch_conv_decoder": (lambda: exported.torch_conv_decoder(latent=64, width=64, size=28), {}),
    "torch_squeezenet": (
        lambda: exported.torch_squeezenet(image=224, width=64, fires=(2, 2, 4), classes=1000),
        {},
    ),
    "fp16_cnn": (lambda: exported.fp16_cnn(image=112, width=64, classes=1000), {}),
    "tf2onnx_einsum_encoder": (
        lambda: exported.tf2onnx_einsum_encoder(dim=768, heads=12, ffn=3072),
        {"unk__7": 128},
    ),
    "torch_gpt2_tied": (
        lambda: exported.torch_gpt2_tied(
            vocab=50257, hidden=768, heads=12, layers=2, max_position=1024
        ),
        {"sequence": 128},
    ),
}
PRUNED_LENGTHS = (32, 128, 384)


def _batch_dim(model: onnx.ModelProto) -> str:
    return model.graph.input[0].type.tensor_type.shape.dim[0].dim_param


def _compile(model, path: str, **kwargs) -> tuple[float, int]:
    """Compile and export; returns (seconds, heavy ops left on the default lowering)."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DefaultScheduleWarning)
        tvm_sparse.build(model, **kwargs).export_library(path)
    left = [w for w in caught if issubclass(w.category, DefaultScheduleWarning)]
    for w in left:
        print(f"    {w.message}", flush=True)
    return time.perf_counter() - start, len(left)


def _error(workdir: str, labels: list[str], reference: str = "ort") -> float:
    """Max relative error of each label's outputs against the reference's."""
    expected = load_outputs(os.path.join(workdir, f"{reference}.npz"))
    worst = 0.0
    for label in labels:
        for got, want in zip(load_outputs(os.path.join(workdir, f"{label}.npz")), expected):
            scale = max(float(np.abs(want).max()), 1e-6)
            worst = max(worst, float(np.abs(got.astype(np.float64) - want).max()) / scale)
    return worst


def dense(names: list[str], rounds: int, runs: int) -> None:
    print("dense models, one dynamic library each (ratio = tvm-sparse / onnxruntime time)")
    print(
        f"{'model':24s} {'batch':>5s} {'tvm-sparse':>11s} {'onnxruntime':>12s} {'ratio':>6s} {'max rel err':>11s} {'default ops':>11s}",
        flush=True,
    )
    for name in names:
        build_model, dims = MODELS[name]
        entry = build_model()
        with tempfile.TemporaryDirectory() as workdir:
            onnx_path, lib = os.path.join(workdir, "model.onnx"), os.path.join(workdir, "model.so")
            onnx.save(entry.model, onnx_path)
            try:
                seconds, left = _compile(entry.model, lib, sparsify=False)
                dynamic = True
            except ModelError as err:  # shape arithmetic TVM's importer cannot do on run-time sizes
                print(f"{name:24s} no dynamic library ({err}); specialised per batch", flush=True)
                dynamic = False
            for batch in BATCHES:
                feeds = entry.inputs({_batch_dim(entry.model): batch, **dims})
                if not dynamic:
                    seconds, left = _compile(
                        entry.model,
                        lib,
                        sparsify=False,
                        input_shapes={k: v.shape for k, v in feeds.items()},
                    )
                inputs = os.path.join(workdir, "inputs.npz")
                np.savez(inputs, **feeds)
                times = time_engines(
                    {"tvm": f"tvm:{lib}", "ort": f"ort:{onnx_path}"},
                    inputs,
                    rounds,
                    runs,
                    outputs_dir=workdir,
                )
                print(
                    f"{name:24s} {batch:5d} {times['tvm'] * 1e3:9.2f}ms {times['ort'] * 1e3:10.2f}ms {times['tvm'] / times['ort']:6.2f} "
                    f"{_error(workdir, ['tvm']):11.1e} {left:11d}",
                    flush=True,
                )
            print(f"{'':24s} (compile {seconds:.0f} s)", flush=True)


def pruned_bert(rounds: int, runs: int) -> None:
    print(
        "\npruned BERT-base (4 layers, 16x1 blocks at density 0.1), dynamic sequence vs static builds and onnxruntime"
    )
    entry = MODELS["torch_bert"][0]()
    model, _ = prune_onnx(entry.model, "block:16x1", density=0.1)
    print(
        f"{'tokens':>6s} {'dynamic':>10s} {'static':>10s} {'onnxruntime':>12s} {'dyn/static':>10s} {'dyn/ort':>8s} {'max rel err':>11s}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as workdir:
        onnx_path, dynamic = (
            os.path.join(workdir, "pruned.onnx"),
            os.path.join(workdir, "dynamic.so"),
        )
        onnx.save(model, onnx_path)
        _compile(model, dynamic)
        for length in PRUNED_LENGTHS:
            feeds = entry.inputs({"batch": 1, "sequence": length})
            static = os.path.join(workdir, f"static{length}.so")
            _compile(
                model, static, input_shapes={name: value.shape for name, value in feeds.items()}
            )
            inputs = os.path.join(workdir, "inputs.npz")
            np.savez(inputs, **feeds)
            engines = {
                "dynamic": f"tvm:{dynamic}",
                "static": f"tvm:{static}",
                "ort": f"ort:{onnx_path}",
            }
            times = time_engines(engines, inputs, rounds, runs, outputs_dir=workdir)
            print(
                f"{length:6d} {times['dynamic'] * 1e3:8.2f}ms {times['static'] * 1e3:8.2f}ms {times['ort'] * 1e3:10.2f}ms "
                f"{times['dynamic'] / times['static']:10.2f} {times['dynamic'] / times['ort']:8.2f} {_error(workdir, ['dynamic', 'static']):11.1e}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip-pruned", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    print(machine(), flush=True)
    dense(names, args.rounds, args.runs)
    if not args.skip_pruned:
        pruned_bert(args.rounds, args.runs)


if __name__ == "__main__":
    main()
