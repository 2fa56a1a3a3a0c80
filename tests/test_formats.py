import numpy as np
import pytest
from conftest import block_sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_sparse.formats import BSRMatrix, FormatError, parse_block_shape


@pytest.mark.parametrize("block", [(1, 1), (16, 1), (1, 8), (8, 8), (4, 3), (32, 32)])
@pytest.mark.parametrize("shape", [(64, 48), (37, 19), (5, 70)])
def test_round_trip_and_structure(rng, block, shape):
    dense = block_sparse(rng, shape, block, 0.3)
    bsr = BSRMatrix.from_dense(dense, block)
    assert np.array_equal(bsr.to_dense(), dense)
    r, c = block
    assert bsr.data.shape == (bsr.num_blocks, r, c)
    # every stored block has a nonzero; the number equals the count of nonzero blocks
    padded = np.pad(dense, ((0, -shape[0] % r), (0, -shape[1] % c)))
    nz = (padded.reshape(padded.shape[0] // r, r, -1, c) != 0).any(axis=(1, 3))
    assert bsr.num_blocks == nz.sum()
    assert np.all((np.abs(bsr.data).reshape(bsr.num_blocks, r * c) > 0).any(axis=1))


def test_all_zero_and_fully_dense():
    zero = BSRMatrix.from_dense(np.zeros((10, 7), "float32"), (4, 4))
    assert zero.num_blocks == 0 and zero.block_density == 0.0
    assert np.array_equal(zero.to_dense(), np.zeros((10, 7)))
    full = BSRMatrix.from_dense(np.ones((10, 7), "float32"), (4, 4))
    assert full.num_blocks == 3 * 2 and full.block_density == 1.0


def test_rows_without_nonzeros(rng):
    dense = block_sparse(rng, (64, 32), (16, 1), 0.5)
    dense[16:48] = 0
    bsr = BSRMatrix.from_dense(dense, "16x1")
    assert bsr.indptr[1] == bsr.indptr[3]
    assert np.array_equal(bsr.to_dense(), dense)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 3, 4), "float32"), "2-D"),
        (np.zeros((4, 4), "int32"), "floating"),
        (np.array([[np.nan, 1.0]], "float32"), "NaN"),
    ],
)
def test_bad_matrices(bad, message):
    with pytest.raises(FormatError, match=message):
        BSRMatrix.from_dense(bad, (1, 1))


@pytest.mark.parametrize("text", ["16", "0x4", "ax1", "4x-1"])
def test_bad_block_shapes(text):
    with pytest.raises(FormatError):
        parse_block_shape(text)


def test_inconsistent_arrays_rejected():
    good = BSRMatrix.from_dense(np.eye(8, dtype="float32"), (4, 4))
    with pytest.raises(FormatError, match="indices"):
        BSRMatrix(good.shape, (4, 4), good.data, good.indices[:1], good.indptr)
    with pytest.raises(FormatError, match="lie in"):
        BSRMatrix(good.shape, (4, 4), good.data, np.array([0, 5], "int32"), good.indptr)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    r=st.integers(1, 9),
    c=st.integers(1, 9),
    density=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(rows, cols, r, c, density, seed):
    rng = np.random.default_rng(seed)
    dense = np.where(
        rng.random((rows, cols)) < density, rng.standard_normal((rows, cols)), 0
    ).astype("float32")
    assert np.array_equal(BSRMatrix.from_dense(dense, (r, c)).to_dense(), dense)
