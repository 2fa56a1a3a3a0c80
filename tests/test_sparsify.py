import numpy as np
import pytest
import tvm
from conftest import block_sparse, linear_model, run_executable, run_onnxruntime
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from tvm_sparse import build
from tvm_sparse.frontend import load_onnx
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import bert_encoder, mlp
from tvm_sparse.transform import SparsifyWeights

TOL = dict(rtol=1e-4, atol=1e-4)


def _kernel_names(mod):
    return sorted(
        gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    )


def _compare(model, x, **build_kwargs):
    expected = run_onnxruntime(model, {"x": x})[0]
    got = run_executable(build(model, **build_kwargs), x)
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize(
    "x_shape, gemm, with_bias",
    [
        ((8, 64), True, True),
        ((8, 64), True, False),
        ((8, 64), False, True),
        ((2, 5, 64), False, False),
        ((3, 2, 4, 64), False, True),
    ],
)
def test_rewrite_matches_onnxruntime(rng, x_shape, gemm, with_bias):
    w = block_sparse(rng, (96, 64), (16, 1), 0.15)
    bias = rng.standard_normal(96).astype("float32") if with_bias else None
    model = linear_model(w, x_shape, gemm=gemm, bias=bias)
    mod = SparsifyWeights()(load_onnx(model).mod)
    assert any(name.startswith("bsr_matmul") for name in _kernel_names(mod))
    _compare(model, rng.standard_normal(x_shape).astype("float32"))


@pytest.mark.parametrize("block", [(8, 8), (32, 32), (4, 1), (1, 4)])
def test_forced_block_shapes_on_sizes_not_divisible(rng, block):
    w = block_sparse(rng, (70, 45), block, 0.3)
    model = linear_model(w, (5, 45), bias=rng.standard_normal(70).astype("float32"))
    _compare(
        model,
        rng.standard_normal((5, 45)).astype("float32"),
        sparsify=SparsifyWeights(format="bsr", block_shape=block),
    )


def test_zero_rows_all_zero_and_dense_weights(rng):
    w = block_sparse(rng, (64, 32), (16, 1), 0.5)
    w[:32] = 0  # block rows without nonzeros
    for weight in (
        w,
        np.zeros((64, 32), "float32"),
        rng.standard_normal((64, 32)).astype("float32"),
    ):
        model = linear_model(weight, (6, 32), bias=rng.standard_normal(64).astype("float32"))
        _compare(
            model,
            rng.standard_normal((6, 32)).astype("float32"),
            sparsify=SparsifyWeights(format="bsr", block_shape="16x1"),
        )


def test_cost_model_decides_and_user_can_force_or_forbid(rng):
    sparse = linear_model(block_sparse(rng, (256, 256), (16, 1), 0.1), (16, 256))
    moderate = linear_model(block_sparse(rng, (256, 256), (16, 1), 0.9), (16, 256))
    assert any(n.startswith("bsr") for n in _kernel_names(SparsifyWeights()(load_onnx(sparse).mod)))
    assert not _kernel_names(SparsifyWeights()(load_onnx(moderate).mod))
    assert _kernel_names(SparsifyWeights(format="bsr")(load_onnx(moderate).mod))
    assert not _kernel_names(SparsifyWeights(format="dense")(load_onnx(sparse).mod))


def test_unstructured_pruning_runs_the_row_vectorised_kernel(rng):
    """A 90%-unstructured encoder takes 1x1 blocks where the cost model says they pay, dense where they
    do not (a 50% layer), and matches onnxruntime."""
    model = bert_encoder(hidden=64, heads=4, ffn=256, seq=24, layers=1)
    pruned, _ = prune_onnx(model, "unstructured", 0.1)
    mod = SparsifyWeights()(load_onnx(pruned).mod)
    assert any(name.startswith("bsr_matmul") for name in _kernel_names(mod))
    x = rng.standard_normal((1, 24, 64)).astype("float32")
    np.testing.assert_allclose(
        run_executable(build(pruned), x), run_onnxruntime(pruned, {"x": x})[0], **TOL
    )
    half = linear_model(
        np.where(rng.random((256, 256)) < 0.5, 1.0, 0.0).astype("float32"), (4, 256)
    )
    assert not _kernel_names(SparsifyWeights()(load_onnx(half).mod))


def test_an_unknown_format_names_the_formats():
    with pytest.raises(ValueError, match="format must be one of .*'auto'.*'bsr'.*got 'csr'"):
        SparsifyWeights(format="csr")


def test_pass_composes_with_tvm_passes(rng):
    model = linear_model(block_sparse(rng, (64, 32), (16, 1), 0.2), (4, 32), gemm=True)
    seq = tvm.transform.Sequential(
        [relax.transform.FoldConstant(), SparsifyWeights(), relax.transform.DeadCodeElimination()]
    )
    mod = seq(load_onnx(model).mod)
    assert any(n.startswith("bsr") for n in _kernel_names(mod))
    relax.analysis.well_formed(mod)


def test_weight_given_as_graph_input_falls_back_to_dense(rng):
    w = block_sparse(rng, (32, 16), (16, 1), 0.2)
    model = linear_model(w, (4, 16), weight_as_input=True)
    x = rng.standard_normal((4, 16)).astype("float32")
    expected = run_onnxruntime(model, {"x": x, "W": w})[0]
    np.testing.assert_allclose(run_executable(build(model), x, w), expected, **TOL)


def test_mlp_and_small_encoder_end_to_end(rng):
    for model, shape in (
        (mlp(sizes=(64, 128, 32)), (8, 64)),
        (bert_encoder(hidden=64, heads=4, ffn=128, seq=16, layers=1), (1, 16, 64)),
    ):
        pruned, _ = prune_onnx(model, "block:16x1", 0.2)
        x = rng.standard_normal(shape).astype("float32")
        expected = run_onnxruntime(pruned, {"x": x})[0]
        for sparsify in (True, False):
            np.testing.assert_allclose(
                run_executable(build(pruned, sparsify=sparsify), x), expected, **TOL
            )


@settings(max_examples=8, deadline=None)
@given(
    m=st.integers(1, 20),
    n=st.integers(1, 48),
    k=st.integers(1, 48),
    block=st.sampled_from([(1, 1), (4, 1), (16, 1), (8, 8), (2, 3)]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_rewritten_equals_original_property(m, n, k, block, density, seed):
    rng = np.random.default_rng(seed)
    model = linear_model(
        block_sparse(rng, (n, k), block, density),
        (m, k),
        bias=rng.standard_normal(n).astype("float32"),
    )
    _compare(
        model,
        rng.standard_normal((m, k)).astype("float32"),
        sparsify=SparsifyWeights(format="bsr", block_shape=block),
    )


def _constant_dtypes(mod):
    dtypes = set()
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(
                func.body,
                lambda e: (
                    dtypes.add(str(getattr(e.value, "dtype", "")))
                    if isinstance(e, tvm.ir.Constant)
                    else None
                ),
            )
    return dtypes


@pytest.mark.parametrize(
    "pattern, density, conv", [("block:16x1", 0.2, False), ("block:8x8", 0.3, True)]
)
def test_shared_weights_are_decoded_through_the_codebook(rng, pattern, density, conv):
    from tvm_sparse.testing import resnet

    model = (
        resnet(image=16, width=16, blocks=(1,), classes=10)
        if conv
        else mlp(batch=16, sizes=(128, 256, 64), gemm=True)
    )
    x = rng.standard_normal((1, 3, 16, 16) if conv else (16, 128)).astype("float32")
    shared, _ = prune_onnx(model, pattern, density, codebook_bits=4)
    sparsify = SparsifyWeights(format="bsr", block_shape=pattern.split(":")[1], shared_weights=True)
    mod = sparsify(load_onnx(shared).mod)
    assert "uint8" in _constant_dtypes(mod)  # the indices
    _compare(shared, x, sparsify=sparsify)
    # weights with more distinct values than a uint8 index can name keep float values
    pruned, _ = prune_onnx(model, pattern, 0.9)
    assert "uint8" not in _constant_dtypes(sparsify(load_onnx(pruned).mod))
