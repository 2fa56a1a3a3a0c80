"""Transposed convolution as a GEMM and col2im, and the TIR kernel for the col2im step.

A transposed convolution (ONNX ``ConvTranspose``, Relax ``conv2d_transpose``)
scatters every input pixel, multiplied by the kernel, into the output: input
pixel ``(ih, iw)`` reaches output pixel ``(ih * sh - pad_top + kh * dh,
iw * sw - pad_left + kw * dw)`` through tap ``(kh, kw)``. With the input NHWC
and the weight as the ``[KH * KW * O, C]`` matrix ``Wmat`` (rows ordered tap
major, output channel minor; block-diagonal over groups), it is two steps,
the formulation of Caffe's ``Deconvolution`` and onnxruntime's MLAS:

1. ``cols[N*H*W, KH*KW*O] = X[N*H*W, C] @ Wmat.T``: every multiply-accumulate
   the layer needs and no other (no zero insertion), on the block kernel;
2. col2im: each output pixel sums the ``cols`` entries of the input pixels
   and taps that reach it, plus the bias.

(The sub-pixel decomposition into ``stride^2`` stride-1 convolutions whose
outputs interleave does the same MACs; on a 64 -> 32, 3x3, stride-2 28x28
layer its four convolutions alone took as long as the GEMM and col2im here,
before the interleaving pass: ``benchmarks/canonical_layers.py``.)

The col2im kernel works on one output row at a time (parallel over
``N * OH``): the row is set to the bias, then for each tap row ``kh`` that
reaches it (one branch per row and tap row) and each ``kw``, the contiguous
range of input columns that lands inside the row is added in, output
channels as vector lanes; a fused ReLU clamps the row at the end. The row
(``OW * O`` floats) stays in L1 while it accumulates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from tvm.script import tirx as T

from .bsr_matmul import VECTOR_LANES
from .rows import own_vars


@dataclass(frozen=True)
class Col2Im:
    """The geometry of an NHWC transposed convolution with ``out_channels`` outputs.

    ``input_shape`` is ``(N, H, W, C)``; ``N``, ``H`` and ``W`` may be symbolic
    (``tirx`` expressions). ``padding`` is ``(top, left, bottom, right)``: it
    crops the full output, as in ONNX. ``output_padding`` adds rows and columns
    at the bottom and right that receive only the bias.
    """

    input_shape: tuple
    out_channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    output_padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self):
        channels = self.input_shape[3]
        if channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{channels} input and {self.out_channels} output channels do not split into {self.groups} groups"
            )

    @property
    def out_hw(self) -> tuple:
        """``(OH, OW)``: ``s * (size - 1) + output_padding + d * (k - 1) + 1 - pads``."""
        _, h, w, _ = self.input_shape
        return tuple(
            s * (size - 1) + extra + d * (k - 1) + 1 - before - after
            for size, s, extra, d, k, before, after in zip(
                (h, w),
                self.strides,
                self.output_padding,
                self.dilation,
                self.kernel,
                self.padding[:2],
                self.padding[2:],
            )
        )

    @property
    def columns(self) -> int:
        """Columns of ``cols``: ``KH * KW * O`` rounded up to whole vectors (the padding rows of ``Wmat`` are
        zero; they keep the GEMM's output uncropped)."""
        taps = self.kernel[0] * self.kernel[1] * self.out_channels
        return -(-taps // VECTOR_LANES) * VECTOR_LANES

    def weight_matrix(self, weight: np.ndarray) -> np.ndarray:
        """``Wmat``, ``[columns, C]``, of an IOHW weight ``[C, O / groups, KH, KW]``: row ``(kh * KW + kw) * O + o``
        holds tap ``(kh, kw)`` of output channel ``o``, zero outside ``o``'s group.

        Raises ``ValueError`` when the weight's shape does not fit the geometry.
        """
        channels, out_channels, groups = self.input_shape[3], self.out_channels, self.groups
        expected = (channels, out_channels // groups, *self.kernel)
        if tuple(weight.shape) != expected:
            raise ValueError(
                f"a transposed convolution weight of shape {list(weight.shape)}, expected {list(expected)}"
            )
        kh, kw = self.kernel
        in_group, out_group = channels // groups, out_channels // groups
        matrix = np.zeros((kh, kw, out_channels, channels), weight.dtype)
        for g in range(groups):
            block = weight[g * in_group : (g + 1) * in_group]  # [C/g, O/g, KH, KW]
            matrix[:, :, g * out_group : (g + 1) * out_group, g * in_group : (g + 1) * in_group] = (
                block.transpose(2, 3, 1, 0)
            )
        out = np.zeros((self.columns, channels), weight.dtype)
        out[: kh * kw * out_channels] = matrix.reshape(-1, channels)
        return out


def col2im_kernel(
    geometry: Col2Im, relu: bool = False, name: str = "col2im", channels_first: bool = False
):
    """Return the PrimFunc ``name(cols[N, H, W, columns], bias[O], Y[N, OH, OW, O])`` (float32).

    ``cols`` is the GEMM's output (:meth:`Col2Im.weight_matrix`), ``Y`` the
    transposed convolution plus ``bias`` (clamped at zero with ``relu``).
    Symbolic ``N``, ``H``, ``W`` give one kernel for every size. With
    ``channels_first``, ``Y`` is NCHW (``[N, O, OH, OW]``): each output row
    accumulates in a scratch row and is stored channel by channel, which
    costs much less than a transpose of the output.
    """
    geometry = dataclasses.replace(geometry, input_shape=own_vars(geometry.input_shape))
    batch, height, width, _ = geometry.input_shape
    channels = geometry.out_channels
    out_h, out_w = geometry.out_hw
    kernel_h, kernel_w = geometry.kernel
    (stride_h, stride_w), (dil_h, dil_w) = geometry.strides, geometry.dilation
    pad_top, pad_left = geometry.padding[:2]
    columns = geometry.columns
    full, tail = divmod(channels, VECTOR_LANES)
    tail_start = full * VECTOR_LANES
    y_shape = (batch, channels, out_h, out_w) if channels_first else (batch, out_h, out_w, channels)

    def first_column(kw):  # the first iw with iw * sw - pad_left + kw * dw >= 0
        return T.max(0, (pad_left - kw * dil_w + stride_w - 1) // stride_w)

    def end_column(kw):  # one past the last iw landing before OW
        return T.min(width, (out_w - 1 + pad_left - kw * dil_w) // stride_w + 1)

    @T.macro
    def add_pixel(cols, row, ow, n, ih, iw, tap):
        for cb in range(full):
            for lane in T.vectorized(VECTOR_LANES):
                row[ow, cb * VECTOR_LANES + lane] += cols[
                    n, ih, iw, tap * channels + cb * VECTOR_LANES + lane
                ]
        if tail > 0:
            for lane in T.vectorized(tail):
                row[ow, tail_start + lane] += cols[n, ih, iw, tap * channels + tail_start + lane]

    @T.macro
    def set_pixel(row, value, ow):
        for cb in range(full):
            for lane in T.vectorized(VECTOR_LANES):
                row[ow, cb * VECTOR_LANES + lane] = value(cb * VECTOR_LANES + lane)
        if tail > 0:
            for lane in T.vectorized(tail):
                row[ow, tail_start + lane] = value(tail_start + lane)

    @T.macro
    def output_row(cols, B, row, n, oh):
        # row[OW, O]: output row (n, oh), channels last
        for ow in range(out_w):
            set_pixel(row, lambda c: B[c], ow)
        for kh in T.unroll(kernel_h):
            reach = (
                oh + pad_top - kh * dil_h
            )  # ih * sh when input row ih reaches this row through kh
            if reach >= 0 and reach % stride_h == 0 and reach // stride_h < height:
                for kw in T.unroll(kernel_w):
                    for iw in range(first_column(kw), end_column(kw)):
                        add_pixel(
                            cols,
                            row,
                            iw * stride_w - pad_left + kw * dil_w,
                            n,
                            reach // stride_h,
                            iw,
                            kh * kernel_w + kw,
                        )
        if relu:
            for ow in range(out_w):
                set_pixel(row, lambda c: T.max(row[ow, c], T.float32(0)), ow)

    @T.prim_func
    def kernel(
        cols: T.Buffer((batch, height, width, columns), "float32"),
        B: T.Buffer((channels,), "float32"),
        Y: T.Buffer(y_shape, "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for p in T.parallel(batch * out_h):
            n = p // out_h
            oh = p % out_h
            if channels_first:
                row = T.alloc_buffer((out_w, channels), "float32")
                output_row(cols, B, row, n, oh)
                for c, ow in T.grid(channels, out_w):
                    Y[n, c, oh, ow] = row[ow, c]
            else:
                row = T.decl_buffer(
                    (out_w, channels), "float32", data=Y.data, elem_offset=p * out_w * channels
                )
                output_row(cols, B, row, n, oh)

    return kernel.with_attr("global_symbol", name)
