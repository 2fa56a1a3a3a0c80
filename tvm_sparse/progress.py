"""Progress of long work (import, compile passes, kernels, device layers, tuning) on stderr.

Shown with `rich <https://github.com/Textualize/rich>`_ when stderr is a
terminal, silent otherwise, inside :func:`quiet` (the CLI's ``--quiet``) or
with the environment variable ``TVM_SPARSE_QUIET=1``. Tasks nest: a task
opened while another is shown becomes a line below it (a pass and the layers
it rewrites); each line shows a spinner, the description, ``done/total``
when the total is known, and the elapsed time, refreshed even while a step
(LLVM code generation) runs for minutes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Callable, Iterator

_QUIET = contextvars.ContextVar("tvm_sparse_quiet", default=False)
_LIVE = contextvars.ContextVar("tvm_sparse_progress", default=None)
_CURRENT = contextvars.ContextVar("tvm_sparse_progress_task", default=None)

#: ``advance(steps=1, description=None)``: count finished steps and/or rename the running one.
Advance = Callable[..., None]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No progress lines inside this block."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def shown() -> bool:
    """Whether progress shows: stderr is a terminal, outside :func:`quiet`, without ``TVM_SPARSE_QUIET=1``."""
    return (
        not _QUIET.get()
        and os.environ.get("TVM_SPARSE_QUIET", "") in ("", "0")
        and sys.stderr.isatty()
    )


def _no_op(steps: int = 1, description: str | None = None) -> None:
    """What :func:`task` yields when nothing is shown."""


@contextlib.contextmanager
def task(description: str, total: int | None = None) -> Iterator[Advance]:
    """A progress line for the work inside the block; yields ``advance(steps=1, description=None)``.

    ``total`` is the number of steps (``None``: unknown, only the elapsed
    time is shown). The line disappears when the block ends.
    """
    if not shown():
        yield _no_op
        return
    live = _LIVE.get()
    if live is None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        count = TextColumn("{task.fields[count]}")
        columns = (SpinnerColumn(), TextColumn("{task.description}"), count, TimeElapsedColumn())
        with Progress(*columns, console=Console(file=sys.stderr), transient=True) as live:
            token = _LIVE.set(live)
            try:
                with task(description, total) as advance:
                    yield advance
            finally:
                _LIVE.reset(token)
        return
    task_id = live.add_task(description, total=total, count="" if total is None else f"0/{total}")

    done = 0

    def advance(steps: int = 1, description: str | None = None) -> None:
        nonlocal done
        done += steps
        count = "" if total is None else f"{done}/{total}"
        live.update(
            task_id,
            advance=steps,
            count=count,
            **({"description": description} if description else {}),
        )

    token = _CURRENT.set(advance)
    try:
        yield advance
    finally:
        _CURRENT.reset(token)
        live.remove_task(task_id)


def describe(description: str) -> None:
    """Rename the innermost task shown (the step its owner is in now); nothing when none is shown."""
    advance = _CURRENT.get()
    if advance is not None:
        advance(0, description)
