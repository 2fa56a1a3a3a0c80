"""A device layer as the runtime sees it: its geometry, quantization and program, in one byte blob.

The blob is a constant of the compiled Relax module (so ``export_library``
carries it): a little-endian ``uint32`` header length, a JSON header, then
the layer's :class:`~tvm_sparse.hw.isa.Program`. The host side of a layer (im2col of a
convolution's input, quantizing the input, dequantizing the output) is plain
numpy here, next to the float reference used for calibration.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

import numpy as np

from ..hw.isa import Program


@dataclass(frozen=True)
class ConvGeometry:
    """An NHWC convolution with groups == 1, lowered to a GEMM on im2col rows ``(kh, kw, c)``."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    out_hw: tuple[int, int]

    def im2col(self, x: np.ndarray) -> np.ndarray:
        """``[N * OH * OW, KH * KW * C]`` patches of NHWC ``x`` (zeros outside the image)."""
        n, _, _, c = x.shape
        (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw), (oh, ow) = (
            self.kernel,
            self.strides,
            self.padding,
            self.dilation,
            self.out_hw,
        )
        padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        taps = [
            padded[
                :,
                i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                j * dw : j * dw + sw * (ow - 1) + 1 : sw,
                :,
            ]
            for i in range(kh)
            for j in range(kw)
        ]
        return np.stack(taps, axis=3).reshape(n * oh * ow, kh * kw * c)


@dataclass(frozen=True)
class LayerHeader:
    name: str
    mode: str  # a placement mode (backend.plan.DeviceMode), + "+table" with a shared-weight table
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: int  # M of the device GEMM
    reduction: int  # K (before padding)
    reduction_padded: int
    outputs: int  # N (before padding)
    outputs_padded: int
    relu: bool
    input_scale: float
    output_scale: float
    x_addr: int
    out_addr: int
    device: dict  # the device description
    conv: dict | None = None  # ConvGeometry fields (the host im2col's the input)
    output_rows: int | None = (
        None  # rows of the device's output when they differ from ``rows`` (basis convolutions)
    )


def encode_layer(header: LayerHeader, program: Program) -> np.ndarray:
    head = json.dumps(asdict(header)).encode()
    return np.frombuffer(
        struct.pack("<I", len(head)) + head + program.to_bytes(), dtype=np.uint8
    ).copy()


def decode_layer(blob: np.ndarray) -> tuple[LayerHeader, Program]:
    data = blob.tobytes()
    (length,) = struct.unpack_from("<I", data)
    fields = json.loads(data[4 : 4 + length])
    for key in ("input_shape", "output_shape"):
        fields[key] = tuple(fields[key])
    return LayerHeader(**fields), Program.from_bytes(data[4 + length :])


def basis_conv_float(x: np.ndarray, kernels: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """A decomposed layer's basis convolution in float: ``x`` NHWC with basis-major maps (``j * O + o``),
    ``kernels`` ``[O, r, k, k]`` (the shared basis, scaled per output channel); returns ``[N, OH, OW, O]``."""
    n, h, w, maps = x.shape
    channels, r, k, _ = kernels.shape
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    padded = np.pad(
        x.reshape(n, h, w, r, channels),
        ((0, 0), (padding, padding), (padding, padding), (0, 0), (0, 0)),
    )
    y = np.zeros((n, oh, ow, channels), np.float32)
    for i in range(k):
        for j in range(k):
            window = padded[
                :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]
            y += np.einsum("nhwro,or->nhwo", window, kernels[:, :, i, j])
    return y


def expand_float(x: np.ndarray, basis: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """A decomposed layer's basis-first step in float: every channel of NHWC ``x`` convolved with each kernel
    of ``basis`` ``[r, k, k]``; returns ``[N, OH, OW, r * C]`` with map ``j * C + c``."""
    n, h, w, c = x.shape
    r, k, _ = basis.shape
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    y = np.zeros((n, oh, ow, r, c), np.float32)
    for i in range(k):
        for j in range(k):
            window = padded[
                :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]
            y += window[:, :, :, None, :] * basis[None, None, None, :, i, j, None]
    return y.reshape(n, oh, ow, r * c)


def conv_geometry(fields: dict | None) -> ConvGeometry | None:
    return None if fields is None else ConvGeometry(**{k: tuple(v) for k, v in fields.items()})


def gemm_rows(x: np.ndarray, reduction: int, geometry: ConvGeometry | None) -> np.ndarray:
    """The float ``[M, K]`` matrix a layer multiplies, from its input."""
    rows = geometry.im2col(x) if geometry is not None else x.reshape(-1, reduction)
    return rows.astype(np.float32)
