"""How many threads TVM's runtime thread pool starts with."""

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
    """Make TVM's thread pool use every available CPU unless ``TVM_NUM_THREADS`` is set.

    TVM halves the CPU count on x86 on the assumption that half of them are SMT
    siblings; on cloud machines whose vCPUs are all cores this leaves half of
    them idle. The pool reads the variable lazily, at its first parallel
    launch, so this takes effect as long as it runs before any kernel does.
    """
    os.environ.setdefault(THREADS_ENV, str(available_cpus()))
