"""Host target resolution."""

from __future__ import annotations

import tvm

from .accel.device import shipped_devices
from .accel.target import target as accel_target
from .errors import TVMSparseError
from .threads import available_cpus

HOST_ALIASES = ("llvm", "host", "cpu")


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    """The host CPU as an LLVM target with its real CPU name (``-mcpu=native`` is not understood)."""
    return tvm.target.Target(
        {
            "kind": "llvm",
            "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
            "num-cores": num_cores or available_cpus(),
        }
    )


def resolve_target(target) -> tvm.target.Target:
    """Turn a user's target (None, an alias, a dict or a Target) into a Target, or say why not."""
    if target is None or (isinstance(target, str) and target in HOST_ALIASES):
        return host_target()
    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str) and (target in shipped_devices() or target.endswith(".json")):
        return accel_target(target)
    kind = target.get("kind") if isinstance(target, dict) else next(iter(str(target).split()), "")
    if kind != "llvm":
        known = ", ".join([*HOST_ALIASES, *shipped_devices()])
        raise TVMSparseError(f"unknown or unsupported target {target!r} (supported: {known}, or a device description .json)")
    try:
        resolved = tvm.target.Target(target)
    except Exception:
        raise TVMSparseError(f"unknown target {target!r} (known: {', '.join(HOST_ALIASES)})") from None
    return resolved
