"""TIR kernels for NHWC pooling: windowed max/average pooling and the spatial mean (global pooling).

Channels are the vector lanes, as in the depthwise kernel: each output pixel
takes the maximum or the sum of its window's input pixels as 16-channel
vectors, skipping the taps that fall in the padding (a uniform branch per
tap). Parallel over output rows (windowed) or over (image, channel block)
pairs (the spatial mean, a reduction over ``H * W`` pixels).

Averages divide by the taps inside the input (``count_include_pad=False``,
ONNX's default) or inside the padded input (``True``), as ONNX specifies.
"""

from __future__ import annotations

import dataclasses

from tvm.script import tirx as T

from .bsr_matmul import VECTOR_LANES, Im2Col
from .rows import own_vars

LANES = VECTOR_LANES
#: One input and one output: Relax checks such functions for a reshape pattern, which needs a root
#: block; the loops inside it are final (no default schedule rule applies).
_ATTRS = {"tirx.noalias": True, "tirx.is_scheduled": True}


def pool2d_kernel(window: Im2Col, kind: str, count_include_pad: bool = False, name: str = "pool2d"):
    """``name(X[N, H, W, C], Y[N, OH, OW, C])``: ``kind`` ``"max"`` or ``"avg"`` pooling over the
    windows ``window`` describes (kernel, strides, padding, dilation; ``groups`` unused; the output
    size from its padding, so a ceil-mode pooling passes the extra end padding that gives its size).
    ``N``, ``H``, ``W`` may be symbolic. Raises ``ValueError`` for another ``kind``."""
    if kind not in ("max", "avg"):
        raise ValueError(f"pooling kind must be 'max' or 'avg', got {kind!r}")
    window = dataclasses.replace(window, input_shape=own_vars(window.input_shape))
    batch, height, width, channels = window.input_shape
    out_h, out_w = window.out_hw
    kernel_h, kernel_w = window.kernel
    (stride_h, stride_w), (pad_top, pad_left), (dil_h, dil_w) = (
        window.strides,
        window.padding,
        window.dilation,
    )
    pad_bottom, pad_right = window.padding_end or window.padding
    blocks, tail = divmod(channels, LANES)
    lowest = T.float32(-3.4028234663852886e38)

    def inside(oh, ow, kh, kw, top, left, bottom, right):
        ih, iw = oh * stride_h + kh * dil_h - pad_top, ow * stride_w + kw * dil_w - pad_left
        return T.And(
            T.And(-top <= ih, ih < height + bottom), T.And(-left <= iw, iw < width + right)
        )

    def count(oh, ow):
        """The taps an average divides by."""
        if count_include_pad:
            pads = (pad_top, pad_left, pad_bottom, pad_right)
            return T.Cast(
                "float32",
                _taps(oh, ow, kernel_h, kernel_w, lambda kh, kw: inside(oh, ow, kh, kw, *pads)),
            )
        return T.Cast(
            "float32",
            _taps(oh, ow, kernel_h, kernel_w, lambda kh, kw: inside(oh, ow, kh, kw, 0, 0, 0, 0)),
        )

    @T.macro
    def window_of(X, Y, n, oh, ow, c0, lanes, vector_loop):
        acc = T.decl_buffer((LANES,), "float32")
        for lane in vector_loop(lanes):
            acc[lane] = lowest if kind == "max" else T.float32(0)
        for kh, kw in T.grid(kernel_h, kernel_w):
            if inside(oh, ow, kh, kw, 0, 0, 0, 0):
                for lane in vector_loop(lanes):
                    if kind == "max":
                        acc[lane] = T.max(
                            acc[lane],
                            X[
                                n,
                                oh * stride_h + kh * dil_h - pad_top,
                                ow * stride_w + kw * dil_w - pad_left,
                                c0 + lane,
                            ],
                        )
                    else:
                        acc[lane] = (
                            acc[lane]
                            + X[
                                n,
                                oh * stride_h + kh * dil_h - pad_top,
                                ow * stride_w + kw * dil_w - pad_left,
                                c0 + lane,
                            ]
                        )
        for lane in vector_loop(lanes):
            Y[n, oh, ow, c0 + lane] = acc[lane] if kind == "max" else acc[lane] / count(oh, ow)

    @T.prim_func(s_tir=True)
    def kernel(
        X: T.Buffer((batch, height, width, channels), "float32"),
        Y: T.Buffer((batch, out_h, out_w, channels), "float32"),
    ):
        T.func_attr(_ATTRS)
        with T.sblock("root"):
            for p in T.parallel(batch * out_h):
                for ow in range(out_w):
                    for cb in range(blocks):
                        window_of(X, Y, p // out_h, p % out_h, ow, cb * LANES, LANES, T.vectorized)
                    if tail > 0:
                        window_of(X, Y, p // out_h, p % out_h, ow, blocks * LANES, tail, T.serial)

    return kernel.with_attr("global_symbol", name)


def _taps(oh, ow, kernel_h, kernel_w, valid):
    """The number of taps ``(kh, kw)`` of the window at ``(oh, ow)`` for which ``valid`` holds."""
    total = 0
    for kh in range(kernel_h):
        for kw in range(kernel_w):
            total = total + T.Select(valid(kh, kw), 1, 0)
    return total


def spatial_mean_kernel(shape: tuple, name: str = "spatial_mean"):
    """``name(X[N, H, W, C], Y[N, 1, 1, C])``: the mean over ``H`` and ``W`` (global average pooling);
    ``N``, ``H``, ``W`` may be symbolic."""
    batch, height, width, channels = own_vars(shape)
    blocks, tail = divmod(channels, LANES)
    parts = blocks + (1 if tail else 0)

    @T.macro
    def mean_of(X, Y, n, c0, lanes, vector_loop):
        acc = T.decl_buffer((LANES,), "float32")
        for lane in vector_loop(lanes):
            acc[lane] = T.float32(0)
        for h, w in T.grid(height, width):
            for lane in vector_loop(lanes):
                acc[lane] = acc[lane] + X[n, h, w, c0 + lane]
        for lane in vector_loop(lanes):
            Y[n, 0, 0, c0 + lane] = acc[lane] / T.Cast("float32", height * width)

    @T.prim_func(s_tir=True)
    def kernel(
        X: T.Buffer((batch, height, width, channels), "float32"),
        Y: T.Buffer((batch, 1, 1, channels), "float32"),
    ):
        T.func_attr(_ATTRS)
        with T.sblock("root"):
            for p in T.parallel(batch * parts):
                if p % parts < blocks:
                    mean_of(X, Y, p // parts, p % parts * LANES, LANES, T.vectorized)
                else:
                    mean_of(X, Y, p // parts, blocks * LANES, tail, T.serial)

    return kernel.with_attr("global_symbol", name)
