"""Each pass on a tiny module, as TVM tests its passes: ``Before`` -> pass -> ``Expected`` (TVMScript).

The kernel passes replace operators by ``call_tir`` to generated PrimFuncs whose bodies are long (and
tested numerically elsewhere: test_sparsify.py, test_conv.py, test_pool.py, test_host_ops.py, ...).
Their ``Expected`` modules state the Relax functions exactly (which kernel each layer calls, with which
constants, what is fused into it, the reshapes around it) and each generated kernel as a stub: its
name and signature, with the body ``T.evaluate(0)``. :func:`assert_rewritten` checks that the pass's
kernels have those names, parameter shapes and dtypes and global symbols, then compares the whole
modules structurally with the kernels' bodies set aside. The constants are built here with numpy
from the ``Before`` weights, in the layouts the kernels document.
"""

import numpy as np
import tvm
from tvm import tirx
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_sparse.canonicalize import (
    ConvAsConv2d,
    ConvTransposeAsGemm,
    FoldReshapes,
    WeightFirstMatmul,
)
from tvm_sparse.fast_math import FastMath
from tvm_sparse.formats import NMMatrix
from tvm_sparse.kernels.nm_matmul import NMKernelArgs
from tvm_sparse.prepare import (
    ClipGatherIndices,
    ConvertConvLayout,
    FoldCompileTimeBindings,
    FoldTransposes,
    LegalizeTrainingBatchNorm,
    PowerAsProducts,
)
from tvm_sparse.transform import (
    ConvKernels,
    DecomposedConvKernels,
    DenseMatmulKernels,
    PoolKernels,
    ShrinkChannels,
    SoftmaxKernels,
    SparsifyWeights,
)
from tvm_sparse.transform.channel_shrink import REMOVED_ATTR, channels_removed

RNG = np.random.default_rng(19)


def randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype("float32")


def assert_rewritten(after: tvm.IRModule, expected: tvm.IRModule) -> None:
    """``after`` is ``expected``, the bodies of the kernels aside: the same functions by name; each
    PrimFunc of ``expected`` (a stub) is matched by ``after``'s of that name, with the same parameter
    shapes and dtypes and the same global symbol; then the modules are compared structurally with
    the stubs in place of ``after``'s kernels."""
    names = sorted(gvar.name_hint for gvar in after.get_global_vars())
    assert names == sorted(gvar.name_hint for gvar in expected.get_global_vars())
    stubbed = after.clone()
    for gvar, stub in expected.functions_items():
        if not isinstance(stub, tirx.PrimFunc):
            continue
        kernel = after[gvar.name_hint]
        assert isinstance(kernel, tirx.PrimFunc), gvar.name_hint
        assert _signature(kernel) == _signature(stub), gvar.name_hint
        assert _symbol(kernel) == _symbol(stub), gvar.name_hint
        stubbed[after.get_global_var(gvar.name_hint)] = stub
    tvm.ir.assert_structural_equal(stubbed, expected)


def _signature(func: tirx.PrimFunc) -> list:
    return [(tuple(int(d) for d in p.ty.shape), str(p.ty.dtype)) for p in func.params]


def _symbol(func: tirx.PrimFunc) -> str | None:
    return func.attrs.get("global_symbol") if func.attrs else None


def block_constants(weight: np.ndarray, r: int, c: int) -> tuple:
    """The block kernel's constants for ``weight`` ``[out, in]`` in ``r x c`` blocks (zero-padded to
    whole blocks): the blocks holding a nonzero, row by row, each transposed (``[blocks, c, r]``),
    their block columns, and where each block row's blocks start."""
    n, k = weight.shape
    padded = np.zeros((-(-n // r) * r, -(-k // c) * c), "float32")
    padded[:n, :k] = weight
    data, indices, indptr = [], [], [0]
    for i in range(0, padded.shape[0], r):
        for j in range(0, padded.shape[1], c):
            block = padded[i : i + r, j : j + c]
            if block.any():
                data.append(block.T)
                indices.append(j // c)
        indptr.append(len(indices))
    return np.array(data, "float32"), np.array(indices, "int32"), np.array(indptr, "int32")


def panels(weight: np.ndarray) -> tuple:
    """A dense ``[out, in]`` weight as the block kernel's full-width 16-row panels."""
    return block_constants(weight, 16, weight.shape[1])


def zeros(n: int) -> np.ndarray:
    return np.zeros(n, "float32")


# --- SparsifyWeights ---------------------------------------------------------------------------------------

# (in, out) as relax.matmul takes it: two of its four 16x16 blocks hold nonzeros
W_BLOCKS = np.zeros((32, 32), "float32")
W_BLOCKS[:16, 16:], W_BLOCKS[16:, :16] = randn(16, 16), randn(16, 16)
B_32 = randn(32)


@I.ir_module
class LinearBiasRelu:
    @R.function
    def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 32), "float32"):
        with R.dataflow():
            h = R.matmul(x, R.const(W_BLOCKS))
            hb = R.add(h, R.const(B_32))
            y = R.nn.relu(hb)
            R.output(y)
        return y


def test_sparsify_rewrites_a_block_sparse_layer_with_its_bias_and_relu():
    data, indices, indptr = block_constants(W_BLOCKS.T, 16, 16)
    assert data.shape == (2, 16, 16) and list(indices) == [1, 0] and list(indptr) == [0, 1, 2]

    @I.ir_module
    class Expected:
        @T.prim_func
        def bsr_matmul_matmul_0(
            X: T.Buffer((4, 32), "float32"),
            data: T.Buffer((2, 16, 16), "float32"),
            indices: T.Buffer((2,), "int32"),
            indptr: T.Buffer((3,), "int32"),
            B: T.Buffer((32,), "float32"),
            Y: T.Buffer((4, 32), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 32), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.call_tir(
                    cls.bsr_matmul_matmul_0,
                    (x, R.const(data), R.const(indices), R.const(indptr), R.const(B_32)),
                    out_ty=R.Tensor((4, 32), "float32"),
                )
                y = lv
                R.output(y)
            return y

    After = SparsifyWeights(format="bsr", block_shape="16x16")(LinearBiasRelu)
    assert_rewritten(After, Expected)


def test_sparsify_stores_shared_weights_as_codes_decoded_ahead_of_the_kernel():
    weight = np.zeros((32, 32), "float32")  # (in, out): one 16x16 block of three distinct values
    weight[:16, 16:] = RNG.choice(np.float32([-1.0, 0.5, 2.0]), (16, 16))
    data, indices, indptr = block_constants(weight.T, 16, 16)
    codebook, codes = np.unique(data, return_inverse=True)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 32), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(weight))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @T.prim_func
        def codebook_decode_matmul_0(
            codes: T.Buffer((1, 16, 16), "uint8"),
            codebook: T.Buffer((3,), "float32"),
            values: T.Buffer((1, 16, 16), "float32"),
        ):
            T.evaluate(0)

        @T.prim_func
        def bsr_matmul_matmul_0(
            X: T.Buffer((4, 32), "float32"),
            data: T.Buffer((1, 16, 16), "float32"),
            indices: T.Buffer((1,), "int32"),
            indptr: T.Buffer((3,), "int32"),
            B: T.Buffer((32,), "float32"),
            Y: T.Buffer((4, 32), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((4, 32), "float32")) -> R.Tensor((4, 32), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.call_tir(
                    cls.codebook_decode_matmul_0,
                    (R.const(codes.reshape(data.shape).astype("uint8")), R.const(codebook)),
                    out_ty=R.Tensor((1, 16, 16), "float32"),
                )
                lv1 = R.call_tir(
                    cls.bsr_matmul_matmul_0,
                    (x, lv, R.const(indices), R.const(indptr), R.const(zeros(32))),
                    out_ty=R.Tensor((4, 32), "float32"),
                )
                y = lv1
                R.output(y)
            return y

    After = SparsifyWeights(format="bsr", block_shape="16x16", shared_weights=True)(Before)
    assert_rewritten(After, Expected)


def test_sparsify_runs_an_nm_weight_on_the_nm_kernel_between_reshapes():
    weight = randn(32, 16)  # (in, out); 2:4 along the input features
    weight[1::2] = 0
    args = NMKernelArgs.from_nm(NMMatrix.from_dense(weight.T, 2, 4))  # its packing: test_nm.py

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4, 32), "float32")) -> R.Tensor((2, 4, 16), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.const(weight))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @T.prim_func
        def nm_matmul_matmul_0(
            X: T.Buffer((8, 32), "float32"),
            P: T.Buffer((1, 2, 8, 16), "int32"),
            V: T.Buffer((1, 2, 8, 16), "float32"),
            B: T.Buffer((16,), "float32"),
            Y: T.Buffer((8, 16), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((2, 4, 32), "float32")) -> R.Tensor((2, 4, 16), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.reshape(x, (8, 32))
                lv1 = R.call_tir(
                    cls.nm_matmul_matmul_0,
                    (lv, R.const(args.positions), R.const(args.values), R.const(zeros(16))),
                    out_ty=R.Tensor((8, 16), "float32"),
                )
                lv2 = R.reshape(lv1, (2, 4, 16))
                y = lv2
                R.output(y)
            return y

    with tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}):  # the N:M kernel's ISA
        After = SparsifyWeights(format="nm")(Before)
    assert_rewritten(After, Expected)


def test_sparsify_leaves_dense_format_and_weights_given_at_run_time_alone():
    @I.ir_module
    class WeightInput:
        @R.function
        def main(
            x: R.Tensor((4, 32), "float32"),
            w: R.Tensor((32, 32), "float32"),
        ) -> R.Tensor((4, 32), "float32"):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(SparsifyWeights(format="dense")(LinearBiasRelu), LinearBiasRelu)
    tvm.ir.assert_structural_equal(SparsifyWeights(format="bsr")(WeightInput), WeightInput)


# --- DenseMatmulKernels ------------------------------------------------------------------------------------


def test_dense_matmul_runs_constant_weights_on_panels_and_activations_batched():
    weight = randn(32, 32)  # (in, out)
    data, indices, indptr = panels(weight.T)  # two panels of 16 output features
    assert data.shape == (2, 32, 16)

    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((4, 32), "float32"),
            q: R.Tensor((2, 8, 16), "float32"),
            k: R.Tensor((2, 32, 16), "float32"),
        ) -> R.Tuple(R.Tensor((4, 32), "float32"), R.Tensor((2, 8, 32), "float32")):
            with R.dataflow():
                h = R.matmul(x, R.const(weight))
                y = R.add(h, R.const(B_32))
                kt = R.permute_dims(k, [0, 2, 1])
                s = R.matmul(q, kt)
                R.output(y, s)
            return (y, s)

    @I.ir_module
    class Expected:
        @T.prim_func
        def dense_matmul_matmul_0(
            X: T.Buffer((4, 32), "float32"),
            data: T.Buffer((2, 32, 16), "float32"),
            indices: T.Buffer((2,), "int32"),
            indptr: T.Buffer((3,), "int32"),
            B: T.Buffer((32,), "float32"),
            Y: T.Buffer((4, 32), "float32"),
        ):
            T.evaluate(0)

        @T.prim_func
        def batch_matmul(
            A: T.Buffer((2, 8, 16), "float32"),
            B: T.Buffer((2, 32, 16), "float32"),
            C: T.Buffer((2, 8, 32), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((4, 32), "float32"),
            q: R.Tensor((2, 8, 16), "float32"),
            k: R.Tensor((2, 32, 16), "float32"),
        ) -> R.Tuple(R.Tensor((4, 32), "float32"), R.Tensor((2, 8, 32), "float32")):
            cls = Expected
            with R.dataflow():
                lv = R.call_tir(
                    cls.dense_matmul_matmul_0,
                    (x, R.const(data), R.const(indices), R.const(indptr), R.const(B_32)),
                    out_ty=R.Tensor((4, 32), "float32"),
                )
                y = lv
                lv1 = R.reshape(q, (2, 8, 16))
                lv2 = R.reshape(k, (2, 32, 16))  # k, not its transpose: the kernel reads it so
                lv3 = R.call_tir(
                    cls.batch_matmul, (lv1, lv2), out_ty=R.Tensor((2, 8, 32), "float32")
                )
                lv4 = R.reshape(lv3, (2, 8, 32))
                s = lv4
                R.output(y, s)
            return (y, s)

    assert_rewritten(DenseMatmulKernels()(Before), Expected)


def test_dense_matmul_leaves_float16_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((4, 32), "float16"),
            k: R.Tensor((32, 16), "float16"),
        ) -> R.Tuple(R.Tensor((4, 32), "float16"), R.Tensor((4, 16), "float16")):
            with R.dataflow():
                y = R.matmul(x, R.const(W_BLOCKS.astype("float16")))
                s = R.matmul(x, k)
                R.output(y, s)
            return (y, s)

    tvm.ir.assert_structural_equal(DenseMatmulKernels()(Before), Before)


# --- ConvKernels -------------------------------------------------------------------------------------------

W_CONV = randn(16, 3, 3, 8)  # OHWI
W_DEPTHWISE = randn(16, 3, 3, 1)
B_16 = randn(16)


def test_conv_kernels_take_a_convolution_with_its_bias_and_a_depthwise_one_with_its_relu():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 6, 6, 8), "float32")) -> R.Tensor((1, 6, 6, 16), "float32"):
            with R.dataflow():
                c = R.nn.conv2d(
                    x, R.const(W_CONV), padding=(1, 1), data_layout="NHWC", kernel_layout="OHWI"
                )
                cb = R.add(c, R.const(B_16))
                d = R.nn.conv2d(
                    cb,
                    R.const(W_DEPTHWISE),
                    padding=(1, 1),
                    groups=16,
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
                y = R.nn.relu(d)
                R.output(y)
            return y

    data, indices, indptr = panels(W_CONV.reshape(16, 72))  # im2col columns (kh, kw, i)

    @I.ir_module
    class Expected:
        @T.prim_func
        def conv2d_conv2d_0(
            X: T.Buffer((1, 6, 6, 8), "float32"),
            data: T.Buffer((1, 72, 16), "float32"),
            indices: T.Buffer((1,), "int32"),
            indptr: T.Buffer((2,), "int32"),
            B: T.Buffer((16,), "float32"),
            Y: T.Buffer((1, 6, 6, 16), "float32"),
        ):
            T.evaluate(0)

        @T.prim_func
        def depthwise_conv2d_conv2d_1(
            X: T.Buffer((1, 6, 6, 16), "float32"),
            taps: T.Buffer((3, 3, 1, 16), "float32"),
            B: T.Buffer((16,), "float32"),
            Y: T.Buffer((1, 6, 6, 16), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 6, 6, 8), "float32")) -> R.Tensor((1, 6, 6, 16), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.call_tir(
                    cls.conv2d_conv2d_0,
                    (x, R.const(data), R.const(indices), R.const(indptr), R.const(B_16)),
                    out_ty=R.Tensor((1, 6, 6, 16), "float32"),
                )
                cb = lv
                lv1 = R.call_tir(
                    cls.depthwise_conv2d_conv2d_1,
                    (cb, R.const(W_DEPTHWISE.transpose(1, 2, 3, 0)), R.const(zeros(16))),  # HWGO
                    out_ty=R.Tensor((1, 6, 6, 16), "float32"),
                )
                y = lv1
                R.output(y)
            return y

    assert_rewritten(ConvKernels()(Before), Expected)


def test_conv_kernels_leave_nchw_and_float16_convolutions_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 8, 6, 6), "float32"),
            h: R.Tensor((1, 6, 6, 8), "float16"),
        ) -> R.Tuple(R.Tensor((1, 16, 6, 6), "float32"), R.Tensor((1, 6, 6, 16), "float16")):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(W_CONV.transpose(0, 3, 1, 2)), padding=(1, 1))
                z = R.nn.conv2d(
                    h,
                    R.const(W_CONV.astype("float16")),
                    padding=(1, 1),
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
                R.output(y, z)
            return (y, z)

    tvm.ir.assert_structural_equal(ConvKernels()(Before), Before)


# --- DecomposedConvKernels ---------------------------------------------------------------------------------

W_COMBINE = randn(32, 1, 1, 8)  # 1x1: O * r = 16 * 2 maps, channel o * r + j
W_BASIS = randn(16, 3, 3, 2)  # 16 groups of r = 2 maps


def decomposed(second_reader: bool) -> tvm.IRModule:
    @I.ir_module
    class Decomposed:
        @R.function
        def main(x: R.Tensor((1, 6, 6, 8), "float32")) -> R.Tensor((1, 6, 6, 16), "float32"):
            with R.dataflow():
                maps = R.nn.conv2d(x, R.const(W_COMBINE), data_layout="NHWC", kernel_layout="OHWI")
                y = R.nn.conv2d(
                    maps,
                    R.const(W_BASIS),
                    padding=(1, 1),
                    groups=16,
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
                R.output(y)
            return y

    @I.ir_module
    class Shared:
        @R.function
        def main(
            x: R.Tensor((1, 6, 6, 8), "float32"),
        ) -> R.Tuple(R.Tensor((1, 6, 6, 16), "float32"), R.Tensor((1, 6, 6, 32), "float32")):
            with R.dataflow():
                maps = R.nn.conv2d(x, R.const(W_COMBINE), data_layout="NHWC", kernel_layout="OHWI")
                y = R.nn.conv2d(
                    maps,
                    R.const(W_BASIS),
                    padding=(1, 1),
                    groups=16,
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
                R.output(y, maps)
            return (y, maps)

    return Shared if second_reader else Decomposed


def test_decomposed_conv_permutes_the_maps_to_maps_major_order():
    # new channel j * 16 + o <- old channel o * 2 + j
    order = np.arange(32).reshape(16, 2).T.ravel()
    data, indices, indptr = panels(W_COMBINE[order].reshape(32, 8))

    @I.ir_module
    class Expected:
        @T.prim_func
        def conv2d_conv2d_0(
            X: T.Buffer((1, 6, 6, 8), "float32"),
            data: T.Buffer((2, 8, 16), "float32"),
            indices: T.Buffer((2,), "int32"),
            indptr: T.Buffer((3,), "int32"),
            B: T.Buffer((32,), "float32"),
            Y: T.Buffer((1, 6, 6, 32), "float32"),
        ):
            T.evaluate(0)

        @T.prim_func
        def depthwise_conv2d_conv2d_1(
            X: T.Buffer((1, 6, 6, 32), "float32"),
            taps: T.Buffer((3, 3, 2, 16), "float32"),
            B: T.Buffer((16,), "float32"),
            Y: T.Buffer((1, 6, 6, 16), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 6, 6, 8), "float32")) -> R.Tensor((1, 6, 6, 16), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.call_tir(
                    cls.conv2d_conv2d_0,
                    (x, R.const(data), R.const(indices), R.const(indptr), R.const(zeros(32))),
                    out_ty=R.Tensor((1, 6, 6, 32), "float32"),
                )
                maps = lv
                lv1 = R.call_tir(
                    cls.depthwise_conv2d_conv2d_1,
                    (maps, R.const(W_BASIS.transpose(1, 2, 3, 0)), R.const(zeros(16))),
                    out_ty=R.Tensor((1, 6, 6, 16), "float32"),
                )
                y = lv1
                R.output(y)
            return y

    assert_rewritten(DecomposedConvKernels()(decomposed(second_reader=False)), Expected)


def test_decomposed_conv_leaves_maps_with_a_second_reader_alone():
    Before = decomposed(second_reader=True)
    tvm.ir.assert_structural_equal(DecomposedConvKernels()(Before), Before)


# --- ShrinkChannels ----------------------------------------------------------------------------------------

W_CONSUMER = randn(16, 1, 1, 16)


def chain(producer_weight: np.ndarray) -> tvm.IRModule:
    @I.ir_module
    class Chain:
        @R.function
        def main(x: R.Tensor((1, 6, 6, 8), "float32")) -> R.Tensor((1, 6, 6, 16), "float32"):
            with R.dataflow():
                h = R.nn.conv2d(
                    x,
                    R.const(producer_weight),
                    padding=(1, 1),
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
                r = R.nn.relu(h)
                y = R.nn.conv2d(r, R.const(W_CONSUMER), data_layout="NHWC", kernel_layout="OHWI")
                R.output(y)
            return y

    return Chain


def test_shrink_channels_drops_the_zero_filters_and_the_inputs_they_feed():
    producer = W_CONV.copy()
    producer[:4] = 0  # channels 0-3 are relu(0) = 0
    data, indices, indptr = panels(producer[4:].reshape(12, 72))  # 12 filters in a 16-row panel
    data1, indices1, indptr1 = panels(W_CONSUMER[..., 4:].reshape(16, 12))

    @I.ir_module
    class Expected:
        @T.prim_func
        def conv2d_conv2d_0(
            X: T.Buffer((1, 6, 6, 8), "float32"),
            data: T.Buffer((1, 72, 16), "float32"),
            indices: T.Buffer((1,), "int32"),
            indptr: T.Buffer((2,), "int32"),
            B: T.Buffer((16,), "float32"),
            Y: T.Buffer((1, 6, 6, 16), "float32"),
        ):
            T.evaluate(0)

        @T.prim_func
        def conv2d_conv2d_1(
            X: T.Buffer((1, 6, 6, 12), "float32"),
            data: T.Buffer((1, 12, 16), "float32"),
            indices: T.Buffer((1,), "int32"),
            indptr: T.Buffer((2,), "int32"),
            B: T.Buffer((16,), "float32"),
            Y: T.Buffer((1, 6, 6, 16), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 6, 6, 8), "float32")) -> R.Tensor((1, 6, 6, 16), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.call_tir(
                    cls.conv2d_conv2d_0,
                    (x, R.const(data), R.const(indices), R.const(indptr), R.const(zeros(16))),
                    out_ty=R.Tensor((1, 6, 6, 16), "float32"),
                )
                lv1 = R.strided_slice(lv, axes=[3], begin=[0], end=[12])
                lv2 = R.call_tir(
                    cls.conv2d_conv2d_1,
                    (lv1, R.const(data1), R.const(indices1), R.const(indptr1), R.const(zeros(16))),
                    out_ty=R.Tensor((1, 6, 6, 16), "float32"),
                )
                y = lv2
                R.output(y)
            return y

    After = ShrinkChannels()(chain(producer))
    assert channels_removed(After) == {"conv2d_0": 4}  # the pass's result lives in the module
    assert_rewritten(After.without_attr(REMOVED_ATTR), Expected)


def test_shrink_channels_leaves_chains_without_dead_channels_alone():
    Before = chain(W_CONV)
    tvm.ir.assert_structural_equal(ShrinkChannels()(Before), Before)


# --- PoolKernels -------------------------------------------------------------------------------------------


def test_pool_kernels_take_nhwc_max_pooling_and_the_spatial_mean():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 8, 16), "float32")) -> R.Tensor((1, 16), "float32"):
            with R.dataflow():
                p = R.nn.max_pool2d(
                    x, pool_size=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1), layout="NHWC"
                )
                y = R.mean(p, axis=[1, 2])
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @T.prim_func
        def max_pool2d(
            X: T.Buffer((1, 8, 8, 16), "float32"), Y: T.Buffer((1, 4, 4, 16), "float32")
        ):
            T.evaluate(0)

        @T.prim_func
        def spatial_mean(
            X: T.Buffer((1, 4, 4, 16), "float32"), Y: T.Buffer((1, 1, 1, 16), "float32")
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 8, 8, 16), "float32")) -> R.Tensor((1, 16), "float32"):
            cls = Expected
            with R.dataflow():
                p = R.call_tir(cls.max_pool2d, (x,), out_ty=R.Tensor((1, 4, 4, 16), "float32"))
                lv = R.call_tir(cls.spatial_mean, (p,), out_ty=R.Tensor((1, 1, 1, 16), "float32"))
                y = R.reshape(lv, (1, 16))
                R.output(y)
            return y

    assert_rewritten(PoolKernels()(Before), Expected)


def test_pool_kernels_leave_nchw_pooling_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 16, 8, 8), "float32")) -> R.Tensor((1, 16, 4, 4), "float32"):
            with R.dataflow():
                y = R.nn.max_pool2d(x, pool_size=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(PoolKernels()(Before), Before)


# --- SoftmaxKernels ----------------------------------------------------------------------------------------


def test_softmax_kernels_run_the_last_axis_as_rows():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4, 16), "float32")) -> R.Tensor((2, 4, 16), "float32"):
            with R.dataflow():
                y = R.nn.softmax(x, axis=-1)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @T.prim_func
        def softmax(X: T.Buffer((8, 16), "float32"), Y: T.Buffer((8, 16), "float32")):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((2, 4, 16), "float32")) -> R.Tensor((2, 4, 16), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.reshape(x, (8, 16))
                lv1 = R.call_tir(cls.softmax, (lv,), out_ty=R.Tensor((8, 16), "float32"))
                y = R.reshape(lv1, (2, 4, 16))
                R.output(y)
            return y

    assert_rewritten(SoftmaxKernels()(Before), Expected)


def test_softmax_kernels_leave_other_axes_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4, 16), "float32")) -> R.Tensor((2, 4, 16), "float32"):
            with R.dataflow():
                y = R.nn.softmax(x, axis=1)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(SoftmaxKernels()(Before), Before)


# --- canonicalize: ConvAsConv2d, ConvTransposeAsGemm, WeightFirstMatmul, FoldReshapes ----------------------

W_CONV1D = randn(16, 3, 4)  # OWI


def test_conv_as_conv2d_runs_a_conv1d_as_a_conv2d_of_height_one_with_its_relu_inside():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 4), "float32")) -> R.Tensor((1, 8, 16), "float32"):
            with R.dataflow():
                c = R.nn.conv1d(
                    x, R.const(W_CONV1D), padding=(1, 1), data_layout="NWC", kernel_layout="OWI"
                )
                y = R.nn.relu(c)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8, 4), "float32")) -> R.Tensor((1, 8, 16), "float32"):
            with R.dataflow():
                lv = R.reshape(x, (1, 1, 8, 4))
                lv1 = R.nn.conv2d(
                    lv,
                    R.const(W_CONV1D.reshape(16, 1, 3, 4)),
                    padding=(0, 1, 0, 1),
                    data_layout="NHWC",
                    kernel_layout="OHWI",
                )
                lv2 = R.nn.relu(lv1)
                y = R.reshape(lv2, (1, 8, 16))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ConvAsConv2d()(Before), Expected)


def test_conv_as_conv2d_leaves_channels_first_conv1d_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8), "float32")) -> R.Tensor((1, 16, 8), "float32"):
            with R.dataflow():
                y = R.nn.conv1d(x, R.const(W_CONV1D.transpose(0, 2, 1)), padding=(1, 1))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ConvAsConv2d()(Before), Before)


W_TRANSPOSED = randn(8, 16, 2, 2)  # IOHW


def test_conv_transpose_becomes_a_gemm_and_col2im_with_its_bias_and_relu():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 4, 8), "float32")) -> R.Tensor((1, 8, 8, 16), "float32"):
            with R.dataflow():
                t = R.nn.conv2d_transpose(
                    x,
                    R.const(W_TRANSPOSED),
                    strides=(2, 2),
                    data_layout="NHWC",
                    kernel_layout="IOHW",
                )
                tb = R.add(t, R.const(B_16))
                y = R.nn.relu(tb)
                R.output(y)
            return y

    wmat = W_TRANSPOSED.transpose(2, 3, 1, 0).reshape(64, 1, 1, 8)  # row (kh * KW + kw) * O + o

    @I.ir_module
    class Expected:
        @T.prim_func
        def col2im_conv_transpose_0(
            cols: T.Buffer((1, 4, 4, 64), "float32"),
            B: T.Buffer((16,), "float32"),
            Y: T.Buffer((1, 8, 8, 16), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((1, 4, 4, 8), "float32")) -> R.Tensor((1, 8, 8, 16), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.nn.conv2d(x, R.const(wmat), data_layout="NHWC", kernel_layout="OHWI")
                lv1 = R.call_tir(
                    cls.col2im_conv_transpose_0,
                    (lv, R.const(B_16)),
                    out_ty=R.Tensor((1, 8, 8, 16), "float32"),
                )
                y = lv1
                R.output(y)
            return y

    assert_rewritten(ConvTransposeAsGemm()(Before), Expected)


def test_conv_transpose_with_a_weight_input_goes_back_to_nchw_and_nchw_stays():
    @I.ir_module
    class WeightInput:
        @R.function
        def main(
            x: R.Tensor((1, 4, 4, 8), "float32"),
            w: R.Tensor((8, 16, 2, 2), "float32"),
        ) -> R.Tensor((1, 8, 8, 16), "float32"):
            with R.dataflow():
                y = R.nn.conv2d_transpose(
                    x, w, strides=(2, 2), data_layout="NHWC", kernel_layout="IOHW"
                )
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(
            x: R.Tensor((1, 4, 4, 8), "float32"),
            w: R.Tensor((8, 16, 2, 2), "float32"),
        ) -> R.Tensor((1, 8, 8, 16), "float32"):
            with R.dataflow():
                lv = R.permute_dims(x, [0, 3, 1, 2])
                lv1 = R.permute_dims(w, [0, 1, 2, 3])
                lv2 = R.nn.conv2d_transpose(lv, lv1, strides=(2, 2))
                y = R.permute_dims(lv2, [0, 2, 3, 1])
                R.output(y)
            return y

    @I.ir_module
    class ChannelsFirst:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "float32")) -> R.Tensor((1, 16, 8, 8), "float32"):
            with R.dataflow():
                y = R.nn.conv2d_transpose(x, R.const(W_TRANSPOSED), strides=(2, 2))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ConvTransposeAsGemm()(WeightInput), Expected)
    tvm.ir.assert_structural_equal(ConvTransposeAsGemm()(ChannelsFirst), ChannelsFirst)


W_LEFT = randn(16, 32)
VECTOR_32 = randn(32, 1)
B_ROWS = randn(16, 1)


def test_weight_first_matmul_becomes_a_linear_layer_between_transposes():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((32, 4), "float32")) -> R.Tensor((16, 4), "float32"):
            with R.dataflow():
                m = R.matmul(R.const(W_LEFT), x)
                mb = R.add(m, R.const(B_ROWS))
                y = R.nn.relu(mb)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((32, 4), "float32")) -> R.Tensor((16, 4), "float32"):
            with R.dataflow():
                lv = R.permute_dims(x, [1, 0])
                lv1 = R.matmul(lv, R.const(np.ascontiguousarray(W_LEFT.T)))
                lv2 = R.add(lv1, R.const(B_ROWS.reshape(16)))  # per output row: now the last axis
                lv3 = R.nn.relu(lv2)
                y = R.permute_dims(lv3, [1, 0])
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(WeightFirstMatmul()(Before), Expected)


def test_weight_first_matmul_leaves_the_weight_on_the_right_and_constant_products_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((4, 16), "float32"),
        ) -> R.Tuple(R.Tensor((4, 32), "float32"), R.Tensor((16, 1), "float32")):
            with R.dataflow():
                y = R.matmul(x, R.const(W_LEFT))
                c = R.matmul(R.const(W_LEFT), R.const(VECTOR_32))  # left to constant folding
                R.output(y, c)
            return (y, c)

    tvm.ir.assert_structural_equal(WeightFirstMatmul()(Before), Before)


def test_fold_reshapes_folds_pairs_and_drops_those_that_give_the_shape_back():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((4, 4), "float32"),
        ) -> R.Tuple(R.Tensor((4, 4), "float32"), R.Tensor((2, 8), "float32")):
            with R.dataflow():
                a = R.reshape(x, (16,))
                y = R.reshape(a, (4, 4))
                b = R.reshape(x, (8, 2))
                z = R.reshape(b, (2, 8))
                R.output(y, z)
            return (y, z)

    @I.ir_module
    class Expected:
        @R.function
        def main(
            x: R.Tensor((4, 4), "float32"),
        ) -> R.Tuple(R.Tensor((4, 4), "float32"), R.Tensor((2, 8), "float32")):
            with R.dataflow():
                z = R.reshape(x, (2, 8))
                R.output(z)
            return (x, z)

    tvm.ir.assert_structural_equal(FoldReshapes()(Before), Expected)


def test_fold_reshapes_leaves_a_single_reshape_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4, 4), "float32")) -> R.Tensor((2, 8), "float32"):
            with R.dataflow():
                y = R.reshape(x, (2, 8))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldReshapes()(Before), Before)


# --- prepare -----------------------------------------------------------------------------------------------

TABLE = randn(10, 4)


def test_clip_gather_indices_clamps_ids_given_at_run_time():
    @I.ir_module
    class Before:
        @R.function
        def main(ids: R.Tensor((3,), "int64")) -> R.Tensor((3, 4), "float32"):
            with R.dataflow():
                y = R.take(R.const(TABLE), ids, axis=0, mode="fast")
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(ids: R.Tensor((3,), "int64")) -> R.Tensor((3, 4), "float32"):
            with R.dataflow():
                y = R.take(R.const(TABLE), ids, axis=0, mode="clip")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ClipGatherIndices()(Before), Expected)


def test_clip_gather_indices_leaves_constant_ids_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((10, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                y = R.take(x, R.const(np.array([0, 9], "int64")), axis=0, mode="fast")
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ClipGatherIndices()(Before), Before)


def power(exponent: float) -> tvm.IRModule:
    @I.ir_module
    class Power:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                y = R.power(x, R.const(exponent, "float32"))
                R.output(y)
            return y

    return Power


def test_power_as_products_writes_a_cube_as_two_products():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                lv = R.multiply(x, x)
                y = R.multiply(lv, x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(PowerAsProducts()(power(3.0)), Expected)


def test_power_as_products_leaves_other_exponents_alone():
    Before = power(2.5)
    tvm.ir.assert_structural_equal(PowerAsProducts()(Before), Before)


def test_legalize_training_batch_norm_leaves_inference_batch_norm_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((2, 4), "float32"),
            gamma: R.Tensor((4,), "float32"),
            beta: R.Tensor((4,), "float32"),
            mean: R.Tensor((4,), "float32"),
            var: R.Tensor((4,), "float32"),
        ) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                t = R.nn.batch_norm(x, gamma, beta, mean, var, axis=1, training=False)
                y = t[0]
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LegalizeTrainingBatchNorm()(Before), Before)


def test_legalize_training_batch_norm_lowers_it_with_batch_statistics():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((2, 4), "float32"),
            gamma: R.Tensor((4,), "float32"),
            beta: R.Tensor((4,), "float32"),
            mean: R.Tensor((4,), "float32"),
            var: R.Tensor((4,), "float32"),
        ) -> R.Tuple(R.Tensor((2, 4), "float32"), R.Tensor((2, 4), "float32")):
            with R.dataflow():
                t = R.nn.batch_norm(x, gamma, beta, mean, var, axis=1, training=True)
                y = t[0]
                u = R.nn.batch_norm(x, gamma, beta, mean, var, axis=1, training=False)
                z = u[0]
                R.output(y, z)
            return (y, z)

    @I.ir_module
    class Expected:
        @T.prim_func(private=True)
        def batch_norm(
            x: T.Buffer((2, 4), "float32"),
            gamma: T.Buffer((4,), "float32"),
            beta: T.Buffer((4,), "float32"),
            mean: T.Buffer((4,), "float32"),
            var: T.Buffer((4,), "float32"),
            y: T.Buffer((2, 4), "float32"),
            new_mean: T.Buffer((4,), "float32"),
            new_var: T.Buffer((4,), "float32"),
        ):
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((2, 4), "float32"),
            gamma: R.Tensor((4,), "float32"),
            beta: R.Tensor((4,), "float32"),
            mean: R.Tensor((4,), "float32"),
            var: R.Tensor((4,), "float32"),
        ) -> R.Tuple(R.Tensor((2, 4), "float32"), R.Tensor((2, 4), "float32")):
            cls = Expected
            with R.dataflow():
                t = R.call_tir(
                    cls.batch_norm,
                    (x, gamma, beta, mean, var),
                    out_ty=[
                        R.Tensor((2, 4), "float32"),
                        R.Tensor((4,), "float32"),
                        R.Tensor((4,), "float32"),
                    ],
                )
                y = t[0]
                u = R.nn.batch_norm(x, gamma, beta, mean, var, axis=1, training=False)
                z = u[0]
                R.output(y, z)
            return (y, z)

    assert_rewritten(LegalizeTrainingBatchNorm()(Before), Expected)


def test_convert_conv_layout_moves_convolutions_to_nhwc_and_keeps_the_model_layout():
    weight = W_CONV.transpose(0, 3, 1, 2)  # OIHW

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "float32")) -> R.Tensor((1, 16, 6, 6), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(weight), padding=(1, 1))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "float32")) -> R.Tensor((1, 16, 6, 6), "float32"):
            with R.dataflow():
                lv = R.permute_dims(x, [0, 2, 3, 1])
                lv1 = R.permute_dims(R.const(weight), [0, 2, 3, 1])
                lv2 = R.nn.conv2d(lv, lv1, padding=(1, 1), data_layout="NHWC", kernel_layout="OHWI")
                y = R.permute_dims(lv2, [0, 3, 1, 2])
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(ConvertConvLayout()(Before), Expected)


def test_convert_conv_layout_leaves_modules_without_a_convolution_alone():
    @I.ir_module
    class Before:  # no convolution: not even the ops ConvertLayout gets wrong are legalized
        @R.function
        def main(
            x: R.Tensor((2, 4), "float32"),
            y: R.Tensor((2, 4), "float32"),
        ) -> R.Tensor((2, 2, 4), "float32"):
            with R.dataflow():
                s = R.stack((x, y), axis=0)
                R.output(s)
            return s

    tvm.ir.assert_structural_equal(ConvertConvLayout()(Before), Before)


VECTOR = randn(4)


def test_fold_compile_time_bindings_evaluates_weight_arithmetic():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                s = R.multiply(R.const(VECTOR), R.const(VECTOR))
                y = R.add(x, s)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                y = R.add(x, R.const(VECTOR * VECTOR))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldCompileTimeBindings()(Before), Expected)


def test_fold_compile_time_bindings_leaves_run_time_values_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                s = R.multiply(x, R.const(VECTOR))
                y = R.add(s, x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldCompileTimeBindings()(Before), Before)


def test_fold_transposes_drops_a_pair_that_cancels():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
            with R.dataflow():
                t = R.permute_dims(x, [0, 2, 1])
                y = R.permute_dims(t, [0, 2, 1])
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((2, 3, 4), "float32"):
            return x

    tvm.ir.assert_structural_equal(FoldTransposes()(Before), Expected)


def test_fold_transposes_composes_a_pair_into_one():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((4, 2, 3), "float32"):
            with R.dataflow():
                t = R.permute_dims(x, [0, 2, 1])
                y = R.permute_dims(t, [1, 0, 2])
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32")) -> R.Tensor((4, 2, 3), "float32"):
            with R.dataflow():
                y = R.permute_dims(x, [2, 0, 1])  # y axis i is x axis [0, 2, 1][[1, 0, 2][i]]
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FoldTransposes()(Before), Expected)


def test_fold_transposes_leaves_a_single_transpose_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((2, 3, 4), "float32"),
        ) -> R.Tuple(R.Tensor((2, 4, 3), "float32"), R.Tensor((4, 3, 2), "float32")):
            with R.dataflow():
                y = R.permute_dims(x, [0, 2, 1])
                z = R.permute_dims(x)  # axes None: reversed
                R.output(y, z)
            return (y, z)

    tvm.ir.assert_structural_equal(FoldTransposes()(Before), Before)


# --- FastMath ----------------------------------------------------------------------------------------------


def test_fast_math_replaces_float32_exp_by_the_approximation():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            with R.dataflow():
                y = R.exp(x)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @T.prim_func(private=True)
        def fast_exp(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            cls = Expected
            with R.dataflow():
                y = R.call_tir(cls.fast_exp, (x,), out_ty=R.Tensor((4,), "float32"))
                R.output(y)
            return y

    assert_rewritten(FastMath()(Before), Expected)


def test_fast_math_leaves_float16_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float16")) -> R.Tensor((4,), "float16"):
            with R.dataflow():
                y = R.exp(x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(FastMath()(Before), Before)
