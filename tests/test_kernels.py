import numpy as np
import pytest
import tvm

from conftest import block_sparse
from tvm_sparse.formats import BSRMatrix
from tvm_sparse.kernels import BSRKernelArgs, BSRKernelParams, bsr_matmul_kernel
from tvm_sparse.kernels.batch_matmul import batch_matmul_kernel
from tvm_sparse.target import host_target


def _run(func, args):
    lib = tvm.compile(func, target=host_target())
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib[func.attrs["global_symbol"]](*tensors)
    return tensors[-1].numpy()


@pytest.mark.parametrize(
    "m, n, k, block, density, params",
    [
        (16, 64, 32, (16, 1), 0.2, None),
        (13, 40, 24, (16, 1), 0.3, None),  # row tail, N not a multiple of the block
        (7, 9, 11, (8, 8), 0.5, None),
        (20, 64, 64, (4, 4), 0.0, None),  # all-zero weight
        (5, 33, 17, (1, 1), 0.1, None),
        (9, 64, 40, (32, 32), 1.0, None),  # fully dense
        (24, 48, 64, (16, 1), 0.2, BSRKernelParams(3)),
        (4, 32, 700, (16, 700), 1.0, None),  # the packed-dense form: one block per 16 rows
    ],
)
def test_bsr_kernel_matches_numpy(rng, m, n, k, block, density, params):
    w = block_sparse(rng, (n, k), block, density)
    bsr = BSRMatrix.from_dense(w, block)
    args = BSRKernelArgs.from_bsr(bsr)
    r, c = block
    n_pad, k_pad = r * (len(bsr.indptr) - 1), -(-k // c) * c
    x = rng.standard_normal((m, k)).astype("float32")
    bias = rng.standard_normal(n_pad).astype("float32")
    xp = np.zeros((m, k_pad), "float32")
    xp[:, :k] = x
    y = _run(bsr_matmul_kernel(m, bsr, params), [xp, args.data, args.indices, args.indptr, bias, np.zeros((m, n_pad), "float32")])
    np.testing.assert_allclose(y[:, :n], x @ w.T + bias[:n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "batch, m, n, k, transpose_b",
    [(12, 32, 32, 16, True), (3, 13, 21, 7, True), (2, 5, 3, 9, False), (4, 17, 40, 33, False), (1, 1, 1, 1, True)],
)
def test_batch_matmul_kernel_matches_numpy(rng, batch, m, n, k, transpose_b):
    a = rng.standard_normal((batch, m, k)).astype("float32")
    b = rng.standard_normal((batch, n, k) if transpose_b else (batch, k, n)).astype("float32")
    y = _run(batch_matmul_kernel(batch, m, n, k, transpose_b), [a, b, np.zeros((batch, m, n), "float32")])
    expected = a @ (b.transpose(0, 2, 1) if transpose_b else b)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
