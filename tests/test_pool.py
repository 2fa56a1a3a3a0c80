"""NHWC pooling and global average pooling on the project's kernels, against onnxruntime."""

import numpy as np
import pytest
import tvm
from conftest import run_executable, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from tvm_sparse import build
from tvm_sparse.frontend import load_model
from tvm_sparse.pipeline import graph_passes
from tvm_sparse.target import host_target


def _model(pool):
    """A 1x1 convolution (which puts the graph in NHWC) and ``pool``, with a symbolic batch."""
    w = np.random.default_rng(0).standard_normal((20, 3, 1, 1)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), pool],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 13, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


POOLS = {
    "max": helper.make_node(
        "MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    ),
    "max-ceil": helper.make_node(
        "MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1
    ),  # squeezenet's
    "max-dilated": helper.make_node(
        "MaxPool", ["c"], ["y"], kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 1]
    ),
    "avg": helper.make_node(
        "AveragePool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    ),
    "avg-include-pad": helper.make_node(
        "AveragePool",
        ["c"],
        ["y"],
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
    ),
    "avg-ceil": helper.make_node(
        "AveragePool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
    ),
    "global": helper.make_node("GlobalAveragePool", ["c"], ["y"]),
    "mean": helper.make_node("ReduceMean", ["c"], ["y"], axes=[2, 3], keepdims=0),
}
KERNELS = {
    "max": "max_pool2d",
    "avg": "avg_pool2d",
    "global": "spatial_mean",
    "mean": "spatial_mean",
}


@pytest.mark.parametrize("name", POOLS)
def test_pooling_runs_on_the_pool_kernels_at_every_size(rng, name):
    model = _model(POOLS[name])
    with host_target():
        mod = tvm.transform.Sequential(graph_passes(None))(load_model(model).mod)
    kernels = {gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert KERNELS[name.split("-")[0]] in kernels
    exe = build(model)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 13, 11)).astype("float32")
        (expected,) = run_onnxruntime(model, {"x": x})
        np.testing.assert_allclose(run_executable(exe, x), expected, rtol=1e-5, atol=1e-5)
