"""TIR kernel for the softmax over the last axis of a float32 matrix, rows and row length possibly symbolic.

Each row takes three passes over its ``n`` entries in 16-lane vectors (a
scalar loop for the last ``n % 16``): the maximum, then ``exp(x - max)``
written out and summed, then the scaling by ``1 / sum``. Rows run in parallel.
The exponential is the polynomial of TVM's ``fast_exp`` (Cephes ``expf``:
``2^k * p(f)`` after range reduction, relative error ~1e-7), which LLVM
vectorizes; its ``exp`` intrinsic is a scalar libm call per lane. TVM's
default schedule of ``softmax`` (and of its ``fast_softmax``) stays scalar when
the row length is symbolic, which made the attention softmax of a dynamic-length
BERT 3x slower than the same model compiled for a fixed length.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .bsr_matmul import VECTOR_LANES
from .rows import own_vars

LANES = VECTOR_LANES
_ATTRS = {"tirx.noalias": True, "tirx.is_scheduled": True}
_EXP_POLY = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)


def fast_exp(x):
    """``exp(x)`` for float32 ``x <= 0`` as TVM's ``fast_exp`` computes it (inputs clamped at -88.38)."""
    x = T.max(x, T.float32(-88.3762626647949))
    k = T.floor(x * T.float32(1.44269504088896341) + T.float32(0.5))
    f = x - k * T.float32(0.6931471805599453)
    p = T.float32(_EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = p * f + T.float32(c)
    y = p * f * f + f + T.float32(1.0)
    return T.reinterpret("float32", T.shift_left(T.Cast("int32", k + T.float32(127.0)), 23)) * y


def softmax_kernel(shape: tuple, name: str = "softmax"):
    """``name(X[R, N], Y[R, N])``: ``Y[r] = exp(X[r] - max X[r]) / sum exp(X[r] - max X[r])``, float32;
    ``R`` and ``N`` may be symbolic (``shape`` gives them, as ints or Relax shape variables)."""
    rows, n = own_vars(shape)
    chunks = n // LANES
    tail_start = chunks * LANES
    lowest = T.float32(-3.4028234663852886e38)

    @T.prim_func(s_tir=True)
    def kernel(X: T.Buffer((rows, n), "float32"), Y: T.Buffer((rows, n), "float32")):
        T.func_attr(_ATTRS)
        with T.sblock("root"):
            for r in T.parallel(rows):
                acc = T.decl_buffer((LANES,), "float32")
                total = T.decl_buffer((1,), "float32")
                for lane in T.vectorized(LANES):
                    acc[lane] = lowest
                for c in range(chunks):
                    for lane in T.vectorized(LANES):
                        acc[lane] = T.max(acc[lane], X[r, c * LANES + lane])
                for t in range(n - tail_start):
                    acc[0] = T.max(acc[0], X[r, tail_start + t])
                total[0] = lowest
                for lane in range(LANES):
                    total[0] = T.max(total[0], acc[lane])
                for lane in T.vectorized(LANES):
                    acc[lane] = T.float32(0)
                for c in range(chunks):
                    for lane in T.vectorized(LANES):
                        Y[r, c * LANES + lane] = fast_exp(X[r, c * LANES + lane] - total[0])
                        acc[lane] = acc[lane] + Y[r, c * LANES + lane]
                for t in range(n - tail_start):
                    Y[r, tail_start + t] = fast_exp(X[r, tail_start + t] - total[0])
                    acc[0] = acc[0] + Y[r, tail_start + t]
                total[0] = T.float32(0)
                for lane in range(LANES):
                    total[0] = total[0] + acc[lane]
                total[0] = T.float32(1) / total[0]
                for c in range(chunks):
                    for lane in T.vectorized(LANES):
                        Y[r, c * LANES + lane] = Y[r, c * LANES + lane] * total[0]
                for t in range(n - tail_start):
                    Y[r, tail_start + t] = Y[r, tail_start + t] * total[0]

    return kernel.with_attr("global_symbol", name)
