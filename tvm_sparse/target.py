"""Targets: the host CPU, and ``sparse-accel`` devices as TVM targets.

TVM 0.27 cannot register target kinds from Python, so a device is an ``llvm``
target (its host CPU runs the rest of the model) whose ``keys`` say
``sparse-accel`` and name the device (``sparse-accel-device=<name>``).
``import tvm_sparse`` registers a tag for every description in ``target/``;
:func:`accel_target` (``tvm_sparse.accel.target``) registers a user's JSON
file the same way.
"""

from __future__ import annotations

import tvm
from tvm.target.codegen import llvm_get_system_cpu

from .errors import TVMSparseError
from .hw.device import DEFAULT_DEVICE, Device, DeviceError, load_device, shipped_devices
from .threads import available_cpus

HOST_ALIASES = ("llvm", "host", "cpu")


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    """The host CPU as an LLVM target with its real CPU name (``-mcpu=native`` is not understood)."""
    return tvm.target.Target(
        {
            "kind": "llvm",
            "mcpu": llvm_get_system_cpu(),
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
        raise TVMSparseError(
            f"unknown or unsupported target {target!r} (supported: {known}, or a device description .json)"
        )
    try:
        resolved = tvm.target.Target(target)
    except Exception:
        raise TVMSparseError(
            f"unknown target {target!r} (known: {', '.join(HOST_ALIASES)})"
        ) from None
    return resolved


ACCEL_KEY = "sparse-accel"
_DEVICE_KEY = "sparse-accel-device="
_DEVICES: dict[str, Device] = {}


def _register(device: Device) -> tvm.target.Target:
    _DEVICES[device.name] = device
    config = {
        "kind": "llvm",
        "mcpu": llvm_get_system_cpu(),
        "keys": [ACCEL_KEY, _DEVICE_KEY + device.name, "cpu"],
    }
    tvm.target.tag.register_tag(device.name, config, override=True)
    return tvm.target.Target(config)


def register_shipped_devices() -> None:
    for name in shipped_devices():
        _register(load_device(name))


def accel_target(device=DEFAULT_DEVICE) -> tvm.target.Target:
    """The TVM target of a device: a shipped variant's name, a description file, or a :class:`Device`."""
    return _register(load_device(device))


def is_accel_target(tgt) -> bool:
    return isinstance(tgt, tvm.target.Target) and ACCEL_KEY in [str(k) for k in tgt.keys]


def device_of(tgt: tvm.target.Target) -> Device:
    """The device a ``sparse-accel`` target describes."""
    for key in (str(k) for k in tgt.keys):
        if key.startswith(_DEVICE_KEY):
            name = key[len(_DEVICE_KEY) :]
            if name not in _DEVICES:
                raise DeviceError(
                    f"target names device {name!r}, which is not registered in this process (use tvm_sparse.accel.target(path))"
                )
            return _DEVICES[name]
    return load_device(DEFAULT_DEVICE)
