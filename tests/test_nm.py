"""N:M sparsity on the CPU: the format, the kernel, the rewrite."""

import numpy as np
import pytest
import tvm
from conftest import linear_model, run_executable, run_onnxruntime
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_sparse import analyze, build
from tvm_sparse.formats import FormatError, NMMatrix, nm_violations
from tvm_sparse.kernels.nm_matmul import (
    NMKernelArgs,
    nm_kernel_available,
    nm_matmul_kernel,
    padded_reduction,
)
from tvm_sparse.prune import prune_weight
from tvm_sparse.target import host_target
from tvm_sparse.transform import SparsifyWeights

needs_avx512 = pytest.mark.skipif(
    not nm_kernel_available(host_target()), reason="the N:M kernel needs AVX-512"
)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 50),
    pattern=st.sampled_from([(2, 4), (1, 4), (2, 8)]),
    seed=st.integers(0, 999),
)
def test_nm_round_trip(rows, cols, pattern, seed):
    n, m = pattern
    w = prune_weight(
        np.random.default_rng(seed).standard_normal((rows, cols)).astype("float32"), f"nm:{n}:{m}"
    )
    nm = NMMatrix.from_dense(w, n, m)
    np.testing.assert_array_equal(nm.to_dense(), w)
    assert len(nm.metadata) == -(-nm.positions.size * max(1, (m - 1).bit_length()) // 8)


def test_non_compliant_weight_is_rejected_with_the_count():
    w = np.ones((4, 8), "float32")
    assert nm_violations(w, 2, 4) == 8
    with pytest.raises(FormatError, match="8 group"):
        NMMatrix.from_dense(w, 2, 4)


@needs_avx512
@pytest.mark.parametrize("m, n, k", [(16, 32, 64), (13, 40, 52), (1, 16, 16), (9, 17, 100)])
@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (2, 8)])
def test_nm_kernel_matches_numpy(rng, m, n, k, pattern):
    keep, group = pattern
    w = prune_weight(rng.standard_normal((n, k)).astype("float32"), f"nm:{keep}:{group}")
    nm = NMMatrix.from_dense(w, keep, group)
    args = NMKernelArgs.from_nm(nm)
    k_pad, n_pad = padded_reduction(k), -(-n // 16) * 16
    x = np.zeros((m, k_pad), "float32")
    x[:, :k] = rng.standard_normal((m, k))
    bias = rng.standard_normal(n_pad).astype("float32")
    lib = tvm.compile(nm_matmul_kernel(m, nm, relu=True), target=host_target())
    tensors = [
        tvm.runtime.tensor(a)
        for a in (x, args.positions, args.values, bias, np.zeros((m, n_pad), "float32"))
    ]
    lib["nm_matmul"](*tensors)
    expected = np.maximum(x[:, :k] @ w.T + bias[:n], 0)
    np.testing.assert_allclose(tensors[-1].numpy()[:, :n], expected, rtol=1e-4, atol=1e-4)


@needs_avx512
def test_nm_kernel_with_symbolic_rows_runs_at_every_size(rng):
    n, k = 40, 64
    w = prune_weight(rng.standard_normal((n, k)).astype("float32"), "nm:2:4")
    nm = NMMatrix.from_dense(w, 2, 4)
    args = NMKernelArgs.from_nm(nm)
    lib = tvm.compile(
        nm_matmul_kernel(tvm.tirx.Var("m", "int64"), nm, rows_per_tile=8), target=host_target()
    )
    bias = rng.standard_normal(48).astype("float32")
    for m in (1, 7, 8, 13, 31):
        x = rng.standard_normal((m, k)).astype("float32")
        y = tvm.runtime.tensor(np.full((m, 48), np.nan, "float32"))
        lib["nm_matmul"](
            *[tvm.runtime.tensor(a) for a in (x, args.positions, args.values, bias)], y
        )
        np.testing.assert_allclose(
            y.numpy()[:, :n], x @ w.T + bias[:n], rtol=1e-4, atol=1e-4, err_msg=f"m={m}"
        )


@needs_avx512
@pytest.mark.parametrize("gemm, x_shape", [(True, (8, 64)), (False, (2, 5, 64))])
def test_nm_layers_are_rewritten_and_match_onnxruntime(rng, gemm, x_shape):
    w = prune_weight(rng.standard_normal((48, 64)).astype("float32"), "nm:2:4")
    bias = rng.standard_normal(48).astype("float32")
    model = linear_model(w, x_shape, gemm=gemm, bias=bias)
    row = analyze(model).layers[0]
    assert row.choice.label == "nm 2:4" and row.profile.structure == "2:4"
    x = rng.standard_normal(x_shape).astype("float32")
    (expected,) = run_onnxruntime(model, {"x": x})
    np.testing.assert_allclose(run_executable(build(model), x), expected, rtol=1e-4, atol=1e-4)


def test_forcing_nm_on_a_dense_weight_warns_and_stays_dense(rng):
    w = rng.standard_normal((32, 32)).astype("float32")
    model = linear_model(w, (4, 32))
    with pytest.warns(UserWarning, match=r"not N:M \(violating groups: 2:4 256"):
        exe = build(model, sparsify=SparsifyWeights(format="nm"))
    x = rng.standard_normal((4, 32)).astype("float32")
    np.testing.assert_allclose(run_executable(exe, x), x @ w.T, rtol=1e-4, atol=1e-4)
