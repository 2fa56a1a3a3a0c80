"""The instruction streams of a decomposed layer's basis step on the ESCALATE engine (``BASIS_CONV``).

Combine-first (ESCALATE's order, :func:`emit_basis_layer`): the input is the
int8 maps ``[N, H, W, r * O]``, basis-major (map ``j * O + o``), as the
coefficient GEMM writes them. Per image and chunk of output channels that fits
the buffers: the ``r`` column ranges of the chunk's maps are loaded side by
side into ``INP`` (2-D DMA with an on-chip row stride), the basis convolution
accumulates into ``ACC``, the ALU adds the bias, requantizes and applies ReLU,
and the chunk is stored.

Basis-first (PENNI's order, :func:`emit_expand_layer`): the input is the
layer's int8 input ``[N, H, W, C]``; per image and chunk of input channels, the
chunk is loaded once and convolved with each basis kernel in turn (a
``BASIS_CONV`` of one kernel), each result requantized and stored as maps
``j * C + c`` of ``[N, OH, OW, r * C]``, which the coefficient GEMM reads next.

Tokens order the queues (double-buffered when a chunk fits half the buffers:
a chunk's loads wait for the convolution that last used its half, a
convolution for the store that last used its accumulators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.device import Device
from ..hw.isa import AluOp, Buffer, Flag, ProgramError
from .builder import ProgramBuilder


@dataclass(frozen=True)
class BasisGeometry:
    batch: int
    height: int
    width: int
    channels: int  # O
    rank: int  # r
    kernel: int
    stride: int
    padding: int

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple(
            (n + 2 * self.padding - self.kernel) // self.stride + 1
            for n in (self.height, self.width)
        )


def chunk_channels(
    g: BasisGeometry,
    device: Device,
    halves: int = 2,
    maps_per_channel: int | None = None,
    params: int | None = None,
) -> int:
    """The most channels whose input maps (``maps_per_channel`` each, default the rank) and accumulators fit
    one of ``halves`` parts of the buffers, rounded down to whole ALU vectors (``output_lanes``) when that
    leaves any. ``params`` accumulator words stay reserved for the bias and multiplier rows."""
    oh, ow = g.out_hw
    maps = g.rank if maps_per_channel is None else maps_per_channel
    acc_words = (
        device.buffers.accumulator_bytes // 4 - (2 * g.channels if params is None else params)
    ) // halves
    fits = min(
        device.buffers.input_bytes // halves // (g.height * g.width * maps),
        acc_words // (oh * ow),
        g.channels,
    )
    if fits < 1:
        raise ProgramError(
            f"a {g.height}x{g.width} image with {maps} maps per channel does not fit {device.name}'s buffers"
        )
    lanes = device.pe_array.output_lanes
    return fits // lanes * lanes if fits >= lanes else fits


def _check_engine(device: Device, g: BasisGeometry) -> None:
    mode = device.modes.decomposed_conv
    if mode is None or g.kernel not in mode.kernel_sizes or g.rank > mode.max_basis:
        raise ProgramError(
            f"device {device.name} cannot run {g.kernel}x{g.kernel} basis convolutions of rank {g.rank}"
        )


def _emit_loads(b: ProgramBuilder, loads: list, reuse: bool) -> None:
    """A chunk's loads: the first waits for the release of its half (``reuse``), the last signals compute."""
    for i, (buf, sram, dram, rows, cols, dram_stride, sram_stride) in enumerate(loads):
        flags = (Flag.POP_NEXT if i == 0 and reuse else Flag(0)) | (
            Flag.PUSH_NEXT if i == len(loads) - 1 else Flag(0)
        )
        b.load(
            buf,
            sram,
            dram,
            rows,
            cols,
            dram_stride=dram_stride,
            sram_stride=sram_stride,
            flags=flags,
        )


def _halves(chunk) -> tuple[int, int]:
    """``(halves, channels per chunk)``: double-buffered when a chunk fits half the buffers (measured faster
    even with narrower chunks)."""
    try:
        return 2, chunk(2)
    except ProgramError:
        return 1, chunk(1)


def emit_basis_layer(
    b: ProgramBuilder,
    device: Device,
    g: BasisGeometry,
    x_addr: int,
    basis: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: int,
    out_addr: int,
    relu: bool,
) -> None:
    """Emit the layer: int8 maps at ``x_addr`` -> int8 ``[N, OH, OW, O]`` at ``out_addr``."""
    _check_engine(device, g)
    oh, ow = g.out_hw
    pixels, maps = g.height * g.width, g.rank * g.channels
    params_addr = device.buffers.accumulator_bytes // 4 - 2 * g.channels
    basis_addr = b.place(np.ascontiguousarray(basis, np.int8).reshape(g.rank, -1))
    params = b.place(np.stack([bias, multiplier]).astype(np.int32))
    halves, cb = _halves(lambda parts: chunk_channels(g, device, parts))
    inp_half = device.buffers.input_bytes // halves
    acc_half = (device.buffers.accumulator_bytes // 4 - 2 * g.channels) // halves
    step = 0
    for n in range(g.batch):
        for o0 in range(0, g.channels, cb):
            c = min(cb, g.channels - o0)
            inp, acc = (step % halves) * inp_half, (step % halves) * acc_half
            loads = [
                (
                    Buffer.INP,
                    inp + j * c,
                    x_addr + n * pixels * maps + j * g.channels + o0,
                    pixels,
                    c,
                    maps,
                    g.rank * c,
                )
                for j in range(g.rank)
            ]
            if step == 0:
                loads += [
                    (Buffer.WGT, 0, basis_addr, g.rank, g.kernel**2, g.kernel**2, g.kernel**2),
                    (Buffer.ACC, params_addr, params, 2, g.channels, 4 * g.channels, g.channels),
                ]
            reuse = step >= halves  # this half held chunk step - halves
            _emit_loads(b, loads, reuse)
            conv_flags = Flag.POP_PREV | Flag.PUSH_PREV | (Flag.POP_NEXT if reuse else Flag(0))
            b.basis_conv(
                acc,
                inp,
                0,
                g.height,
                g.width,
                c,
                g.kernel,
                g.rank,
                g.stride,
                g.padding,
                flags=conv_flags,
            )
            relu_flag = Flag.RELU if relu else Flag(0)
            b.alu(
                AluOp.BIAS_REQUANT,
                acc,
                oh * ow,
                c,
                operand=params_addr + g.channels + o0,
                row_operand=True,
                shift=shift,
                addend=params_addr + o0,
                flags=Flag.PUSH_NEXT | relu_flag,
            )
            b.store(
                acc,
                out_addr + n * oh * ow * g.channels + o0,
                oh * ow,
                c,
                dram_stride=g.channels,
                flags=Flag.POP_PREV | Flag.PUSH_PREV,
            )
            step += 1


def emit_expand_layer(
    b: ProgramBuilder,
    device: Device,
    g: BasisGeometry,
    x_addr: int,
    basis: np.ndarray,
    multiplier: np.ndarray,
    shift: int,
    out_addr: int,
) -> None:
    """Emit the basis-first step: int8 ``[N, H, W, C]`` at ``x_addr`` (``g.channels`` = C) -> int8 maps
    ``[N, OH, OW, r * C]`` at ``out_addr``, map ``j * C + c`` being channel ``c`` convolved with
    ``basis[j]`` and requantized with ``multiplier[j]`` and ``shift``."""
    _check_engine(device, g)
    oh, ow = g.out_hw
    pixels, maps, k2 = g.height * g.width, g.rank * g.channels, g.kernel**2
    params_addr = device.buffers.accumulator_bytes // 4 - 2 * maps
    basis_addr = b.place(np.ascontiguousarray(basis, np.int8).reshape(g.rank, k2))
    params = b.place(np.stack([np.zeros(maps), np.repeat(multiplier, g.channels)]).astype(np.int32))
    halves, cb = _halves(
        lambda parts: chunk_channels(g, device, parts, maps_per_channel=1, params=2 * maps)
    )
    inp_half = device.buffers.input_bytes // halves
    acc_half = (device.buffers.accumulator_bytes // 4 - 2 * maps) // halves
    chunk = step = 0  # INP halves alternate per chunk, ACC halves per (chunk, basis kernel) step
    for n in range(g.batch):
        for c0 in range(0, g.channels, cb):
            c = min(cb, g.channels - c0)
            inp = (chunk % halves) * inp_half
            loads = [
                (Buffer.INP, inp, x_addr + n * pixels * g.channels + c0, pixels, c, g.channels, c)
            ]
            if chunk == 0:
                loads += [
                    (Buffer.WGT, 0, basis_addr, g.rank, k2, k2, k2),
                    (Buffer.ACC, params_addr, params, 2, maps, 4 * maps, maps),
                ]
            _emit_loads(b, loads, reuse=chunk >= halves)
            for j in range(g.rank):
                acc = (step % halves) * acc_half
                flags = (
                    (Flag.POP_PREV if j == 0 else Flag(0))
                    | (Flag.PUSH_PREV if j == g.rank - 1 else Flag(0))
                    | (Flag.POP_NEXT if step >= halves else Flag(0))
                )
                b.basis_conv(
                    acc,
                    inp,
                    j * k2,
                    g.height,
                    g.width,
                    c,
                    g.kernel,
                    1,
                    g.stride,
                    g.padding,
                    flags=flags,
                )
                column = j * g.channels + c0
                b.alu(
                    AluOp.BIAS_REQUANT,
                    acc,
                    oh * ow,
                    c,
                    operand=params_addr + maps + column,
                    row_operand=True,
                    shift=shift,
                    addend=params_addr + column,
                    flags=Flag.PUSH_NEXT,
                )
                b.store(
                    acc,
                    out_addr + n * oh * ow * maps + column,
                    oh * ow,
                    c,
                    dram_stride=maps,
                    flags=Flag.POP_PREV | Flag.PUSH_PREV,
                )
                step += 1
            chunk += 1
