"""Shared helpers: reference runs with onnxruntime and runs of compiled executables."""

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax


def run_onnxruntime(model, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_executable(exe, *inputs) -> np.ndarray:
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(x) for x in inputs]).numpy()


def block_sparse(rng, shape, block, density) -> np.ndarray:
    """A float32 matrix whose nonzeros fill whole ``block``s, about ``density`` of them."""
    r, c = block
    mask = rng.random((-(-shape[0] // r), -(-shape[1] // c))) < density
    dense = rng.standard_normal((mask.shape[0] * r, mask.shape[1] * c))
    return (dense * np.kron(mask, np.ones((r, c))))[: shape[0], : shape[1]].astype("float32")


def linear_model(weight_out_in, x_shape, gemm=True, bias=None, weight_as_input=False):
    """One linear layer: Gemm(transB=1) or MatMul (+ Add) on an input of ``x_shape``."""
    n, k = weight_out_in.shape
    inits, nodes = [], []
    w_name = "W"
    w = weight_out_in if gemm else np.ascontiguousarray(weight_out_in.T)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    if weight_as_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.shape)))
    else:
        inits.append(numpy_helper.from_array(w, w_name))
    out_shape = [*x_shape[:-1], n]
    if gemm:
        args = ["x", w_name] + (["b"] if bias is not None else [])
        nodes.append(helper.make_node("Gemm", args, ["y"], transB=1, name="fc"))
    else:
        nodes.append(
            helper.make_node("MatMul", ["x", w_name], ["y" if bias is None else "h"], name="fc")
        )
        if bias is not None:
            nodes.append(helper.make_node("Add", ["h", "b"], ["y"], name="bias"))
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
    graph = helper.make_graph(
        nodes,
        "linear",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
