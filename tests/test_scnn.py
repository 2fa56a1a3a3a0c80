"""SCNN's two-sided sparsity: run-length coded activation loads and block tiles that skip zero activations."""

import numpy as np
import pytest

from tvm_sparse.accel import Device, DeviceError, load_device
from tvm_sparse.codegen.builder import ProgramBuilder
from tvm_sparse.codegen.gemm_program import Tiling, gemm_program
from tvm_sparse.hw.encoding import encode_runs
from tvm_sparse.hw.isa import Buffer, Opcode, Program, ProgramError, disassemble
from tvm_sparse.sim import DeviceFault, run
from tvm_sparse.sim.execute import execute
from tvm_sparse.sim.machine import Machine

SCNN, WEIGHT_ONLY = load_device("sparse-accel-scnn"), load_device("sparse-accel")


def with_modes(**modes) -> Device:
    doc = SCNN.to_dict()
    doc["sparse_modes"].update(modes)
    return Device.from_dict(doc)


def relu_sparse(rng, m, k, density):
    return (rng.integers(1, 128, (m, k)) * (rng.random((m, k)) < density)).astype(np.int8)


def blocks(rng, k, n, density):
    mask = rng.random((k // 16, n // 16)) < density
    return (rng.integers(-128, 128, (k, n)) * np.kron(mask, np.ones((16, 16), np.int64))).astype(
        np.int8
    )


def entries_model(tile, run_bits):
    """Entries of the run-length code in plain integers: one per nonzero, plus a stored zero per 2**run_bits zeros of each gap."""
    nonzero = np.flatnonzero(tile)
    gaps = np.diff(nonzero, prepend=-1) - 1
    return nonzero.size + int((gaps // (1 << run_bits)).sum())


def load_tile(device, tile):
    """Run one LOAD_RLE of ``tile`` into an INP filled with garbage; returns (INP tile, Work)."""
    run_bits = device.modes.activation_compression.run_bits
    b = ProgramBuilder(device.name)
    values, runs, entries = b.place_runs(tile, run_bits)
    ins = b.load_rle(0, values, runs, entries, *tile.shape, run_bits)
    machine = Machine(device, b.build().dram)
    machine.buffers[Buffer.INP][:] = 99  # the load writes every zero too
    work = execute(machine, ins)
    return machine.buffers[Buffer.INP][: tile.size].reshape(tile.shape), work


def tiles(rng):
    long_runs = np.zeros((4, 64), np.int8)
    long_runs[1, 5], long_runs[3, 63] = (
        -7,
        9,
    )  # gaps of 69 and 185 zeros, a nonzero in the last slot
    zero_rows = relu_sparse(rng, 6, 32, 0.5)
    zero_rows[[0, 3, 5]] = 0
    return {
        "random": relu_sparse(rng, 16, 48, 0.4),
        "all zero": np.zeros((3, 16), np.int8),
        "zero rows": zero_rows,
        "long runs": long_runs,
        "dense": rng.integers(-128, 128, (5, 16)).astype(np.int8),
        "one value": np.full((1, 1), -128, np.int8),
    }


@pytest.mark.parametrize("run_bits", [1, 2, 4, 8])
def test_run_length_load_is_bit_exact_and_counts_values_and_runs_apart(rng, run_bits):
    device = with_modes(activation_compression={"run_bits": run_bits})
    for name, tile in tiles(rng).items():
        loaded, work = load_tile(device, tile)
        np.testing.assert_array_equal(loaded, tile, err_msg=name)
        entries = entries_model(tile, run_bits)
        assert (work.dram_read_bytes, work.dram_read_metadata_bytes) == (
            entries,
            -(-entries * run_bits // 8),
        ), name
        assert (
            work.dma_bytes == work.dram_read_bytes + work.dram_read_metadata_bytes
            and work.sram_write_bytes == tile.size
        )


def test_encoding_bridges_long_runs_with_stored_zeros():
    tile = np.zeros(40, np.int8)
    tile[[2, 39]] = [5, -3]  # gaps of 2 and 36 zeros; 4-bit runs cover at most 15
    values, runs = encode_runs(tile, 4)
    np.testing.assert_array_equal(values, [5, 0, 0, -3])
    assert runs == bytes([2 | 15 << 4, 15 | 4 << 4])  # 2, then 16 + 16 + 4 zeros


@pytest.mark.parametrize(
    "device, run_bits, count, message",
    [
        (WEIGHT_ONLY, 4, 8, "device sparse-accel has no activation compression"),
        (SCNN, 2, 8, "LOAD_RLE with 2-bit runs on a device with 4-bit ones"),
        (SCNN, 4, 9, "LOAD_RLE stream decodes to 9 values, more than the 2x4 tile holds"),
    ],
)
def test_bad_run_length_loads_are_faults(device, run_bits, count, message):
    b = ProgramBuilder(device.name)
    b.load_rle(0, *b.place_runs(np.arange(1, count + 1, dtype=np.int8), run_bits), 2, 4, run_bits)
    with pytest.raises(DeviceFault, match=r"instruction 0 \(LOAD_RLE\): " + message):
        run(b.build(), device)


def test_run_length_load_round_trips_and_disassembles(rng):
    b = ProgramBuilder(SCNN.name)
    b.load_rle(0, *b.place_runs(relu_sparse(rng, 4, 16, 0.5), 4), 4, 16, 4)
    program = Program.from_bytes(b.build().to_bytes())
    assert program.instructions[0].opcode == Opcode.LOAD_RLE == 12
    assert "LOAD_RLE" in disassemble(program) and "run_bits=4" in disassemble(program)


def reference(x, w, bias, multiplier, shift):
    acc = x.astype(np.int64) @ w.astype(np.int64) + bias
    return np.clip((acc * multiplier + (1 << (shift - 1))) >> shift, 0, 127)


SMALL_TILING = Tiling(32, 64, 32)


def simulate(rng, x, w, device, mode, compress, tiling=SMALL_TILING):
    """The layer (ReLU, int8 out) on ``device``, checked against the numpy integer reference; its counters."""
    bias, multiplier = rng.integers(-(2**12), 2**12, w.shape[1]), rng.integers(1, 2**10, w.shape[1])
    program, out = gemm_program(
        x, w, bias, multiplier, 16, device, mode, True, tiling, compress_activations=compress
    )
    assert any(ins.opcode == Opcode.LOAD_RLE for ins in program.instructions) == compress
    result = run(program, device)
    np.testing.assert_array_equal(
        result.read(out, (x.shape[0], w.shape[1]), np.int8), reference(x, w, bias, multiplier, 16)
    )
    return result.report.total


@pytest.mark.parametrize("mode", ["dense", "block"])
@pytest.mark.parametrize("shape", [(100, 208, 48), (7, 32, 16)])
def test_two_sided_layers_are_bit_exact(rng, mode, shape):
    m, k, n = shape
    x, w = relu_sparse(rng, m, k, 0.4), blocks(rng, k, n, 0.4)
    x[::3] = 0  # all-zero activation rows
    x[:, 16:32] = 0  # a reduction chunk with no activation
    w[:, :16] = 0  # an output group with no stored block
    simulate(rng, x, w, SCNN, mode, compress=True)
    simulate(
        rng, np.zeros_like(x), w, SCNN, mode, compress=True
    )  # nothing to load, nothing to multiply


def test_halving_the_nonzero_activations_halves_the_two_sided_cycles(rng):
    mask = (
        np.argsort(rng.random((32, 8)), axis=0) < 10
    )  # 10 of the 32 blocks of each column group (density 0.31)
    w = (rng.integers(-128, 128, (512, 128)) * np.kron(mask, np.ones((16, 16), np.int64))).astype(
        np.int8
    )
    x = rng.integers(1, 128, (128, 512)).astype(np.int8)
    half = x.copy()
    half[:, 1::2] = 0
    tiling = Tiling(64, 512, 64)
    full_both, half_both = (
        simulate(rng, x, w, SCNN, "block", True, tiling),
        simulate(rng, half, w, SCNN, "block", True, tiling),
    )
    full_weights, half_weights = (
        simulate(rng, x, w, WEIGHT_ONLY, "block", False, tiling),
        simulate(rng, half, w, WEIGHT_ONLY, "block", False, tiling),
    )
    assert (
        full_both.gemm_cycles == full_weights.gemm_cycles
    )  # no zero activation: the weight-only cost
    assert (
        half_weights.gemm_cycles == full_weights.gemm_cycles
        and half_weights.macs_issued == full_weights.macs_issued
    )
    fixed = simulate(
        rng, np.zeros_like(x), w, SCNN, "block", True, tiling
    ).gemm_cycles  # issue and index decoding
    assert 2 * (half_both.gemm_cycles - fixed) == full_both.gemm_cycles - fixed
    assert (
        half_both.macs_issued * 2 == full_both.macs_issued
        and half_both.macs_dense == full_both.macs_dense
    )
    assert half_both.energy_pj["mac"] < 0.55 * full_both.energy_pj["mac"]


def test_dense_tiles_skip_as_the_skip_mode_does(rng):
    x, w = relu_sparse(rng, 64, 256, 0.4), rng.integers(-128, 128, (256, 64)).astype(np.int8)
    two_sided, skip = (
        simulate(rng, x, w, SCNN, "dense", True),
        simulate(rng, x, w, WEIGHT_ONLY, "dense", False),
    )
    assert (two_sided.gemm_cycles, two_sided.macs_issued) == (skip.gemm_cycles, skip.macs_issued)


def test_activation_traffic_is_values_plus_run_metadata(rng):
    x, w = relu_sparse(rng, 64, 256, 0.35), rng.integers(-128, 128, (256, 64)).astype(np.int8)
    total = simulate(
        rng, x, w, SCNN, "dense", True, Tiling(64, 256, 64)
    )  # one tile: x is loaded once
    entries = entries_model(x, 4)
    params = 2 * 4 * 64  # bias and multiplier words
    assert total.dram_read_bytes == entries + w.size + params
    assert total.dram_read_metadata_bytes == -(-entries * 4 // 8)
    raw = simulate(
        rng, x, w, load_device("sparse-accel-dense"), "dense", False, Tiling(64, 256, 64)
    )
    assert raw.dram_read_bytes == x.size + w.size + params and raw.dram_read_metadata_bytes == 0


def test_compressed_activations_need_the_mode(rng):
    with pytest.raises(ProgramError, match="sparse-accel has no activation compression"):
        gemm_program(
            np.ones((2, 16), np.int8),
            np.ones((16, 16), np.int8),
            np.zeros(16),
            np.ones(16),
            1,
            WEIGHT_ONLY,
            compress_activations=True,
        )


@pytest.mark.parametrize(
    "value, message",
    [
        (
            {"run_bits": 0},
            "sparse_modes.activation_compression.run_bits: must be a positive integer",
        ),
        ({"run_bits": 9}, "sparse_modes.activation_compression.run_bits: at most 8"),
        (
            {"run_bits": "4"},
            "sparse_modes.activation_compression.run_bits: must be a positive integer",
        ),
        ({}, "sparse_modes.activation_compression.run_bits: missing"),
        (
            {"run_bits": 4, "bitmask": True},
            "sparse_modes.activation_compression.bitmask: unknown field",
        ),
    ],
)
def test_bad_compression_fields_are_named(value, message):
    with pytest.raises(DeviceError, match=message.replace(".", r"\.")):
        with_modes(activation_compression=value)


def test_shipped_scnn_variant():
    assert SCNN.modes.activation_skipping == "two-sided" and SCNN.modes.skips_activations
    assert SCNN.modes.activation_compression.run_bits == 4 and SCNN.modes.block is not None
    assert not load_device("sparse-accel-escalate").modes.skips_activations
    with pytest.raises(
        DeviceError,
        match="sparse_modes.activation_skipping: must be one of none, gate, skip, two-sided",
    ):
        with_modes(activation_skipping="both")
    with pytest.raises(
        DeviceError, match="two-sided skips zero activations in block tiles and needs"
    ):
        Device.from_dict(
            {
                **load_device("sparse-accel-dense").to_dict(),
                "sparse_modes": {"activation_skipping": "two-sided"},
            }
        )
