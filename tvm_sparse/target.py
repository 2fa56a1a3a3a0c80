"""Targets: the host CPU, and ``sparse-accel`` devices as TVM targets.

TVM 0.27 cannot register target kinds from Python, so a device is an ``llvm``
target (its host CPU runs the rest of the model) whose ``keys`` say
``sparse-accel`` and name the device (``sparse-accel-device=<name>``), and
whose ``model`` attribute (the llvm kind's free-form hardware-model
annotation) carries the whole device description,
``sparse-accel:v1:<base64url of the zlib-compressed JSON>``. The target is
therefore self-contained: :func:`device_of` needs no registry, also for a
target rebuilt from ``str(target)`` or ``target.export()`` in another
process. ``import tvm_sparse`` registers a tag for every shipped variant in
``target/`` (``tvm.target.Target("sparse-accel")``); :func:`accel_target`
(``tvm_sparse.accel.target``) makes the target of any description without
registering anything.
"""

from __future__ import annotations

import base64
import json
import zlib

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
    """Turn a user's target (None, an alias, a device name or description file, a dict, its JSON text as
    ``str(target)`` prints it, or a Target) into a Target, or say why not."""
    if target is None or (isinstance(target, str) and target in HOST_ALIASES):
        return host_target()
    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str) and (target in shipped_devices() or target.endswith(".json")):
        return accel_target(target)
    if isinstance(target, str) and target.lstrip().startswith("{"):
        try:
            target = json.loads(target)
        except ValueError as err:
            raise TVMSparseError(f"target {target[:60]!r}...: not JSON ({err})") from None
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
#: The llvm target attribute that carries the description, and the prefix (format and version) of its value.
DESCRIPTION_ATTR = "model"
_DESCRIPTION_PREFIX = "sparse-accel:v1:"


def encode_description(device: Device) -> str:
    """``device``'s description as a compact string for :data:`DESCRIPTION_ATTR` (key order is kept, so the
    decoded description is the one loaded, byte for byte in the layer headers the compiler writes)."""
    text = json.dumps(device.doc, separators=(",", ":"))
    return _DESCRIPTION_PREFIX + base64.urlsafe_b64encode(zlib.compress(text.encode(), 9)).decode()


def decode_description(value: str) -> Device:
    """The device an :func:`encode_description` string describes; :class:`DeviceError` says what is wrong."""
    if not value.startswith(_DESCRIPTION_PREFIX):
        raise DeviceError(
            f"target attribute {DESCRIPTION_ATTR}={value[:40]!r}: not a sparse-accel device description "
            f"(expected {_DESCRIPTION_PREFIX!r}...)"
        )
    try:
        text = zlib.decompress(base64.urlsafe_b64decode(value[len(_DESCRIPTION_PREFIX) :]))
        doc = json.loads(text)
    except (ValueError, zlib.error) as err:  # binascii.Error and JSONDecodeError are ValueErrors
        raise DeviceError(
            f"target attribute {DESCRIPTION_ATTR}: garbled device description ({err})"
        ) from None
    try:
        return Device.from_dict(doc)
    except DeviceError as err:
        raise DeviceError(
            f"target attribute {DESCRIPTION_ATTR}: invalid device description: {err}"
        ) from None


def _config(device: Device) -> dict:
    return {
        "kind": "llvm",
        "mcpu": llvm_get_system_cpu(),
        "keys": [ACCEL_KEY, _DEVICE_KEY + device.name, "cpu"],
        DESCRIPTION_ATTR: encode_description(device),
    }


def register_shipped_devices() -> None:
    """Register a target tag per shipped variant (``tvm.target.Target("sparse-accel")``); run by ``import tvm_sparse``."""
    for name in shipped_devices():
        tvm.target.tag.register_tag(name, _config(load_device(name)), override=True)


def accel_target(device=DEFAULT_DEVICE) -> tvm.target.Target:
    """The TVM target of a device: a shipped variant's name, a description file, or a :class:`Device`.

    The target carries the whole description (see the module docstring); nothing is registered."""
    return tvm.target.Target(_config(load_device(device)))


def is_accel_target(tgt) -> bool:
    return isinstance(tgt, tvm.target.Target) and ACCEL_KEY in [str(k) for k in tgt.keys]


def device_of(tgt: tvm.target.Target) -> Device:
    """The device a ``sparse-accel`` target describes, read from the target itself.

    A target that names a device but carries no description (written by hand, or by an older
    tvm-sparse) resolves a shipped variant by name; a target without a device key is the default device.
    Raises :class:`DeviceError` for a garbled description, or one of another device than the key names.
    """
    names = [str(k)[len(_DEVICE_KEY) :] for k in tgt.keys if str(k).startswith(_DEVICE_KEY)]
    value = tgt.attrs.get(DESCRIPTION_ATTR)
    if value is None or not str(value):
        if not names:
            return load_device(DEFAULT_DEVICE)
        if names[0] in shipped_devices():
            return load_device(names[0])
        raise DeviceError(
            f"target names device {names[0]!r} but carries no description (its {DESCRIPTION_ATTR!r} "
            "attribute is empty); make device targets with tvm_sparse.accel.target(path)"
        )
    device = decode_description(str(value))
    if names and names[0] != device.name:
        raise DeviceError(
            f"target names device {names[0]!r} (key {_DEVICE_KEY}{names[0]}) but its description "
            f"({DESCRIPTION_ATTR!r} attribute) is of device {device.name!r}"
        )
    return device
