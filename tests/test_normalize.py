"""Exported graphs brought into the importer's form: Einsum as MatMul, float16 computed in float32,
shape computations folded, inputs kept; and the warning for heavy ops left on TVM's default lowering."""

import warnings

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from tvm_sparse import analyze, build
from tvm_sparse.analysis.slow_path import DefaultScheduleWarning
from tvm_sparse.normalize import normalize
from tvm_sparse.testing import GraphBuilder


def _run(exe, feeds: dict) -> np.ndarray:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()]).numpy()


def _model(nodes, inputs, outputs, inits, opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _no_default_schedule(model) -> object:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exe = build(model)
    assert not [w for w in caught if issubclass(w.category, DefaultScheduleWarning)], [
        str(w.message) for w in caught
    ]
    return exe


@pytest.mark.parametrize(
    "equation, x_shape, w_shape, dims",
    [
        ("abc,cd->abd", ["batch", "seq", 32], (32, 48), {"batch": [1, 2], "seq": [5, 9]}),
        (
            "abc,dc->abd",
            ["batch", "seq", 32],
            (48, 32),
            {"batch": [1, 2], "seq": [5, 9]},
        ),  # weight as (out, in)
        (
            "abc,cde->abde",
            ["batch", "seq", 32],
            (32, 4, 8),
            {"batch": [2, 1], "seq": [3, 7]},
        ),  # to heads
        (
            "abcd,cde->abe",
            ["batch", "seq", 4, 8],
            (4, 8, 32),
            {"batch": [2, 1], "seq": [3, 7]},
        ),  # from heads
        (
            "cd,abc->abd",
            ["batch", "seq", 32],
            (32, 48),
            {"batch": [1, 3], "seq": [4, 2]},
        ),  # constant first
        (
            "abc,cd->adb",
            ["batch", "seq", 32],
            (32, 48),
            {"batch": [1, 3], "seq": [4, 2]},
        ),  # output transposed
    ],
)
def test_einsum_matrix_products_run_as_matmuls(rng, equation, x_shape, w_shape, dims):
    w = rng.standard_normal(w_shape).astype("float32")
    constant_first = equation.startswith("cd,")
    inputs = ["w", "x"] if constant_first else ["x", "w"]
    model = _model(
        [helper.make_node("Einsum", inputs, ["y"], equation=equation, name="proj")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [
            helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, [f"y{i}" for i in range(len(equation.split("->")[1]))]
            )
        ],
        [numpy_helper.from_array(w, "w")],
        opset=12,
    )
    assert "Einsum" not in [n.op_type for n in normalize(model).graph.node]
    exe = _no_default_schedule(model)
    for size in zip(*dims.values()):
        shape = [dict(zip(dims, size)).get(d, d) for d in x_shape]
        x = rng.standard_normal(shape).astype("float32")
        (expected,) = run_onnxruntime(model, {"x": x})
        np.testing.assert_allclose(_run(exe, {"x": x}), expected, rtol=1e-4, atol=1e-4)


def test_attention_einsums_between_activations_run_on_the_batched_kernel(rng):
    model = _model(
        [
            helper.make_node("Einsum", ["q", "k"], ["s"], equation="bqhd,bkhd->bhqk"),
            helper.make_node("Softmax", ["s"], ["p"], axis=-1),
            helper.make_node("Einsum", ["p", "v"], ["y"], equation="bhqk,bkhd->bqhd"),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", 2, 8])
            for n in "qkv"
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 2, 8])],
        [],
    )
    exe = _no_default_schedule(model)
    for batch, seq in [(1, 3), (2, 17)]:
        feeds = {n: rng.standard_normal((batch, seq, 2, 8)).astype("float32") for n in "qkv"}
        (expected,) = run_onnxruntime(model, feeds)
        np.testing.assert_allclose(_run(exe, feeds), expected, rtol=1e-4, atol=1e-4)


def test_float16_model_computes_in_float32_and_keeps_its_interface(rng):
    """As onnxconverter-common's convert_float_to_float16 writes a model: half-precision weights and
    compute; here with half-precision inputs and outputs too (keep_io_types=False)."""
    w1 = (rng.standard_normal((24, 16)) * 0.3).astype("float16")
    w2 = (rng.standard_normal((16, 8)) * 0.3).astype("float16")
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    normalized = normalize(model)
    assert {t.data_type for t in normalized.graph.initializer} == {TensorProto.FLOAT}
    assert normalized.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    exe = _no_default_schedule(model)
    x = rng.standard_normal((5, 24)).astype("float16")
    y = _run(exe, {"x": x})
    assert y.dtype == np.float16
    expected = np.maximum(x.astype("float32") @ w1.astype("float32"), 0) @ w2.astype("float32")
    np.testing.assert_allclose(y.astype("float32"), expected, rtol=2e-3, atol=2e-3)


def _keras_flatten_cnn(rng) -> onnx.ModelProto:
    """A Keras CNN as tf2onnx writes its Flatten with a symbolic batch: Shape -> Gather -> Cast ->
    Slice -> Concat -> Reshape."""
    g = GraphBuilder(0)
    c = g.node("Relu", [g.conv("x", "conv", 3, 8, 3, stride=2, bias=True)])
    shape = g.node("Shape", [c])
    batch = g.node(
        "Unsqueeze",
        [
            g.node(
                "Cast",
                [g.node("Gather", [shape, g.const("zero", np.array(0, "int64"))], axis=0)],
                to=TensorProto.INT32,
            ),
            g.const("ax", np.array([0], "int64")),
        ],
    )
    rest = g.node(
        "Slice",
        [
            shape,
            g.const("one", np.array([1], "int64")),
            g.const("four", np.array([4], "int64")),
            g.const("ax0", np.array([0], "int64")),
        ],
    )
    size = g.node("Cast", [g.node("ReduceProd", [rest], keepdims=1)], to=TensorProto.INT32)
    flat = g.node(
        "Reshape",
        [c, g.node("Cast", [g.node("Concat", [batch, size], axis=0)], to=TensorProto.INT64)],
    )
    y = g.linear(flat, "dense", 8 * 6 * 6, 10)
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["N", 10])],
        opset=13,
    )


def test_shape_computations_fold_with_a_symbolic_batch(rng):
    model = _keras_flatten_cnn(rng)
    assert "Shape" not in [n.op_type for n in normalize(model).graph.node]
    exe = _no_default_schedule(model)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 12, 12)).astype("float32")
        (expected,) = run_onnxruntime(model, {"x": x})
        np.testing.assert_allclose(_run(exe, {"x": x}), expected, rtol=1e-4, atol=1e-4)


def test_unused_inputs_are_kept_in_order(rng):
    """Folding drops inputs nothing reads; the compiled function still takes the model's inputs."""
    w = rng.standard_normal((6, 4)).astype("float32")
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [
            helper.make_tensor_value_info("unused", TensorProto.INT64, ["batch", 3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w")],
    )
    assert [vi.name for vi in normalize(model).graph.input] == ["unused", "x"]
    x = rng.standard_normal((2, 6)).astype("float32")
    np.testing.assert_allclose(
        _run(build(model), {"unused": np.zeros((2, 3), "int64"), "x": x}),
        x @ w,
        rtol=1e-5,
        atol=1e-5,
    )


def test_heavy_ops_left_on_the_default_lowering_are_reported(rng):
    """A 3-D convolution has no project kernel: the build warns with its share of the FLOPs, and
    analyze lists it."""
    w = rng.standard_normal((4, 2, 3, 3, 3)).astype("float32")
    w2 = rng.standard_normal((4 * 4 * 4 * 4, 8)).astype("float32")
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 6),
            helper.make_node("Reshape", ["c", "shape"], ["f"]),
            helper.make_node("MatMul", ["f", "w2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.array([1, -1], "int64"), "shape"),
        ],
    )
    with pytest.warns(
        DefaultScheduleWarning,
        match=r"1 compute-heavy operator\(s\) run on TVM's default lowering, 87% of the model's FLOPs: nn.conv3d",
    ):
        exe = build(model)
    x = rng.standard_normal((1, 2, 4, 4, 4)).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(_run(exe, {"x": x}), expected, rtol=1e-4, atol=1e-4)
    report = analyze(model)
    assert [op.op for op in report.default_schedule] == ["relax.nn.conv3d"]
    assert report.to_dict()["default_schedule_ops"][0]["share"] == pytest.approx(
        27648 / (27648 + 4096), abs=1e-3
    )
    assert "default lowering" in report.to_table()


@pytest.mark.parametrize("auto_pad", [None, "SAME_UPPER"])
def test_conv_transpose_sized_by_output_shape(rng, auto_pad):
    """ONNX derives a ConvTranspose's pads from ``output_shape``; TVM's importer ignores it."""
    w = rng.standard_normal((4, 3, 3, 3)).astype("float32")
    attrs = {"strides": [2, 2], "output_shape": [10, 10]} | (
        {"auto_pad": auto_pad} if auto_pad else {}
    )
    model = _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 10, 10])],
        [numpy_helper.from_array(w, "w")],
    )
    x = rng.standard_normal((1, 4, 5, 5)).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    got = _run(_no_default_schedule(model), {"x": x})
    assert got.shape == (1, 3, 10, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "mode, stride, batch",
    [("SAME_UPPER", 2, 1), ("SAME_LOWER", 2, 1), ("SAME_UPPER", 1, "N"), ("SAME_LOWER", 1, "N")],
)
def test_same_padding_becomes_explicit_pads(rng, mode, stride, batch):
    """keras2onnx's auto_pad SAME (uneven for even sizes at stride 2): explicit pads on the Conv and the
    MaxPool, so no Pad of its own sits between layout transposes; stride 1 pads even with a symbolic size."""
    w = rng.standard_normal((8, 3, 4, 4)).astype("float32")
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=mode, strides=[stride, stride]),
            helper.make_node(
                "MaxPool",
                ["c"],
                ["y"],
                auto_pad=mode,
                kernel_shape=[2, 2],
                strides=[stride, stride],
            ),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 10, 10])],
        [
            helper.make_tensor_value_info(
                "y",
                TensorProto.FLOAT,
                [
                    batch,
                    8,
                    10 // stride // stride + (stride > 1),
                    10 // stride // stride + (stride > 1),
                ],
            )
        ],
        [numpy_helper.from_array(w, "w")],
    )
    assert all("auto_pad" not in [a.name for a in n.attribute] for n in normalize(model).graph.node)
    x = rng.standard_normal((1, 3, 10, 10)).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    exe = _no_default_schedule(model)
    np.testing.assert_allclose(_run(exe, {"x": x}), expected, rtol=1e-4, atol=1e-4)


def test_shapes_that_folding_reveals_fold_in_later_rounds():
    """GPT-2's second layer reads sizes that are constant only once the first layer's shape arithmetic folded."""
    from tvm_sparse.testing.exported import torch_gpt2_tied

    model = torch_gpt2_tied(layers=2).model
    assert "Shape" in [n.op_type for n in model.graph.node]
    assert "Shape" not in [n.op_type for n in normalize(model, {"input_ids": (1, 16)}).graph.node]


@pytest.mark.parametrize("exponent", [2.0, 3.0, 4.0, 2.5])
def test_small_integer_powers_are_products(rng, exponent):
    """The tanh GELU's x ** 3 runs as products (no scalar libm pow); other exponents keep pow."""
    from tvm_sparse.frontend import load_model
    from tvm_sparse.prepare import prepare

    nodes = [helper.make_node("Pow", ["x", "e"], ["y"])]
    inits = [numpy_helper.from_array(np.array(exponent, "float32"), "e")]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 33])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 33])],
        inits,
    )
    powers = [c for c in _calls(prepare(load_model(model).mod)) if c == "relax.power"]
    assert len(powers) == (exponent == 2.5)
    x = np.abs(rng.standard_normal((2, 33))).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(_run(build(model), {"x": x}), expected, rtol=1e-5, atol=1e-6)


def _calls(mod) -> list[str]:
    from tvm import relax

    names = []
    relax.analysis.post_order_visit(
        mod["main"],
        lambda e: (
            names.append(e.op.name) if isinstance(e, relax.Call) and hasattr(e.op, "name") else None
        ),
    )
    return names
