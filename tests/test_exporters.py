"""Models as exporters write them: opsets 9 to 18, BatchNorm unfolded, channels-last inputs behind a
Transpose, Gemm or MatMul + Add, LayerNorm decomposed or as one op, Erf GELU, Softmax attention.
Each is pruned, compiled for the host CPU and compared with onnxruntime on the same model."""

import numpy as np
import pytest
import tvm
from conftest import run_executable, run_onnxruntime
from onnx import TensorProto, helper
from tvm import relax
from tvm.script import relax as R

import tvm_sparse
from tvm_sparse.frontend import load_model
from tvm_sparse.prepare import FoldTransposes, prepare_passes
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import GraphBuilder


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _check(model, x, pattern="block:16x1", density=0.25):
    pruned, layers = prune_onnx(model, pattern, density)
    assert layers, "nothing was pruned"
    got = run_executable(tvm_sparse.build(pruned), x)
    np.testing.assert_allclose(got, run_onnxruntime(pruned, {"x": x})[0], rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("opset", [9, 11, 13, 18])
@pytest.mark.parametrize("gemm", [True, False])
def test_mlp_across_opsets(rng, opset, gemm):
    g = GraphBuilder(opset)
    h = g.node("Relu", [g.linear("x", "fc0", 64, 128, gemm=gemm)])
    out = g.node("Identity", [g.linear(h, "fc1", 128, 32, gemm=gemm)], name="y")
    model = g.model([_value("x", [8, 64])], [_value(out, [8, 32])], opset=opset)
    _check(model, rng.standard_normal((8, 64)).astype("float32"))


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_channels_last_cnn_with_unfolded_batchnorm(rng, opset):
    """A TF-style export: NHWC input, a Transpose to NCHW, Conv + BatchNormalization + Relu, then a head."""
    g = GraphBuilder(opset)
    x = g.node("Transpose", ["x"], perm=[0, 3, 1, 2])
    x = g.conv_bn(x, "conv0", 16, 32, 3)
    x = g.conv_bn(x, "conv1", 32, 32, 3, stride=2)
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    out = g.node("Identity", [g.linear(x, "head", 32, 10, gemm=True)], name="y")
    model = g.model([_value("x", [2, 12, 12, 16])], [_value(out, [2, 10])], opset=opset)
    _check(
        model,
        rng.standard_normal((2, 12, 12, 16)).astype("float32"),
        pattern="block:8x8",
        density=0.5,
    )


def test_channels_last_transposes_cancel_the_layout_conversion(rng):
    """NHWC in and out around an NCHW Conv: after ConvertLayout, the model's transposes and the conversion's
    cancel, so the compiled graph has none left; results still match onnxruntime."""
    g = GraphBuilder(13)
    x = g.conv(g.node("Transpose", ["x"], perm=[0, 3, 1, 2]), "conv", 16, 32, 3)
    out = g.node("Transpose", [g.node("Relu", [x])], perm=[0, 2, 3, 1], name="y")
    model = g.model([_value("x", [1, 10, 10, 16])], [_value(out, [1, 10, 10, 32])])
    mod = tvm.transform.Sequential(prepare_passes())(load_model(model).mod)
    permutes = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: (
            permutes.append(e)
            if isinstance(e, relax.Call) and e.op.same_as(tvm.ir.Op.get("relax.permute_dims"))
            else None
        ),
    )
    assert not permutes
    _check(
        model,
        rng.standard_normal((1, 10, 10, 16)).astype("float32"),
        pattern="block:8x8",
        density=0.5,
    )


def test_fold_transposes_composes_chains():
    @tvm.script.ir_module
    class Chain:
        @R.function
        def main(x: R.Tensor((2, 3, 4, 5), "float32")):
            with R.dataflow():
                a = R.permute_dims(x, [0, 3, 1, 2])
                b = R.nn.relu(R.permute_dims(R.permute_dims(a, [0, 2, 3, 1]), [0, 1, 2, 3]))
                c = R.permute_dims(R.permute_dims(b, [3, 2, 1, 0]), [1, 0, 2, 3])
                R.output(c)
            return c

    folded = FoldTransposes()(Chain)
    x = np.arange(120, dtype="float32").reshape(2, 3, 4, 5)

    def run(mod):
        return relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](
            tvm.runtime.tensor(x)
        ).numpy()

    np.testing.assert_array_equal(run(folded), x.transpose(2, 3, 1, 0))
    assert folded["main"].script().count("permute_dims") == 1


@pytest.mark.parametrize("opset, fused_layer_norm", [(13, False), (17, True), (18, False)])
def test_transformer_block_across_opsets(rng, opset, fused_layer_norm):
    """Self-attention (MatMul + Softmax) and a GELU FFN, LayerNorm as one op (17+) or decomposed."""
    tokens, dim, ffn = 16, 64, 128
    g = GraphBuilder(opset)

    def norm(x, name):
        return (
            g.layer_norm(x, name, dim)
            if fused_layer_norm
            else g.layer_norm_decomposed(x, name, dim, opset)
        )

    q, k, v = (g.linear("x", name, dim, dim) for name in ("q", "k", "v"))
    scores = g.node(
        "Mul",
        [
            g.node("MatMul", [q, g.node("Transpose", [k], perm=[1, 0])]),
            g.const("scale", np.array(dim**-0.5, "float32")),
        ],
    )
    attended = g.node("MatMul", [g.node("Softmax", [scores], axis=-1), v])
    h = norm(g.node("Add", ["x", g.linear(attended, "proj", dim, dim)]), "ln0")
    y = norm(
        g.node("Add", [h, g.linear(g.gelu(g.linear(h, "ffn0", dim, ffn)), "ffn1", ffn, dim)]), "ln1"
    )
    out = g.node("Identity", [y], name="y")
    model = g.model([_value("x", [tokens, dim])], [_value(out, [tokens, dim])], opset=opset)
    _check(model, rng.standard_normal((tokens, dim)).astype("float32"))
