"""Symbolic batch and sequence dimensions: one library runs at every size on the project's kernels."""

import numpy as np
import pytest
import tvm
from conftest import block_sparse, run_executable, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from tvm_sparse import analyze, build
from tvm_sparse.errors import ModelError
from tvm_sparse.frontend import load_model
from tvm_sparse.graph import DIM_HINT, dim_hints, find_layers, representative
from tvm_sparse.pipeline import graph_passes
from tvm_sparse.target import host_target
from tvm_sparse.transform import SparsifyWeights


def _ffn(rng, dims, hidden=64, inner=256):
    """A pruned FFN block as torch exports it with ``dynamic_axes``: Gemm-free MatMul + Add, Relu."""
    w1 = block_sparse(
        rng, (hidden, inner), (1, 16), 0.1
    )  # MatMul weights are (in, out): 16x1 blocks of (out, in)
    w2 = block_sparse(rng, (inner, hidden), (1, 16), 0.1)
    b1 = rng.standard_normal(inner).astype("float32")
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_7"], ["h"], name="/ffn/fc1/MatMul"),
        helper.make_node("Add", ["h", "ffn.fc1.bias"], ["a"], name="/ffn/fc1/Add"),
        helper.make_node("Relu", ["a"], ["r"], name="/ffn/act/Relu"),
        helper.make_node("MatMul", ["r", "onnx::MatMul_8"], ["y"], name="/ffn/fc2/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*dims, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*dims, hidden])],
        [
            numpy_helper.from_array(w1, "onnx::MatMul_7"),
            numpy_helper.from_array(b1, "ffn.fc1.bias"),
            numpy_helper.from_array(w2, "onnx::MatMul_8"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dynamic_sequence_runs_the_block_sparse_kernels_at_every_size(rng):
    model = _ffn(rng, ["batch", "sequence"])
    with host_target():
        mod = tvm.transform.Sequential(graph_passes(SparsifyWeights()))(load_model(model).mod)
    kernels = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert sorted(kernels) == ["bsr_matmul__ffn_fc1_MatMul", "bsr_matmul__ffn_fc2_MatMul"]
    assert "R.matmul" not in mod["main"].script()
    exe = build(model)
    for batch, seq in [(1, 1), (1, 13), (3, 37)]:
        x = rng.standard_normal((batch, seq, 64)).astype("float32")
        (expected,) = run_onnxruntime(model, {"x": x})
        np.testing.assert_allclose(run_executable(exe, x), expected, rtol=1e-4, atol=1e-4)


def test_symbolic_sizes_stand_for_their_hints(rng):
    """Kernel parameters and records need numbers: a leading (batch) axis counts as 1, others as DIM_HINT."""
    (first, _) = find_layers(load_model(_ffn(rng, ["batch", "sequence"])).mod["main"])
    hints = dim_hints(load_model(_ffn(rng, ["batch", "sequence"])).mod["main"])
    assert sorted(hints.values()) == [1, DIM_HINT]
    assert first.rows_hint == DIM_HINT and representative(first.rows, {}) == DIM_HINT * DIM_HINT


def test_input_shapes_specialise_the_library(rng):
    model = _ffn(rng, ["batch", "sequence"])
    loaded = load_model(model, {"x": (2, 5, 64)})
    assert loaded.input_shapes == {"x": (2, 5, 64)}
    x = rng.standard_normal((2, 5, 64)).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(
        run_executable(build(model, input_shapes={"x": (2, 5, 64)}), x),
        expected,
        rtol=1e-4,
        atol=1e-4,
    )
    assert [row.name for row in analyze(model, input_shapes={"x": (2, 5, 64)}).layers] == [
        "/ffn/fc1/MatMul",
        "/ffn/fc2/MatMul",
    ]


@pytest.mark.parametrize(
    "shapes, message",
    [
        ({"y": (1, 2, 64)}, "no input named 'y'"),
        ({"x": (1, 64)}, "x has 3 dimensions"),
        ({"x": (1, 2, 32)}, "dimension 2 of x is static \\(64\\)"),
        ({"x": (0, 2, 64)}, "positive ints"),
    ],
)
def test_bad_input_shapes_are_one_clear_error(rng, shapes, message):
    with pytest.raises(ModelError, match=message):
        build(_ffn(rng, ["batch", "sequence"]), input_shapes=shapes)
