"""The ``sparse-accel`` device: description, ISA, target, compile path and runtime."""

from ..hw.device import DEFAULT_DEVICE, Device, DeviceError, load_device, shipped_devices
from ..target import accel_target as target
from ..threads import use_available_cpus
from .compile import AccelBuild, build_for_device
from .runtime import last_run, profile, reset_run


def compile(
    model, device=DEFAULT_DEVICE, calibration=None, fast_math: bool = True, input_shapes=None
) -> AccelBuild:
    """Compile ``model`` for a device (name, JSON path or :class:`Device`); returns the executable and the partition.

    ``calibration`` and ``input_shapes``: see :func:`build_for_device`. Like :func:`tvm_sparse.build`, it
    sizes TVM's thread pool to every CPU unless ``TVM_NUM_THREADS`` is set."""
    use_available_cpus()
    return build_for_device(model, load_device(device), calibration, fast_math, input_shapes)


__all__ = [
    "DEFAULT_DEVICE",
    "AccelBuild",
    "Device",
    "DeviceError",
    "compile",
    "last_run",
    "load_device",
    "profile",
    "reset_run",
    "shipped_devices",
    "target",
]
