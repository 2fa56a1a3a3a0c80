"""``sparse-accel`` as a TVM target: one tag per device variant, plus user-described devices.

TVM 0.27 cannot register target kinds from Python, so a device is an ``llvm``
target (its host CPU runs the rest of the model) whose ``keys`` say
``sparse-accel`` and name the device (``sparse-accel-device=<name>``).
``import tvm_sparse`` registers a tag for every description in ``target/``;
:func:`target` registers a user's JSON file the same way.
"""

from __future__ import annotations

import tvm
from tvm.target.codegen import llvm_get_system_cpu

from .device import DEFAULT_DEVICE, Device, DeviceError, load_device, shipped_devices

ACCEL_KEY = "sparse-accel"
_DEVICE_KEY = "sparse-accel-device="
_DEVICES: dict[str, Device] = {}


def _register(device: Device) -> tvm.target.Target:
    _DEVICES[device.name] = device
    config = {"kind": "llvm", "mcpu": llvm_get_system_cpu(), "keys": [ACCEL_KEY, _DEVICE_KEY + device.name, "cpu"]}
    tvm.target.tag.register_tag(device.name, config, override=True)
    return tvm.target.Target(config)


def register_shipped_devices() -> None:
    for name in shipped_devices():
        _register(load_device(name))


def target(device=DEFAULT_DEVICE) -> tvm.target.Target:
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
                raise DeviceError(f"target names device {name!r}, which is not registered in this process (use tvm_sparse.accel.target(path))")
            return _DEVICES[name]
    return load_device(DEFAULT_DEVICE)
