"""The instruction stream of a decomposed layer's basis convolution (``BASIS_CONV`` on the ESCALATE engine).

Input: the int8 maps ``[N, H, W, r * O]``, basis-major (map ``j * O + o``), as
the coefficient GEMM writes them. Per image and chunk of output channels that
fits the buffers: the ``r`` column ranges of the chunk's maps are loaded side
by side into ``INP`` (2-D DMA with an on-chip row stride), the basis
convolution accumulates into ``ACC``, the ALU adds the bias, requantizes and
applies ReLU, and the chunk is stored. Tokens order the queues
(double-buffered when a chunk fits half the buffers: a chunk's loads wait for
the convolution that last used its half, its convolution for the store that
last used its accumulators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .builder import ProgramBuilder
from .device import Device
from .isa import AluOp, Buffer, Flag, ProgramError


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
        size = lambda n: (n + 2 * self.padding - self.kernel) // self.stride + 1
        return size(self.height), size(self.width)


def chunk_channels(g: BasisGeometry, device: Device, halves: int = 2) -> int:
    """The most output channels whose maps and accumulators fit one of ``halves`` parts of the buffers,
    rounded down to whole ALU vectors (``output_lanes``) when that leaves any."""
    oh, ow = g.out_hw
    acc_words = (device.buffers.accumulator_bytes // 4 - 2 * g.channels) // halves
    fits = min(device.buffers.input_bytes // halves // (g.height * g.width * g.rank), acc_words // (oh * ow), g.channels)
    if fits < 1:
        raise ProgramError(f"a {g.height}x{g.width} image with {g.rank} maps per channel does not fit {device.name}'s buffers")
    lanes = device.pe_array.output_lanes
    return fits // lanes * lanes if fits >= lanes else fits


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
    mode = device.modes.decomposed_conv
    if mode is None or g.kernel not in mode.kernel_sizes or g.rank > mode.max_basis:
        raise ProgramError(f"device {device.name} cannot run {g.kernel}x{g.kernel} basis convolutions of rank {g.rank}")
    oh, ow = g.out_hw
    pixels, maps = g.height * g.width, g.rank * g.channels
    params_addr = device.buffers.accumulator_bytes // 4 - 2 * g.channels
    basis_addr = b.place(np.ascontiguousarray(basis, np.int8).reshape(g.rank, -1))
    params = b.place(np.stack([bias, multiplier]).astype(np.int32))
    try:  # double-buffered when a chunk fits half the buffers (measured faster even with narrower chunks)
        halves, cb = 2, chunk_channels(g, device, 2)
    except ProgramError:
        halves, cb = 1, chunk_channels(g, device, 1)
    inp_half = device.buffers.input_bytes // halves
    acc_half = (device.buffers.accumulator_bytes // 4 - 2 * g.channels) // halves
    step = 0
    for n in range(g.batch):
        for o0 in range(0, g.channels, cb):
            c = min(cb, g.channels - o0)
            inp, acc = (step % halves) * inp_half, (step % halves) * acc_half
            loads = [(Buffer.INP, inp + j * c, x_addr + n * pixels * maps + j * g.channels + o0, pixels, c, maps, g.rank * c) for j in range(g.rank)]
            if step == 0:
                loads += [(Buffer.WGT, 0, basis_addr, g.rank, g.kernel**2, g.kernel**2, g.kernel**2), (Buffer.ACC, params_addr, params, 2, g.channels, 4 * g.channels, g.channels)]
            reuse = step >= halves  # this half held chunk step - halves
            for i, (buf, sram, dram, rows, cols, dram_stride, sram_stride) in enumerate(loads):
                flags = (Flag.POP_NEXT if i == 0 and reuse else Flag(0)) | (Flag.PUSH_NEXT if i == len(loads) - 1 else Flag(0))
                b.load(buf, sram, dram, rows, cols, dram_stride=dram_stride, sram_stride=sram_stride, flags=flags)
            conv_flags = Flag.POP_PREV | Flag.PUSH_PREV | (Flag.POP_NEXT if reuse else Flag(0))
            b.basis_conv(acc, inp, 0, g.height, g.width, c, g.kernel, g.rank, g.stride, g.padding, flags=conv_flags)
            relu_flag = Flag.RELU if relu else Flag(0)
            b.alu(AluOp.BIAS_REQUANT, acc, oh * ow, c, operand=params_addr + g.channels + o0, row_operand=True, shift=shift, addend=params_addr + o0, flags=Flag.PUSH_NEXT | relu_flag)
            b.store(acc, out_addr + n * oh * ow * g.channels + o0, oh * ow, c, dram_stride=g.channels, flags=Flag.POP_PREV | Flag.PUSH_PREV)
            step += 1
