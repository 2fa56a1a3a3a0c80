"""Memory-bound operators as the host pipeline schedules them, against numpy."""

import math

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_sparse.pipeline import cpu_pipeline
from tvm_sparse.target import host_target


def compile_op(make, *shapes):
    """A one-operator Relax function on float32 inputs of ``shapes``, compiled for the host; a dimension
    given as a string is symbolic (one variable per name, shared across the inputs)."""
    from tvm import tirx

    dims = {}
    params = [
        relax.Var(
            f"x{i}",
            relax.TensorType(
                [
                    dims.setdefault(d, tirx.Var(d, "int64")) if isinstance(d, str) else d
                    for d in shape
                ],
                "float32",
            ),
        )
        for i, shape in enumerate(shapes)
    ]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        bb.emit_func_output(bb.emit(make(*params)))
    target = host_target()
    exe = tvm.compile(bb.finalize(), target=target, relax_pipeline=cpu_pipeline(target, None))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return lambda *arrays: vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


SHAPES = [(1, 12, 128, 128), (3, 7), (2, 5, 33), (1, 1)]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax(rng, shape):
    x = (3 * rng.standard_normal(shape)).astype("float32")
    run = compile_op(lambda v: relax.op.nn.softmax(v, axis=-1), shape)
    np.testing.assert_allclose(run(x), _softmax(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 128, 768), (5, 3), (2, 3, 17), (4, 1)])
def test_layer_norm(rng, shape):
    x = rng.standard_normal(shape).astype("float32")
    gamma = rng.standard_normal(shape[-1]).astype("float32")
    beta = rng.standard_normal(shape[-1]).astype("float32")
    run = compile_op(
        lambda v: relax.op.nn.layer_norm(
            v, relax.const(gamma), relax.const(beta), axes=[-1], epsilon=1e-5
        ),
        shape,
    )
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(
        run(x), (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("shape", [(1, 16, 16, 32), (2, 9, 7, 5), (1, 3, 3, 1)])
def test_max_and_average_pool_nhwc(rng, shape):
    x = rng.standard_normal(shape).astype("float32")
    pool = compile_op(
        lambda v: relax.op.nn.max_pool2d(v, (3, 3), (2, 2), (1, 1, 1, 1), layout="NHWC"), shape
    )
    gap = compile_op(lambda v: relax.op.mean(v, axis=[1, 2], keepdims=True), shape)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    oh, ow = (shape[1] - 1) // 2 + 1, (shape[2] - 1) // 2 + 1
    expected = np.full((shape[0], oh, ow, shape[3]), -np.inf, "float32")
    for i in range(3):
        for j in range(3):
            expected = np.maximum(
                expected, padded[:, i : i + 2 * oh - 1 : 2, j : j + 2 * ow - 1 : 2]
            )
    np.testing.assert_allclose(pool(x), expected, rtol=1e-6)
    np.testing.assert_allclose(gap(x), x.mean((1, 2), keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape, axes", [((1, 128, 12, 64), (0, 2, 1, 3)), ((3, 5, 7), (2, 0, 1)), ((1, 3), (1, 0))]
)
def test_transpose(rng, shape, axes):
    x = rng.standard_normal(shape).astype("float32")
    run = compile_op(lambda v: relax.op.permute_dims(v, axes), shape)
    np.testing.assert_array_equal(run(x), x.transpose(axes))


@pytest.mark.parametrize("shape", [(1, 128, 3072), (3, 5), (7,)])
def test_elementwise_chain(rng, shape):
    """GELU (erf form, fast-math) + residual add, fused into one loop by TVM."""
    x, r = (
        rng.standard_normal(shape).astype("float32"),
        rng.standard_normal(shape).astype("float32"),
    )

    def gelu_residual(v, w):
        erf = relax.op.erf(relax.op.multiply(v, relax.const(np.float32(1 / np.sqrt(2)))))
        gelu = relax.op.multiply(
            relax.op.multiply(v, relax.const(np.float32(0.5))),
            relax.op.add(erf, relax.const(np.float32(1))),
        )
        return relax.op.add(gelu, w)

    erf = np.vectorize(math.erf)
    run = compile_op(gelu_residual, shape, shape)
    np.testing.assert_allclose(
        run(x, r), 0.5 * x * (1 + erf(x / np.sqrt(2))) + r, rtol=1e-5, atol=1e-5
    )


def test_softmax_with_symbolic_rows_and_length(rng):
    """The attention softmax of a dynamic-length model: every length, including the scalar tails."""
    run = compile_op(lambda v: relax.op.nn.softmax(v, axis=-1), ("batch", 4, "seq", "seq"))
    for batch, seq in [(1, 1), (2, 7), (1, 16), (1, 37), (3, 128)]:
        x = (4 * rng.standard_normal((batch, 4, seq, seq))).astype("float32")
        np.testing.assert_allclose(run(x), _softmax(x), rtol=1e-5, atol=1e-7)


def test_broadcast_with_a_symbolic_last_axis(rng):
    """Attention scaling plus mask, [batch, heads, seq, seq] / 8 + [batch, 1, 1, seq]: vector main part, scalar tail."""
    run = compile_op(
        lambda x, m: relax.op.add(relax.op.divide(x, relax.const(8.0)), m),
        ("b", 3, "s", "s"),
        ("b", 1, 1, "s"),
    )
    for b, s in [(1, 1), (2, 5), (1, 16), (1, 19), (2, 64)]:
        x, m = (
            rng.standard_normal((b, 3, s, s)).astype("float32"),
            rng.standard_normal((b, 1, 1, s)).astype("float32"),
        )
        np.testing.assert_allclose(run(x, m), x / 8 + m, rtol=1e-6, atol=1e-6)


def test_injective_ops_with_a_symbolic_batch_run_in_parallel_over_more_than_the_batch(rng):
    """At batch 1 a parallel loop over the batch alone is one thread: the static loops after it share it."""
    from tvm import te, tirx

    from tvm_sparse.schedule.cpu.injective import Injective

    batch = tirx.Var("batch", "int64")
    x = te.placeholder(
        (batch, 3, 128, 128), "float32", name="x"
    )  # 49,152 elements per image: worth threads
    y = te.compute((batch, 128, 128, 3), lambda n, h, w, c: x[n, c, h, w], name="y")
    sch = Injective().apply(te.create_prim_func([x, y]), host_target(), False)
    parallel = [
        loop
        for loop in sch.get_loops(sch.get_sblock("y"))
        if sch.get(loop).kind == tirx.ForKind.PARALLEL
    ]
    assert len(parallel) == 1 and not isinstance(
        sch.get(parallel[0]).extent, tirx.Var
    )  # batch x a static extent, not batch
    # a transpose: no vector (a gather) and the two innermost loops unfused (no division per element)
    assert [str(sch.get(loop).kind) for loop in sch.get_loops(sch.get_sblock("y"))] == [
        "1",
        "0",
        "0",
    ]
    run = compile_op(lambda v: relax.op.permute_dims(v, [0, 2, 3, 1]), ("batch", 3, 64, 64))
    for size in (1, 3):
        a = rng.standard_normal((size, 3, 64, 64)).astype("float32")
        np.testing.assert_array_equal(run(a), a.transpose(0, 2, 3, 1))
