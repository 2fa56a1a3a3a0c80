"""Tuning tasks of the host CPU's kernels (:class:`~tvm_sparse.task.TuningTask`): the block kernel
and the N:M kernel.

These kernels are generated per weight (their loops are specialised to the
sparsity pattern), which MetaSchedule cannot schedule: the design space
samples the generators' parameters (``SampleCategorical``) and annotates
them on the workload's block ``Y``; :meth:`decode` reads them back. A
candidate is the generated kernel on a seeded input with numpy's output as
the reference; it is measured by wall time (:func:`kernel_seconds`), here or
on an RPC server.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import tvm
from tvm import s_tir, te

from ..codegen.layer import ConvGeometry
from ..formats import BSRMatrix, NMMatrix
from ..task import KNOB, TASK_ATTR, WrongResult, density_bucket, read_knobs
from .bsr_matmul import BSRKernelArgs, BSRKernelParams, Im2Col, bsr_matmul_kernel
from .nm_matmul import ROWS_PER_TILE, NMKernelArgs, nm_matmul_kernel, padded_reduction
from .rows import rows_per_tile_error

ROWS_PER_TILE_CHOICES = (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32)


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


#: Weights larger than this (bytes) outgrow a last-level cache (32 MB per Zen 3 CCD) and stream from memory.
STREAMED_WEIGHT_BYTES = 32 << 20


@dataclass(frozen=True, eq=False)
class BlockMatmulTask:
    """The block kernel (block-sparse, or dense panels; on im2col rows for a convolution) as a
    :class:`~tvm_sparse.task.TuningTask` of :class:`~.bsr_matmul.BSRKernelParams`."""

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
        knobs = read_knobs(sch, "Y")
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

    def check(self, params: BSRKernelParams) -> str | None:
        """Why the kernel cannot be generated with ``params`` (None if it can): a row tile has 1 to
        32 rows (:func:`~.rows.rows_per_tile_error`). The flags are valid in any combination (with
        ``pack_in_tile``, ``weight_major`` is moot, not wrong), and a tile taller than the kernel's
        rows is clamped to them."""
        return rows_per_tile_error(params.rows_per_tile)

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
    """The N:M kernel as a :class:`~tvm_sparse.task.TuningTask` of its rows per tile (``int``)."""

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
        return read_knobs(sch, "Y")["rows_per_tile"]

    def check(self, rows_per_tile: int) -> str | None:
        """Why the kernel cannot be generated with ``rows_per_tile`` (None if it can): a row tile
        has 1 to 32 rows (:func:`~.rows.rows_per_tile_error`; the space samples up to 16, a record
        may hold more)."""
        return rows_per_tile_error(rows_per_tile)

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
