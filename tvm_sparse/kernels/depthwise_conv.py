"""TIR kernel for NHWC convolutions with one output channel per group.

That covers depthwise convolutions (one input channel per group) and the
basis convolutions of decomposed layers (``r`` input maps per output, see
:mod:`tvm_sparse.prune.decompose`). As a matmul these are block-diagonal with
``1 x G*KH*KW`` blocks, too thin for the block kernel. Here the output
channels are the vector lanes instead: each output pixel accumulates
``G*KH*KW`` taps as 16-channel FMAs of the input pixel (channel ``o * G + j``
for lane ``o``: contiguous when ``G = 1``, strided otherwise) and the filter
tap (laid out ``[KH, KW, G, O]`` at compile time, contiguous). Padding taps
are skipped (a uniform branch per tap). Parallel over output rows.
"""

from __future__ import annotations

import dataclasses

from tvm.script import tirx as T

from .bsr_matmul import VECTOR_LANES, Im2Col
from .rows import own_vars


def depthwise_conv_kernel(
    im2col: Im2Col, relu: bool = False, name: str = "depthwise_conv2d", maps_major: bool = False
):
    """``name(X[N, H, W, C], weight[KH, KW, G, O], bias[O], Y[N, OH, OW, O])`` with ``O = groups``, ``G = C / O``.

    ``im2col`` describes the convolution (one output channel per group; ``N``, ``H``, ``W`` may be
    symbolic). With
    ``maps_major`` the input channels are ordered ``(j, o)`` instead of the
    grouped convolution's ``(o, j)``, so that every load is contiguous (the
    producer's channels are permuted at compile time to match).
    """
    im2col = dataclasses.replace(im2col, input_shape=own_vars(im2col.input_shape))
    batch, height, width, in_channels = im2col.input_shape
    channels = im2col.groups  # output channels
    if in_channels % channels:
        raise ValueError(f"{in_channels} input channels do not split into {channels} groups")
    group = in_channels // channels
    out_h, out_w = im2col.out_hw
    kernel_h, kernel_w = im2col.kernel
    (stride_h, stride_w), (pad_top, pad_left), (dil_h, dil_w) = (
        im2col.strides,
        im2col.padding,
        im2col.dilation,
    )
    full_blocks = channels // VECTOR_LANES
    tail_start = full_blocks * VECTOR_LANES

    def channel(o, j):
        return j * channels + o if maps_major else o * group + j

    def finish(value):
        return T.max(value, T.float32(0)) if relu else value

    @T.macro
    def taps(X, Wt, acc, n, oh, ow, c0, lanes, vector_loop):
        for kh, kw in T.grid(kernel_h, kernel_w):
            ih = oh * stride_h + kh * dil_h - pad_top
            iw = ow * stride_w + kw * dil_w - pad_left
            if 0 <= ih and ih < height and 0 <= iw and iw < width:
                for j in T.unroll(group):
                    for lane in vector_loop(lanes):
                        acc[lane] = (
                            acc[lane]
                            + X[n, ih, iw, channel(c0 + lane, j)] * Wt[kh, kw, j, c0 + lane]
                        )

    @T.prim_func
    def kernel(
        X: T.Buffer((batch, height, width, in_channels), "float32"),
        Wt: T.Buffer((kernel_h, kernel_w, group, channels), "float32"),
        B: T.Buffer((channels,), "float32"),
        Y: T.Buffer((batch, out_h, out_w, channels), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for p in T.parallel(batch * out_h):
            n = p // out_h
            oh = p % out_h
            for ow in range(out_w):
                acc = T.decl_buffer(
                    (VECTOR_LANES,), "float32"
                )  # on the stack: LLVM keeps it in registers
                for cb in range(full_blocks):
                    for lane in T.vectorized(VECTOR_LANES):
                        acc[lane] = B[cb * VECTOR_LANES + lane]
                    taps(X, Wt, acc, n, oh, ow, cb * VECTOR_LANES, VECTOR_LANES, T.vectorized)
                    for lane in T.vectorized(VECTOR_LANES):
                        Y[n, oh, ow, cb * VECTOR_LANES + lane] = finish(acc[lane])
                if tail_start < channels:
                    for lane in range(channels - tail_start):
                        acc[lane] = B[tail_start + lane]
                    taps(X, Wt, acc, n, oh, ow, tail_start, channels - tail_start, T.serial)
                    for lane in range(channels - tail_start):
                        Y[n, oh, ow, tail_start + lane] = finish(acc[lane])

    return kernel.with_attr("global_symbol", name)
