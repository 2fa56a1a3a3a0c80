"""The instruction stream of one quantized GEMM layer, tiled to the device's buffers.

``Y[M, N] = requant(X[M, K] @ W[K, N] + bias)`` (optionally ReLU), int8 in
and out, with the weight in one of the device's modes. Loop order: output
column tiles, then row tiles, then the reduction; a row tile's
accumulators stay on chip across the reduction. With double buffering the
input/weight tiles and the accumulator tiles each alternate between two
halves of their buffers, and tokens between the queues say when a half is
free, so DMA of the next tile overlaps the current GEMM (as in VTA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .builder import ProgramBuilder
from .device import Device
from .isa import AluOp, Buffer, Flag, Opcode, ProgramError
from .packing import pack_blocks, pack_nm

MODES = {"dense": Opcode.GEMM, "nm": Opcode.GEMM_NM, "block": Opcode.GEMM_BLOCK}


@dataclass(frozen=True)
class Tiling:
    rows: int = 64  # M per tile
    reduction: int = 256  # K per tile
    cols: int = 64  # N per tile
    double_buffer: bool = True


DEFAULT_TILING = Tiling()


def _pack(weight: np.ndarray, mode: str, device: Device) -> tuple[np.ndarray, bytes]:
    if mode == "dense":
        return weight, b""
    if mode == "nm":
        if device.modes.nm is None:
            raise ProgramError(f"device {device.name} has no N:M mode")
        return pack_nm(weight, device.modes.nm.n, device.modes.nm.m)
    if device.modes.block is None:
        raise ProgramError(f"device {device.name} has no block-sparse mode")
    blocks, meta = pack_blocks(weight, device.modes.block.block_rows, device.modes.block.block_cols)
    return blocks.reshape(len(blocks), blocks.shape[1] * blocks.shape[2]), meta


def emit_gemm_layer(
    b: ProgramBuilder,
    device: Device,
    x_addr: int,
    m_rows: int,
    weight: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: int,
    out_addr: int,
    mode: str = "dense",
    relu: bool = False,
    tiling: Tiling = DEFAULT_TILING,
) -> None:
    """Emit the layer reading int8 ``X[m_rows, K]`` at ``x_addr`` (rows contiguous) and writing int8 ``Y`` at ``out_addr``."""
    k, n = weight.shape
    tm, tk, tn = min(tiling.rows, m_rows), min(tiling.reduction, k), min(tiling.cols, n)
    halves = 2 if tiling.double_buffer else 1
    bufs = device.buffers
    inp_half, wgt_half, meta_half = bufs.input_bytes // halves, bufs.weight_bytes // halves, bufs.metadata_bytes // halves
    acc_words = bufs.accumulator_bytes // 4
    params_addr = acc_words - 2 * n
    acc_half = params_addr // halves
    if tm * tk > inp_half or tk * tn > wgt_half or tm * tn > acc_half:
        raise ProgramError(f"a {tm}x{tk}x{tn} tile does not fit {device.name}'s buffers ({'double' if halves == 2 else 'single'} buffered)")

    # Weight tiles, packed in the device's mode, placed in DRAM.
    tiles = {}
    for k0 in range(0, k, tk):
        for n0 in range(0, n, tn):
            values, meta = _pack(weight[k0 : k0 + tk, n0 : n0 + tn], mode, device)
            if values.size > wgt_half or len(meta) > meta_half:
                raise ProgramError(f"weight tile at ({k0}, {n0}) does not fit {device.name}'s weight/metadata buffer")
            tiles[k0, n0] = (b.place(values) if values.size else 0, values.shape, b.place(np.frombuffer(meta, np.uint8)) if meta else 0, len(meta))
    params = b.place(np.stack([bias, multiplier]).astype(np.int32))

    step = out_tile = 0
    for n0 in range(0, n, tn):
        cols = min(tn, n - n0)
        for m0 in range(0, m_rows, tm):
            rows = min(tm, m_rows - m0)
            acc = (out_tile % halves) * acc_half
            for k0 in range(0, k, tk):
                red = min(tk, k - k0)
                half = step % halves
                w_addr, w_shape, meta_addr, meta_len = tiles[k0, n0]
                wait = Flag.POP_NEXT if step >= halves else Flag(0)
                loads = [(Buffer.INP, half * inp_half, x_addr + m0 * k + k0, rows, red, k)]
                if w_shape[0]:
                    loads.append((Buffer.WGT, half * wgt_half, w_addr, w_shape[0], w_shape[1], w_shape[1]))
                if meta_len:
                    loads.append((Buffer.META, half * meta_half, meta_addr, 1, meta_len, meta_len))
                if step == 0:
                    loads.append((Buffer.ACC, params_addr, params, 2, n, 4 * n))
                for i, (buf, sram, dram, r, c, stride) in enumerate(loads):
                    flags = (wait if i == 0 else Flag(0)) | (Flag.PUSH_NEXT if i == len(loads) - 1 else Flag(0))
                    b.load(buf, sram, dram, r, c, dram_stride=stride, flags=flags)
                flags = Flag.POP_PREV | Flag.PUSH_PREV
                if k0 == 0 and out_tile >= halves:
                    flags |= Flag.POP_NEXT  # the store of this accumulator half has finished
                b.gemm(MODES[mode], acc, half * inp_half, half * wgt_half, rows, red, cols, meta_addr=half * meta_half, accumulate=k0 > 0, flags=flags)
                step += 1
            b.alu(AluOp.ADD, acc, rows, cols, operand=params_addr + n0, row_operand=True)
            b.alu(AluOp.REQUANT, acc, rows, cols, operand=params_addr + n + n0, row_operand=True, shift=shift, flags=Flag(0) if relu else Flag.PUSH_NEXT)
            if relu:
                b.alu(AluOp.MAX, acc, rows, cols, operand=0, flags=Flag.PUSH_NEXT)
            b.store(acc, out_addr + m0 * n + n0, rows, cols, dram_stride=n, flags=Flag.POP_PREV | Flag.PUSH_PREV)
            out_tile += 1


def gemm_program(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: int,
    device: Device,
    mode: str = "dense",
    relu: bool = False,
    tiling: Tiling = DEFAULT_TILING,
    name: str = "gemm",
):
    """A whole program for one layer: returns ``(program, out_addr)``; the int8 result is ``[M, N]`` at ``out_addr``."""
    b = ProgramBuilder(device.name)
    b.layer(name)
    x_addr = b.place(np.ascontiguousarray(x, np.int8))
    out_addr = b.reserve(x.shape[0] * weight.shape[1])
    emit_gemm_layer(b, device, x_addr, x.shape[0], weight, bias, multiplier, shift, out_addr, mode, relu, tiling)
    return b.build(), out_addr


#: Tilings the compiler chooses from (rows, reduction, cols); the tuner explores more.
CANDIDATE_TILINGS = [Tiling(r, k, c) for r in (16, 32, 64, 128) for k in (128, 256, 512) for c in (32, 64, 128, 256)]


def fits(tiling: Tiling, m: int, k: int, n: int, device: Device) -> bool:
    """Whether a (dense-sized) tile of ``tiling`` fits the device's buffers for an ``m x k x n`` layer."""
    halves = 2 if tiling.double_buffer else 1
    tm, tk, tn = min(tiling.rows, m), min(tiling.reduction, k), min(tiling.cols, n)
    b = device.buffers
    acc_half = (b.accumulator_bytes // 4 - 2 * n) // halves
    return tm * tk <= b.input_bytes // halves and tk * tn <= b.weight_bytes // halves and 0 < tm * tn <= acc_half


def choose_tiling(m: int, k: int, n: int, weight_bytes: int, device: Device) -> Tiling:
    """The fitting tiling that moves the fewest DRAM bytes: activations are re-read once per column tile,
    the (packed) weight once per row tile."""
    best, best_bytes = None, None
    for tiling in CANDIDATE_TILINGS:
        if not fits(tiling, m, k, n, device):
            continue
        traffic = m * k * -(-n // tiling.cols) + weight_bytes * -(-m // tiling.rows)
        if best is None or traffic < best_bytes:
            best, best_bytes = tiling, traffic
    if best is None:
        raise ProgramError(f"no tiling of a {m}x{k}x{n} layer fits {device.name}'s buffers")
    return best
