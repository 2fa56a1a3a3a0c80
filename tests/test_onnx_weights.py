"""One way to find weights: every storage exporters use, read as onnxruntime computes it and written back in kind."""

import re
import warnings

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from tvm_sparse import analyze
from tvm_sparse.errors import ModelError
from tvm_sparse.frontend import load_onnx
from tvm_sparse.graph import find_layers, weight_names
from tvm_sparse.onnx_weights import densify, find_weights
from tvm_sparse.prepare import prepare
from tvm_sparse.prune import UnprunedLayer, prune_onnx

K, N = 32, 24  # MatMul weight [K, N]: in_features x out_features
DENSITY = 0.25


def _weight(seed=0, zeros=0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((K, N)) * 0.1).astype(np.float32)
    return np.where(rng.random((K, N)) < zeros, 0, w).astype(np.float32)


def _sparse(w: np.ndarray, name: str, coordinates: bool) -> onnx.SparseTensorProto:
    linear = np.flatnonzero(w)
    indices = np.stack(np.unravel_index(linear, w.shape), axis=1) if coordinates else linear
    return helper.make_sparse_tensor(
        numpy_helper.from_array(w.reshape(-1)[linear], name),
        numpy_helper.from_array(indices.astype(np.int64), f"{name}_indices"),
        list(w.shape),
    )


def _quantized(w: np.ndarray, dtype, per_axis: bool):
    """``w`` as integers, their scale and a nonzero zero point (per tensor, or per output column)."""
    info = np.iinfo(dtype)
    if per_axis:
        scale = (np.abs(w).max(axis=0) / 100).astype(np.float32)
        zero_point = np.arange(N, dtype=np.int64) % 7 + (128 if dtype == np.uint8 else -3)
    else:
        scale, zero_point = np.float32(np.abs(w).max() / 100), np.int64(5)
    q = np.clip(np.rint(w / scale) + zero_point, info.min, info.max).astype(dtype)
    return q, np.asarray(scale, np.float32), np.asarray(zero_point).astype(dtype)


def _storage(kind: str):
    """Nodes, initializers and sparse initializers that compute the MatMul weight ``w`` [K, N]."""
    w = _weight(zeros=0.5 if "sparse" in kind else 0.0)
    init = numpy_helper.from_array
    if kind == "initializer":
        return [], [init(w, "w")], []
    if kind == "constant":
        return [helper.make_node("Constant", [], ["w"], value=init(w, "w_value"))], [], []
    if kind == "constant_sparse_value":
        return (
            [
                helper.make_node(
                    "Constant", [], ["w"], sparse_value=_sparse(w, "w_value", coordinates=False)
                )
            ],
            [],
            [],
        )
    if kind in ("sparse_linear", "sparse_coordinates"):
        return [], [], [_sparse(w, "w", coordinates=kind == "sparse_coordinates")]
    if kind in ("float16", "bfloat16"):
        dtype = np.float16 if kind == "float16" else ml_dtypes.bfloat16
        return (
            [helper.make_node("Cast", ["w_half"], ["w"], to=TensorProto.FLOAT)],
            [init(w.astype(dtype), "w_half")],
            [],
        )
    if kind.startswith(("int8", "uint8")):
        q, scale, zero_point = _quantized(
            w, np.int8 if kind.startswith("int8") else np.uint8, per_axis=kind.endswith("axis")
        )
        node = helper.make_node(
            "DequantizeLinear", ["w_q", "w_scale", "w_zero_point"], ["w"], axis=1
        )
        return (
            [node],
            [init(q, "w_q"), init(scale, "w_scale"), init(zero_point, "w_zero_point")],
            [],
        )
    if kind == "transposed":
        nodes = [
            helper.make_node("Transpose", ["w_t"], ["w_i"], perm=[1, 0]),
            helper.make_node("Identity", ["w_i"], ["w"]),
        ]
        return nodes, [init(np.ascontiguousarray(w.T), "w_t")], []
    raise AssertionError(kind)


STORAGES = [
    "initializer",
    "constant",
    "constant_sparse_value",
    "sparse_linear",
    "sparse_coordinates",
    "float16",
    "bfloat16",
    "int8_tensor",
    "int8_axis",
    "uint8_axis",
    "transposed",
]


def _matmul_model(kind: str, opset: int = 17) -> onnx.ModelProto:
    nodes, inits, sparse = _storage(kind)
    graph = helper.make_graph(
        nodes + [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
        kind,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])],
        inits,
        sparse_initializer=sparse,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run_plain(model, feeds: dict) -> np.ndarray:
    """onnxruntime without graph optimizations: it would otherwise run DequantizeLinear + MatMul as a matmul
    on a quantized activation, which is not what the model says."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    ).run(None, feeds)[0]


def _computed_weight(model) -> np.ndarray:
    """The MatMul weight as onnxruntime computes it: the model applied to the identity."""
    return _run_plain(model, {"x": np.eye(K, dtype=np.float32)})


def _storage_signature(model: onnx.ModelProto):
    """What a pruned model must keep: the nodes, their attribute kinds, each stored tensor's name and type."""
    graph = model.graph
    return (
        [(n.op_type, [a.name for a in n.attribute]) for n in graph.node],
        {t.name: t.data_type for t in graph.initializer},
        {
            s.values.name: (s.values.data_type, len(s.indices.dims))
            for s in graph.sparse_initializer
        },
    )


@pytest.mark.parametrize("kind", STORAGES)
def test_reads_the_weight_onnxruntime_computes_with(kind):
    model = _matmul_model(kind)
    found = find_weights(model)
    (layer,) = found.layers
    assert (layer.name, [w.layers for w in found.weights], found.skipped) == ("fc", [[layer]], [])
    np.testing.assert_array_equal(layer.values(), _computed_weight(model))
    assert layer.matrix().shape == (N, K)
    if (
        "int" in kind
    ):  # exactly ONNX's formula, as TVM computes it: (q - zero_point) * scale in float32
        q, scale, zero_point = (numpy_helper.to_array(t) for t in model.graph.initializer)
        np.testing.assert_array_equal(
            layer.values(), (q.astype(np.int32) - zero_point).astype(np.float32) * scale
        )


@pytest.mark.parametrize("kind", STORAGES)
def test_pruned_weight_stays_in_its_storage(kind):
    model = _matmul_model(kind)
    before = _computed_weight(model)
    pruned, (report,) = prune_onnx(model, "unstructured", DENSITY)
    onnx.checker.check_model(pruned)
    assert _storage_signature(pruned) == _storage_signature(model)
    after = _computed_weight(pruned)
    kept = after != 0
    assert kept.sum() == round(DENSITY * before.size) and report.density_after == DENSITY
    np.testing.assert_array_equal(after[kept], before[kept])  # kept values unchanged
    assert np.abs(after[kept]).min() >= np.abs(before[~kept]).max()  # the largest were kept
    x = np.random.default_rng(1).standard_normal((5, K)).astype(np.float32)
    np.testing.assert_allclose(
        _run_plain(pruned, {"x": x}), x @ np.where(kept, before, 0), rtol=1e-5, atol=1e-6
    )
    stored = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    if "int8" in kind:  # pruned entries are stored as their column's zero point: exact zeros
        q, q0, zero_point = (
            stored["w_q"],
            numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w_q")),
            stored["w_zero_point"],
        )
        assert (
            q.dtype == q0.dtype
            and np.array_equal(q[~kept], np.broadcast_to(zero_point, q.shape)[~kept])
            and np.array_equal(q[kept], q0[kept])
        )
    if kind.startswith("sparse"):
        assert numpy_helper.to_array(pruned.graph.sparse_initializer[0].values).size == kept.sum()


@pytest.mark.parametrize("kind", STORAGES)
def test_analysis_sees_the_pruned_weight_by_its_node_name(kind):
    pruned, _ = prune_onnx(_matmul_model(kind), "unstructured", DENSITY)
    mod = prepare(load_onnx(pruned).mod)
    (layer,) = find_layers(mod["main"], weight_names(mod))
    assert layer.name == "fc"
    np.testing.assert_array_equal(layer.weight, find_weights(pruned).layers[0].matrix())


def test_sparse_tensors_with_bad_indices_are_model_errors():
    model = _matmul_model("sparse_coordinates")
    indices = model.graph.sparse_initializer[0].indices
    indices.CopyFrom(
        numpy_helper.from_array(
            np.full((numpy_helper.to_array(indices).shape[0], 2), K, np.int64), indices.name
        )
    )
    with pytest.raises(ModelError, match="sparse tensor 'w': an index is outside its shape"):
        find_weights(model)
    with pytest.raises(ModelError, match="sparse tensor 'w'"):
        load_onnx(model)


def test_densify_keeps_what_the_model_computes():
    """Sparse initializers, Constant sparse_value and a Constant value_float scale become tensors TVM reads."""
    q, scale, _ = _quantized(_weight(), np.int8, per_axis=False)
    nodes = [
        helper.make_node("Constant", [], ["w_scale"], value_float=float(scale)),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"]),
    ]
    graph = helper.make_graph(
        nodes + [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [K, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [K, N])],
        [numpy_helper.from_array(q, "w_q")],
    )
    scalar_scale = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for model in (
        _matmul_model("sparse_linear"),
        _matmul_model("constant_sparse_value"),
        scalar_scale,
    ):
        dense = densify(model)
        onnx.checker.check_model(dense)
        assert not dense.graph.sparse_initializer and all(
            a.name == "value"
            for n in dense.graph.node
            if n.op_type == "Constant"
            for a in n.attribute
        )
        np.testing.assert_array_equal(_computed_weight(dense), _computed_weight(model))
        assert [layer.name for layer in analyze(model).layers] == ["fc"]
    plain = _matmul_model("initializer")
    assert densify(plain) is plain


def _tied_model() -> onnx.ModelProto:
    """One weight E [64, 32] used by Gemm(transB=1) (out, in) = E, MatMul (out, in) = E^T, and Gemm(transB=1) again."""
    rng = np.random.default_rng(9)
    e = (rng.standard_normal((64, 32)) * 0.1).astype(np.float32)
    w = (rng.standard_normal((32, 32)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "E"], ["s"], transB=1, name="enc_proj"),
        helper.make_node("Softmax", ["s"], ["p"], axis=1, name="sm"),
        helper.make_node("MatMul", ["p", "E"], ["c"], name="readout"),
        helper.make_node("MatMul", ["c", "W"], ["hid"], name="mlp"),
        helper.make_node("Gemm", ["hid", "E"], ["y"], transB=1, name="lm_head"),
    ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])],
        [numpy_helper.from_array(e, "E"), numpy_helper.from_array(w, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_tied_weight_is_one_weight_with_several_users():
    model = _tied_model()
    found = find_weights(model)
    assert [[layer.name for layer in w.layers] for w in found.weights] == [
        ["enc_proj", "readout", "lm_head"],
        ["mlp"],
    ]
    pruned, report = prune_onnx(model, "block:16x1", DENSITY)
    assert [(r.name, r.shape, r.density_after) for r in report] == [
        ("enc_proj", (64, 32), DENSITY),
        ("mlp", (32, 32), DENSITY),
    ]
    assert report[0].note == "shared with readout, lm_head"
    e, w = (numpy_helper.to_array(t) for t in pruned.graph.initializer)
    x = np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)
    s = x @ e.T
    p = np.exp(s - s.max(axis=1, keepdims=True))
    expected = ((p / p.sum(axis=1, keepdims=True)) @ e @ w) @ e.T
    np.testing.assert_allclose(run_onnxruntime(pruned, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)
    assert [layer.name for layer in analyze(pruned).layers] == [
        "enc_proj",
        "readout",
        "mlp",
        "lm_head",
    ]


def _layer_model(op: str, weight: np.ndarray, x_shape, **attrs) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"], name="layer", **attrs)],
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# op, weight shape, input shape, attributes, the (out, in) matrix with input channels innermost written out by hand
LAYERS = {
    "conv1d": ("Conv", (8, 12, 3), (1, 12, 10), {}, lambda w: w.transpose(0, 2, 1).reshape(8, -1)),
    "conv2d": (
        "Conv",
        (8, 12, 3, 3),
        (1, 12, 6, 6),
        {},
        lambda w: w.transpose(0, 2, 3, 1).reshape(8, -1),
    ),
    "conv3d": (
        "Conv",
        (8, 12, 2, 2, 2),
        (1, 12, 4, 4, 4),
        {},
        lambda w: w.transpose(0, 2, 3, 4, 1).reshape(8, -1),
    ),
    "conv_transpose": (
        "ConvTranspose",
        (12, 8, 3, 3),
        (1, 12, 5, 5),
        {"strides": [2, 2]},
        lambda w: w.transpose(1, 2, 3, 0).reshape(8, -1),
    ),
    "einsum_in_out": ("Einsum", (12, 8), (2, 3, 12), {"equation": "abc,cd->abd"}, lambda w: w.T),
    "einsum_out_in": ("Einsum", (8, 12), (2, 3, 12), {"equation": "bsh,oh->bso"}, lambda w: w),
    "einsum_implicit": ("Einsum", (12, 8), (3, 12), {"equation": "ij,jk"}, lambda w: w.T),
}


@pytest.mark.parametrize("name", LAYERS)
def test_convolutions_and_einsums_are_pruned_along_their_reduction(name):
    op, shape, x_shape, attrs, matrix_of = LAYERS[name]
    rng = np.random.default_rng(3)
    w = rng.standard_normal(shape).astype(np.float32)
    model = _layer_model(op, w, x_shape, **attrs)
    (layer,) = find_weights(model).layers
    np.testing.assert_array_equal(layer.matrix(), matrix_of(w))
    pruned, _ = prune_onnx(model, "nm:2:4")
    p = numpy_helper.to_array(pruned.graph.initializer[0])
    groups = matrix_of(p).reshape(8, -1, 4)
    assert (np.count_nonzero(groups, axis=2) == 2).all() and np.all((p == 0) | (p == w))
    x = rng.standard_normal(x_shape).astype(np.float32)
    np.testing.assert_allclose(
        run_onnxruntime(pruned, {"x": x})[0],
        run_onnxruntime(_layer_model(op, p, x_shape, **attrs), {"x": x})[0],
        rtol=0,
        atol=0,
    )
    if name == "conv2d":
        assert [row.name for row in analyze(pruned).layers] == ["layer"]
    if op == "Einsum":
        np.testing.assert_allclose(
            run_onnxruntime(pruned, {"x": x})[0],
            np.einsum(attrs["equation"], x, p),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize("equation", ["ij,jk->ki", "ij,jk->ijk", "bij,jk->bik,", "ii,ij->j"])
def test_einsums_that_are_not_matmuls_by_the_weight_are_reported(equation):
    w = np.ones((4, 4), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "w"], ["y"], name="e", equation=equation)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    found = find_weights(helper.make_model(graph))
    assert found.layers == [] and [s.reason for s in found.skipped] == [
        f"Einsum '{equation}' is not a matmul by its constant operand"
    ]


def _two_layers(second_weight: str, extra_nodes=(), extra_inits=()) -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        *extra_nodes,
        helper.make_node("MatMul", ["h", second_weight], ["y"], name="fc2"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])]
    if second_weight == "w_input":
        inputs.append(helper.make_tensor_value_info("w_input", TensorProto.FLOAT, [16, 8]))
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [
            numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w1"),
            *extra_inits,
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_layers_that_cannot_be_pruned_are_named_with_the_reason():
    reshaped = _two_layers(
        "w2",
        [helper.make_node("Reshape", ["w_flat", "shape"], ["w2"], name="to_matrix")],
        [
            numpy_helper.from_array(np.ones(128, np.float32), "w_flat"),
            numpy_helper.from_array(np.array([16, 8]), "shape"),
        ],
    )
    for model, reason in (
        (_two_layers("w_input"), "its weight 'w_input' is a graph input, not a constant"),
        (reshaped, "its weight is computed at run time by Reshape 'to_matrix'"),
    ):
        assert [str(s) for s in find_weights(model).skipped] == [f"fc2 (MatMul): {reason}"]
        with pytest.warns(UnprunedLayer, match=f"left unpruned: fc2 \\(MatMul\\): {reason}"):
            _, report = prune_onnx(model, "unstructured", 0.5)
        assert [r.name for r in report] == ["fc1"]
    alone = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
            "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "w")],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        )
    )
    with pytest.raises(
        ModelError,
        match=r"^nothing to prune: no layer's weight can be pruned \(fc \(MatMul\): its weight 'w' is a graph input",
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnprunedLayer)
            prune_onnx(alone, "unstructured", 0.5)


def test_attention_matmuls_are_not_layers():
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"]),
        helper.make_node("MatMul", ["q", "kt"], ["y"], name="scores"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 8]) for n in ("q", "k")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )
    found = find_weights(helper.make_model(graph))
    assert found.layers == [] and found.skipped == []
    with pytest.raises(ModelError, match="^nothing to prune: the model has no Gemm, MatMul"):
        prune_onnx(helper.make_model(graph), "unstructured", 0.5)


def test_decomposition_reads_a_constant_node_weight_and_drops_it(rng):
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    decomposed, (report,) = prune_onnx(model, "decompose:energy=1")
    assert report.name == "conv" and [n.op_type for n in decomposed.graph.node] == ["Conv", "Conv"]
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnxruntime(decomposed, {"x": x})[0],
        run_onnxruntime(model, {"x": x})[0],
        rtol=1e-4,
        atol=1e-4,
    )


def _one_matmul(nodes, inits, weight="w") -> onnx.ModelProto:
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", ["x", weight], ["y"], name="fc")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        inits,
    )
    return helper.make_model(graph)


def test_weights_that_cannot_serve_their_layer_are_skipped_with_the_reason():
    cases = {
        "its weight 'w' is 3-D, not a matrix": _one_matmul(
            [], [numpy_helper.from_array(np.ones((2, 4, 4), np.float32), "w")]
        ),
        "its weight 'w' is int32, not a floating-point type": _one_matmul(
            [], [numpy_helper.from_array(np.ones((4, 4), np.int32), "w")]
        ),
        "its weight 'w_q' is float8_e4m3fn behind DequantizeLinear 'dq' (integer types only)": _one_matmul(
            [helper.make_node("DequantizeLinear", ["w_q", "s"], ["w"], name="dq")],
            [
                numpy_helper.from_array(np.ones((4, 4), ml_dtypes.float8_e4m3fn), "w_q"),
                numpy_helper.from_array(np.float32(0.5), "s"),
            ],
        ),
        "its weight 'a' depends on itself (the graph has a cycle)": _one_matmul(
            [
                helper.make_node("Identity", ["b"], ["a"]),
                helper.make_node("Identity", ["a"], ["b"]),
            ],
            [],
            weight="a",
        ),
    }
    for reason, model in cases.items():
        found = find_weights(model)
        assert found.layers == [] and [str(s) for s in found.skipped] == [f"fc (MatMul): {reason}"]


def test_malformed_weights_are_model_errors():
    scale_mismatch = _one_matmul(
        [helper.make_node("DequantizeLinear", ["w_q", "s"], ["w"], name="dq", axis=1)],
        [
            numpy_helper.from_array(np.ones((4, 4), np.int8), "w_q"),
            numpy_helper.from_array(np.ones(3, np.float32), "s"),
        ],
    )
    no_cast_type = _one_matmul(
        [helper.make_node("Cast", ["w16"], ["w"], name="cast")],
        [numpy_helper.from_array(np.ones((4, 4), np.float16), "w16")],
    )
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(1, np.float32), "w"),
        numpy_helper.from_array(np.zeros(1, np.int64), "w_i"),
        [-1, 4],
    )
    negative_dims = _one_matmul([], [])
    negative_dims.graph.sparse_initializer.append(sparse)
    for model, message in (
        (scale_mismatch, "DequantizeLinear 'dq': a scale of shape [3]"),
        (no_cast_type, "Cast 'cast' has no 'to' attribute"),
        (negative_dims, "sparse tensor 'w': [1] values for shape [-1, 4]"),
    ):
        with pytest.raises(ModelError, match=re.escape(message)):
            find_weights(model)
    with pytest.raises(ModelError, match=re.escape("sparse tensor 'w'")):
        densify(negative_dims)
