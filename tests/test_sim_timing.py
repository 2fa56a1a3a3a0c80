"""The timing model reproduces the analytical cases; the tiled layer program is bit-exact in every mode."""

import numpy as np
import pytest

from tvm_sparse.accel import Device, load_device
from tvm_sparse.codegen.gemm_program import DEFAULT_TILING, Tiling, gemm_program
from tvm_sparse.sim import run

DENSE, SPARSE = load_device("sparse-accel-dense"), load_device("sparse-accel")


def int8(rng, *shape):
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def two_of_four(rng, k, n):
    keep = np.argsort(rng.random((k // 4, 4, n)), axis=1)[:, :2, :]
    mask = np.zeros((k // 4, 4, n), bool)
    np.put_along_axis(mask, keep, True, axis=1)
    return (int8(rng, k, n).reshape(k // 4, 4, n) * mask).reshape(k, n)


def blocks(rng, k, n, density):
    mask = rng.random((k // 16, n // 16)) < density
    return (int8(rng, k, n) * np.kron(mask, np.ones((16, 16), np.int8))).astype(np.int8)


def reference(x, w, bias, multiplier, shift, relu):
    y = np.clip(
        ((x.astype(np.int64) @ w.astype(np.int64) + bias) * multiplier + (1 << (shift - 1)))
        >> shift,
        -128,
        127,
    )
    return np.maximum(y, 0) if relu else y


def simulate(x, w, device, mode, relu=False, tiling=DEFAULT_TILING, rng=None):
    rng = rng or np.random.default_rng(0)
    bias = rng.integers(-(2**16), 2**16, size=w.shape[1])
    multiplier = rng.integers(1, 2**12, size=w.shape[1])
    program, out = gemm_program(x, w, bias, multiplier, 22, device, mode, relu, tiling)
    result = run(program, device)
    np.testing.assert_array_equal(
        result.read(out, (x.shape[0], w.shape[1]), np.int8),
        reference(x, w, bias, multiplier, 22, relu),
    )
    return result.report.total


@pytest.mark.parametrize("mode", ["dense", "nm", "block"])
@pytest.mark.parametrize("shape", [(100, 208, 48), (64, 512, 64), (7, 32, 16)])
def test_tiled_layer_is_bit_exact(rng, mode, shape):
    m, k, n = shape
    w = {
        "dense": lambda: int8(rng, k, n),
        "nm": lambda: two_of_four(rng, k, n),
        "block": lambda: blocks(rng, k, n, 0.4),
    }[mode]()
    simulate(
        int8(rng, m, k),
        w,
        SPARSE,
        mode,
        relu=mode != "dense",
        tiling=Tiling(rows=32, reduction=64, cols=32),
        rng=rng,
    )


def test_two_of_four_halves_the_compute_cycles(rng):
    x, w = int8(rng, 256, 2048), two_of_four(rng, 2048, 128)
    dense = simulate(x, w, DENSE, "dense")
    sparse = simulate(x, w, SPARSE, "nm")
    assert sparse.gemm_cycles / dense.gemm_cycles == pytest.approx(0.5, abs=0.01)
    assert sparse.macs_issued == dense.macs_issued // 2 and sparse.macs_dense == dense.macs_dense


@pytest.mark.parametrize("density", [0.1, 0.3])
def test_block_sparsity_costs_its_density_plus_index_overhead(rng, density):
    x, w = int8(rng, 256, 2048), blocks(rng, 2048, 128, density)
    stored = np.count_nonzero(np.abs(w.reshape(128, 16, 8, 16)).sum(axis=(1, 3)))
    actual_density = stored / (128 * 8)
    ratio = simulate(x, w, SPARSE, "block").gemm_cycles / simulate(x, w, DENSE, "dense").gemm_cycles
    assert actual_density <= ratio <= actual_density * 1.02 + 0.005


def test_memory_bound_gemm_runs_at_dram_bandwidth(rng):
    x, w = (
        int8(rng, 4, 2048),
        int8(rng, 2048, 1024),
    )  # a GEMV-like layer: 2 MiB of weights, few MACs
    total = simulate(x, w, DENSE, "dense")
    dram_bytes = total.dram_read_bytes + total.dram_read_metadata_bytes + total.dram_write_bytes
    bound = dram_bytes / DENSE.dram_bytes_per_cycle
    assert bound <= total.cycles <= 1.05 * bound


def test_double_buffering_hides_dma_behind_compute(rng):
    x, w = int8(rng, 256, 1024), int8(rng, 1024, 256)
    single = simulate(x, w, DENSE, "dense", tiling=Tiling(double_buffer=False))
    double = simulate(x, w, DENSE, "dense", tiling=Tiling(double_buffer=True))
    compute = double.busy_cycles["compute"]
    assert double.cycles <= 1.05 * compute  # DMA overlapped
    assert single.cycles >= compute + 0.5 * single.busy_cycles["load"]  # DMA exposed


def test_two_of_four_metadata_is_two_bits_per_kept_value(rng):
    x, w = int8(rng, 64, 512), two_of_four(rng, 512, 64)
    total = simulate(x, w, SPARSE, "nm", tiling=Tiling(rows=64, reduction=512, cols=64))
    kept = 512 * 64 // 2
    assert total.dram_read_metadata_bytes == kept * 2 // 8


def test_lanes_of_a_column_group_wait_for_each_other(rng):
    """Blocks narrower than the PE array (16x4 on 16 output lanes) share a column group that runs in lockstep:
    the group takes a row pass per reduction chunk that any of its blocks needs. With the same block count,
    an unbalanced placement (each lane group's blocks on other chunks) costs its imbalance in cycles: the
    imbalance that load-balance-aware pruning (ESE) removes."""
    doc = SPARSE.to_dict()
    doc["name"], doc["sparse_modes"]["block"] = (
        "narrow-blocks",
        {"block_rows": 16, "block_cols": 4, "index_bits": 16},
    )
    device = Device.from_dict(doc)
    balanced, unbalanced = np.zeros((128, 16), np.int8), np.zeros((128, 16), np.int8)
    for lane_group in range(4):
        cols = slice(4 * lane_group, 4 * lane_group + 4)
        balanced[0:32, cols] = int8(rng, 32, 4)  # every lane group: chunks 0 and 1
        unbalanced[32 * lane_group : 32 * lane_group + 32, cols] = int8(
            rng, 32, 4
        )  # lane group g: chunks 2g, 2g+1
    x = int8(rng, 64, 128)
    even, uneven = simulate(x, balanced, device, "block"), simulate(x, unbalanced, device, "block")
    assert even.macs_issued == uneven.macs_issued
    assert uneven.gemm_cycles > 3.5 * even.gemm_cycles


def test_activation_skipping_and_gating(rng):
    x = int8(rng, 128, 512)
    x[:, ::2] = 0  # half of the activations are zero (ReLU-like)
    w = int8(rng, 512, 64)
    dense = simulate(x, w, DENSE, "dense")
    skipping = simulate(x, w, SPARSE, "dense")
    gating = simulate(x, w, load_device("sparse-accel-escalate"), "dense")
    assert skipping.gemm_cycles / dense.gemm_cycles == pytest.approx(0.5, abs=0.02)
    assert gating.gemm_cycles == dense.gemm_cycles
    assert gating.energy_pj["mac"] < 0.7 * dense.energy_pj["mac"]


def test_layer_is_compiled_through_tensorized_tir():
    from tvm_sparse.codegen.intrinsics import EPILOGUE, FILL, GEMM, LOAD_INP, LOAD_WGT
    from tvm_sparse.codegen.lowering import tile_operations
    from tvm_sparse.codegen.tir_layer import schedule_layer

    mod = schedule_layer(64, 128, 48, 16, 64, 16, shift=10, relu=True)
    ops = tile_operations(mod)
    count = {
        name: sum(op.op == name for op in ops)
        for name in (LOAD_INP, LOAD_WGT, GEMM, FILL, EPILOGUE)
    }
    assert count == {
        LOAD_INP: 4 * 3 * 2,
        LOAD_WGT: 4 * 3 * 2,
        GEMM: 4 * 3 * 2,
        FILL: 4 * 3,
        EPILOGUE: 4 * 3,
    }
    gemms = [op for op in ops if op.op == GEMM]
    assert gemms[0].origin(0) == (0, 0) and gemms[1].origin(0) == (
        0,
        64,
    )  # the reduction is innermost
    assert "sparse_accel.gemm" in mod["main"].script()


@pytest.mark.parametrize("mode", ["dense", "nm", "block"])
@pytest.mark.parametrize("rows_outer", [False, True])
def test_resident_tiles_are_not_reloaded(rng, mode, rows_outer):
    """With the whole reduction in one tile, the operand the outer loop walks stays in its buffer half across
    the inner loop: the program is still bit-exact, and reads less than reloading every tile would."""
    m, k, n = 128, 256, 128
    w = {
        "dense": lambda: int8(rng, k, n),
        "nm": lambda: two_of_four(rng, k, n),
        "block": lambda: blocks(rng, k, n, 0.4),
    }[mode]()
    tiling = Tiling(rows=32, reduction=k, cols=32, rows_outer=rows_outer)
    total = simulate(int8(rng, m, k), w, SPARSE, mode, relu=True, tiling=tiling, rng=rng)
    weight = (
        np.count_nonzero(w) if mode != "dense" else k * n
    )  # stored values (metadata is counted apart)
    reload_everything = m * k * (n // 32) + weight * (m // 32)
    resident = (
        m * k + weight * (m // 32) if rows_outer else m * k * (n // 32) + weight
    )  # one operand read once
    assert (
        resident <= total.dram_read_bytes - 2 * 4 * n < reload_everything
    )  # (less the bias and multiplier words)
