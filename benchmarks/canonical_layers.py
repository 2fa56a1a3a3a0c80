"""Layers that reach the kernels through :mod:`tvm_sparse.canonicalize`: tvm-sparse vs onnxruntime.

* ``deconv``: a decoder's upsampling ConvTranspose, 64 -> 32 channels, 3x3,
  stride 2, pads 1, output padding 1, 28x28 -> 56x56, bias and Relu; batch 1
  and 8. ``deconv-subpixel`` is the same layer written as its sub-pixel
  decomposition (four stride-1 Convs on the input, taps 1x1, 1x2, 2x1, 2x2,
  interleaved by Concat/Reshape/Transpose), the other formulation the
  compiler could have used;
* ``upsample-block``: the r04 report's Conv -> Relu -> ConvTranspose (stride 2,
  ``auto_pad=SAME_UPPER``) on 1x16x56x56;
* ``audio1d``: the r14 report's model, three Conv1d layers on 4000 samples (1 -> 64, k 9, stride 4;
  64 -> 128, k 3; 128 -> 128, k 3), Relu between;
* ``weight-first``: ``Relu(MatMul(W[512, 256], x[8, 256, 196]) + b)``.

Each engine runs in processes of its own (their thread pools spin after
each call and would steal each other's cores), 2 threads, alternating over
rounds; the time is the median of the rounds' medians (:mod:`engines`).
Run: ``python benchmarks/canonical_layers.py [--case NAME ...] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engines import load_outputs, machine, time_engines  # noqa: E402

import tvm_sparse  # noqa: E402


def _model(nodes, inits, x_shape, out_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _deconv_weights():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((64, 32, 3, 3)) * 0.1).astype("float32"), (
        rng.standard_normal(32) * 0.1
    ).astype("float32")


def deconv(batch: int) -> onnx.ModelProto:
    w, b = _deconv_weights()
    node = helper.make_node(
        "ConvTranspose",
        ["x", "w", "b"],
        ["t"],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        output_padding=[1, 1],
    )
    return _model(
        [node, helper.make_node("Relu", ["t"], ["y"])],
        {"w": w, "b": b},
        [batch, 64, 28, 28],
        [batch, 32, 56, 56],
    )


def deconv_subpixel(batch: int) -> onnx.ModelProto:
    """``deconv`` as four stride-1 convolutions: output row ``2j`` takes tap 1 of input row ``j``, row ``2j + 1``
    taps 2 and 0 of rows ``j`` and ``j + 1`` (columns alike)."""
    w, b = _deconv_weights()
    taps = {
        0: ([1], [0, 0]),
        1: ([2, 0], [0, 1]),
    }  # phase -> (kernel taps in input order, pads before/after)
    nodes, inits, phases = [], {"b": b}, []
    for a in (0, 1):
        for c in (0, 1):
            (rows, (top, bottom)), (cols, (left, right)) = taps[a], taps[c]
            inits[f"w{a}{c}"] = np.ascontiguousarray(
                w[:, :, rows][:, :, :, cols].transpose(1, 0, 2, 3)
            )
            nodes.append(
                helper.make_node(
                    "Conv", ["x", f"w{a}{c}"], [f"p{a}{c}"], pads=[top, left, bottom, right]
                )
            )
            phases.append(f"p{a}{c}")
    inits["s1"] = np.array([batch, 2, 2, 32, 28, 28], "int64")
    inits["s2"] = np.array([batch, 32, 56, 56], "int64")
    nodes += [
        helper.make_node("Concat", phases, ["cat"], axis=1),
        helper.make_node("Reshape", ["cat", "s1"], ["r1"]),
        helper.make_node("Transpose", ["r1"], ["tr"], perm=[0, 3, 4, 1, 5, 2]),
        helper.make_node("Reshape", ["tr", "s2"], ["r2"]),
        helper.make_node("Add", ["r2", "bias"], ["t"]),
        helper.make_node("Relu", ["t"], ["y"]),
    ]
    inits["bias"] = b.reshape(1, 32, 1, 1)
    del inits["b"]
    return _model(nodes, inits, [batch, 64, 28, 28], [batch, 32, 56, 56])


def upsample_block() -> onnx.ModelProto:
    """The shape of the r04 report at a real size: Conv 16 -> 32 3x3, Relu, ConvTranspose 32 -> 8 3x3 stride 2
    with ``auto_pad=SAME_UPPER``, 1x16x56x56 -> 1x8x112x112."""
    rng = np.random.default_rng(4)
    inits = {
        "wc": (rng.standard_normal((32, 16, 3, 3)) * 0.1).astype("float32"),
        "wt": (rng.standard_normal((32, 8, 3, 3)) * 0.1).astype("float32"),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node(
            "ConvTranspose", ["r", "wt"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER"
        ),
    ]
    return _model(nodes, inits, [1, 16, 56, 56], [1, 8, 112, 112])


def audio1d() -> onnx.ModelProto:
    rng = np.random.default_rng(14)
    inits = {
        "w1": (rng.standard_normal((64, 1, 9)) * 0.3).astype("float32"),
        "w2": (rng.standard_normal((128, 64, 3)) * 0.05).astype("float32"),
        "w3": (rng.standard_normal((128, 128, 3)) * 0.05).astype("float32"),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[4], pads=[4, 4]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y"], pads=[1, 1]),
    ]
    return _model(nodes, inits, [1, 1, 4000], [1, 128, 1000])


def weight_first() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = {
        "w": (rng.standard_normal((512, 256)) * 0.05).astype("float32"),
        "b": (rng.standard_normal((512, 1)) * 0.1).astype("float32"),
    }
    nodes = [
        helper.make_node("MatMul", ["w", "x"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    return _model(nodes, inits, [8, 256, 196], [8, 512, 196])


CASES = {
    "deconv-b1": lambda: deconv(1),
    "deconv-b8": lambda: deconv(8),
    "deconv-subpixel-b1": lambda: deconv_subpixel(1),
    "deconv-subpixel-b8": lambda: deconv_subpixel(8),
    "upsample-block": upsample_block,
    "audio1d": audio1d,
    "weight-first": weight_first,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs="*", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.case:
            model = CASES[case]()
            path, lib, inputs = (
                os.path.join(tmp, f"{case}.{ext}") for ext in ("onnx", "so", "npz")
            )
            onnx.save(model, path)
            tvm_sparse.build(model).export_library(lib)
            shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
            np.savez(inputs, x=np.random.default_rng(1).standard_normal(shape).astype("float32"))
            seconds = time_engines(
                {"onnxruntime": f"ort:{path}", "tvm-sparse": f"tvm:{lib}"},
                inputs,
                rounds=args.rounds,
                outputs_dir=tmp,
            )
            (ref,), (y,) = (
                load_outputs(os.path.join(tmp, "onnxruntime.npz")),
                load_outputs(os.path.join(tmp, "tvm-sparse.npz")),
            )
            error = float(np.abs(y - ref).max() / np.abs(ref).max())
            ort_ms, ours = seconds["onnxruntime"] * 1e3, seconds["tvm-sparse"] * 1e3
            print(
                f"{case:20s} onnxruntime {ort_ms:7.3f} ms | tvm-sparse {ours:7.3f} ms | ratio {ours / ort_ms:5.2f} | max rel. error {error:.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
