"""Block-mode metadata at the description's index width: relative indices, bridging blocks, pruning granularity."""

import numpy as np
import pytest

from tvm_sparse.accel import Device, load_device
from tvm_sparse.codegen.builder import ProgramBuilder
from tvm_sparse.codegen.gemm_program import Tiling, gemm_program, reduction_granule, sharing_table
from tvm_sparse.codegen.gemm_task import DeviceGemmTask
from tvm_sparse.hw.encoding import (
    absolute_positions,
    block_metadata_bytes,
    block_stream_bytes,
    pack_bits,
    pack_blocks,
    relative_indices,
    unpack_bits,
)
from tvm_sparse.hw.isa import Buffer, Flag, Opcode
from tvm_sparse.sim import DeviceFault, run
from tvm_sparse.sim.execute import INDEX_WORD_BITS
from tvm_sparse.sim.timing import GEMM_ISSUE_CYCLES

SHIFT = 8


def variant(block_rows: int, index_bits: int, base: str = "sparse-accel-dense") -> Device:
    doc = load_device(base).to_dict()
    doc["name"] = f"blocks-{block_rows}x1-i{index_bits}"
    doc["sparse_modes"]["block"] = {
        "block_rows": block_rows,
        "block_cols": 1,
        "index_bits": index_bits,
    }
    return Device.from_dict(doc)


@pytest.mark.parametrize("index_bits", [1, 2, 4, 16])
def test_relative_indices_round_trip_and_bridge_long_gaps(index_bits):
    positions = np.array([0, 1, 5, 40, 41, 300, 1000])
    skips, slots = relative_indices(positions, index_bits)
    gaps = np.diff(positions, prepend=-1) - 1
    assert skips.size == len(positions) + int(
        (gaps >> index_bits).sum()
    )  # one bridging entry per 2**bits skipped
    assert skips.max() < 1 << index_bits
    decoded = absolute_positions(
        unpack_bits(np.frombuffer(pack_bits(skips, index_bits), np.uint8), index_bits, skips.size)
    )
    np.testing.assert_array_equal(decoded[slots], positions)


def test_packed_tile_stores_bridging_zero_blocks(rng):
    w = np.zeros((90, 4), np.int8)
    w[0:9, 1] = rng.integers(1, 127, 9)  # kernels at block positions 1 and 39: a gap of 37
    w[
        81, 3
    ] = -128  # the far kernel holds only -128 (whose int8 abs is negative): it is kept all the same
    blocks, meta = pack_blocks(w, 9, 1, 2)
    skips = unpack_bits(np.frombuffer(meta[2:], np.uint8), 2, len(blocks))
    assert (
        int.from_bytes(meta[:2], "little") == len(blocks) == 2 + 37 // 4
    )  # 9 bridging entries of 4 positions
    assert len(meta) == block_metadata_bytes(len(blocks), 2) == 2 + 3
    assert (blocks[1:-1] == 0).all() and (blocks[-1, :, 0] == w[81:90, 3]).all()
    assert absolute_positions(skips)[-1] == 39
    assert block_stream_bytes(w, 9, 1, 2) == (len(blocks) * 9, len(meta))


def test_shipped_16x16_blocks_keep_their_metadata_size(rng):
    mask = rng.random((8, 4)) < 0.4
    w = (rng.integers(-128, 128, (128, 64)) * np.kron(mask, np.ones((16, 16)))).astype(np.int8)
    blocks, meta = pack_blocks(w, 16, 16, 16)
    assert (
        len(blocks) == mask.sum() and len(meta) == 2 + 2 * mask.sum()
    )  # no bridging: 32 positions < 2**16


@pytest.mark.parametrize("block_rows, index_bits", [(1, 4), (3, 2), (9, 4), (25, 3)])
def test_block_gemm_is_bit_exact_at_every_granularity(rng, block_rows, index_bits):
    """Fine-grained, kernel-row and kernel blocks (some straddling the 16 reduction lanes), narrow indices that
    need bridging, an all-zero weight tile, and tails on every axis (M, N and K padded)."""
    device = variant(block_rows, index_bits)
    m, k, n = 37, 11 * block_rows + 29, 40
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    units = rng.random((k // block_rows + 1, n)) < 0.25
    w *= np.repeat(units, block_rows, axis=0)[:k].astype(np.int8)
    w[:, 16:32] = 0  # the middle column tile is empty
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    multiplier = np.full(n, 1 << SHIFT)
    program, out = gemm_program(
        x, w, np.zeros(n, np.int64), multiplier, SHIFT, device, "block", tiling=Tiling(16, 64, 16)
    )
    result = run(program, device)
    expected = np.clip(x.astype(np.int64) @ w.astype(np.int64), -128, 127)
    np.testing.assert_array_equal(result.read(out, (m, 48), np.int8)[:, :n], expected)
    gemms = [ins for ins in program.instructions if ins.opcode == Opcode.GEMM_BLOCK]
    assert all(ins.k % reduction_granule(device, "block") == 0 for ins in gemms)


def block_gemm(device: Device, blocks: np.ndarray, meta: bytes, m: int, k: int, n: int):
    """A one-tile ``GEMM_BLOCK`` program on packed ``blocks`` and ``meta`` (zero inputs)."""
    b = ProgramBuilder(device.name)
    b.load(Buffer.META, 0, b.place(np.frombuffer(meta, np.uint8)), 1, len(meta))
    b.load(Buffer.WGT, 0, b.place(blocks), 1, blocks.size, flags=Flag.PUSH_NEXT)
    b.gemm(Opcode.GEMM_BLOCK, 0, 0, 0, m, k, n, flags=Flag.POP_PREV)
    return b.build()


def test_a_block_straddling_two_lane_chunks_costs_both():
    device = variant(9, 4)

    def gemm_cycles(kernel: int) -> int:
        w = np.zeros((144, 1), np.int8)
        w[9 * kernel : 9 * kernel + 9] = 1
        return run(
            block_gemm(device, *pack_blocks(w, 9, 1, 4), 16, 144, 1), device
        ).report.total.gemm_cycles

    decode = -(-4 // INDEX_WORD_BITS)  # one 4-bit index
    assert gemm_cycles(0) == GEMM_ISSUE_CYCLES + 16 * 1 + decode  # rows 0-8: chunk 0
    assert gemm_cycles(1) == GEMM_ISSUE_CYCLES + 16 * 2 + decode  # rows 9-17: chunks 0 and 1


def test_shared_weight_table_holds_the_bridging_zero(rng):
    device = variant(1, 2, base="sparse-accel")  # 4-bit shared weights, 2-bit relative indices
    codebook = np.array([-90, -40, -7, 3, 25, 60, 127], np.int8)
    w = codebook[rng.integers(0, 7, (64, 32))] * (rng.random((64, 32)) < 0.1)
    table = sharing_table(w.astype(np.int8), "block", device)
    assert 0 in table
    x = rng.integers(-128, 128, (8, 64)).astype(np.int8)
    program, out = gemm_program(
        x,
        w.astype(np.int8),
        np.zeros(32, np.int64),
        np.full(32, 1 << SHIFT),
        SHIFT,
        device,
        "block",
        tiling=Tiling(16, 64, 32),
        table=table,
    )
    expected = np.clip(x.astype(np.int64) @ w.astype(np.int64), -128, 127)
    np.testing.assert_array_equal(run(program, device).read(out, (8, 32), np.int8), expected)


def test_metadata_decoding_past_the_tile_is_a_fault():
    meta = np.array([2], "<u2").tobytes() + pack_bits(
        np.array([15, 15]), 4
    )  # positions 15 and 31 of 16
    device = variant(1, 4)
    with pytest.raises(
        DeviceFault, match="block metadata decodes to block 31, outside the tile's 16"
    ):
        run(block_gemm(device, np.ones(2, np.int8), meta, 2, 16, 1), device)


def test_tiling_estimates_count_the_metadata_and_the_granule(rng):
    w = (rng.integers(1, 127, (288, 64)) * (rng.random((288, 64)) < 0.3)).astype(np.int8)
    task = DeviceGemmTask(64, w, "block", variant(9, 4))
    values, meta = task.encoded_bytes
    assert (values, meta) == block_stream_bytes(
        w, 9, 1, 4
    ) and meta > values // 20  # ~ 4 bits per 9-weight block
    assert (
        task.granule == 144
        and task.default().fitted(64, 288, 64, task.granule).reduction % 144 == 0
    )
    assert task.check(Tiling(64, 128, 64)) is not None and task.check(Tiling(64, 144, 64)) is None
