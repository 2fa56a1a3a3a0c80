"""The device's memories, with every access bounds-checked."""

from __future__ import annotations

import numpy as np

from ..hw.device import Device
from ..hw.isa import BUFFER_DTYPES, Buffer, DeviceFault


class Machine:
    """DRAM (a byte image) and the on-chip buffers of a device (``TABLE`` is empty without weight sharing)."""

    def __init__(self, device: Device, dram: bytes):
        self.device = device
        self.dram = np.frombuffer(bytearray(dram), dtype=np.uint8)
        sizes = {
            Buffer.INP: device.buffers.input_bytes,
            Buffer.WGT: device.buffers.weight_bytes,
            Buffer.META: device.buffers.metadata_bytes,
            Buffer.ACC: device.buffers.accumulator_bytes // 4,
            Buffer.TABLE: device.modes.weight_sharing.table_size
            if device.modes.weight_sharing
            else 0,
        }
        self.buffers = {
            buf: np.zeros(size, dtype=BUFFER_DTYPES[buf]) for buf, size in sizes.items()
        }
        self.engine = (
            None  # the fused decomposed-convolution engine's registers (set by ENGINE_CONFIG)
        )
        self.engine_pipeline = (
            None  # and its pipeline's state across instructions (sim.engine.EnginePipeline)
        )
        self.now = 0  # the cycle the executing instruction starts at

    def region(
        self, buf: Buffer, addr: int, rows: int, cols: int, stride: int | None = None
    ) -> np.ndarray:
        """A writable ``rows x cols`` view of ``buf`` starting at element ``addr`` (row stride ``stride``)."""
        return _strided(
            self.buffers[buf], addr, rows, cols, cols if stride is None else stride, buf.name
        )

    def dram_region(self, addr: int, rows: int, cols: int, stride: int, dtype) -> np.ndarray:
        """A writable ``rows x cols`` view of DRAM as ``dtype`` elements; ``addr`` and ``stride`` in bytes."""
        itemsize = np.dtype(dtype).itemsize
        if addr % itemsize or stride % itemsize:
            raise DeviceFault(
                f"DRAM access at {addr:#x} with stride {stride} is not {itemsize}-byte aligned"
            )
        if rows and cols and (addr + (rows - 1) * stride + cols * itemsize > len(self.dram)):
            raise DeviceFault(
                f"DRAM access [{addr:#x}, +{(rows - 1) * stride + cols * itemsize}) is outside the {len(self.dram)}-byte image"
            )
        view = (
            self.dram[addr : addr + max(0, (rows - 1) * stride + cols * itemsize)].view(dtype)
            if rows and cols
            else self.dram[:0].view(dtype)
        )
        return np.lib.stride_tricks.as_strided(
            view, (rows, cols), (stride, itemsize), writeable=True
        )


def _strided(
    array: np.ndarray, addr: int, rows: int, cols: int, stride: int, name: str
) -> np.ndarray:
    if rows < 0 or cols < 0 or addr < 0 or stride < 0:
        raise DeviceFault(f"{name}: negative extent")
    if rows and cols:
        last = addr + (rows - 1) * stride + cols
        if last > array.size:
            raise DeviceFault(
                f"{name} access [{addr}, {last}) is outside the {array.size}-element buffer"
            )
        if stride < cols and rows > 1:
            raise DeviceFault(f"{name}: row stride {stride} is smaller than the row length {cols}")
    base = array[addr:]
    return np.lib.stride_tricks.as_strided(
        base, (rows, cols), (stride * array.itemsize, array.itemsize), writeable=True
    )
