"""The ``sparse-accel`` device: its description (``target/*.json``)."""

from .device import DEFAULT_DEVICE, Device, DeviceError, load_device, shipped_devices

__all__ = ["DEFAULT_DEVICE", "Device", "DeviceError", "load_device", "shipped_devices"]
