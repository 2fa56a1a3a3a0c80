"""The tuning-task protocol: what the tuner and the tuning database ask of every kernel they tune.

A task names what a kernel computes and the structure of its weight (shape,
format, block shape, density bucket), not the weight's values: kernels with
the same key share tuning records. Its *workload* is a small TIR function
that MetaSchedule keys its database by; its *design space* is a MetaSchedule
schedule function over that workload whose sampling decisions are the
kernel's *knobs*. Each task turns knobs into a *candidate* on its own weight
(the kernel or device program, a seeded input and the numpy reference
output) that is measured on this host or on an RPC server
(:mod:`tvm_sparse.tune.rpc`); a wrong output raises :class:`WrongResult`.

The tasks live beside what they tune:

* :class:`~tvm_sparse.kernels.tasks.BlockMatmulTask` and
  :class:`~tvm_sparse.kernels.tasks.NMMatmulTask`: the host CPU's block and
  N:M kernels, generated per weight, whose space samples the generators'
  parameters;
* :class:`~tvm_sparse.codegen.gemm_task.DeviceGemmTask`: a GEMM layer on
  ``sparse-accel``, whose space tiles the TIR layer.

This module holds what they share, below both: the protocol, the candidate
protocol, and the vocabulary of the database's records (:data:`TASK_ATTR`,
:data:`KNOB`, :func:`density_bucket`), which must not change: existing
databases are keyed by it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import tvm
from tvm import s_tir

from .errors import TVMSparseError

#: Densities are bucketed to this step: kernels whose densities round alike share records.
DENSITY_STEP = 0.05
#: Prefix of the block annotations that carry a task's knobs in its design space's schedules.
KNOB = "tvm_sparse.knob."
#: Attribute of a task's workload holding its key (JSON, sorted keys): its identity in the database.
TASK_ATTR = "tvm_sparse.task"

Knobs = TypeVar("Knobs")


class WrongResult(TVMSparseError):
    """A candidate schedule computed a wrong result; it is discarded, never recorded."""


def density_bucket(density: float) -> float:
    """``density`` (a fraction in [0, 1]) rounded to :data:`DENSITY_STEP`, as task keys hold it."""
    return round(round(density / DENSITY_STEP) * DENSITY_STEP, 2)


def read_knobs(sch: s_tir.Schedule, block: str) -> dict[str, int]:
    """The knobs annotated (``KNOB + name``) on ``block`` of ``sch``, by name without the prefix."""
    annotations = sch.get(sch.get_sblock(block)).annotations
    return {
        key[len(KNOB) :]: int(value) for key, value in annotations.items() if key.startswith(KNOB)
    }


@runtime_checkable
class Candidate(Protocol):
    """One decision of a task made concrete on the task's weight, ready to measure."""

    expected: np.ndarray  #: the reference output the candidate's output must match

    def check(self, output: np.ndarray) -> None:
        """Compare ``output`` with :attr:`expected`.

        Raises
        ------
        WrongResult
            When the output differs (beyond the candidate's tolerance).
        """

    def measure(self, target: tvm.target.Target) -> float:
        """Build for ``target``, run on this host and :meth:`check` the output.

        Returns
        -------
        float
            The candidate's time in seconds (median wall time, or simulated device time).

        Raises
        ------
        WrongResult
            When the output is wrong.
        """


@runtime_checkable
class TuningTask(Protocol[Knobs]):
    """A kernel the tuner searches and a build looks up in the tuning database.

    ``Knobs`` is the task's decision: its kernel generator's parameters
    (:class:`~tvm_sparse.kernels.BSRKernelParams`, an ``int`` rows per tile)
    or the device tiling (:class:`~tvm_sparse.codegen.gemm_program.Tiling`).
    Tasks are immutable and compare by identity; two tasks with equal
    :attr:`key` share records.
    """

    @property
    def key(self) -> dict:
        """The task's identity in the database: JSON-serialisable, with a ``"kernel"`` entry naming
        the kernel (also MetaSchedule's task name). Its JSON (sorted keys) is the workload's
        :data:`TASK_ATTR`, so changing it orphans existing records."""

    def describe(self) -> str:
        """One line naming the task for progress, logs and reports (e.g. ``block matmul 16x64x128
        16x1 d0.25``)."""

    def workload(self) -> tvm.tirx.PrimFunc:
        """The TIR function MetaSchedule keys the task's records by.

        Returns
        -------
        tvm.tirx.PrimFunc
            A function of the kernel's shapes carrying the key as its :data:`TASK_ATTR` attribute;
            the same for every call (structurally equal).
        """

    def design_space(self, sch: s_tir.Schedule) -> list[s_tir.Schedule]:
        """MetaSchedule's schedule function: the design spaces over ``sch`` (a schedule of
        :meth:`workload`) whose sampling decisions are the knobs.

        Returns
        -------
        list of tvm.s_tir.Schedule
            One or more schedules whose traces sample the knobs (``SampleCategorical``,
            ``SamplePerfectTile``).
        """

    def decode(self, sch: s_tir.Schedule) -> Knobs:
        """The knobs a schedule of the design space (or a database record replayed on
        :meth:`workload`) decided.

        Raises
        ------
        Exception
            Whatever reading the schedule raises when it is not one of this space's; the database
            skips such a record.
        """

    def check(self, knobs: Knobs) -> str | None:
        """Whether the kernel can be generated and run with ``knobs``.

        Returns
        -------
        str or None
            None when it can; else the reason, in one line. The tuner rejects such a candidate
            before measuring it, and a build skips a record that decodes to it.
        """

    def default(self) -> Knobs:
        """The knobs a build uses when no tuning record applies (it must pass :meth:`check`)."""

    def trace(self, knobs: Knobs) -> s_tir.Trace | None:
        """The design-space trace that decides ``knobs``, to record a measurement of them (the
        default's); None when no trace of the space gives them."""

    def features(self, knobs: Knobs) -> list[float]:
        """The cost model's features of ``knobs`` on this task (a fixed length per kind of task):
        the knobs and what they imply for the generated kernel, which MetaSchedule cannot see."""

    def candidate(self, knobs: Knobs) -> Candidate:
        """The kernel or program of ``knobs`` on a seeded input, with its numpy reference output.

        Raises
        ------
        Exception
            When the kernel cannot be generated; the tuner counts the candidate as failed.
        """

    def measure(self, knobs: Knobs, target: tvm.target.Target) -> float:
        """``candidate(knobs).measure(target)``: seconds on this host (wall time of the compiled
        kernel, or simulated device time; the device ignores ``target``).

        Raises
        ------
        WrongResult
            When the output is wrong.
        """
