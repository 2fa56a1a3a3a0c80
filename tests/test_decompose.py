"""Kernel decomposition and sparse convolutions on the CPU, against numpy and onnxruntime."""

import numpy as np
import pytest
from conftest import run_executable, run_onnxruntime
from onnx import numpy_helper
from test_conv import conv_model

from tvm_sparse import analyze, build
from tvm_sparse.codegen.layer import basis_conv_float, expand_float
from tvm_sparse.formats import FormatError
from tvm_sparse.graph import ConvLayer
from tvm_sparse.prune import (
    decompose_kernels,
    energy_profile,
    parse_pattern,
    prune_coefficients,
    prune_onnx,
    quantize_hybrid,
)
from tvm_sparse.testing import resnet
from tvm_sparse.transform.decomposed_conv import (
    basis_first,
    basis_first_pays,
    maps_major,
    shared_basis,
)


def low_rank_weight(rng, o, i, k, rank):
    basis = rng.standard_normal((rank, k, k))
    return np.einsum("oij,jhw->oihw", rng.standard_normal((o, i, rank)), basis).astype("float32")


@pytest.mark.parametrize("k, rank", [(3, 1), (3, 4), (5, 7), (7, 3)])
def test_exact_rank_kernels_are_reproduced(rng, k, rank):
    w = low_rank_weight(rng, 8, 6, k, rank)
    d = decompose_kernels(w, rank)
    assert d.rank == rank and d.energy == pytest.approx(1.0)
    np.testing.assert_allclose(d.weight(), w, rtol=1e-4, atol=1e-4)
    assert energy_profile(w)[rank - 1] == pytest.approx(1.0)
    assert decompose_kernels(w, energy=0.999999).rank == rank  # the energy rule finds it


def test_lossy_options(rng):
    d = decompose_kernels(rng.standard_normal((32, 16, 3, 3)).astype("float32"), 4)
    pruned = prune_coefficients(d, 0.2)
    maps = pruned.coefficients.transpose(2, 0, 1).reshape(4 * 32, 16)  # basis-major: row j * O + o
    blocks = np.abs(maps.reshape(8, 16, 16)).sum(
        axis=1
    )  # 16 output channels x 1 input channel per block
    assert np.count_nonzero(blocks) == round(0.2 * blocks.size)
    q = quantize_hybrid(d)
    for o in range(32):
        assert len(np.unique(np.abs(q.coefficients[o]))) <= 2  # {0, alpha}
    steps = q.basis / (np.abs(q.basis).reshape(4, -1).max(axis=1)[:, None, None] / 127)
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-3)  # 8-bit grid


@pytest.mark.parametrize(
    "text, message",
    [
        ("decompose:rank=0", "rank"),
        ("decompose:depth=3", "unknown option"),
        ("decompose:quant=int4", "quant=hybrid"),
    ],
)
def test_bad_decompose_patterns(text, message):
    with pytest.raises(FormatError, match=message):
        parse_pattern(text)


def test_decomposed_onnx_matches_the_original_at_full_energy(rng):
    model = resnet(image=16, width=8, blocks=(1,), classes=10)
    decomposed, layers = prune_onnx(model, "decompose:energy=1")
    assert {layer.name for layer in layers} == {
        "stem",
        "stage0.block0.conv2",
    }  # the k x k convolutions
    note = next(layer.note for layer in layers if layer.name == "stage0.block0.conv2")
    assert note.startswith("rank 9 of 9, energy 1.000")
    ops = [n.op_type for n in decomposed.graph.node]
    assert ops.count("Conv") == len([n for n in model.graph.node if n.op_type == "Conv"]) + len(
        layers
    )
    x = rng.standard_normal((1, 3, 16, 16)).astype("float32")
    (original,) = run_onnxruntime(model, {"x": x})
    (converted,) = run_onnxruntime(decomposed, {"x": x})
    np.testing.assert_allclose(converted, original, rtol=1e-3, atol=1e-3 * np.abs(original).max())
    np.testing.assert_allclose(
        run_executable(build(decomposed), x),
        converted,
        rtol=1e-4,
        atol=1e-4 * np.abs(converted).max(),
    )


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(dilation=2), dict(pads=[0, 1, 2, 1])])
def test_lossy_decomposition_compiles_like_onnxruntime(rng, kwargs):
    model = conv_model((2, 16, 11, 9), 32, 3, **kwargs)
    decomposed, _ = prune_onnx(model, "decompose:rank=3,coef-density=0.5,quant=hybrid")
    x = rng.standard_normal((2, 16, 11, 9)).astype("float32")
    (expected,) = run_onnxruntime(decomposed, {"x": x})
    np.testing.assert_allclose(run_executable(build(decomposed), x), expected, rtol=1e-4, atol=1e-4)


def test_analysis_reports_the_energy_of_each_rank(rng):
    model = conv_model((1, 8, 8, 8), 16, 3)
    layer = analyze(model).layers[0]
    assert layer.op == "conv2d" and len(layer.decomposition["energy"]) == 9
    assert layer.decomposition["energy"][-1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kernel, kwargs",
    [(3, dict()), (3, dict(stride=2)), (5, dict(dilation=2)), (1, dict()), (7, dict(stride=2))],
)
def test_block_sparse_convolutions(rng, kernel, kwargs):
    model = conv_model((1, 32, 12, 10), 64, kernel, **kwargs)
    pruned, _ = prune_onnx(model, "block:16x16", 0.2)
    layer = analyze(pruned).layers[0]
    assert layer.op == "conv2d" and layer.choice.format == "bsr"
    weight = numpy_helper.to_array(
        next(t for t in pruned.graph.initializer if t.name == "conv.weight")
    )
    assert np.count_nonzero(weight) < 0.3 * weight.size
    x = rng.standard_normal((1, 32, 12, 10)).astype("float32")
    (expected,) = run_onnxruntime(pruned, {"x": x})
    np.testing.assert_allclose(run_executable(build(pruned), x), expected, rtol=1e-4, atol=1e-4)


def _conv_chain(rng, zero_filters=(), unread_inputs=(), bias=True):
    """x -> conv1 (3x3, 16 -> 24) -> relu -> conv2 (3x3, 24 -> 8), with chosen dead channels."""
    from onnx import TensorProto, helper

    from tvm_sparse.testing import GraphBuilder

    g = GraphBuilder(seed=5)
    w1 = g.weight((24, 16, 3, 3), 0.2)
    b1 = g.weight((24,), 0.5)
    w2 = g.weight((8, 24, 3, 3), 0.2)
    w1[list(zero_filters)] = 0
    b1[list(zero_filters)] = 0
    w2[:, list(unread_inputs)] = 0
    inputs = ["x", g.const("c1.w", w1)] + ([g.const("c1.b", b1)] if bias else [])
    h = g.node(
        "Relu", [g.node("Conv", inputs, name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    )
    y = g.node(
        "Conv", [h, g.const("c2.w", w2)], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
    )
    y = g.node("Identity", [y], name="y")
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 10, 10])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 8, 10, 10])],
    )


@pytest.mark.parametrize(
    "zero_filters, unread_inputs, removed",
    [((1, 5, 9), (), 3), ((), (0, 2), 2), ((3,), (3, 4), 2), ((), (), 0)],
)
def test_channel_shrinking_keeps_results(rng, zero_filters, unread_inputs, removed):
    import tvm

    from tvm_sparse.frontend import load_model
    from tvm_sparse.prepare import prepare_passes
    from tvm_sparse.transform import ShrinkChannels
    from tvm_sparse.transform.channel_shrink import channels_removed

    model = _conv_chain(rng, zero_filters, unread_inputs)
    shrunk = ShrinkChannels()(tvm.transform.Sequential(prepare_passes())(load_model(model).mod))
    assert sum(channels_removed(shrunk).values()) == removed
    x = rng.standard_normal((1, 16, 10, 10)).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(run_executable(build(model), x), expected, rtol=1e-4, atol=1e-4)


def test_zero_filter_with_a_bias_is_not_dead(rng):
    from onnx import numpy_helper as nh

    model = _conv_chain(rng, zero_filters=(2,))
    for t in model.graph.initializer:
        if t.name == "c1.b":
            b = nh.to_array(t).copy()
            b[2] = 1.0  # relu(1) feeds conv2: the channel is alive
            t.CopyFrom(nh.from_array(b, t.name))
    x = rng.standard_normal((1, 16, 10, 10)).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(run_executable(build(model), x), expected, rtol=1e-4, atol=1e-4)


def _decomposed_pair(rng, channels_in, channels_out, rank, stride, image=8):
    """(1x1 combine, basis) ConvLayers of a decomposed 3x3 convolution whose basis is scaled per output
    channel (a folded BatchNorm), NHWC/OHWI as the graph reader gives them."""
    kernels = rng.standard_normal((rank, 3, 3)).astype("float32")
    scales = rng.uniform(-2, 2, channels_out).astype("float32")
    out = (image - 1) // stride + 1
    combine = ConvLayer(
        "combine",
        None,
        None,
        (1, image, image, channels_in),
        rng.standard_normal((channels_out * rank, 1, 1, channels_in)).astype("float32"),
        out_shape=(1, image, image, channels_out * rank),
    )
    basis_weight = scales[:, None, None, None] * kernels.transpose(1, 2, 0)[None]
    basis = ConvLayer(
        "basis",
        None,
        None,
        (1, image, image, channels_out * rank),
        basis_weight.astype("float32"),
        strides=(stride, stride),
        padding=(1, 1, 1, 1),
        groups=channels_out,
        out_shape=(1, out, out, channels_out),
    )
    return combine, basis, kernels, scales


@pytest.mark.parametrize("stride", [1, 2])
def test_basis_first_order_computes_the_same_convolution(rng, stride):
    combine, basis, kernels, scales = _decomposed_pair(rng, 6, 5, 3, stride)
    found_kernels, found_scales = shared_basis(basis)
    np.testing.assert_allclose(
        found_kernels * found_scales[0], kernels * scales[0], rtol=1e-5, atol=1e-6
    )
    x = rng.standard_normal((1, 8, 8, 6)).astype("float32")
    combined = x @ maps_major(combine, 3).matrix().T  # combine-first: maps j * O + o
    expected = basis_conv_float(combined, basis.weight.transpose(0, 3, 1, 2), stride, 1)
    got = expand_float(x, found_kernels, stride, 1) @ basis_first(combine, basis, found_scales).T
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_basis_first_is_chosen_where_it_issues_fewer_macs(rng):
    assert basis_first_pays(*_decomposed_pair(rng, 16, 16, 4, stride=2)[:2])
    assert not basis_first_pays(
        *_decomposed_pair(rng, 16, 16, 4, stride=1)[:2]
    )  # a tie keeps ESCALATE's order
    assert not basis_first_pays(
        *_decomposed_pair(rng, 64, 16, 4, stride=1)[:2]
    )  # more inputs than outputs
    assert basis_first_pays(*_decomposed_pair(rng, 16, 64, 4, stride=1)[:2])
    _, basis, _, _ = _decomposed_pair(rng, 4, 4, 2, stride=1)
    basis.weight[1, 0, 0, 0] += 1.0  # group 1 no longer a multiple of the basis
    assert shared_basis(basis) is None
