import numpy as np
import pytest
import tvm
from conftest import block_sparse

from tvm_sparse.formats import BSRMatrix
from tvm_sparse.kernels import BSRKernelArgs, BSRKernelParams, Im2Col, bsr_matmul_kernel
from tvm_sparse.kernels.batch_matmul import batch_matmul_kernel
from tvm_sparse.kernels.depthwise_conv import depthwise_conv_kernel
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
        (
            26,
            48,
            64,
            (16, 1),
            0.2,
            BSRKernelParams(4, pack_in_tile=True),
        ),  # rows packed per tile, with a tail
        (26, 48, 64, (8, 8), 0.4, BSRKernelParams(4, weight_major=True)),
        (4, 32, 700, (16, 700), 1.0, None),  # the packed-dense form: one block per 16 rows
        # blocks one output high: the row-vectorised tiles (two FMA chains, odd block counts)
        (37, 50, 70, (1, 1), 0.1, BSRKernelParams(16)),  # a 5-row tail, packed first
        (40, 24, 30, (1, 4), 0.3, BSRKernelParams(8, pack_in_tile=True)),  # a column tail (30 / 4)
        (16, 20, 33, (1, 1), 0.0, None),  # all-zero
        (33, 64, 48, (1, 1), 0.03, BSRKernelParams(32, weight_major=True)),  # many empty outputs
        (3, 7, 5, (1, 1), 1.0, BSRKernelParams(2)),  # dense, tiny
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
    y = _run(
        bsr_matmul_kernel(m, bsr, params),
        [xp, args.data, args.indices, args.indptr, bias, np.zeros((m, n_pad), "float32")],
    )
    np.testing.assert_allclose(y[:, :n], x @ w.T + bias[:n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "batch, m, n, k, transpose_b",
    [
        (12, 32, 32, 16, True),
        (3, 13, 21, 7, True),
        (2, 5, 3, 9, False),
        (4, 17, 40, 33, False),
        (1, 1, 1, 1, True),
    ],
)
def test_batch_matmul_kernel_matches_numpy(rng, batch, m, n, k, transpose_b):
    a = rng.standard_normal((batch, m, k)).astype("float32")
    b = rng.standard_normal((batch, n, k) if transpose_b else (batch, k, n)).astype("float32")
    y = _run(
        batch_matmul_kernel(batch, m, n, k, transpose_b), [a, b, np.zeros((batch, m, n), "float32")]
    )
    expected = a @ (b.transpose(0, 2, 1) if transpose_b else b)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def conv2d_nhwc_reference(x, w_ohwi, strides, padding, dilation, groups):
    """Direct NHWC convolution in numpy, one kernel tap at a time."""
    n, h, w, c = x.shape
    o, kh, kw, cg = w_ohwi.shape
    (sh, sw), (ph, pw), (dh, dw) = strides, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    og = o // groups
    y = np.zeros((n, oh, ow, o), "float64")
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :,
                i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                j * dw : j * dw + sw * (ow - 1) + 1 : sw,
                :,
            ]
            for g in range(groups):
                y[..., g * og : (g + 1) * og] += (
                    patch[..., g * cg : (g + 1) * cg] @ w_ohwi[g * og : (g + 1) * og, i, j, :].T
                )
    return y


@pytest.mark.parametrize(
    "shape, out_channels, kernel, strides, padding, dilation, groups, block, density",
    [
        ((1, 8, 8, 16), 32, (3, 3), (1, 1), (1, 1), (1, 1), 1, None, 1.0),
        ((2, 7, 9, 5), 17, (3, 3), (2, 2), (1, 1), (1, 1), 1, None, 1.0),  # odd sizes, stride 2
        ((1, 12, 12, 3), 16, (7, 7), (2, 2), (3, 3), (1, 1), 1, None, 1.0),  # a stem
        ((1, 6, 6, 24), 8, (1, 1), (1, 1), (0, 0), (1, 1), 1, None, 1.0),  # 1x1
        ((1, 9, 9, 8), 8, (3, 3), (1, 1), (2, 2), (2, 2), 1, None, 1.0),  # dilated
        ((1, 8, 8, 32), 64, (3, 3), (1, 1), (1, 1), (1, 1), 4, None, 1.0),  # grouped
        ((1, 8, 8, 32), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, (16, 4), 0.3),  # block-sparse weight
        ((1, 7, 7, 16), 24, (3, 3), (1, 1), (1, 1), (1, 1), 1, (1, 1), 0.1),  # unstructured weight
    ],
)
@pytest.mark.parametrize("pack_in_tile", [True, False])
def test_conv_through_im2col_matches_numpy(
    rng,
    shape,
    out_channels,
    kernel,
    strides,
    padding,
    dilation,
    groups,
    block,
    density,
    pack_in_tile,
):
    im2col = Im2Col(shape, kernel, strides, padding, dilation, groups)
    w = rng.standard_normal((out_channels, *kernel, shape[3] // groups)).astype("float32")
    matrix = im2col.weight_matrix(w)
    if block is not None:
        matrix = block_sparse(rng, matrix.shape, block, density)
        w = matrix.reshape(out_channels, *kernel, shape[3])  # groups == 1 here
    block = block or (16, matrix.shape[1])
    bsr = BSRMatrix.from_dense(matrix, block)
    args = BSRKernelArgs.from_bsr(bsr)
    n_pad = block[0] * (len(bsr.indptr) - 1)
    x = rng.standard_normal(shape).astype("float32")
    bias = rng.standard_normal(n_pad).astype("float32")
    params = BSRKernelParams(
        BSRKernelParams.default(block, im2col=True).rows_per_tile, pack_in_tile=pack_in_tile
    )
    kernel_func = bsr_matmul_kernel(im2col.rows, bsr, params, im2col=im2col, relu=True)
    y = _run(
        kernel_func,
        [
            x,
            args.data,
            args.indices,
            args.indptr,
            bias,
            np.zeros((shape[0], *im2col.out_hw, n_pad), "float32"),
        ],
    )
    y = y.reshape(im2col.rows, n_pad)
    expected = conv2d_nhwc_reference(x, w, strides, padding, dilation, groups) + bias[:out_channels]
    np.testing.assert_allclose(
        y[:, :out_channels], np.maximum(expected, 0).reshape(im2col.rows, -1), rtol=1e-4, atol=1e-4
    )


def test_im2col_shape_mismatch_is_an_error(rng):
    bsr = BSRMatrix.from_dense(np.ones((16, 27), "float32"), (16, 27))
    with pytest.raises(ValueError, match="im2col"):
        bsr_matmul_kernel(10, bsr, im2col=Im2Col((1, 4, 4, 3), (3, 3)))


@pytest.mark.parametrize(
    "shape, kernel, strides, padding, dilation",
    [
        ((1, 8, 8, 32), (3, 3), (1, 1), (1, 1), (1, 1)),
        ((2, 9, 7, 21), (3, 3), (2, 2), (1, 1), (1, 1)),  # channel tail, stride 2
        ((1, 6, 6, 5), (5, 5), (1, 1), (2, 2), (1, 1)),  # fewer channels than lanes
        ((1, 10, 10, 16), (3, 3), (1, 1), (2, 2), (2, 2)),  # dilated
    ],
)
def test_depthwise_conv_matches_numpy(rng, shape, kernel, strides, padding, dilation):
    channels = shape[3]
    im2col = Im2Col(shape, kernel, strides, padding, dilation, groups=channels)
    w = rng.standard_normal((channels, *kernel, 1)).astype("float32")
    x = rng.standard_normal(shape).astype("float32")
    bias = rng.standard_normal(channels).astype("float32")
    out = np.zeros((shape[0], *im2col.out_hw, channels), "float32")
    y = _run(
        depthwise_conv_kernel(im2col, relu=True),
        [x, np.ascontiguousarray(w.transpose(1, 2, 3, 0)), bias, out],
    )
    expected = conv2d_nhwc_reference(x, w, strides, padding, dilation, channels) + bias
    np.testing.assert_allclose(y, np.maximum(expected, 0), rtol=1e-4, atol=1e-4)


def _sym(name):
    return tvm.tirx.Var(name, "int64")


@pytest.mark.parametrize(
    "block, params",
    [
        ((16, 1), BSRKernelParams(8)),
        ((8, 8), BSRKernelParams(8, weight_major=True)),
        ((16, 1), BSRKernelParams(6, pack_in_tile=True)),  # a tile that is not a power of two
        ((16, 40), BSRKernelParams(16)),  # packed dense
        ((1, 1), BSRKernelParams(16, pack_in_tile=True)),  # row-vectorised
        ((1, 4), BSRKernelParams(8)),
    ],
)
def test_bsr_kernel_with_symbolic_rows_runs_at_every_size(rng, block, params):
    """One kernel for a symbolic row count: every tail length (0 to MT-1) and a single row."""
    n, k = 48, 40
    w = block_sparse(rng, (n, k), block, 0.4)
    bsr = BSRMatrix.from_dense(w, block)
    args = BSRKernelArgs.from_bsr(bsr)
    r, c = block
    n_pad, k_pad = r * (len(bsr.indptr) - 1), -(-k // c) * c
    lib = tvm.compile(bsr_matmul_kernel(_sym("m"), bsr, params, relu=True), target=host_target())
    bias = rng.standard_normal(n_pad).astype("float32")
    for m in [
        1,
        2,
        3,
        params.rows_per_tile,
        2 * params.rows_per_tile - 1,
        3 * params.rows_per_tile + 5,
        37,
    ]:
        x = np.zeros((m, k_pad), "float32")
        x[:, :k] = rng.standard_normal((m, k))
        y = tvm.runtime.tensor(np.full((m, n_pad), np.nan, "float32"))
        lib["bsr_matmul"](
            *[tvm.runtime.tensor(a) for a in (x, args.data, args.indices, args.indptr, bias)], y
        )
        expected = np.maximum(x[:, :k] @ w.T + bias[:n], 0)
        np.testing.assert_allclose(
            y.numpy()[:, :n], expected, rtol=1e-4, atol=1e-4, err_msg=f"m={m}"
        )


@pytest.mark.parametrize("pack_in_tile", [True, False])
def test_conv_with_symbolic_batch_and_image_size(rng, pack_in_tile):
    """An im2col convolution over an ``[N, H, W, C]`` image with ``N``, ``H``, ``W`` symbolic."""
    batch, height, width = _sym("n"), _sym("h"), _sym("w")
    kernel, strides, padding = (3, 3), (2, 2), (1, 1)
    im2col = Im2Col((batch, height, width, 8), kernel, strides, padding)
    w = rng.standard_normal((24, *kernel, 8)).astype("float32")
    bsr = BSRMatrix.from_dense(im2col.weight_matrix(w), (16, 72))
    args = BSRKernelArgs.from_bsr(bsr)
    params = BSRKernelParams(16, pack_in_tile=pack_in_tile)
    lib = tvm.compile(
        bsr_matmul_kernel(im2col.rows, bsr, params, im2col=im2col), target=host_target()
    )
    bias = np.zeros(32, "float32")
    for shape in [(1, 9, 9, 8), (3, 6, 11, 8), (2, 1, 1, 8)]:
        x = rng.standard_normal(shape).astype("float32")
        oh, ow = ((shape[1] + 1) // 2, (shape[2] + 1) // 2)
        y = tvm.runtime.tensor(np.zeros((shape[0], oh, ow, 32), "float32"))
        lib["bsr_matmul"](
            *[tvm.runtime.tensor(a) for a in (x, args.data, args.indices, args.indptr, bias)], y
        )
        expected = conv2d_nhwc_reference(x, w, strides, padding, (1, 1), 1)
        np.testing.assert_allclose(
            y.numpy()[..., :24], expected, rtol=1e-4, atol=1e-4, err_msg=str(shape)
        )


def test_batch_matmul_and_depthwise_with_symbolic_sizes(rng):
    """Attention's two matmuls over a symbolic sequence length, and a depthwise convolution over a
    symbolic image: one kernel each, run at several sizes."""
    heads, seq = _sym("bh"), _sym("s")
    scores = tvm.compile(batch_matmul_kernel(heads, seq, seq, 16, True), target=host_target())
    context = tvm.compile(batch_matmul_kernel(heads, seq, 16, seq, False), target=host_target())
    for b, s in [(1, 1), (3, 7), (2, 19)]:
        q, kt, v = (rng.standard_normal((b, s, 16)).astype("float32") for _ in range(3))
        y = tvm.runtime.tensor(np.zeros((b, s, s), "float32"))
        scores["batch_matmul"](tvm.runtime.tensor(q), tvm.runtime.tensor(kt), y)
        np.testing.assert_allclose(y.numpy(), q @ kt.transpose(0, 2, 1), rtol=1e-4, atol=1e-4)
        out = tvm.runtime.tensor(np.zeros((b, s, 16), "float32"))
        context["batch_matmul"](y, tvm.runtime.tensor(v), out)
        np.testing.assert_allclose(out.numpy(), y.numpy() @ v, rtol=1e-4, atol=1e-4)
    im2col = Im2Col((_sym("n"), _sym("h"), _sym("w"), 20), (3, 3), (2, 2), (1, 1), groups=20)
    depthwise = tvm.compile(depthwise_conv_kernel(im2col), target=host_target())
    w = rng.standard_normal((20, 3, 3, 1)).astype("float32")
    for shape in [(1, 5, 5, 20), (2, 8, 3, 20)]:
        x = rng.standard_normal(shape).astype("float32")
        out = tvm.runtime.tensor(
            np.zeros((shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2, 20), "float32")
        )
        args = [x, np.ascontiguousarray(w.transpose(1, 2, 3, 0)), np.zeros(20, "float32")]
        depthwise["depthwise_conv2d"](*[tvm.runtime.tensor(a) for a in args], out)
        np.testing.assert_allclose(
            out.numpy(),
            conv2d_nhwc_reference(x, w, (2, 2), (1, 1), (1, 1), 20),
            rtol=1e-4,
            atol=1e-4,
        )


def test_a_weight_larger_than_the_cache_is_walked_once():
    """A matmul weight over STREAMED_WEIGHT_BYTES (GPT-2's tied head) is walked block row first."""
    from tvm_sparse.formats import BSRMatrix
    from tvm_sparse.kernels.tasks import STREAMED_WEIGHT_BYTES, BlockMatmulTask

    k = 64
    big = BSRMatrix.from_dense(
        np.ones((STREAMED_WEIGHT_BYTES // (4 * k) + 16, k), "float32"), (16, 1)
    )
    small = BSRMatrix.from_dense(np.ones((256, k), "float32"), (16, 1))
    assert BlockMatmulTask(128, big).default().weight_major
    assert not BlockMatmulTask(128, small).default().weight_major
