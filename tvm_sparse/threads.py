"""How many threads TVM's runtime thread pool starts with: explicit calls, never an import side effect.

TVM's CPU thread pool reads ``TVM_NUM_THREADS`` when it starts (lazily: a
thread's pool starts at its first parallel kernel). Without the variable TVM
halves the CPU count on x86, assuming half of them are SMT siblings; on cloud
machines whose vCPUs are all cores (and on 2-vCPU machines, where it leaves
one thread) that leaves half of them idle.

``import tvm_sparse`` changes nothing here. What runs models on the user's
behalf sizes the pool to every available CPU, unless ``TVM_NUM_THREADS`` is
already set: :func:`tvm_sparse.build` (so ``relax.VirtualMachine(exe, ...)``
after it gets every CPU, as before), :func:`tvm_sparse.tune`,
:func:`tvm_sparse.library.load_library`, the ``tvm-sparse`` command and the
demo. A process that only loads an exported library with
``tvm.runtime.load_module`` calls :func:`use_available_cpus` (or
:func:`set_threads`) itself, before its first run.
"""

from __future__ import annotations

import os

#: The environment variable TVM's thread pool reads when it first starts.
THREADS_ENV = "TVM_NUM_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_available_cpus() -> None:
    """Size TVM's thread pool to every available CPU unless ``TVM_NUM_THREADS`` is already set.

    Takes effect for thread pools started afterwards (a thread's pool starts at
    its first parallel kernel), so call it before running anything.
    """
    os.environ.setdefault(THREADS_ENV, str(available_cpus()))


def set_threads(count: int) -> None:
    """Make TVM's thread pool start ``count`` threads, overriding ``TVM_NUM_THREADS``.

    Like :func:`use_available_cpus` it applies to thread pools started afterwards.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"thread count must be a positive integer, got {count!r}")
    os.environ[THREADS_ENV] = str(count)
