"""The tuning task of a GEMM layer on ``sparse-accel`` (:class:`~tvm_sparse.task.TuningTask`).

The layer is the TIR function of :mod:`.tir_layer`; the design space tiles it
with sampled tile sizes (``sample_perfect_tile``), a loop order and double
buffering, and :meth:`DeviceGemmTask.check` rejects tilings that do not fit
the device's buffers before they are measured. A candidate is the layer's
instruction stream (:func:`.gemm_program.gemm_program`) on a seeded int8
input with the numpy integer model's output as the reference; it is measured
by the simulator's cycles over the device clock, here or on an RPC server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import tvm
from tvm import s_tir

from ..hw.device import Device
from ..hw.encoding import block_stream_bytes
from ..hw.integer import requantize
from ..hw.isa import GemmMode, Program
from ..sim import run
from ..task import KNOB, TASK_ATTR, WrongResult, density_bucket, read_knobs
from .gemm_program import (
    MIN_TILE_ROWS,
    Tiling,
    choose_tiling,
    estimate_cost,
    gemm_program,
    reduction_granule,
    tile_fits,
)
from .tir_layer import layer_func, tile_layer, tile_shape


@dataclass(eq=False)
class ProgramCandidate:
    """A device layer to measure: ``program`` run on the simulator of ``device`` must leave ``expected``
    (int8, bit for bit) at ``out_addr``."""

    program: Program
    device: Device
    out_addr: int
    expected: np.ndarray

    def check(self, output: np.ndarray) -> None:
        if not np.array_equal(output, self.expected):
            raise WrongResult("device output differs from the numpy integer model")

    def seconds(self, cycles: int) -> float:
        return cycles / (self.device.clock_mhz * 1e6)

    def measure(self, target=None) -> float:
        """Simulate on this host, check the output bit for bit, return the simulated seconds."""
        result = run(self.program, self.device)
        self.check(result.read(self.out_addr, self.expected.shape, np.int8))
        return self.seconds(result.report.total.cycles)


@dataclass(frozen=True, eq=False)
class DeviceGemmTask:
    """One quantized GEMM layer on ``sparse-accel`` (``weight`` is int8 ``[K, N]``, padded to the
    granule) as a :class:`~tvm_sparse.task.TuningTask` of :class:`~.gemm_program.Tiling`."""

    m: int
    weight: np.ndarray
    mode: GemmMode
    device: Device
    bias: np.ndarray = field(repr=False, default=None)
    multiplier: np.ndarray = field(repr=False, default=None)
    shift: int = 16
    relu: bool = False

    @cached_property
    def stored_bytes(self) -> int:
        return int(np.count_nonzero(self.weight)) if self.mode != "dense" else self.weight.size

    @cached_property
    def encoded_bytes(self) -> tuple[int, int]:
        """``(value bytes, metadata bytes)`` the weight's tiles move: block mode stores whole blocks (and
        bridging zero blocks) with ``index_bits`` per block, N:M its metadata bits per kept value."""
        k, n = self.weight.shape
        if self.mode == "block":
            block = self.device.modes.block
            padded = np.pad(self.weight, ((0, -k % block.block_rows), (0, -n % block.block_cols)))
            return block_stream_bytes(padded, block.block_rows, block.block_cols, block.index_bits)
        if self.mode == "nm":
            nm = self.device.modes.nm
            kept = k * n // nm.m * nm.n
            return self.stored_bytes, -(-kept * nm.metadata_bits_per_value // 8)
        return self.stored_bytes, 0

    @property
    def granule(self) -> int:
        """What K and the tiles' reduction are multiples of (:func:`~tvm_sparse.codegen.gemm_program.reduction_granule`)."""
        return reduction_granule(self.device, self.mode)

    @cached_property
    def key(self) -> dict:
        k, n = self.weight.shape
        return {
            "kernel": "device_gemm",
            "device": self.device.name,
            "m": self.rows,
            "k": k,
            "n": n,
            "mode": self.mode,
            "density": density_bucket(self.stored_bytes / self.weight.size),
        }

    @property
    def rows(self) -> int:
        return max(self.m, MIN_TILE_ROWS)

    def describe(self) -> str:
        return f"{self.device.name} {self.mode} gemm {self.rows}x{self.key['k']}x{self.key['n']} d{self.key['density']:.2f}"

    def workload(self) -> tvm.tirx.PrimFunc:
        k, n = self.weight.shape
        return layer_func(self.rows, k, n, 16, False).with_attr(
            TASK_ATTR, json.dumps(self.key, sort_keys=True)
        )

    def design_space(self, sch: s_tir.Schedule) -> list[s_tir.Schedule]:
        """Tile sizes (divisors of each dimension), the loop order and double buffering."""
        spaces = []
        for rows_outer in (False, True):
            s = sch.copy()
            gemm = s.get_sblock("gemm")
            i, j, r = s.get_loops(gemm)
            rows = s.sample_perfect_tile(i, n=2, max_innermost_factor=256)
            cols = s.sample_perfect_tile(j, n=2, max_innermost_factor=1024)
            reduction = s.sample_perfect_tile(r, n=2, max_innermost_factor=4096)
            s.annotate(gemm, KNOB + "double_buffer", s.sample_categorical([0, 1], [0.5, 0.5]))
            s.annotate(gemm, KNOB + "rows_outer", int(rows_outer))
            tile_layer(s, list(rows), list(reduction), list(cols), rows_outer)
            spaces.append(s)
        return spaces

    def decode(self, sch: s_tir.Schedule) -> Tiling:
        tm, tk, tn = tile_shape(sch)
        knobs = read_knobs(sch, "gemm_update")
        return Tiling(tm, tk, tn, bool(knobs["double_buffer"]), bool(knobs["rows_outer"]))

    def features(self, tiling: Tiling) -> list[float]:
        """Scale-free features, so that a cost model trained on other layers transfers: the knobs, the tile as
        fractions of the layer, buffer occupancy, and the roofline estimate against the layer's ideal (PE
        cycles on the stored weights, DRAM bytes moving each operand once) and the tile count per ideal cycle."""
        k, n = self.weight.shape
        tile = tiling.fitted(self.rows, k, n, self.granule)
        halves = 2 if tile.double_buffer else 1
        bufs = self.device.buffers
        values, meta = self.encoded_bytes
        estimate = estimate_cost(self.rows, k, n, values, tile, self.device, meta, self.granule)
        cycles, traffic = estimate if estimate is not None else (float("inf"), float("inf"))
        ideal_cycles = max(1.0, self.rows * self.stored_bytes / self.device.pe_array.macs_per_cycle)
        ideal_traffic = self.rows * k + self.stored_bytes + self.rows * n
        tiles = -(-self.rows // tile.rows) * -(-k // tile.reduction) * -(-n // tile.cols)
        return [
            tile.double_buffer,
            tile.rows_outer,
            tile.rows / self.rows,
            tile.reduction / k,
            tile.cols / n,
            halves * tile.rows * tile.reduction / bufs.input_bytes,
            halves * tile.reduction * tile.cols / bufs.weight_bytes,
            halves * tile.rows * tile.cols * 4 / bufs.accumulator_bytes,
            ideal_cycles / cycles,
            ideal_traffic / traffic,
            tiles / ideal_cycles,
        ]

    def check(self, tiling: Tiling) -> str | None:
        """Why the device cannot run ``tiling`` (None if it can): rejected before measurement."""
        if tiling.rows < MIN_TILE_ROWS or tiling.reduction % self.granule or tiling.cols % 16:
            return (
                f"a {tiling.rows}x{tiling.reduction}x{tiling.cols} tile is off the device's granule"
            )
        return tile_fits(self.device, tiling, self.weight.shape[1])

    def default(self) -> Tiling:
        k, n = self.weight.shape
        values, meta = self.encoded_bytes
        return choose_tiling(self.m, k, n, values, self.device, meta, self.granule)

    def trace(self, tiling: Tiling) -> s_tir.Trace | None:
        """The design-space trace of ``tiling`` (None when its tiles do not divide the layer)."""
        k, n = self.weight.shape
        tile = tiling.fitted(self.rows, k, n, self.granule)
        if self.rows % tile.rows or k % tile.reduction or n % tile.cols:
            return None
        space = self.design_space(s_tir.Schedule(self.workload()))[int(tile.rows_outer)]
        tiles, flags = (
            [
                [self.rows // tile.rows, tile.rows],
                [n // tile.cols, tile.cols],
                [k // tile.reduction, tile.reduction],
            ],
            [int(tile.double_buffer)],
        )
        trace = space.trace
        for inst in trace.insts:
            if inst.kind.name == "SamplePerfectTile":
                trace = trace.with_decision(inst, tiles.pop(0), remove_postproc=True)
            elif inst.kind.name == "SampleCategorical":
                trace = trace.with_decision(inst, flags.pop(0), remove_postproc=True)
        sch = s_tir.Schedule(self.workload())
        trace.apply_to_schedule(sch, remove_postproc=True)
        return sch.trace

    def candidate(self, tiling: Tiling) -> ProgramCandidate:
        """The layer's program under ``tiling`` on a seeded random int8 input, with the numpy integer model's output."""
        rng = np.random.default_rng(0)
        k, n = self.weight.shape
        x = rng.integers(-128, 128, size=(self.m, k)).astype(np.int8)
        bias = self.bias if self.bias is not None else rng.integers(-(2**12), 2**12, size=n)
        multiplier = (
            self.multiplier if self.multiplier is not None else rng.integers(1, 2**10, size=n)
        )
        program, out = gemm_program(
            x, self.weight, bias, multiplier, self.shift, self.device, self.mode, self.relu, tiling
        )
        acc = x.astype(np.int64) @ self.weight.astype(np.int64) + bias
        expected = requantize(acc, multiplier, self.shift, self.relu).astype(np.int8)
        return ProgramCandidate(program, self.device, out, expected)

    def measure(self, tiling: Tiling, target=None) -> float:
        """Simulated seconds of the layer (its output checked bit for bit against numpy first)."""
        return self.candidate(tiling).measure()
