"""The instruction stream of a decomposed layer on the fused engine (``DECOMP_CONV``, :mod:`tvm_sparse.sim.engine`).

The layer: int8 ``[N, H, W, C_pad]`` at ``x_addr`` -> int8 ``[N, OH, OW, O]`` at ``out_addr``, the
intermediate maps never leaving the chip. Work is cut into steps: per image, band of output rows (its input
rows with the window's halo) and chunk of output channels, the loads (the band when it changes, the chunk's
coefficients unless they stay resident, its parameters), ``ENGINE_CONFIG`` + ``DECOMP_CONV`` and the store.
Buffers are double-buffered where they fit; tokens between the queues say when a half is free. The chunk
width and band height are chosen by the device's own timing model (:func:`_plan`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..hw.device import Device
from ..hw.encoding import block_grid, nonzero_blocks, pack_blocks
from ..hw.isa import Buffer, CoefMode, Flag, ProgramError
from ..sim.engine import EngineConfig, EnginePipeline
from ..sim.execute import block_chunks
from .basis_program import BasisGeometry, _check_engine, _emit_loads
from .builder import ProgramBuilder


@dataclass(frozen=True)
class FusedOperands:
    """The integer operands of a decomposed layer on the fused engine.

    ``coefficients`` int8: combine-first ``[C_pad, r * O]`` (column ``j * O + o``), basis-first
    ``[r * C_pad, O]`` (row ``j * C_pad + c``); zero where the channel is padding. ``maps_params``
    ``[2, maps]`` and ``out_params`` ``[2, O]``: bias and multiplier rows of the two requantizations
    (shifts ``maps_shift``, ``out_shift``); ``basis`` int8 ``[r, k, k]``; ``coef_mode``: ``dense`` or
    ``block`` (the device's block mode).
    """

    coefficients: np.ndarray
    maps_params: np.ndarray
    maps_shift: int
    basis: np.ndarray
    out_params: np.ndarray
    out_shift: int
    coef_mode: CoefMode
    basis_first: bool
    relu: bool


@dataclass(frozen=True)
class _Chunk:
    """The step operands of one chunk of output channels: its coefficients as loaded (block data or the
    dense matrix), block metadata and parameter words."""

    start: int
    outputs: int
    weight: np.ndarray  # int8, as placed in WGT
    meta: bytes  # block metadata (empty for dense coefficients)
    params: np.ndarray  # int32 [maps bias, maps multiplier, output bias, output multiplier]
    pixel_cycles: int  # PE cycles per pixel of its GEMM (for the estimate)


@dataclass(frozen=True)
class _Plan:
    chunks: tuple[_Chunk, ...]
    band_rows: int  # output rows per band
    inp_halves: int
    acc_halves: int
    resident: bool  # every chunk's coefficients stay in WGT/META once loaded
    weight_halves: int  # WGT/META halves when coefficients are loaded per step (1 when resident)
    cycles: float  # the estimate the plan was chosen by


def fused_channels(channels: int, device: Device) -> int:
    """The input channels as the fused engine reads them: padded to whole reduction chunks."""
    lanes = device.pe_array.reduction_lanes
    return -(-channels // lanes) * lanes


def _band(g: BasisGeometry, y0: int, y1: int) -> tuple[int, int, int, int]:
    """``(first image row, image rows, pad_top, pad_bottom)`` of the input band under output rows ``[y0, y1)``."""
    top, bottom = y0 * g.stride - g.padding, (y1 - 1) * g.stride + g.kernel - 1 - g.padding
    first, last = max(0, top), min(g.height - 1, bottom)
    return first, last - first + 1, first - top, bottom - last


def _chunks(
    g: BasisGeometry, device: Device, ops: FusedOperands, outputs: int
) -> tuple[_Chunk, ...] | None:
    """The chunks of ``outputs`` output channels (None when block coefficients do not tile them)."""
    chunks = []
    lanes, out_lanes = device.pe_array.reduction_lanes, device.pe_array.output_lanes
    for start in range(0, g.channels, outputs):
        n = min(outputs, g.channels - start)
        if ops.basis_first:  # the chunk's output columns, every map
            weight, maps = (
                ops.coefficients[:, start : start + n],
                np.arange(ops.coefficients.shape[0]),
            )
        else:  # each basis kernel's maps of the chunk's channels, reordered to j * n + o
            maps = (np.arange(g.rank)[:, None] * g.channels + start + np.arange(n)).ravel()
            weight = ops.coefficients[:, maps]
        params = np.concatenate(
            [
                ops.maps_params[0, maps],
                ops.maps_params[1, maps],
                ops.out_params[0, start : start + n],
                ops.out_params[1, start : start + n],
            ]
        ).astype(np.int32)
        if ops.coef_mode == "block":
            mode = device.modes.block
            if weight.shape[0] % mode.block_rows or weight.shape[1] % mode.block_cols:
                return None
            blocks, meta = pack_blocks(weight, mode.block_rows, mode.block_cols, mode.index_bits)
            kb, nb = np.nonzero(
                nonzero_blocks(block_grid(weight, mode.block_rows, mode.block_cols))
            )
            pixel_cycles = block_chunks(device, kb, nb * mode.block_cols // out_lanes, len(weight))
            chunks.append(_Chunk(start, n, blocks, meta, params, pixel_cycles))
        else:
            pixel_cycles = -(-weight.shape[0] // lanes) * -(-weight.shape[1] // out_lanes)
            chunks.append(_Chunk(start, n, np.ascontiguousarray(weight), b"", params, pixel_cycles))
    return tuple(chunks)


def _plan(g: BasisGeometry, device: Device, c_pad: int, ops: FusedOperands) -> _Plan:
    """The chunk width and band height that fit the buffers with the fewest estimated cycles (:func:`_estimate`,
    on the device's own timing model). Per chunk width, the tallest band with double-buffered accumulators
    and the tallest with single-buffered ones are tried."""
    bufs, lanes = device.buffers, device.pe_array.output_lanes
    oh, ow = g.out_hw
    basis_bytes, acc_words = g.rank * g.kernel**2, bufs.accumulator_bytes // 4
    best, untiled = None, False
    for outputs in sorted(
        {min(g.channels, m * lanes) for m in range(1, -(-g.channels // lanes) + 1)}, reverse=True
    ):
        probe = _config(g, c_pad, outputs, g.height, 0, 0, ops)
        if (
            probe.line_rows * probe.map_width * probe.maps
            > device.modes.decomposed_conv.maps_buffer_bytes
        ):
            continue
        chunks = _chunks(g, device, ops, outputs)
        if chunks is None:
            untiled = True
            continue
        weights, metas = [c.weight.nbytes for c in chunks], [len(c.meta) for c in chunks]
        resident = (
            sum(weights) + basis_bytes <= bufs.weight_bytes and sum(metas) <= bufs.metadata_bytes
        )
        if not resident and (
            max(weights) + basis_bytes > bufs.weight_bytes or max(metas) > bufs.metadata_bytes
        ):
            continue
        w_halves = (
            1
            if resident
            or 2 * max(weights) + basis_bytes > bufs.weight_bytes
            or 2 * max(metas) > bufs.metadata_bytes
            else 2
        )
        for acc_halves in (2, 1):
            band_rows = min(
                oh, (acc_words // acc_halves - max(c.params.size for c in chunks)) // (ow * outputs)
            )
            if band_rows < 1:
                continue
            bands = [(y0, min(oh, y0 + band_rows)) for y0 in range(0, oh, band_rows)]
            in_rows = max(_band(g, y0, y1)[1] for y0, y1 in bands)
            if in_rows * g.width * c_pad > bufs.input_bytes:
                continue
            inp_halves = 2 if 2 * in_rows * g.width * c_pad <= bufs.input_bytes else 1
            cycles = g.batch * _estimate(
                g, device, c_pad, ops, chunks, bands, inp_halves, acc_halves, resident, w_halves
            )
            if best is None or cycles < best.cycles:
                best = _Plan(chunks, band_rows, inp_halves, acc_halves, resident, w_halves, cycles)
    if best is None and untiled:
        block = device.modes.block
        raise ProgramError(
            f"block coefficients {ops.coefficients.shape[0]}x{ops.coefficients.shape[1]}: no chunk of the {g.channels} output channels is a whole number of {block.block_rows}x{block.block_cols} blocks"
        )
    if best is None:
        raise ProgramError(
            f"a {g.height}x{g.width}x{c_pad} decomposed convolution with rank {g.rank} does not fit {device.name}'s buffers"
        )
    return best


def _estimate(
    g: BasisGeometry,
    device: Device,
    c_pad: int,
    ops: FusedOperands,
    chunks,
    bands,
    inp_halves: int,
    acc_halves: int,
    resident: bool,
    weight_halves: int,
) -> float:
    """Cycles of one image's steps on the device's timing model (:class:`~tvm_sparse.sim.engine.EnginePipeline`)
    with the emitter's token protocol: a step's loads follow the previous step's and wait for the release of
    the step that last used their halves; a single-buffered step waits for the previous step's store."""
    dram, ow = device.dram_bytes_per_cycle, g.out_hw[1]
    lag = min(inp_halves, acc_halves, 2 if resident else weight_halves)
    pipeline = EnginePipeline(device)
    loaded = issued = done = 0.0
    released: list[float] = []
    for y0, y1 in bands:
        _, rows, pad_top, pad_bottom = _band(g, y0, y1)
        for i, c in enumerate(chunks):
            step = len(released)
            nbytes = c.params.nbytes + (rows * g.width * c_pad if i == 0 else 0)
            nbytes += c.weight.nbytes + len(c.meta) if not resident or step < len(chunks) else 0
            loaded = max(loaded, released[step - lag] if step >= lag else 0) + nbytes / dram
            start = max(
                issued,
                loaded,
                done + (y1 - y0) * ow * c.outputs / dram if acc_halves == 1 and step else 0,
            )
            issued, release, done = pipeline.run(
                _config(g, c_pad, c.outputs, rows, pad_top, pad_bottom, ops),
                c.pixel_cycles,
                int(start) + 1,
            )
            released.append(release)
            issued += 2  # the issue latency
    return done + (bands[-1][1] - bands[-1][0]) * ow * chunks[-1].outputs / dram


def _config(
    g: BasisGeometry,
    c_pad: int,
    outputs: int,
    rows: int,
    pad_top: int,
    pad_bottom: int,
    ops: FusedOperands,
    params_addr: int = 0,
) -> EngineConfig:
    """The engine's registers for a step (``params_addr``: where its parameters lie in ``ACC``)."""
    return EngineConfig(
        c_pad,
        outputs,
        rows,
        g.width,
        g.kernel,
        g.rank,
        g.stride,
        g.padding,
        pad_top,
        pad_bottom,
        ops.maps_shift,
        ops.out_shift,
        params_addr,
        ops.basis_first,
    )


def _registers(config: EngineConfig) -> dict:
    """``config`` as :meth:`ProgramBuilder.engine_config`'s arguments (the parameters it latches stay in ACC)."""
    return {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "params"
    }


def emit_fused_layer(
    b: ProgramBuilder,
    device: Device,
    g: BasisGeometry,
    x_addr: int,
    ops: FusedOperands,
    out_addr: int,
) -> None:
    """Emit the layer (module docstring); ``g.channels`` is ``O``, ``x_addr`` holds ``[N, H, W, C_pad]``
    (:func:`fused_channels`). Raises :class:`ProgramError` when no band and chunk fit the buffers."""
    mode = device.modes.decomposed_conv
    if mode is None or not mode.fused:
        raise ProgramError(f"device {device.name} has no fused decomposed-convolution engine")
    _check_engine(device, g)
    c_pad = ops.coefficients.shape[0] // (g.rank if ops.basis_first else 1)
    plan = _plan(g, device, c_pad, ops)
    oh, ow = g.out_hw
    bufs = device.buffers
    basis_bytes = g.rank * g.kernel**2
    basis_addr = b.place(np.ascontiguousarray(ops.basis, np.int8).reshape(g.rank, -1))
    placed = [
        (
            b.place(c.weight),
            b.place(np.frombuffer(c.meta, np.uint8)) if c.meta else 0,
            b.place(c.params),
        )
        for c in plan.chunks
    ]
    # WGT: the basis kernels, then the coefficients (resident: each chunk at its own place; else two halves)
    resident_wgt = basis_bytes + np.cumsum([0] + [c.weight.nbytes for c in plan.chunks])
    resident_meta = np.cumsum([0] + [len(c.meta) for c in plan.chunks])
    w_half, meta_half = (
        (bufs.weight_bytes - basis_bytes) // plan.weight_halves,
        bufs.metadata_bytes // plan.weight_halves,
    )
    inp_half, acc_half = (
        bufs.input_bytes // plan.inp_halves,
        bufs.accumulator_bytes // 4 // plan.acc_halves,
    )
    lag = min(
        plan.inp_halves, plan.acc_halves, 2 if plan.resident else plan.weight_halves
    )  # steps a load runs ahead
    step = band = 0
    for n in range(g.batch):
        for y0 in range(0, oh, plan.band_rows):
            y1 = min(oh, y0 + plan.band_rows)
            first, rows, pad_top, pad_bottom = _band(g, y0, y1)
            inp = (band % plan.inp_halves) * inp_half
            for i, chunk in enumerate(plan.chunks):
                w_addr, m_addr, p_addr = placed[i]
                acc = (step % plan.acc_halves) * acc_half
                params = (
                    acc + acc_half - chunk.params.size
                )  # the half's end: the store of the half's last step reads its start
                loads = []
                if i == 0:
                    loads.append(
                        (
                            Buffer.INP,
                            inp,
                            x_addr + (n * g.height + first) * g.width * c_pad,
                            rows * g.width,
                            c_pad,
                            c_pad,
                            c_pad,
                        )
                    )
                if step == 0:
                    loads.append(
                        (Buffer.WGT, 0, basis_addr, 1, basis_bytes, basis_bytes, basis_bytes)
                    )
                if plan.resident:  # each chunk's coefficients arrive with its first step and stay
                    wgt, meta = int(resident_wgt[i]), int(resident_meta[i])
                else:
                    wgt, meta = (
                        basis_bytes + (step % plan.weight_halves) * w_half,
                        (step % plan.weight_halves) * meta_half,
                    )
                if not plan.resident or step < len(plan.chunks):
                    loads.append(
                        (
                            Buffer.WGT,
                            wgt,
                            w_addr,
                            1,
                            chunk.weight.nbytes,
                            chunk.weight.nbytes,
                            chunk.weight.nbytes,
                        )
                    )
                    if chunk.meta:
                        loads.append(
                            (
                                Buffer.META,
                                meta,
                                m_addr,
                                1,
                                len(chunk.meta),
                                len(chunk.meta),
                                len(chunk.meta),
                            )
                        )
                loads.append(
                    (
                        Buffer.ACC,
                        params,
                        p_addr,
                        1,
                        chunk.params.size,
                        chunk.params.nbytes,
                        chunk.params.size,
                    )
                )
                _emit_loads(b, loads, reuse=step >= lag)
                config = _config(g, c_pad, chunk.outputs, rows, pad_top, pad_bottom, ops, params)
                b.engine_config(**_registers(config), flags=Flag.POP_PREV)
                flags = (
                    Flag.PUSH_PREV
                    | Flag.PUSH_NEXT
                    | (Flag.POP_NEXT if step >= plan.acc_halves else Flag(0))
                )
                b.decomp_conv(
                    acc, inp, wgt, 0, ops.coef_mode, meta_addr=meta, relu=ops.relu, flags=flags
                )
                b.store(
                    acc,
                    out_addr + ((n * oh + y0) * ow) * g.channels + chunk.start,
                    (y1 - y0) * ow,
                    chunk.outputs,
                    dram_stride=g.channels,
                    flags=Flag.POP_PREV | Flag.PUSH_PREV,
                )
                step += 1
            band += 1
