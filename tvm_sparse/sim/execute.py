"""What each instruction does (functional semantics), and the work it took.

Each function runs one instruction on a :class:`~.machine.Machine`, vectorised
with numpy (never a Python loop per MAC), and returns a :class:`Work` record:
the quantities the timing and energy model prices (MACs, bytes, cycles of the
PE array). Integer products are summed exactly (float64 holds every int8 dot
product of up to 2**37 terms exactly) and wrapped to int32 as the hardware's
accumulators would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.device import Device
from ..hw.encoding import BLOCK_COUNT_BYTES, absolute_positions, block_metadata_bytes, unpack_bits
from ..hw.integer import MAX_SHIFT, requantize, round_shift, wrap32
from ..hw.isa import AluOp, Buffer, Flag, Instruction, Opcode, split_geometry
from .machine import DeviceFault, Machine

#: Bits of block metadata the index decoder reads per cycle.
INDEX_WORD_BITS = 16


@dataclass
class Work:
    """Counts of one instruction's work (all zero unless the instruction does that kind of work)."""

    pe_cycles: int = 0  # cycles the PE array / ALU is busy
    dma_bytes: int = 0  # bytes crossing the DRAM interface
    dram_read_bytes: int = 0
    dram_read_metadata_bytes: int = 0
    dram_write_bytes: int = 0
    sram_read_bytes: int = 0
    sram_write_bytes: int = 0
    macs_dense: int = 0  # dense-equivalent MACs of the tile
    macs_issued: int = 0  # MACs the PE array performed
    macs_gated: int = (
        0  # issued MACs with a zero activation (no multiply energy when the device gates)
    )
    alu_ops: int = 0
    basis_macs: int = (
        0  # of macs_issued, those of the fused engine's basis stage (beside the PE array)
    )
    issue_cycles: int | None = (
        None  # cycles until the queue takes its next instruction (None: all of them)
    )
    release_cycles: int | None = (
        None  # cycles until the buffers the previous queue fills are no longer read
    )


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def load(machine: Machine, ins: Instruction) -> Work:
    if ins.buffer not in Buffer._value2member_map_:
        raise DeviceFault(f"unknown buffer {ins.buffer}")
    buf = Buffer(ins.buffer)
    if buf == Buffer.TABLE:
        _weight_sharing(machine)
    dst = machine.region(buf, ins.sram_addr, ins.rows, ins.cols, ins.sram_stride or ins.cols)
    src = machine.dram_region(ins.dram_addr, ins.rows, ins.cols, ins.dram_stride, dst.dtype)
    dst[...] = src
    nbytes = dst.size * dst.itemsize
    meta = nbytes if buf in (Buffer.META, Buffer.TABLE) else 0
    return Work(
        dma_bytes=nbytes,
        dram_read_bytes=nbytes - meta,
        dram_read_metadata_bytes=meta,
        sram_write_bytes=nbytes,
    )


def _weight_sharing(machine: Machine):
    """The device's weight-sharing mode; a fault on a device without the table."""
    sharing = machine.device.modes.weight_sharing
    if sharing is None:
        raise DeviceFault(f"device {machine.device.name} has no weight-sharing table")
    return sharing


def load_coded(machine: Machine, ins: Instruction) -> Work:
    """A weight tile sent as ``index_bits``-bit indices (packed little-endian), expanded through ``TABLE``."""
    sharing = _weight_sharing(machine)
    if ins.index_bits != sharing.index_bits:
        raise DeviceFault(
            f"LOAD_CODED with {ins.index_bits}-bit indices on a device with {sharing.index_bits}-bit ones"
        )
    count = ins.rows * ins.cols
    nbytes = _ceil(count * ins.index_bits, 8)
    dst = machine.region(Buffer.WGT, ins.sram_addr, ins.rows, ins.cols)
    packed = machine.dram_region(ins.dram_addr, 1, nbytes, nbytes, np.uint8)[0]
    table = machine.region(Buffer.TABLE, ins.table_addr, 1, sharing.table_size - ins.table_addr)[0]
    indices = unpack_bits(packed, ins.index_bits, count)
    if count and indices.max() >= table.size:
        raise DeviceFault(
            f"LOAD_CODED index {int(indices.max())} is past the table's {table.size} entries from {ins.table_addr}"
        )
    dst[...] = table[indices].reshape(ins.rows, ins.cols)
    # every decoded value is one table read
    return Work(
        dma_bytes=nbytes, dram_read_bytes=nbytes, sram_read_bytes=count, sram_write_bytes=count
    )


def load_rle(machine: Machine, ins: Instruction) -> Work:
    """A run-length coded activation tile (SCNN; format in :mod:`~tvm_sparse.hw.encoding`): ``entries``
    int8 values at ``dram_addr``, their ``run_bits``-bit zero runs packed at ``meta_addr``, expanded into a
    contiguous ``rows x cols`` ``INP`` tile. The values count as data bytes, the runs as metadata bytes."""
    mode = machine.device.modes.activation_compression
    if mode is None:
        raise DeviceFault(f"device {machine.device.name} has no activation compression")
    if ins.run_bits != mode.run_bits:
        raise DeviceFault(
            f"LOAD_RLE with {ins.run_bits}-bit runs on a device with {mode.run_bits}-bit ones"
        )
    dst = machine.region(Buffer.INP, ins.sram_addr, ins.rows, ins.cols)
    meta_bytes = _ceil(ins.entries * ins.run_bits, 8)
    values = machine.dram_region(ins.dram_addr, 1, ins.entries, ins.entries, np.int8)[0]
    runs = unpack_bits(
        machine.dram_region(ins.meta_addr, 1, meta_bytes, meta_bytes, np.uint8)[0],
        ins.run_bits,
        ins.entries,
    )
    positions = absolute_positions(runs)
    if ins.entries and positions[-1] >= dst.size:
        raise DeviceFault(
            f"LOAD_RLE stream decodes to {positions[-1] + 1} values, more than the {ins.rows}x{ins.cols} tile holds"
        )
    flat = np.zeros(dst.size, np.int8)  # zeros after the last entry are implicit
    flat[positions] = values
    dst[...] = flat.reshape(dst.shape)
    return Work(
        dma_bytes=ins.entries + meta_bytes,
        dram_read_bytes=ins.entries,
        dram_read_metadata_bytes=meta_bytes,
        sram_write_bytes=dst.size,
    )


def store(machine: Machine, ins: Instruction) -> Work:
    src = machine.region(Buffer.ACC, ins.sram_addr, ins.rows, ins.cols, ins.sram_stride or ins.cols)
    dtype = np.int32 if Flag.INT32_OUT in ins.flags else np.int8
    dst = machine.dram_region(ins.dram_addr, ins.rows, ins.cols, ins.dram_stride, dtype)
    dst[...] = src if dtype == np.int32 else np.clip(src, -128, 127)
    nbytes = dst.size * dst.itemsize
    return Work(dma_bytes=nbytes, dram_write_bytes=nbytes, sram_read_bytes=src.size * 4)


def _gemm_operands(machine: Machine, ins: Instruction):
    if not (ins.m and ins.k and ins.n):
        raise DeviceFault(f"empty GEMM tile {ins.m}x{ins.k}x{ins.n}")
    acc = machine.region(Buffer.ACC, ins.acc_addr, ins.m, ins.n)
    inp = machine.region(Buffer.INP, ins.inp_addr, ins.m, ins.k)
    return acc, inp


def _accumulate(acc: np.ndarray, inp: np.ndarray, weight: np.ndarray, ins: Instruction) -> None:
    product = inp.astype(np.float64) @ weight.astype(np.float64)
    base = acc.astype(np.int64) if Flag.ACCUMULATE in ins.flags else 0
    acc[...] = wrap32(base + product.astype(np.int64))


def _activation_cycles(device: Device, inp: np.ndarray, reduction: int) -> tuple[int, int]:
    """PE cycles for the input rows against one output group, and the zero-activation count.

    With ``activation_skipping`` ``"skip"`` or ``"two-sided"`` the device
    compresses each input row to its nonzeros and feeds ``reduction_lanes``
    of them per cycle (SCNN/EIE); otherwise every reduction chunk costs a cycle.
    """
    lanes = device.pe_array.reduction_lanes
    nonzero_per_row = np.count_nonzero(inp, axis=1)
    zeros = int(inp.size - nonzero_per_row.sum())
    if device.modes.skips_activations:
        return int(np.sum(-(-nonzero_per_row // lanes))), zeros
    return inp.shape[0] * _ceil(reduction, lanes), zeros


def _gemm_work(
    device: Device,
    ins: Instruction,
    inp: np.ndarray,
    pe_cycles: int,
    macs_issued: int,
    weight_bytes: int,
    meta_bytes: int,
    zeros: int,
) -> Work:
    groups = _ceil(ins.n, device.pe_array.output_lanes)
    acc_bytes = ins.m * ins.n * 4
    return Work(
        pe_cycles=pe_cycles,
        macs_dense=ins.m * ins.k * ins.n,
        macs_issued=macs_issued,
        macs_gated=zeros * macs_issued // max(1, inp.size)
        if device.modes.activation_skipping == "gate"
        else 0,
        sram_read_bytes=inp.size * groups
        + weight_bytes
        + meta_bytes
        + (acc_bytes if Flag.ACCUMULATE in ins.flags else 0),
        sram_write_bytes=acc_bytes,
    )


def gemm(machine: Machine, ins: Instruction) -> Work:
    device = machine.device
    acc, inp = _gemm_operands(machine, ins)
    weight = machine.region(Buffer.WGT, ins.wgt_addr, ins.k, ins.n)
    _accumulate(acc, inp, weight, ins)
    row_cycles, zeros = _activation_cycles(device, inp, ins.k)
    groups = _ceil(ins.n, device.pe_array.output_lanes)
    skipped = device.modes.skips_activations
    issued = (inp.size - zeros) * ins.n if skipped else ins.m * ins.k * ins.n
    return _gemm_work(
        device, ins, inp, row_cycles * groups, issued, weight.size, 0, 0 if skipped else zeros
    )


def gemm_nm(machine: Machine, ins: Instruction) -> Work:
    device = machine.device
    mode = device.modes.nm
    if mode is None:
        raise DeviceFault(f"device {device.name} has no N:M mode")
    if ins.k % mode.m:
        raise DeviceFault(f"N:M GEMM: k={ins.k} is not a multiple of M={mode.m}")
    acc, inp = _gemm_operands(machine, ins)
    kept_rows = ins.k // mode.m * mode.n
    values = machine.region(Buffer.WGT, ins.wgt_addr, kept_rows, ins.n)
    bits = mode.metadata_bits_per_value
    meta_bytes = _ceil(kept_rows * ins.n * bits, 8)
    packed = machine.region(Buffer.META, ins.meta_addr, 1, meta_bytes)[0]
    positions = unpack_bits(packed, bits, kept_rows * ins.n).reshape(kept_rows, ins.n)
    if (positions >= mode.m).any():
        raise DeviceFault(f"N:M metadata holds a position outside the group of {mode.m}")
    dense_rows = (np.arange(kept_rows) // mode.n * mode.m)[:, None] + positions
    weight = np.zeros((ins.k, ins.n), np.int32)
    np.add.at(weight, (dense_rows, np.broadcast_to(np.arange(ins.n), dense_rows.shape)), values)
    _accumulate(acc, inp, weight, ins)
    lanes, groups = device.pe_array.reduction_lanes, _ceil(ins.n, device.pe_array.output_lanes)
    zeros = ins.m * ins.k - np.count_nonzero(inp)
    return _gemm_work(
        device,
        ins,
        inp,
        ins.m * _ceil(kept_rows, lanes) * groups,
        ins.m * kept_rows * ins.n,
        values.size,
        meta_bytes,
        zeros,
    )


def gemm_block(machine: Machine, ins: Instruction) -> Work:
    """The tile's weight is assembled from the stored blocks that ``META`` lists (count first, then relative
    indices; bridging zero blocks are issued like any other)."""
    device = machine.device
    acc, inp = _gemm_operands(machine, ins)
    weight, kb, nb, meta_bytes = _block_weight(machine, ins.wgt_addr, ins.meta_addr, ins.k, ins.n)
    _accumulate(acc, inp, weight, ins)
    br, bc = device.modes.block.block_rows, device.modes.block.block_cols
    group_of = nb * bc // device.pe_array.output_lanes
    row_cycles, issued = (
        ins.m * block_chunks(device, kb, group_of, ins.k),
        ins.m * len(kb) * br * bc,
    )
    if device.modes.activation_skipping == "two-sided":
        row_cycles, issued = _two_sided_block_cycles(device, inp, kb, group_of, br, bc)
    # + decoding the indices: one metadata word a cycle (one 16-bit index, or four 4-bit ones)
    pe_cycles = row_cycles + _ceil(len(kb) * device.modes.block.index_bits, INDEX_WORD_BITS)
    zeros = ins.m * ins.k - np.count_nonzero(inp)
    return _gemm_work(device, ins, inp, pe_cycles, issued, len(kb) * br * bc, meta_bytes, zeros)


def block_chunks(device: Device, kb: np.ndarray, group_of: np.ndarray, k: int) -> int:
    """The (output group, reduction chunk) pairs that stored blocks overlap; each costs a pass of the input
    rows. A block of ``block_rows`` not dividing ``reduction_lanes`` may straddle two chunks and then costs
    both (its rows share the lanes with its neighbours'). ``kb``, ``group_of``: each block's reduction-block
    index and output group; ``k``: the tile's reduction length."""
    if not len(kb):
        return 0
    lanes, br = device.pe_array.reduction_lanes, device.modes.block.block_rows
    first, last = kb * br // lanes, (kb * br + br - 1) // lanes
    chunks = _ceil(k, lanes)
    pairs = [
        (group_of * chunks + first + s)[first + s <= last]
        for s in range(int((last - first).max()) + 1)
    ]
    return int(np.unique(np.concatenate(pairs)).size)


def _two_sided_block_cycles(
    device: Device,
    inp: np.ndarray,
    kb: np.ndarray,
    group_of: np.ndarray,
    block_rows: int,
    block_cols: int,
) -> tuple[int, int]:
    """PE cycles and issued MACs of a block tile that skips zero activations too (SCNN's two-sided sparsity).

    Per input row, each output group of PE columns is streamed the nonzero activations under its stored
    blocks, gathered and compressed as ``skip`` compresses a dense row, ``reduction_lanes`` per cycle; each
    meets its row of every stored block in the group (SCNN's cartesian product of nonzero activations and
    nonzero weights, here with weights nonzero at block granularity). With no zero activation this is the
    cost without skipping when blocks are as tall as the lanes. ``inp`` is int8 ``[m, k]``; ``kb`` and
    ``group_of`` are each stored block's reduction-block index and output group.
    """
    lanes = device.pe_array.reduction_lanes
    nonzero = np.count_nonzero(
        inp.reshape(inp.shape[0], -1, block_rows), axis=2
    )  # [m, k / block_rows]
    covers = np.zeros((int(group_of.max(initial=-1)) + 1, nonzero.shape[1]), np.int64)
    covers[group_of, kb] = 1  # the reduction blocks under each output group's stored blocks
    streamed = nonzero @ covers.T  # [m, groups]: the nonzero activations each group is fed per row
    return int(np.sum(-(-streamed // lanes))), int(nonzero[:, kb].sum()) * block_cols


def alu(machine: Machine, ins: Instruction) -> Work:
    x = machine.region(Buffer.ACC, ins.acc_addr, ins.rows, ins.cols)
    if Flag.ROW_OPERAND in ins.flags:
        operand = machine.region(Buffer.ACC, ins.operand, 1, ins.cols).astype(np.int64)
    else:
        operand = np.int64(ins.operand)
    value = x.astype(np.int64)
    try:
        op = AluOp(ins.alu_op)
    except ValueError:
        raise DeviceFault(f"unknown ALU operation {ins.alu_op}") from None
    if op == AluOp.BIAS_REQUANT:
        if Flag.ROW_OPERAND not in ins.flags:
            raise DeviceFault("BIAS_REQUANT takes row operands (multiplier and addend rows)")
        value = value + machine.region(Buffer.ACC, ins.addend, 1, ins.cols).astype(np.int64)
        op = AluOp.REQUANT
    if op in (AluOp.SHR, AluOp.REQUANT) and ins.shift > MAX_SHIFT:
        raise DeviceFault(f"shift {ins.shift} is out of range")
    if op == AluOp.ADD:
        value = value + operand
    elif op == AluOp.MUL:
        value = value * operand
    elif op == AluOp.SHR:
        value = round_shift(value, operand)
    elif op == AluOp.MAX:
        value = np.maximum(value, operand)
    elif op == AluOp.MIN:
        value = np.minimum(value, operand)
    else:  # REQUANT
        value = requantize(value, operand, ins.shift, Flag.RELU in ins.flags)
    x[...] = wrap32(value)
    cycles = ins.rows * _ceil(ins.cols, machine.device.pe_array.output_lanes)
    reads = x.size * 4 + (
        ins.cols * 4 * (2 if ins.alu_op == AluOp.BIAS_REQUANT else 1)
        if Flag.ROW_OPERAND in ins.flags
        else 0
    )
    return Work(
        pe_cycles=cycles, alu_ops=x.size, sram_read_bytes=reads, sram_write_bytes=x.size * 4
    )


def basis_conv(machine: Machine, ins: Instruction) -> Work:
    """ESCALATE's basis convolution: each output channel's ``R`` combined maps, convolved with the shared basis kernels."""
    device = machine.device
    mode = device.modes.decomposed_conv
    if mode is None:
        raise DeviceFault(f"device {device.name} has no decomposed-convolution engine")
    kernel, basis, stride, padding = split_geometry(ins.geometry)
    if kernel not in mode.kernel_sizes or not 0 < basis <= mode.max_basis or stride == 0:
        raise DeviceFault(
            f"{kernel}x{kernel} kernels with {basis} basis (stride {stride}) are not supported by the engine (kernels {list(mode.kernel_sizes)}, up to {mode.max_basis} basis)"
        )
    height, width, channels = ins.height, ins.width, ins.channels
    out_h, out_w = (
        (height + 2 * padding - kernel) // stride + 1,
        (width + 2 * padding - kernel) // stride + 1,
    )
    if out_h <= 0 or out_w <= 0 or channels == 0:
        raise DeviceFault(
            f"empty basis convolution ({height}x{width}, kernel {kernel}, channels {channels})"
        )
    # maps are basis-major: channel r * channels + o (the compiler orders the coefficient GEMM's outputs so)
    maps = (
        machine.region(Buffer.INP, ins.inp_addr, height * width, channels * basis)
        .reshape(height, width, basis, channels)
        .transpose(0, 1, 3, 2)
    )
    kernels = (
        machine.region(Buffer.WGT, ins.wgt_addr, basis, kernel * kernel)
        .reshape(basis, kernel, kernel)
        .astype(np.float64)
    )
    acc = machine.region(Buffer.ACC, ins.acc_addr, out_h * out_w, channels)
    padded = np.pad(maps, ((padding, padding), (padding, padding), (0, 0), (0, 0)))
    total = _basis_taps(padded, kernels, stride, out_h, out_w)
    base = acc.astype(np.int64) if Flag.ACCUMULATE in ins.flags else 0
    acc[...] = wrap32(base + total.reshape(out_h * out_w, channels))
    macs = out_h * out_w * channels * basis * kernel * kernel
    return Work(
        pe_cycles=_ceil(macs, device.pe_array.macs_per_cycle),
        macs_dense=macs,
        macs_issued=macs,
        sram_read_bytes=maps.size
        + kernels.size
        + (acc.size * 4 if Flag.ACCUMULATE in ins.flags else 0),
        sram_write_bytes=acc.size * 4,
    )


def _block_weight(machine: Machine, wgt_addr: int, meta_addr: int, k: int, n: int):
    """A block-sparse ``[k, n]`` weight from ``WGT``/``META`` (the block mode's encoding): ``(weight, block
    rows, block columns, metadata bytes)``."""
    mode = machine.device.modes.block
    if mode is None:
        raise DeviceFault(f"device {machine.device.name} has no block-sparse mode")
    br, bc = mode.block_rows, mode.block_cols
    if k % br or n % bc:
        raise DeviceFault(f"block weight: a {k}x{n} tile is not a whole number of {br}x{bc} blocks")
    count = int(machine.region(Buffer.META, meta_addr, 1, BLOCK_COUNT_BYTES)[0].view("<u2")[0])
    blocks = machine.region(Buffer.WGT, wgt_addr, count, br * bc).reshape(count, br, bc)
    meta_bytes = block_metadata_bytes(count, mode.index_bits)
    packed = machine.region(
        Buffer.META, meta_addr + BLOCK_COUNT_BYTES, 1, meta_bytes - BLOCK_COUNT_BYTES
    )[0]
    positions = absolute_positions(unpack_bits(packed, mode.index_bits, count))
    grid_cols = n // bc
    if count and positions[-1] >= (k // br) * grid_cols:
        raise DeviceFault(
            f"block metadata decodes to block {positions[-1]}, outside the tile's {(k // br) * grid_cols}"
        )
    kb, nb = positions // grid_cols, positions % grid_cols
    grid = np.zeros((k // br, grid_cols, br, bc), np.int32)
    grid[kb, nb] = blocks  # positions increase: each block lands once
    return grid.transpose(0, 2, 1, 3).reshape(k, n), kb, nb, meta_bytes


def _basis_taps(
    padded: np.ndarray, kernels: np.ndarray, stride: int, out_h: int, out_w: int
) -> np.ndarray:
    """The basis convolution of zero-padded maps ``[H, W, O, r]`` with ``kernels [r, k, k]``: int64
    ``[out_h, out_w, O]`` (summed exactly in float64)."""
    padded, kernels = padded.astype(np.float64), kernels.astype(np.float64)
    total = np.zeros((out_h, out_w, padded.shape[2]), np.float64)
    for i in range(kernels.shape[1]):
        for j in range(kernels.shape[2]):
            window = padded[
                i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride
            ]
            total += window @ kernels[:, i, j]
    return total.astype(np.int64)


_SEMANTICS = {
    Opcode.LOAD: load,
    Opcode.LOAD_CODED: load_coded,
    Opcode.LOAD_RLE: load_rle,
    Opcode.STORE: store,
    Opcode.GEMM: gemm,
    Opcode.GEMM_NM: gemm_nm,
    Opcode.GEMM_BLOCK: gemm_block,
    Opcode.ALU: alu,
    Opcode.BASIS_CONV: basis_conv,
}


def execute(machine: Machine, ins: Instruction) -> Work:
    """Run ``ins`` (a NOP only moves tokens: no work)."""
    semantics = _SEMANTICS.get(ins.opcode)
    return semantics(machine, ins) if semantics else Work()
