"""Transposed convolutions, Conv1d/Conv3d and weight-first matmuls reach the project's kernels."""

import warnings

import numpy as np
import pytest
import tvm
from conftest import run_executable, run_onnxruntime
from onnx import TensorProto, helper

from tvm_sparse import build
from tvm_sparse.analysis.slow_path import DefaultScheduleWarning
from tvm_sparse.frontend import load_model
from tvm_sparse.graph import find_layers, weight_names
from tvm_sparse.kernels.col2im import Col2Im
from tvm_sparse.pipeline import graph_passes
from tvm_sparse.prepare import prepare
from tvm_sparse.prune import prune_onnx
from tvm_sparse.target import host_target
from tvm_sparse.testing import GraphBuilder
from tvm_sparse.transform import SparsifyWeights


def onnx_model(g: GraphBuilder, x_shape, y: str):
    out = helper.make_tensor_value_info(
        y, TensorProto.FLOAT, [f"y{i}" for i in range(len(x_shape))]
    )
    return g.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))], [out])


def build_clean(model):
    """``build(model)``, failing on any heavy op left on TVM's default lowering."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exe = build(model)
    slow = [str(w.message) for w in caught if issubclass(w.category, DefaultScheduleWarning)]
    assert not slow, slow
    return exe


def op_names(model) -> list[str]:
    """The operators of the model's main function after the preparing passes, in program order."""
    ops = []
    tvm.relax.analysis.post_order_visit(
        prepare(load_model(model).mod)["main"],
        lambda e: ops.append(e.op.name) if isinstance(e, tvm.ir.Call) else None,
    )
    return ops


def check(model, shapes, rng):
    """Compile once, then match onnxruntime at each input shape."""
    exe = build_clean(model)
    for shape in shapes:
        x = rng.standard_normal(shape).astype("float32")
        (expected,) = run_onnxruntime(model, {"x": x})
        np.testing.assert_allclose(run_executable(exe, x), expected, rtol=1e-4, atol=1e-4)


def conv_transpose(g, x, c_in, c_out, kernel, groups=1, bias=True, **attrs):
    w = g.const(f"w{g.count}", g.weight((c_in, c_out // groups, *kernel), 0.3))
    inputs = [x, w] + ([g.const(f"b{g.count}", g.weight((c_out,), 0.5))] if bias else [])
    return g.node("ConvTranspose", inputs, group=groups, kernel_shape=list(kernel), **attrs)


DIMS = ["N", 8, "H", "W"]  # symbolic batch and image


@pytest.mark.parametrize(
    "c_out, kernel, attrs, relu, sizes",
    [
        (
            5,
            (3, 3),
            dict(strides=[3, 3], pads=[0, 1, 2, 0]),
            False,
            [(1, 4, 6), (3, 2, 3)],
        ),  # odd channels, asymmetric pads
        (8, (4, 4), dict(strides=[2, 2], auto_pad="SAME_UPPER"), True, [(1, 6, 6), (2, 3, 5)]),
        (
            8,
            (3, 2),
            dict(dilations=[2, 3], pads=[2, 1, 0, 1]),
            False,
            [(1, 6, 5), (2, 9, 3)],
        ),  # stride 1, dilation
        (32, (2, 2), dict(strides=[2, 2], group=4), True, [(1, 4, 4), (2, 5, 3)]),
    ],
)
def test_conv_transpose_matches_onnxruntime(rng, c_out, kernel, attrs, relu, sizes):
    g = GraphBuilder(seed=3)
    attrs = dict(attrs)
    groups = attrs.pop("group", 1)
    y = conv_transpose(g, "x", 8, c_out, kernel, groups, **attrs)
    y = g.node("Relu", [y]) if relu else y
    check(onnx_model(g, DIMS, y), [(n, 8, h, w) for n, h, w in sizes], rng)


def test_decoder_block_matches_onnxruntime(rng):
    """Conv -> Relu -> ConvTranspose (no bias; stride 2, pads, output padding) -> Relu, as in a decoder."""
    g = GraphBuilder(seed=4)
    y = g.node("Relu", [g.conv("x", "enc", 4, 16, 3)])
    y = g.node(
        "Relu",
        [
            conv_transpose(
                g,
                y,
                16,
                8,
                (3, 3),
                bias=False,
                strides=[2, 2],
                pads=[1, 1, 1, 1],
                output_padding=[1, 1],
            )
        ],
    )
    model = onnx_model(g, ["N", 4, "H", "W"], y)
    check(model, [(1, 4, 6, 6), (2, 4, 3, 5)], rng)
    assert op_names(model).count("relax.permute_dims") == 1  # col2im writes the NCHW output itself


def test_channels_last_model_has_no_transposes(rng):
    """An NHWC model (NCHW ConvTranspose between Transposes, as tf2onnx writes it) keeps no transpose."""
    g = GraphBuilder(seed=14)
    y = conv_transpose(
        g, g.node("Transpose", ["x"], perm=[0, 3, 1, 2]), 8, 4, (3, 3), strides=[2, 2]
    )
    model = onnx_model(
        g, ["N", "H", "W", 8], g.node("Transpose", [g.node("Relu", [y])], perm=[0, 2, 3, 1])
    )
    check(model, [(1, 4, 5, 8), (2, 3, 3, 8)], rng)
    assert "relax.permute_dims" not in op_names(model)


def test_conv_transpose_layers_keep_their_names():
    """The GEMM of a transposed convolution is a layer the analysis and the sparse rewrite see, named by its
    node; convolutions found by position (BatchNorm folded) keep theirs."""
    g = GraphBuilder(seed=6)
    y = g.conv_bn("x", "enc", 8, 8, 3)
    g.nodes.append(
        helper.make_node(
            "ConvTranspose",
            [y, g.const("w", g.weight((8, 4, 3, 3)))],
            ["up"],
            name="up",
            strides=[2, 2],
        )
    )
    y = g.conv_bn("up", "dec", 4, 4, 3)
    mod = prepare(load_model(onnx_model(g, [1, 8, 5, 5], y)).mod)
    enc, up, dec = find_layers(mod["main"], weight_names(mod))
    assert (enc.name, up.name, dec.name) == ("enc", "up", "dec")
    assert up.matrix().shape == (Col2Im((1, 5, 5, 8), 4, (3, 3)).columns, 8)


def test_pruned_conv_transpose_runs_block_sparse(rng):
    """Whole 16x16 (output x input channel) blocks pruned at 90%: the GEMM is judged like any convolution."""
    g = GraphBuilder(seed=10)
    mask = np.kron(rng.random((4, 4)) < 0.1, np.ones((16, 16)))  # (input, output) channel blocks
    mask[:16, :16] = 1
    w = g.const("w", g.weight((64, 64, 3, 3)) * mask[:, :, None, None].astype("float32"))
    g.nodes.append(
        helper.make_node(
            "ConvTranspose",
            ["x", w],
            ["y"],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            output_padding=[1, 1],
        )
    )
    model = onnx_model(g, ["N", 64, "H", "W"], "y")
    mod = load_model(model).mod
    with host_target():
        for p in graph_passes(SparsifyWeights()):
            mod = p(mod)
    assert any(gvar.name_hint.startswith("bsr_conv2d") for gvar in mod.get_global_vars())
    check(model, [(1, 64, 6, 6), (2, 64, 3, 4)], rng)


def test_conv_transpose_with_a_weight_input_falls_back(rng):
    """A weight computed at run time: the layer goes back to NCHW for TVM's lowering, reported, and right."""
    g = GraphBuilder(seed=11)
    y = g.node(
        "ConvTranspose", [g.conv("x", "enc", 4, 4, 3), "w"], strides=[2, 2], kernel_shape=[3, 3]
    )
    w_info = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 6, 3, 3])
    model = g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5]), w_info],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 6, 11, 11])],
    )
    with pytest.warns(DefaultScheduleWarning, match="conv2d_transpose"):
        exe = build(model)
    x, w = (
        rng.standard_normal((1, 4, 5, 5)).astype("float32"),
        rng.standard_normal((4, 6, 3, 3)).astype("float32"),
    )
    (expected,) = run_onnxruntime(model, {"x": x, "w": w})
    np.testing.assert_allclose(run_executable(exe, x, w), expected, rtol=1e-4, atol=1e-4)


def conv1d(g, x, c_in, c_out, kernel, **attrs):
    w = g.const(f"w{g.count}", g.weight((c_out, c_in // attrs.get("group", 1), kernel), 0.3))
    return g.node(
        "Conv",
        [x, w, g.const(f"b{g.count}", g.weight((c_out,), 0.5))],
        kernel_shape=[kernel],
        **attrs,
    )


def test_conv1d_stack_matches_onnxruntime(rng):
    """Strided, dilated and grouped Conv1d layers, then a 1-D ConvTranspose, on a symbolic length: channels-last
    from the first layer to the last."""
    g = GraphBuilder(seed=7)
    y = g.node("Relu", [conv1d(g, "x", 2, 16, 9, strides=[4], pads=[4, 4])])
    y = g.node("Relu", [conv1d(g, y, 16, 24, 3, pads=[2, 2], dilations=[2])])
    y = conv1d(g, y, 24, 8, 3, pads=[1, 0], group=4)
    model = onnx_model(g, [1, 2, "L"], conv_transpose(g, y, 8, 12, (4,), strides=[2], pads=[1, 1]))
    check(model, [(1, 2, 64), (1, 2, 37)], rng)
    ops = op_names(model)
    # a transpose and a reshape into NHWC at the input, the reshape back at the output (col2im writes NCHW):
    # the layers read each other's NHWC outputs
    assert (
        ops.count("relax.permute_dims"),
        ops.count("relax.reshape"),
        ops.count("relax.nn.conv2d"),
    ) == (1, 2, 4)


@pytest.mark.parametrize(
    "kernel, pads, depth", [((1, 3, 3), [0, 1, 1, 0, 1, 1], 3), ((3, 3, 3), [1, 1, 1, 1, 1, 1], 1)]
)
def test_conv3d_of_depth_one_matches_onnxruntime(rng, kernel, pads, depth):
    """A depth-1 kernel, or a depth-1 input whose one output slice reads the middle tap (symbolic N, H, W)."""
    g = GraphBuilder(seed=8)
    w = g.const("w", g.weight((8, 4, *kernel), 0.3))
    y = g.node("Relu", [g.node("Conv", ["x", w], kernel_shape=list(kernel), pads=pads)])
    check(
        onnx_model(g, ["N", 4, depth, "H", "W"], y), [(1, 4, depth, 6, 6), (2, 4, depth, 5, 3)], rng
    )


def test_weight_first_matmul_on_a_vector_matches_onnxruntime(rng):
    """``MatMul(W, x)`` with a 1-D ``x`` (+ bias, Relu) is ``x @ W^T``: no transpose at all."""
    g = GraphBuilder(seed=9)
    y = g.node("MatMul", [g.const("W", g.weight((20, 12))), "x"])
    model = onnx_model(
        g, [12], g.node("Relu", [g.node("Add", [y, g.const("b", g.weight((20,), 0.5))])])
    )
    check(model, [(12,)], rng)
    (layer,) = find_layers(prepare(load_model(model).mod)["main"])
    assert layer.bias is not None and layer.relu
    assert "relax.permute_dims" not in op_names(model)


def test_weight_first_matmuls_are_linear_layers(rng):
    """Conv1d -> MatMul(W1, .) + b -> Relu -> MatMul(W2, .) on [N, C, L]: linear layers with weights W1 (bias
    and Relu fused) and W2, whose transposes cancel against each other and the convolution's layout conversion."""
    g = GraphBuilder(seed=12)
    w1, w2 = g.weight((24, 16)), g.weight((8, 24))
    y = g.node("Relu", [conv1d(g, "x", 4, 16, 3, pads=[1, 1])])
    y = g.node(
        "Relu",
        [
            g.node(
                "Add", [g.node("MatMul", [g.const("W1", w1), y]), g.const("b1", g.weight((24, 1)))]
            )
        ],
    )
    model = onnx_model(g, ["N", 4, "L"], g.node("MatMul", [g.const("W2", w2), y]))
    check(model, [(1, 4, 10), (2, 4, 7)], rng)
    main = prepare(load_model(model).mod)["main"]
    _, first, second = find_layers(main)
    np.testing.assert_array_equal(first.weight, w1)
    np.testing.assert_array_equal(second.weight, w2)
    assert first.bias is not None and first.relu
    assert op_names(model).count("relax.permute_dims") == 2


def test_pruned_weight_first_matmul_is_pruned_and_runs_block_sparse(rng):
    """``prune`` finds the constant on the left too; the pruned layer runs on the block-sparse kernel by its name."""
    g = GraphBuilder(seed=13)
    y = g.node("MatMul", [g.const("W", g.weight((64, 32))), "x"], name="proj")
    model, (report,) = prune_onnx(onnx_model(g, ["N", 32, "L"], y), "block:16x1", density=0.1)
    assert (report.name, report.shape) == ("proj", (64, 32))
    mod = load_model(model).mod
    with host_target():
        for p in graph_passes(SparsifyWeights()):
            mod = p(mod)
    assert "bsr_matmul_proj" in [gvar.name_hint for gvar in mod.get_global_vars()]
    check(model, [(1, 32, 5), (2, 32, 9)], rng)


def test_col2im_rejects_a_wrong_weight():
    with pytest.raises(ValueError, match="expected \\[8, 4, 3, 3\\]"):
        Col2Im((1, 5, 5, 8), 4, (3, 3)).weight_matrix(np.zeros((8, 4, 2, 3), "float32"))
    with pytest.raises(ValueError, match="groups"):
        Col2Im((1, 5, 5, 6), 4, (3, 3), groups=4)
