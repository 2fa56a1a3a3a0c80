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

from ..accel.device import Device
from ..accel.isa import AluOp, Buffer, Flag, Instruction, Opcode, split_geometry
from ..accel.packing import unpack_bits
from .machine import DeviceFault, Machine


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
    macs_gated: int = 0  # issued MACs with a zero activation (no multiply energy when the device gates)
    alu_ops: int = 0


def _wrap32(values: np.ndarray) -> np.ndarray:
    return ((values.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


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
    return Work(dma_bytes=nbytes, dram_read_bytes=nbytes - meta, dram_read_metadata_bytes=meta, sram_write_bytes=nbytes)


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
        raise DeviceFault(f"LOAD_CODED with {ins.index_bits}-bit indices on a device with {sharing.index_bits}-bit ones")
    count = ins.rows * ins.cols
    nbytes = _ceil(count * ins.index_bits, 8)
    dst = machine.region(Buffer.WGT, ins.sram_addr, ins.rows, ins.cols)
    packed = machine.dram_region(ins.dram_addr, 1, nbytes, nbytes, np.uint8)[0]
    table = machine.region(Buffer.TABLE, ins.table_addr, 1, sharing.table_size - ins.table_addr)[0]
    indices = unpack_bits(packed, ins.index_bits, count)
    if count and indices.max() >= table.size:
        raise DeviceFault(f"LOAD_CODED index {int(indices.max())} is past the table's {table.size} entries from {ins.table_addr}")
    dst[...] = table[indices].reshape(ins.rows, ins.cols)
    # every decoded value is one table read
    return Work(dma_bytes=nbytes, dram_read_bytes=nbytes, sram_read_bytes=count, sram_write_bytes=count)


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
    acc[...] = _wrap32(base + product.astype(np.int64))


def _activation_cycles(device: Device, inp: np.ndarray, reduction: int) -> tuple[int, int]:
    """PE cycles for the input rows against one output group, and the zero-activation count.

    With ``activation_skipping == "skip"`` the device compresses each input
    row to its nonzeros and feeds ``reduction_lanes`` of them per cycle
    (SCNN/EIE); otherwise every reduction chunk costs a cycle.
    """
    lanes = device.pe_array.reduction_lanes
    nonzero_per_row = np.count_nonzero(inp, axis=1)
    zeros = int(inp.size - nonzero_per_row.sum())
    if device.modes.activation_skipping == "skip":
        return int(np.sum(-(-nonzero_per_row // lanes))), zeros
    return inp.shape[0] * _ceil(reduction, lanes), zeros


def _gemm_work(device: Device, ins: Instruction, inp: np.ndarray, pe_cycles: int, macs_issued: int, weight_bytes: int, meta_bytes: int, zeros: int) -> Work:
    groups = _ceil(ins.n, device.pe_array.output_lanes)
    acc_bytes = ins.m * ins.n * 4
    return Work(
        pe_cycles=pe_cycles,
        macs_dense=ins.m * ins.k * ins.n,
        macs_issued=macs_issued,
        macs_gated=zeros * macs_issued // max(1, inp.size) if device.modes.activation_skipping == "gate" else 0,
        sram_read_bytes=inp.size * groups + weight_bytes + meta_bytes + (acc_bytes if Flag.ACCUMULATE in ins.flags else 0),
        sram_write_bytes=acc_bytes,
    )


def gemm(machine: Machine, ins: Instruction) -> Work:
    device = machine.device
    acc, inp = _gemm_operands(machine, ins)
    weight = machine.region(Buffer.WGT, ins.wgt_addr, ins.k, ins.n)
    _accumulate(acc, inp, weight, ins)
    row_cycles, zeros = _activation_cycles(device, inp, ins.k)
    groups = _ceil(ins.n, device.pe_array.output_lanes)
    skipped = device.modes.activation_skipping == "skip"
    issued = (inp.size - zeros) * ins.n if skipped else ins.m * ins.k * ins.n
    return _gemm_work(device, ins, inp, row_cycles * groups, issued, weight.size, 0, 0 if skipped else zeros)


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
    return _gemm_work(device, ins, inp, ins.m * _ceil(kept_rows, lanes) * groups, ins.m * kept_rows * ins.n, values.size, meta_bytes, zeros)


def gemm_block(machine: Machine, ins: Instruction) -> Work:
    """The tile's weight is assembled from the stored blocks that ``META`` lists (count first)."""
    device = machine.device
    mode = device.modes.block
    if mode is None:
        raise DeviceFault(f"device {device.name} has no block-sparse mode")
    br, bc = mode.block_rows, mode.block_cols
    if ins.k % br or ins.n % bc:
        raise DeviceFault(f"block GEMM: a {ins.k}x{ins.n} tile is not a whole number of {br}x{bc} blocks")
    acc, inp = _gemm_operands(machine, ins)
    count = int(machine.region(Buffer.META, ins.meta_addr, 1, 2)[0].view("<u2")[0])
    blocks = machine.region(Buffer.WGT, ins.wgt_addr, count, br * bc).reshape(count, br, bc)
    positions = machine.region(Buffer.META, ins.meta_addr + 2, 1, 2 * count)[0].view("<u2").astype(np.int64)
    grid_cols = ins.n // bc
    if (positions >= (ins.k // br) * grid_cols).any():
        raise DeviceFault("block metadata holds a position outside the tile")
    kb, nb = positions // grid_cols, positions % grid_cols
    grid = np.zeros((ins.k // br, grid_cols, br, bc), np.int32)
    np.add.at(grid, (kb, nb), blocks)
    weight = grid.transpose(0, 2, 1, 3).reshape(ins.k, ins.n)
    _accumulate(acc, inp, weight, ins)
    # Per output group of PE columns, the distinct reduction chunks its blocks cover cost m cycles each.
    lanes, out_lanes = device.pe_array.reduction_lanes, device.pe_array.output_lanes
    group_of = nb * bc // out_lanes
    chunks = {(int(g), int(k) * br // lanes) for g, k in zip(group_of, kb)}
    pe_cycles = ins.m * len(chunks) + count  # + one cycle per block to decode its index
    zeros = ins.m * ins.k - np.count_nonzero(inp)
    return _gemm_work(device, ins, inp, pe_cycles, ins.m * count * br * bc, blocks.size, 2 * count + 2, zeros)


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
    if op in (AluOp.SHR, AluOp.REQUANT) and ins.shift > 62:
        raise DeviceFault(f"shift {ins.shift} is out of range")
    if op == AluOp.ADD:
        value = value + operand
    elif op == AluOp.MUL:
        value = value * operand
    elif op == AluOp.SHR:
        value = _round_shift(value, operand)
    elif op == AluOp.MAX:
        value = np.maximum(value, operand)
    elif op == AluOp.MIN:
        value = np.minimum(value, operand)
    else:  # REQUANT
        value = np.clip(_round_shift(value * operand, np.int64(ins.shift)), 0 if Flag.RELU in ins.flags else -128, 127)
    x[...] = _wrap32(value)
    cycles = ins.rows * _ceil(ins.cols, machine.device.pe_array.output_lanes)
    reads = x.size * 4 + (ins.cols * 4 * (2 if ins.alu_op == AluOp.BIAS_REQUANT else 1) if Flag.ROW_OPERAND in ins.flags else 0)
    return Work(pe_cycles=cycles, alu_ops=x.size, sram_read_bytes=reads, sram_write_bytes=x.size * 4)


def basis_conv(machine: Machine, ins: Instruction) -> Work:
    """ESCALATE's basis convolution: each output channel's ``R`` combined maps, convolved with the shared basis kernels."""
    device = machine.device
    mode = device.modes.decomposed_conv
    if mode is None:
        raise DeviceFault(f"device {device.name} has no decomposed-convolution engine")
    kernel, basis, stride, padding = split_geometry(ins.geometry)
    if kernel not in mode.kernel_sizes or not 0 < basis <= mode.max_basis or stride == 0:
        raise DeviceFault(f"{kernel}x{kernel} kernels with {basis} basis (stride {stride}) are not supported by the engine (kernels {list(mode.kernel_sizes)}, up to {mode.max_basis} basis)")
    height, width, channels = ins.height, ins.width, ins.channels
    out_h, out_w = (height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1
    if out_h <= 0 or out_w <= 0 or channels == 0:
        raise DeviceFault(f"empty basis convolution ({height}x{width}, kernel {kernel}, channels {channels})")
    # maps are basis-major: channel r * channels + o (the compiler orders the coefficient GEMM's outputs so)
    maps = machine.region(Buffer.INP, ins.inp_addr, height * width, channels * basis).reshape(height, width, basis, channels).transpose(0, 1, 3, 2)
    kernels = machine.region(Buffer.WGT, ins.wgt_addr, basis, kernel * kernel).reshape(basis, kernel, kernel).astype(np.float64)
    acc = machine.region(Buffer.ACC, ins.acc_addr, out_h * out_w, channels)
    padded = np.pad(maps.astype(np.float64), ((padding, padding), (padding, padding), (0, 0), (0, 0)))
    total = np.zeros((out_h, out_w, channels), np.float64)
    for i in range(kernel):
        for j in range(kernel):
            window = padded[i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride]
            total += window @ kernels[:, i, j]
    base = acc.astype(np.int64) if Flag.ACCUMULATE in ins.flags else 0
    acc[...] = _wrap32(base + total.reshape(out_h * out_w, channels).astype(np.int64))
    macs = out_h * out_w * channels * basis * kernel * kernel
    return Work(
        pe_cycles=_ceil(macs, device.pe_array.macs_per_cycle),
        macs_dense=macs,
        macs_issued=macs,
        sram_read_bytes=maps.size + kernels.size + (acc.size * 4 if Flag.ACCUMULATE in ins.flags else 0),
        sram_write_bytes=acc.size * 4,
    )


def _round_shift(value: np.ndarray, shift) -> np.ndarray:
    """Arithmetic shift right, rounding half up (``(x + 2**(s-1)) >> s``)."""
    shift = np.asarray(shift, dtype=np.int64)
    if (shift < 0).any() or (shift > 62).any():
        raise DeviceFault("shift amount outside 0..62")
    rounding = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (value + rounding) >> shift


_SEMANTICS = {
    Opcode.LOAD: load,
    Opcode.LOAD_CODED: load_coded,
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
