"""The sparse-accel Relax backend: the pattern table's partition (Before -> Expected, TVMScript), the plan's
host reasons, and the codegen step's runtime calls and layer programs."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_sparse.backend import CODEGEN, partition_for_sparse_accel, run_codegen
from tvm_sparse.codegen.layer import decode_layer
from tvm_sparse.frontend import load_model
from tvm_sparse.graph import find_layers
from tvm_sparse.hw.device import load_device
from tvm_sparse.prepare import prepare
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import resnet

RNG = np.random.default_rng(7)
W1 = RNG.standard_normal((32, 16)).astype("float32")  # (in, out) as relax.matmul takes it
B1 = RNG.standard_normal(16).astype("float32")
W2 = RNG.standard_normal((16, 8)).astype("float32")
DEVICE = load_device("sparse-accel")


@I.ir_module
class TwoLayers:
    @R.function
    def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 8), "float32"):
        with R.dataflow():
            h = R.matmul(x, R.const(W1))
            hb = R.add(h, R.const(B1))
            a = R.nn.relu(hb)
            y = R.matmul(a, R.const(W2))
            R.output(y)
        return y


def test_each_layer_with_its_epilogue_becomes_a_composite_function():
    @I.ir_module
    class Expected:
        @R.function
        def fused_relax_matmul_relax_add_relax_nn_relu_sparse_accel(
            x: R.Tensor((4, 32), "float32"),
        ) -> R.Tensor((4, 16), "float32"):
            R.func_attr({"Codegen": "sparse_accel"})

            @R.function
            def local_func(x_1: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 16), "float32"):
                R.func_attr(
                    {"Composite": "sparse_accel.matmul_bias_relu", "tvm_sparse.layers": "0"}
                )
                with R.dataflow():
                    h = R.matmul(x_1, R.const(W1))
                    hb = R.add(h, R.const(B1))
                    a = R.nn.relu(hb)
                    R.output(a)
                return a

            output = local_func(x)
            return output

        @R.function
        def fused_relax_matmul_sparse_accel(
            a: R.Tensor((4, 16), "float32"),
        ) -> R.Tensor((4, 8), "float32"):
            R.func_attr({"Codegen": "sparse_accel"})

            @R.function
            def local_func(a_1: R.Tensor((4, 16), "float32")) -> R.Tensor((4, 8), "float32"):
                R.func_attr({"Composite": "sparse_accel.matmul", "tvm_sparse.layers": "1"})
                with R.dataflow():
                    y = R.matmul(a_1, R.const(W2))
                    R.output(y)
                return y

            output = local_func(a)
            return output

        @R.function
        def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 8), "float32"):
            cls = Expected
            with R.dataflow():
                a = cls.fused_relax_matmul_relax_add_relax_nn_relu_sparse_accel(x)
                y = cls.fused_relax_matmul_sparse_accel(a)
                R.output(y)
            return y

    After, plan = partition_for_sparse_accel(TwoLayers, DEVICE)
    tvm.ir.assert_structural_equal(After, Expected)
    assert [layer.name for layer in plan.layers] == ["matmul_0", "matmul_1"]


@I.ir_module
class SharedEpilogue:  # the matmul's result has a second user: its bias add is not the layer's
    @R.function
    def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 16), "float32"):
        with R.dataflow():
            h = R.matmul(x, R.const(W1))
            hb = R.add(h, R.const(B1))
            y = R.multiply(hb, h)
            R.output(y)
        return y


def test_an_epilogue_with_another_user_stays_outside_the_layer():
    @I.ir_module
    class Expected:
        @R.function
        def fused_relax_matmul_sparse_accel(
            x: R.Tensor((4, 32), "float32"),
        ) -> R.Tensor((4, 16), "float32"):
            R.func_attr({"Codegen": "sparse_accel"})

            @R.function
            def local_func(x_1: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 16), "float32"):
                R.func_attr({"Composite": "sparse_accel.matmul", "tvm_sparse.layers": "0"})
                with R.dataflow():
                    h = R.matmul(x_1, R.const(W1))
                    R.output(h)
                return h

            output = local_func(x)
            return output

        @R.function
        def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 16), "float32"):
            cls = Expected
            with R.dataflow():
                h = cls.fused_relax_matmul_sparse_accel(x)
                hb = R.add(h, R.const(B1))
                y = R.multiply(hb, h)
                R.output(y)
            return y

    After, _ = partition_for_sparse_accel(SharedEpilogue, DEVICE)
    tvm.ir.assert_structural_equal(After, Expected)


@I.ir_module
class HostOnly:  # an fp16 weight and a symbolic row count: nothing for the device
    @R.function
    def main(x: R.Tensor(("n", 32), "float32"), z: R.Tensor((4, 32), "float16")):
        with R.dataflow():
            y = R.matmul(x, R.const(W1))
            w = R.matmul(z, R.const(W1.astype("float16")))
            R.output(y, w)
        return (y, w)


def test_layers_the_device_cannot_run_stay_in_main_with_the_reason():
    After, plan = partition_for_sparse_accel(HostOnly, DEVICE)
    tvm.ir.assert_structural_equal(After, HostOnly)
    placements = run_codegen(After, plan, "deploy", {}).placements
    assert [(p.target, p.reason) for p in placements] == [
        ("host", "symbolic input shape (specialise it: input_shapes=)"),
        ("host", "float16 weight"),
    ]


def test_codegen_replaces_each_partitioned_function_by_a_runtime_call_with_its_program():
    partitioned, plan = partition_for_sparse_accel(TwoLayers, DEVICE)
    stats = {i: {"input_absmax": 4.0, "output_absmax": 8.0, "rows": None} for i in range(2)}
    result = run_codegen(partitioned, plan, "deploy", stats)
    assert [gvar.name_hint for gvar in result.mod.get_global_vars()] == ["main"]
    calls = [
        b.value
        for b in result.mod["main"].body.blocks[0].bindings
        if isinstance(b.value, relax.Call)
    ]
    assert [call.op.name for call in calls] == ["relax.call_dps_packed"] * 2
    assert [str(call.args[0].global_symbol) for call in calls] == ["tvm_sparse.accel.run_layer"] * 2
    headers = [decode_layer(call.args[1].fields[1].value.numpy())[0] for call in calls]
    assert [(h.name, h.rows, h.reduction, h.outputs, h.relu) for h in headers] == [
        ("matmul_0", 4, 32, 16, True),
        ("matmul_1", 4, 16, 8, False),
    ]
    assert [(p.name, p.target, p.mode) for p in result.placements] == [
        ("matmul_0", "device", "dense"),
        ("matmul_1", "device", "dense"),
    ]
    assert set(result.quantized) == {"matmul_0", "matmul_1"}
    np.testing.assert_array_equal(result.quantized["matmul_1"].weight.shape, (8, 16))


def test_calibration_stage_runs_each_layer_in_float():
    partitioned, plan = partition_for_sparse_accel(TwoLayers, DEVICE)
    result = run_codegen(partitioned, plan, "calibrate")
    calls = [
        b.value
        for b in result.mod["main"].body.blocks[0].bindings
        if isinstance(b.value, relax.Call)
    ]
    assert [str(c.args[0].global_symbol) for c in calls] == ["tvm_sparse.accel.calibrate_layer"] * 2
    assert result.quantized == {}


def test_codegen_errors_name_the_problem():
    partitioned, plan = partition_for_sparse_accel(TwoLayers, DEVICE)
    with pytest.raises(ValueError, match="stage must be 'calibrate' or 'deploy'"):
        run_codegen(partitioned, plan, "run")
    with pytest.raises(ValueError, match="needs calibration statistics"):
        run_codegen(partitioned, plan, "deploy")
    with pytest.raises(ValueError, match="no calibration statistics for layer matmul_0"):
        run_codegen(partitioned, plan, "deploy", {})


def test_a_decomposed_convolution_is_one_pattern_on_a_device_with_the_engine():
    model, _ = prune_onnx(resnet(image=16, width=16, blocks=(1,), classes=10), "decompose:rank=4")
    mod = prepare(load_model(model).mod)
    escalate, dense = load_device("sparse-accel-escalate"), load_device("sparse-accel-dense")
    after, plan = partition_for_sparse_accel(mod, escalate)
    composites = {
        str(f.attrs["Composite"]): str(f.attrs["tvm_sparse.layers"])
        for func in after.functions.values()
        if func.attrs and func.attrs.get("Codegen") == CODEGEN
        for f in [func.body.blocks[0].bindings[0].value]
    }
    pairs = {k: v for k, v in composites.items() if k.startswith("sparse_accel.decomposed_conv2d")}
    assert pairs and all(len(v.split(",")) == 2 for v in pairs.values())
    assert len(plan.pairs) == 2 * len(pairs)
    # on a device without the engine the same layers are single GEMMs (the basis convolutions stay home)
    after_dense, plan_dense = partition_for_sparse_accel(mod, dense)
    assert not plan_dense.pairs
    assert len(find_layers(after_dense["main"])) > 0  # the grouped basis convolutions
