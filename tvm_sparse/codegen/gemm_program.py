"""The instruction stream of one quantized GEMM layer, compiled through TVM's tensorization.

``Y[M, N] = requant(X[M, K] @ W[K, N] + bias)`` (optionally ReLU), int8 in
and out, with the weight in one of the device's modes:

1. the layer is written in TIR and scheduled for a :class:`Tiling`
   (:func:`~.tir_layer.schedule_layer`), every tile operation tensorized with
   the device's intrinsics;
2. :func:`~.lowering.tile_operations` runs the tensorized loop nest and lists
   the device operations in order;
3. :class:`ProgramEmitter` turns them into instructions: buffer halves
   alternate (double buffering), tokens between the queues say when a half
   is free, each weight tile is encoded in the layer's mode (dense, N:M, block)
   and placed in DRAM (and, on request, each input tile run-length coded).

The layer's dimensions must be multiples of the tile (:func:`padded_shape`);
callers pad with zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..hw.device import Device
from ..hw.encoding import (
    block_grid,
    code_values,
    nonzero_blocks,
    pack_blocks,
    pack_nm,
    weight_table,
)
from ..hw.isa import AluOp, Buffer, Flag, GemmMode, Opcode, ProgramError
from .builder import ProgramBuilder
from .intrinsics import EPILOGUE, FILL, GEMM_OPS, LOAD_INP, LOAD_WGT
from .lowering import TileOp, tile_operations
from .tir_layer import schedule_layer

MODES: dict[GemmMode, Opcode] = {
    "dense": Opcode.GEMM,
    "nm": Opcode.GEMM_NM,
    "block": Opcode.GEMM_BLOCK,
}
GEMM_MODE_OF = {op: mode for mode, op in GEMM_OPS.items()}
#: K and N are padded to a multiple of this (every device mode's granularity; K of a block-mode layer also
#: to a multiple of the block rows: :func:`reduction_granule`).
GRANULE = 16
#: Row tiles have at least two rows: schedules drop unit loops, and the tensorized GEMM needs its row loop
#: (a one-row layer runs as two, the second all zeros).
MIN_TILE_ROWS = 2


@dataclass(frozen=True)
class Tiling:
    rows: int = 64  # M per tile
    reduction: int = 256  # K per tile
    cols: int = 64  # N per tile
    double_buffer: bool = True
    rows_outer: bool = (
        False  # row tiles in the outer loop (inputs stay resident) or column tiles (weights do)
    )

    def fitted(self, m: int, k: int, n: int, granule: int = GRANULE) -> Tiling:
        """The tile for an ``m x k x n`` layer (``k`` a multiple of ``granule``, ``n`` of ``GRANULE``):
        ``reduction``/``cols`` the largest such divisors of ``k``/``n`` within the limits (at least one
        granule), ``rows`` balanced so that row tiles waste the fewest padding rows."""

        def divisor(size: int, limit: int, step: int) -> int:
            best = step
            for t in range(step, min(size, limit) + 1, step):
                if size % t == 0:
                    best = t
            return best

        rows = max(MIN_TILE_ROWS, -(-m // -(-m // self.rows)))
        return Tiling(
            rows,
            divisor(k, self.reduction, granule),
            divisor(n, self.cols, GRANULE),
            self.double_buffer,
            self.rows_outer,
        )


DEFAULT_TILING = Tiling()


def tile_fits(device: Device, tile: Tiling, n: int) -> str | None:
    """Why ``tile`` does not fit the device's buffers for a layer with ``n`` outputs (None if it fits): the
    operand tiles in one buffer half each, the accumulators of a tile plus the layer's bias and multiplier
    (``2 * n`` words) in the accumulator buffer."""
    halves = 2 if tile.double_buffer else 1
    bufs = device.buffers
    acc_half = (bufs.accumulator_bytes // 4 - 2 * n) // halves
    tm, tk, tn = tile.rows, tile.reduction, tile.cols
    if (
        tm * tk > bufs.input_bytes // halves
        or tk * tn > bufs.weight_bytes // halves
        or not 0 < tm * tn <= acc_half
    ):
        return f"a {tm}x{tk}x{tn} tile does not fit {device.name}'s buffers ({'double' if halves == 2 else 'single'} buffered)"
    return None


def reduction_granule(device: Device, mode: GemmMode) -> int:
    """What a ``mode`` layer's K and its tiles' reduction are multiples of: ``GRANULE``, and in block mode
    the block rows too (9 for whole 3x3 kernels: 144)."""
    block = device.modes.block
    return math.lcm(GRANULE, block.block_rows) if mode == "block" and block is not None else GRANULE


def padded_shape(
    m: int, k: int, n: int, tiling: Tiling, granule: int = GRANULE
) -> tuple[int, int, int]:
    """``(M, K, N)`` rounded up so that ``tiling.fitted`` tiles divide them (K to a multiple of ``granule``)."""
    k_pad, n_pad = -(-k // granule) * granule, -(-n // GRANULE) * GRANULE
    tile = tiling.fitted(m, k_pad, n_pad, granule)
    return -(-m // tile.rows) * tile.rows, k_pad, n_pad


def _pack(weight: np.ndarray, mode: GemmMode, device: Device) -> tuple[np.ndarray, bytes]:
    if mode == "dense":
        return weight, b""
    if mode == "nm":
        if device.modes.nm is None:
            raise ProgramError(f"device {device.name} has no N:M mode")
        return pack_nm(weight, device.modes.nm.n, device.modes.nm.m)
    if mode != "block":
        raise ProgramError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    if device.modes.block is None:
        raise ProgramError(f"device {device.name} has no block-sparse mode")
    block = device.modes.block
    blocks, meta = pack_blocks(weight, block.block_rows, block.block_cols, block.index_bits)
    return blocks.reshape(len(blocks), blocks.shape[1] * blocks.shape[2]), meta


@dataclass(frozen=True)
class _Load:
    """One DMA of a GEMM step: ``rows x cols`` elements from DRAM (``stride`` bytes apart), a coded weight tile,
    or a run-length coded input tile (``runs``: its runs' DRAM address and entry count; ``dram`` its values')."""

    buf: Buffer
    dram: int
    rows: int
    cols: int
    stride: int
    coded: bool = False
    runs: tuple[int, int] | None = None


def sharing_table(weight: np.ndarray, mode: GemmMode, device: Device) -> np.ndarray | None:
    """The shared-weight table of the values a ``mode`` layer stores (all of a dense weight, the stored blocks'
    values, the kept N:M values), or None when the device has no weight sharing or they do not fit its table."""
    sharing = device.modes.weight_sharing
    if sharing is None:
        return None
    if (
        mode == "block"
    ):  # the stored blocks' values, without pack_blocks' per-tile limit on the block count
        block = device.modes.block
        grid = block_grid(weight, block.block_rows, block.block_cols)
        present = nonzero_blocks(grid)
        values = grid[present].ravel()
        if present.size > 1 << block.index_bits:  # a tile's gap may need bridging zero blocks
            values = np.append(values, np.int8(0))
    else:
        values = _pack(weight, mode, device)[0]
    return weight_table(values, sharing.index_bits)


class ProgramEmitter:
    """Instructions for a layer's tile operations: buffer halves, dependency tokens, weight tile encodings."""

    def __init__(
        self,
        b: ProgramBuilder,
        device: Device,
        tile: Tiling,
        x_addr: int,
        weight: np.ndarray,
        mode: GemmMode,
        out_addr: int,
        params_addr: int,
        relu: bool,
        shift: int,
        table: np.ndarray | None = None,
        activations: np.ndarray | None = None,
    ):
        self.b, self.device, self.mode, self.relu, self.shift = b, device, mode, relu, shift
        if activations is not None and device.modes.activation_compression is None:
            raise ProgramError(f"device {device.name} has no activation compression")
        self.activations, self.inp_tiles = (
            activations,
            {},
        )  # (m0, k0) -> a coded input tile's (values, runs, entries)
        self.run_bits = (
            device.modes.activation_compression.run_bits if activations is not None else 0
        )
        self.table, self.table_addr = table, b.place(table) if table is not None else 0
        self.index_bits = device.modes.weight_sharing.index_bits if table is not None else 0
        self.k, self.n = weight.shape
        self.x_addr, self.out_addr, self.params_addr = x_addr, out_addr, params_addr
        self.halves = 2 if tile.double_buffer else 1
        bufs = device.buffers
        self.inp_half = bufs.input_bytes // self.halves
        self.wgt_half = bufs.weight_bytes // self.halves
        self.meta_half = bufs.metadata_bytes // self.halves
        self.acc_params = bufs.accumulator_bytes // 4 - 2 * self.n
        self.acc_half = self.acc_params // self.halves
        problem = tile_fits(device, tile, self.n)
        if problem:
            raise ProgramError(problem)
        self.weight = weight
        self.tiles: dict = {}  # (k0, n0) -> (dram addr, rows, cols, meta addr, meta bytes)
        self.pending: list[_Load] = []  # loads of the next GEMM
        self.resident: dict = {}  # (buffer, half) -> the DRAM tile it holds
        self.step = self.out_tile = 0
        self.acc_of: dict = {}  # (m0, n0) -> ACC address of its accumulators
        self.fresh: set = set()  # accumulator tiles whose next GEMM overwrites

    def _weight_tile(self, k0: int, n0: int, rows: int, cols: int):
        if (k0, n0) not in self.tiles:
            values, meta = _pack(
                self.weight[k0 : k0 + rows, n0 : n0 + cols], self.mode, self.device
            )
            if values.size > self.wgt_half or len(meta) > self.meta_half:
                raise ProgramError(
                    f"weight tile at ({k0}, {n0}) does not fit {self.device.name}'s weight/metadata buffer"
                )
            stored = (
                values
                if self.table is None
                else np.frombuffer(code_values(values, self.table, self.index_bits), np.uint8)
            )
            addr = self.b.place(stored) if values.size else 0
            meta_addr = self.b.place(np.frombuffer(meta, np.uint8)) if meta else 0
            self.tiles[k0, n0] = (
                addr,
                values.shape[0],
                values.shape[1] if values.ndim == 2 else 0,
                meta_addr,
                len(meta),
            )
        return self.tiles[k0, n0]

    def emit(self, op: TileOp) -> None:
        if op.op in GEMM_MODE_OF:
            if GEMM_MODE_OF[op.op] != self.mode:
                raise ProgramError(
                    f"a {GEMM_MODE_OF[op.op]} GEMM tile in a layer encoded {self.mode}"
                )
            return self._gemm(op)
        emitters = {
            FILL: self._acc_reset,
            LOAD_INP: self._dma_load_inp,
            LOAD_WGT: self._dma_load_wgt,
            EPILOGUE: self._requant_store,
        }
        if op.op not in emitters:
            raise ProgramError(f"no instructions for tile operation {op.op}")
        emitters[op.op](op)

    def _acc_reset(self, op: TileOp) -> None:
        self.acc_of[op.origin(0)] = (self.out_tile % self.halves) * self.acc_half
        self.fresh.add(op.origin(0))

    def _dma_load_inp(self, op: TileOp) -> None:
        (m0, k0), (rows, cols) = op.origin(0), op.shape(0)
        if self.activations is None:
            self.pending.append(
                _Load(Buffer.INP, self.x_addr + m0 * self.k + k0, rows, cols, self.k)
            )
            return
        if (m0, k0) not in self.inp_tiles:
            self.inp_tiles[m0, k0] = self.b.place_runs(
                self.activations[m0 : m0 + rows, k0 : k0 + cols], self.run_bits
            )
        values, runs, entries = self.inp_tiles[m0, k0]
        self.pending.append(_Load(Buffer.INP, values, rows, cols, cols, runs=(runs, entries)))

    def _dma_load_wgt(self, op: TileOp) -> None:
        (k0, n0), (rows, cols) = op.origin(0), op.shape(0)
        addr, w_rows, w_cols, meta_addr, meta_len = self._weight_tile(k0, n0, rows, cols)
        if w_rows:
            self.pending.append(
                _Load(Buffer.WGT, addr, w_rows, w_cols, w_cols, coded=self.table is not None)
            )
        if meta_len:
            self.pending.append(_Load(Buffer.META, meta_addr, 1, meta_len, meta_len))

    def _gemm(self, op: TileOp) -> None:
        (m0, _), (_, n0) = op.origin(0), op.origin(1)
        (rows, red), (_, cols) = op.shape(0), op.shape(1)
        half = self.step % self.halves
        sram = {
            Buffer.INP: half * self.inp_half,
            Buffer.WGT: half * self.wgt_half,
            Buffer.META: half * self.meta_half,
            Buffer.ACC: self.acc_params,
            Buffer.TABLE: 0,
        }
        # a tile still in its half from an earlier step is not reloaded
        loads = [load for load in self.pending if self.resident.get((load.buf, half)) != load]
        if not loads:  # the GEMM waits on a load's token: reload the input tile to send it
            loads = self.pending[:1]
        for load in loads:
            self.resident[load.buf, half] = load
        if self.step == 0:
            loads.append(_Load(Buffer.ACC, self.params_addr, 2, self.n, 4 * self.n))
            if self.table is not None:  # before the first coded weight tile
                loads.insert(
                    0, _Load(Buffer.TABLE, self.table_addr, 1, self.table.size, self.table.size)
                )
        for i, load in enumerate(loads):
            flags = (Flag.POP_NEXT if i == 0 and self.step >= self.halves else Flag(0)) | (
                Flag.PUSH_NEXT if i == len(loads) - 1 else Flag(0)
            )
            if load.coded:
                self.b.load_coded(
                    sram[load.buf], load.dram, load.rows, load.cols, self.index_bits, flags=flags
                )
            elif load.runs:
                self.b.load_rle(
                    sram[load.buf],
                    load.dram,
                    *load.runs,
                    load.rows,
                    load.cols,
                    self.run_bits,
                    flags=flags,
                )
            else:
                self.b.load(
                    load.buf,
                    sram[load.buf],
                    load.dram,
                    load.rows,
                    load.cols,
                    dram_stride=load.stride,
                    flags=flags,
                )
        self.pending = []
        acc = self.acc_of[m0, n0]
        first = (m0, n0) in self.fresh
        flags = (
            Flag.POP_PREV
            | Flag.PUSH_PREV
            | (Flag.POP_NEXT if first and self.out_tile >= self.halves else Flag(0))
        )
        self.b.gemm(
            MODES[self.mode],
            acc,
            sram[Buffer.INP],
            sram[Buffer.WGT],
            rows,
            red,
            cols,
            meta_addr=sram[Buffer.META],
            accumulate=not first,
            flags=flags,
        )
        self.fresh.discard((m0, n0))
        self.step += 1

    def _requant_store(self, op: TileOp) -> None:
        (m0, n0), (rows, cols) = op.origin(0), op.shape(0)
        acc = self.acc_of.pop((m0, n0))
        relu = Flag.RELU if self.relu else Flag(0)
        self.b.alu(
            AluOp.BIAS_REQUANT,
            acc,
            rows,
            cols,
            operand=self.acc_params + self.n + n0,
            row_operand=True,
            shift=self.shift,
            addend=self.acc_params + n0,
            flags=Flag.PUSH_NEXT | relu,
        )
        self.b.store(
            acc,
            self.out_addr + m0 * self.n + n0,
            rows,
            cols,
            dram_stride=self.n,
            flags=Flag.POP_PREV | Flag.PUSH_PREV,
        )
        self.out_tile += 1


def emit_gemm_layer(
    b: ProgramBuilder,
    device: Device,
    x_addr: int,
    weight: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: int,
    out_addr: int,
    rows: int,
    mode: GemmMode = "dense",
    relu: bool = False,
    tiling: Tiling = DEFAULT_TILING,
    table: np.ndarray | None = None,
    activations: np.ndarray | None = None,
) -> None:
    """Emit the layer on int8 ``X[rows, K]`` at ``x_addr`` writing int8 ``Y[rows, N]`` at ``out_addr``.

    ``weight`` is ``[K, N]``; ``rows``, ``K`` and ``N`` must be the :func:`padded_shape` of the layer.
    With a ``table`` (:func:`sharing_table`), weight tiles travel as indices into it. With ``activations``
    (``X`` itself, on a device with activation compression), each input tile is placed run-length coded
    (SCNN) and loaded with ``LOAD_RLE``, and ``x_addr`` is not read.
    """
    k, n = weight.shape
    granule = reduction_granule(device, mode)
    tile = tiling.fitted(rows, k, n, granule)
    if (rows, k, n) != padded_shape(rows, k, n, tiling, granule):
        raise ProgramError(
            f"a {rows}x{k}x{n} layer is not padded for {tile.rows}x{tile.reduction}x{tile.cols} tiles"
        )
    params = b.place(np.stack([bias, multiplier]).astype(np.int32))
    emitter = ProgramEmitter(
        b, device, tile, x_addr, weight, mode, out_addr, params, relu, shift, table, activations
    )
    for op in tile_operations(
        schedule_layer(
            rows, k, n, tile.rows, tile.reduction, tile.cols, shift, relu, mode, tile.rows_outer
        )
    ):
        emitter.emit(op)


def gemm_program(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: int,
    device: Device,
    mode: GemmMode = "dense",
    relu: bool = False,
    tiling: Tiling = DEFAULT_TILING,
    name: str = "gemm",
    table: np.ndarray | None = None,
    compress_activations: bool = False,
):
    """A whole program for one layer, padding it as needed: returns ``(program, out_addr)``.

    The int8 result is the leading ``[M, N]`` of a ``[M', N']`` array at ``out_addr``
    (``N' = N`` when ``N`` is a multiple of 16). With ``compress_activations`` ``x`` travels run-length
    coded (the device needs ``sparse_modes.activation_compression``).
    """
    (m, k), n = x.shape, weight.shape[1]
    mp, kp, np_ = padded_shape(m, k, n, tiling, reduction_granule(device, mode))
    b = ProgramBuilder(device.name)
    b.layer(name)
    xp = np.zeros((mp, kp), np.int8)
    xp[:m, :k] = x
    wp = np.zeros((kp, np_), np.int8)
    wp[:k, :n] = weight
    bias_p, mult_p = np.zeros(np_, np.int64), np.zeros(np_, np.int64)
    bias_p[:n], mult_p[:n] = bias, multiplier
    x_addr = 0 if compress_activations else b.place(xp)
    out_addr = b.reserve(mp * np_)
    emit_gemm_layer(
        b,
        device,
        x_addr,
        wp,
        bias_p,
        mult_p,
        shift,
        out_addr,
        mp,
        mode,
        relu,
        tiling,
        table,
        xp if compress_activations else None,
    )
    return b.build(), out_addr


#: Tilings the compiler chooses from; the tuner explores more.
CANDIDATE_TILINGS = [
    Tiling(r, k, c) for r in (16, 32, 64, 128) for k in (128, 256, 512) for c in (32, 64, 128, 256)
]


def estimate_cost(
    m: int,
    k: int,
    n: int,
    weight_bytes: int,
    tiling: Tiling,
    device: Device,
    meta_bytes: int = 0,
    granule: int = GRANULE,
) -> tuple[float, int] | None:
    """``(cycles, DRAM bytes)`` of a layer with ``tiling`` (None if the tile does not fit). Cycles are a
    roofline estimate: the larger of the PE cycles on the padded layer (``weight_bytes``: the stored values)
    and the DMA cycles; bytes count the activations re-read per column tile and the weight and its
    ``meta_bytes`` per row tile (they also cost energy). ``granule``: :func:`reduction_granule`."""
    mp, kp, np_ = padded_shape(m, k, n, tiling, granule)
    tile = tiling.fitted(m, kp, np_, granule)
    if tile_fits(device, tile, np_):
        return None
    density = weight_bytes / max(1, k * n)
    compute = mp * kp * np_ * density / device.pe_array.macs_per_cycle
    traffic = (
        mp * kp * (np_ // tile.cols) + (weight_bytes + meta_bytes) * (mp // tile.rows) + mp * np_
    )
    return max(compute, traffic / device.dram_bytes_per_cycle), traffic


def choose_tiling(
    m: int,
    k: int,
    n: int,
    weight_bytes: int,
    device: Device,
    meta_bytes: int = 0,
    granule: int = GRANULE,
) -> Tiling:
    """The candidate tiling with the fewest estimated cycles, then the least DRAM traffic (arguments as
    :func:`estimate_cost`'s)."""
    scored = [
        (estimate_cost(m, k, n, weight_bytes, t, device, meta_bytes, granule), i)
        for i, t in enumerate(CANDIDATE_TILINGS)
    ]
    scored = [(c, i) for c, i in scored if c is not None]
    if not scored:
        raise ProgramError(f"no tiling of a {m}x{k}x{n} layer fits {device.name}'s buffers")
    return CANDIDATE_TILINGS[min(scored)[1]]
