"""Where a build takes its kernel schedules from: tuned records when it has them, else the defaults.

The compiler asks :func:`tuned` for every kernel it generates (a CPU block or
N:M kernel, a device GEMM layer), passing the kernel's tuning task. Outside
:func:`schedules_from` nothing is tuned and the compiler uses its default
schedule (or the shipped per-CPU records). ``tvm_sparse.build(...,
tuning_db=DIR)`` installs the records of a tuning database, and task
extraction installs a source that only collects the tasks it is asked about.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Protocol

from ..task import TuningTask


class ScheduleSource(Protocol):
    def lookup(self, task: TuningTask):
        """The tuned knobs for ``task`` (its kernel generator's parameters), or None."""


_SOURCE: contextvars.ContextVar[ScheduleSource | None] = contextvars.ContextVar(
    "tvm_sparse_schedule_source", default=None
)


@contextlib.contextmanager
def schedules_from(source: ScheduleSource | None):
    """Within the block, kernels take their schedules from ``source`` (None: defaults only)."""
    token = _SOURCE.set(source)
    try:
        yield source
    finally:
        _SOURCE.reset(token)


def tuned(task: TuningTask):
    """The active source's knobs for ``task``, or None."""
    source = _SOURCE.get()
    return None if source is None else source.lookup(task)
