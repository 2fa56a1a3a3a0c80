"""Tuning tasks: one per kernel the compiler generates, each with its design space.

A task names what a kernel computes and the structure of its weight (shape,
format, block shape, density bucket), not the weight's values: kernels with
the same key share tuning records. Its *workload* is a small TIR function
that MetaSchedule keys its database by; its *design space* is a MetaSchedule
schedule function over that workload whose sampling decisions are the
kernel's knobs:

* CPU kernels (:class:`BlockMatmulTask`, :class:`NMMatmulTask`) are generated
  per weight (their loops are specialised to the sparsity pattern), so the
  space samples the generator's parameters and annotates them on the
  workload; :meth:`decode` reads them back.
* A device GEMM layer (:class:`DeviceGemmTask`) is the TIR layer of
  :mod:`tvm_sparse.codegen.tir_layer`; the space tiles it with sampled tile
  sizes (``sample_perfect_tile``), a loop order and double buffering.

Each task turns a decision into a *candidate* on its own weight
(:meth:`candidate`: the kernel or device program, a seeded input and the
numpy reference output) that is measured on this host (:meth:`measure`:
wall time of the compiled kernel, or simulated device time) or on an RPC
server (:mod:`tvm_sparse.tune.rpc`). The output is checked against the
reference, and a wrong candidate raises :class:`WrongResult`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import tvm
from tvm import s_tir, te

from ..codegen.gemm_program import (
    MIN_TILE_ROWS,
    Tiling,
    choose_tiling,
    estimate_cost,
    gemm_program,
    reduction_granule,
    tile_fits,
)
from ..codegen.layer import ConvGeometry
from ..codegen.tir_layer import layer_func, tile_layer, tile_shape
from ..errors import TVMSparseError
from ..formats import BSRMatrix, NMMatrix
from ..hw.device import Device
from ..hw.encoding import block_stream_bytes
from ..hw.integer import requantize
from ..hw.isa import Program
from ..kernels import BSRKernelArgs, BSRKernelParams, Im2Col, bsr_matmul_kernel
from ..kernels.nm_matmul import ROWS_PER_TILE, NMKernelArgs, nm_matmul_kernel, padded_reduction

#: Densities are bucketed to this step: kernels whose densities round alike share records.
DENSITY_STEP = 0.05
KNOB = "tvm_sparse.knob."
TASK_ATTR = "tvm_sparse.task"
ROWS_PER_TILE_CHOICES = (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32)


class WrongResult(TVMSparseError):
    """A candidate schedule computed a wrong result; it is discarded, never recorded."""


def density_bucket(density: float) -> float:
    return round(round(density / DENSITY_STEP) * DENSITY_STEP, 2)


def _workload(m: int, k: int, n: int, key: dict, dtype: str = "float32") -> tvm.tirx.PrimFunc:
    """``Y = X @ W.T`` named by ``key``: the database identity of a host kernel task."""
    x = te.placeholder((m, k), dtype, name="X")
    w = te.placeholder((n, k), dtype, name="W")
    r = te.reduce_axis((0, k), name="r")
    y = te.compute((m, n), lambda i, j: te.sum(x[i, r] * w[j, r], axis=r), name="Y")
    return te.create_prim_func([x, w, y]).with_attr(TASK_ATTR, json.dumps(key, sort_keys=True))


def _sample_knobs(sch: s_tir.Schedule, choices: dict) -> s_tir.Schedule:
    """Sample each knob uniformly from its choices and annotate the decision on block ``Y``."""
    block = sch.get_sblock("Y")
    for name, values in choices.items():
        value = sch.sample_categorical(list(values), [1.0 / len(values)] * len(values))
        sch.annotate(block, KNOB + name, value)
    return sch


def _knob_trace(task, knobs) -> s_tir.Trace | None:
    """The trace of ``task``'s design space whose decisions give ``knobs`` (None if none does)."""
    for space in task.design_space(s_tir.Schedule(task.workload())):
        samples = [inst for inst in space.trace.insts if inst.kind.name == "SampleCategorical"]
        for decisions in itertools.product(*(range(len(inst.attrs[0])) for inst in samples)):
            trace = space.trace
            for inst, decision in zip(samples, decisions):
                trace = trace.with_decision(inst, decision, remove_postproc=True)
            sch = s_tir.Schedule(task.workload())
            trace.apply_to_schedule(sch, remove_postproc=True)
            if task.decode(sch) == knobs:
                return sch.trace
    return None


def _knobs(sch: s_tir.Schedule, block: str = "Y") -> dict:
    annotations = sch.get(sch.get_sblock(block)).annotations
    return {
        key[len(KNOB) :]: int(value) for key, value in annotations.items() if key.startswith(KNOB)
    }


def kernel_seconds(lib, dev, args: list[np.ndarray], out_shape) -> tuple[float, np.ndarray]:
    """Run ``lib["main"]`` on ``args`` plus a float32 output of ``out_shape`` on ``dev`` (local or an RPC
    session's): its median time in seconds (5 repeats of at least 40 ms) and its output."""
    tensors = [tvm.runtime.tensor(a, dev) for a in args] + [
        tvm.runtime.tensor(np.zeros(out_shape, "float32"), dev)
    ]
    lib["main"](*tensors)
    output = tensors[-1].numpy()
    timer = lib.time_evaluator("main", dev, number=1, repeat=5, min_repeat_ms=40)
    return float(np.median(timer(*tensors).results)), output


@dataclass(eq=False)
class KernelCandidate:
    """A host kernel to measure: ``func`` run on ``args`` must give ``expected`` (float32, to 1e-4)."""

    func: tvm.tirx.PrimFunc
    args: list[np.ndarray]
    expected: np.ndarray

    def build(self, target: tvm.target.Target) -> tvm.runtime.Module:
        return tvm.tirx.build(tvm.IRModule({"main": self.func}), target=target)

    def check(self, output: np.ndarray) -> None:
        """Raise :class:`WrongResult` unless ``output`` matches the numpy reference."""
        if not np.allclose(output, self.expected, rtol=1e-4, atol=1e-4):
            raise WrongResult(
                f"max |error| {np.abs(output - self.expected).max():.3g} against numpy"
            )

    def measure(self, target: tvm.target.Target) -> float:
        """Compile for ``target``, run on this host, check the output, return the median seconds."""
        seconds, output = kernel_seconds(
            self.build(target), tvm.cpu(), self.args, self.expected.shape
        )
        self.check(output)
        return seconds


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
        from ..sim import run

        result = run(self.program, self.device)
        self.check(result.read(self.out_addr, self.expected.shape, np.int8))
        return self.seconds(result.report.total.cycles)


#: Weights larger than this (bytes) outgrow a last-level cache (32 MB per Zen 3 CCD) and stream from memory.
STREAMED_WEIGHT_BYTES = 32 << 20


@dataclass(frozen=True, eq=False)
class BlockMatmulTask:
    """The block kernel (block-sparse, or dense panels; on im2col rows for a convolution)."""

    m: int
    weight: BSRMatrix
    im2col: Im2Col | None = None
    relu: bool = False

    @cached_property
    def key(self) -> dict:
        n, k = self.weight.shape
        conv = None
        if self.im2col is not None:
            g = self.im2col
            conv = [
                list(g.input_shape),
                list(g.kernel),
                list(g.strides),
                list(g.padding),
                list(g.dilation),
                g.groups,
            ]
        return {
            "kernel": "block_matmul",
            "m": self.m,
            "k": k,
            "n": n,
            "block": list(self.weight.block_shape),
            "density": density_bucket(self.weight.block_density),
            "im2col": conv,
        }

    def describe(self) -> str:
        r, c = self.weight.block_shape
        what = "conv" if self.im2col is not None else "matmul"
        return f"block {what} {self.m}x{self.key['k']}x{self.key['n']} {r}x{c} d{self.key['density']:.2f}"

    def workload(self) -> tvm.tirx.PrimFunc:
        return _workload(self.m, self.key["k"], self.key["n"], self.key)

    def design_space(self, sch: s_tir.Schedule) -> list[s_tir.Schedule]:
        return [
            _sample_knobs(
                sch,
                {
                    "rows_per_tile": ROWS_PER_TILE_CHOICES,
                    "weight_major": (0, 1),
                    "pack_in_tile": (0, 1),
                },
            )
        ]

    def decode(self, sch: s_tir.Schedule) -> BSRKernelParams:
        knobs = _knobs(sch)
        pack_in_tile = bool(
            knobs["pack_in_tile"]
        )  # packing per tile has one walk order: weight_major is moot
        return BSRKernelParams(
            knobs["rows_per_tile"], bool(knobs["weight_major"]) and not pack_in_tile, pack_in_tile
        )

    def default(self) -> BSRKernelParams:
        """:meth:`BSRKernelParams.default`; a matmul weight over :data:`STREAMED_WEIGHT_BYTES` is walked
        block row first (``weight_major``): once from memory, not once per row tile (GPT-2's
        50257x768 tied head at 128 tokens: 254 -> 95 ms; weights that stay in the last-level cache,
        BERT's 9.4 MB FFN, are as fast or faster row tile first)."""
        params = BSRKernelParams.default(self.weight.block_shape, im2col=self.im2col is not None)
        if self.im2col is None and self.weight.nbytes > STREAMED_WEIGHT_BYTES:
            params = replace(params, weight_major=True)
        return params

    def trace(self, params: BSRKernelParams) -> s_tir.Trace | None:
        return _knob_trace(self, params)

    def features(self, params: BSRKernelParams) -> list[float]:
        r, c = self.weight.block_shape
        tiles = -(-self.m // params.rows_per_tile)
        block_rows = len(self.weight.indptr) - 1
        return [
            params.rows_per_tile,
            params.weight_major,
            params.pack_in_tile,
            params.rows_per_tile * -(-r // 16),
            tiles,
            tiles * block_rows,
            self.m % params.rows_per_tile,
            r,
            c,
            self.weight.block_density,
            self.m,
            *self.weight.shape,
        ]

    def kernel(self, params: BSRKernelParams) -> tvm.tirx.PrimFunc:
        return bsr_matmul_kernel(self.m, self.weight, params, im2col=self.im2col, relu=self.relu)

    def candidate(self, params: BSRKernelParams) -> KernelCandidate:
        """The kernel of ``params`` on a seeded random input, with its numpy reference."""
        rng = np.random.default_rng(0)
        n, k = self.weight.shape
        r, c = self.weight.block_shape
        n_pad, k_pad = (len(self.weight.indptr) - 1) * r, -(-k // c) * c
        shape = self.im2col.input_shape if self.im2col is not None else (self.m, k_pad)
        x = rng.standard_normal(shape).astype("float32")
        bias = rng.standard_normal(n_pad).astype("float32")
        dense = np.zeros((n_pad, k_pad), "float32")
        dense[:n, :k] = self.weight.to_dense()
        rows = (
            _im2col_rows(x, self.im2col) if self.im2col is not None else x
        )  # im2col rows have k columns, not k_pad
        expected = _linear_reference(rows, dense[:, : rows.shape[1]], bias, self.relu)
        if self.im2col is not None:
            expected = expected.reshape(self.im2col.input_shape[0], *self.im2col.out_hw, n_pad)
        args = BSRKernelArgs.from_bsr(self.weight)
        return KernelCandidate(
            self.kernel(params), [x, args.data, args.indices, args.indptr, bias], expected
        )

    def measure(self, params: BSRKernelParams, target: tvm.target.Target) -> float:
        return self.candidate(params).measure(target)


def _im2col_rows(x: np.ndarray, g: Im2Col) -> np.ndarray:
    """The block kernel's im2col matrix of NHWC ``x`` in numpy: columns ``(group, kh, kw, c)``, each group's
    patches from the device runtime's :meth:`~tvm_sparse.codegen.layer.ConvGeometry.im2col`."""
    _, h, w, c = x.shape
    (oh, ow), (kh, kw), (sh, sw), (pt, pl), (dh, dw) = (
        g.out_hw,
        g.kernel,
        g.strides,
        g.padding,
        g.dilation,
    )
    bottom, right = (
        max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - h - pt),
        max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - w - pl),
    )
    geometry = ConvGeometry(g.kernel, g.strides, (pt, pl, bottom, right), g.dilation, (oh, ow))
    per_group = c // g.groups
    return np.concatenate(
        [geometry.im2col(x[..., i * per_group : (i + 1) * per_group]) for i in range(g.groups)],
        axis=1,
    )


def _linear_reference(
    rows: np.ndarray, dense: np.ndarray, bias: np.ndarray, relu: bool
) -> np.ndarray:
    """``rows @ dense.T + bias``, clamped at zero with ``relu``: what the host kernels compute."""
    y = rows @ dense.T + bias
    return np.maximum(y, 0) if relu else y


@dataclass(frozen=True, eq=False)
class NMMatmulTask:
    """The N:M kernel."""

    m: int
    weight: NMMatrix
    relu: bool = False

    @cached_property
    def key(self) -> dict:
        n, k = self.weight.shape
        return {
            "kernel": "nm_matmul",
            "m": self.m,
            "k": k,
            "n": n,
            "pattern": [self.weight.n, self.weight.m],
        }

    def describe(self) -> str:
        return f"{self.weight.n}:{self.weight.m} matmul {self.m}x{self.key['k']}x{self.key['n']}"

    def workload(self) -> tvm.tirx.PrimFunc:
        return _workload(self.m, self.key["k"], self.key["n"], self.key)

    def design_space(self, sch: s_tir.Schedule) -> list[s_tir.Schedule]:
        return [
            _sample_knobs(sch, {"rows_per_tile": [v for v in ROWS_PER_TILE_CHOICES if v <= 16]})
        ]

    def decode(self, sch: s_tir.Schedule) -> int:
        return _knobs(sch)["rows_per_tile"]

    def default(self) -> int:
        return ROWS_PER_TILE

    def trace(self, rows_per_tile: int) -> s_tir.Trace | None:
        return _knob_trace(self, rows_per_tile)

    def features(self, rows_per_tile: int) -> list[float]:
        return [
            rows_per_tile,
            -(-self.m // rows_per_tile),
            self.m % rows_per_tile,
            self.weight.n,
            self.weight.m,
            self.m,
            *self.weight.shape,
        ]

    def kernel(self, rows_per_tile: int) -> tvm.tirx.PrimFunc:
        return nm_matmul_kernel(self.m, self.weight, relu=self.relu, rows_per_tile=rows_per_tile)

    def candidate(self, rows_per_tile: int) -> KernelCandidate:
        """The kernel of ``rows_per_tile`` on a seeded random input, with its numpy reference."""
        rng = np.random.default_rng(0)
        n, k = self.weight.shape
        n_pad, k_pad = -(-n // 16) * 16, padded_reduction(k)
        x = rng.standard_normal((self.m, k_pad)).astype("float32")
        bias = rng.standard_normal(n_pad).astype("float32")
        dense = np.zeros((n_pad, k_pad), "float32")
        dense[:n, :k] = self.weight.to_dense()[:, :k]
        expected = _linear_reference(x, dense, bias, self.relu)
        args = NMKernelArgs.from_nm(self.weight)
        return KernelCandidate(
            self.kernel(rows_per_tile), [x, args.positions, args.values, bias], expected
        )

    def measure(self, rows_per_tile: int, target: tvm.target.Target) -> float:
        return self.candidate(rows_per_tile).measure(target)


@dataclass(frozen=True, eq=False)
class DeviceGemmTask:
    """One quantized GEMM layer on ``sparse-accel`` (``weight`` is int8 ``[K, N]``, padded to the granule)."""

    m: int
    weight: np.ndarray
    mode: str
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
        knobs = _knobs(sch, "gemm_update")
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
