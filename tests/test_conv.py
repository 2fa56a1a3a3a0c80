"""Convolutions through the host pipeline, against onnxruntime."""

import numpy as np
import pytest
import tvm
from conftest import run_executable, run_onnxruntime
from onnx import TensorProto, helper

from tvm_sparse import build
from tvm_sparse.frontend import load_model
from tvm_sparse.pipeline import graph_passes
from tvm_sparse.target import host_target
from tvm_sparse.testing import GraphBuilder, resnet

CONV2D = tvm.ir.Op.get("relax.nn.conv2d")


def conv_model(
    shape,
    out_channels,
    kernel,
    stride=1,
    pads=None,
    dilation=1,
    groups=1,
    bias=True,
    batch_norm=False,
    relu=True,
):
    """One ONNX Conv (+ BatchNorm) (+ Relu) on an NCHW input of ``shape``."""
    g = GraphBuilder(seed=7)
    c_in = shape[1]
    w = g.const("conv.weight", g.weight((out_channels, c_in // groups, kernel, kernel), 0.3))
    inputs = ["x", w] + ([g.const("conv.bias", g.weight((out_channels,), 0.5))] if bias else [])
    pads = pads if pads is not None else [kernel // 2 * dilation] * 4
    y = g.node(
        "Conv",
        inputs,
        name="conv",
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=pads,
        dilations=[dilation, dilation],
        group=groups,
    )
    if batch_norm:
        y = g.batch_norm(y, "bn", out_channels)
    if relu:
        y = g.node("Relu", [y])
    y = g.node("Identity", [y], name="y")
    out_hw = [
        (size + pads[i] + pads[i + 2] - dilation * (kernel - 1) - 1) // stride + 1
        for i, size in enumerate(shape[2:])
    ]
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [shape[0], out_channels, *out_hw])],
    )


def remaining_conv2d(model) -> int:
    """How many relax.nn.conv2d calls the host graph passes leave to TVM's default lowering."""
    mod = load_model(model).mod
    with host_target():
        for p in graph_passes(sparsify=None):
            mod = p(mod)
    count = 0

    def visit(expr):
        nonlocal count
        count += isinstance(expr, tvm.ir.Call) and expr.op.same_as(CONV2D)

    for func in mod.functions.values():
        if isinstance(func, tvm.relax.Function):
            tvm.relax.analysis.post_order_visit(func.body, visit)
    return count


@pytest.mark.parametrize(
    "shape, out_channels, kernel, kwargs",
    [
        ((1, 3, 20, 20), 16, 7, dict(stride=2)),  # stem
        ((2, 16, 9, 9), 24, 3, dict(batch_norm=True)),  # BatchNorm folded, batch 2
        (
            (1, 16, 8, 8),
            40,
            1,
            dict(bias=False, relu=False),
        ),  # 1x1, output channels not a multiple of 16
        ((1, 8, 11, 7), 8, 3, dict(stride=2, pads=[0, 1, 2, 1])),  # asymmetric padding, odd sizes
        ((1, 8, 12, 12), 16, 3, dict(dilation=2)),
        ((1, 32, 8, 8), 64, 3, dict(groups=4)),
        ((1, 24, 10, 10), 24, 3, dict(groups=24, batch_norm=True)),  # depthwise
        ((1, 5, 9, 9), 5, 5, dict(groups=5, stride=2)),  # depthwise, fewer channels than lanes
    ],
)
def test_conv_layer_matches_onnxruntime(rng, shape, out_channels, kernel, kwargs):
    model = conv_model(shape, out_channels, kernel, **kwargs)
    x = rng.standard_normal(shape).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(run_executable(build(model), x), expected, rtol=1e-4, atol=1e-4)
    assert remaining_conv2d(model) == 0


def test_resnet_matches_onnxruntime(rng):
    model = resnet(image=32, width=8, blocks=(1, 1), classes=10)
    x = rng.standard_normal((1, 3, 32, 32)).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(
        run_executable(build(model), x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )
    assert remaining_conv2d(model) == 0
