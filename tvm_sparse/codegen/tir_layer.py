"""A device layer as TIR, scheduled and tensorized with the device's intrinsics.

The layer is the int8 GEMM with its requantizing epilogue::

    acc[i, j] = sum_k X[i, k] * W[k, j]
    Y[i, j]   = clip(round((acc[i, j] + bias[j]) * multiplier[j] >> shift), low, 127)

The schedule tiles it for the buffers (output column tiles, row tiles, then
the reduction), stages the operand tiles in the on-chip scopes, keeps the
accumulators on chip across the reduction, and tensorizes every tile
operation (DMA loads, accumulator reset, GEMM, requantize-and-store) with
the intrinsics of :mod:`.intrinsics`. Dimensions are multiples of the tiles
(the compiler pads them).
"""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.script import tirx as T

from ..hw.isa import GemmMode
from .intrinsics import (
    ACC_SCOPE,
    EPILOGUE,
    FILL,
    GEMM,
    INP_SCOPE,
    LOAD_INP,
    LOAD_WGT,
    WGT_SCOPE,
    intrinsic_names,
    requant_expr,
)


def layer_func(m: int, k: int, n: int, shift: int, relu: bool):
    low = 0 if relu else -128

    @T.prim_func(s_tir=True)
    def layer(
        X: T.Buffer((m, k), "int8"),
        W: T.Buffer((k, n), "int8"),
        Bias: T.Buffer((n,), "int32"),
        Mult: T.Buffer((n,), "int64"),
        Y: T.Buffer((m, n), "int8"),
    ):
        T.func_attr({"global_symbol": "layer", "tirx.noalias": True})
        acc = T.sblock_alloc_buffer((m, n), "int32")
        for i, j, r in T.grid(m, n, k):
            with T.sblock("gemm"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, r])
                with T.init():
                    acc[vi, vj] = 0
                acc[vi, vj] = acc[vi, vj] + T.cast(X[vi, vk], "int32") * T.cast(W[vk, vj], "int32")
        for i, j in T.grid(m, n):
            with T.sblock("requant"):
                vi, vj = T.axis.remap("SS", [i, j])
                Y[vi, vj] = requant_expr(acc[vi, vj], Bias[vj], Mult[vj], shift, low)

    return layer


def tile_layer(sch: s_tir.Schedule, rows, reduction, cols, rows_outer: bool = False) -> None:
    """Tile the layer in ``sch`` (from :func:`layer_func`): stage the operand tiles in the on-chip scopes,
    keep accumulators on chip across the reduction, requantize each output tile after its last GEMM.

    The tile sizes are ints or MetaSchedule tile decisions (``sample_perfect_tile`` results), so the
    compiler and the tuner's design space share this schedule. ``rows_outer`` walks row tiles in the outer
    loop (an input tile stays resident across the column tiles) instead of column tiles (a weight tile
    stays resident across the row tiles).
    """
    gemm, epilogue = sch.get_sblock("gemm"), sch.get_sblock("requant")
    sch.set_scope(gemm, 0, ACC_SCOPE)
    x_tile = sch.cache_read(gemm, 0, INP_SCOPE)
    w_tile = sch.cache_read(gemm, 1, WGT_SCOPE)
    i, j, r = sch.get_loops(gemm)
    io, ii = sch.split(i, rows if isinstance(rows, list) else [None, rows])
    jo, ji = sch.split(j, cols if isinstance(cols, list) else [None, cols])
    ro, ri = sch.split(r, reduction if isinstance(reduction, list) else [None, reduction])
    outer = (io, jo) if rows_outer else (jo, io)
    sch.reorder(*outer, ro, ii, ji, ri)
    sch.compute_at(x_tile, ro)
    sch.compute_at(w_tile, ro)
    sch.decompose_reduction(gemm, ro)
    sch.reverse_compute_at(epilogue, outer[1])


def tile_shape(sch: s_tir.Schedule) -> tuple[int, int, int]:
    """The ``(rows, reduction, cols)`` tile of a layer tiled by :func:`tile_layer`."""
    ii, ji, ri = sch.get_loops(sch.get_sblock("gemm_update"))[-3:]
    return tuple(int(sch.get(loop).extent) for loop in (ii, ri, ji))


def tensorize_layer(sch: s_tir.Schedule, shift: int, relu: bool, mode: GemmMode = "dense") -> None:
    """Tensorize every tile operation of a tiled layer with the intrinsics of the weight ``mode``."""
    tm, tk, tn = tile_shape(sch)
    names = intrinsic_names(tm, tk, tn, shift, relu, mode)
    sch.tensorize(sch.get_loops(sch.get_sblock("X_" + INP_SCOPE))[-2], names[LOAD_INP])
    sch.tensorize(sch.get_loops(sch.get_sblock("W_" + WGT_SCOPE))[-2], names[LOAD_WGT])
    sch.tensorize(sch.get_loops(sch.get_sblock("gemm_init"))[-2], names[FILL])
    sch.tensorize(sch.get_loops(sch.get_sblock("gemm_update"))[-3], names[GEMM])
    sch.tensorize(sch.get_loops(sch.get_sblock("requant"))[-2], names[EPILOGUE])


def schedule_layer(
    m: int,
    k: int,
    n: int,
    tm: int,
    tk: int,
    tn: int,
    shift: int,
    relu: bool,
    mode: GemmMode = "dense",
    rows_outer: bool = False,
) -> tvm.IRModule:
    """The tensorized layer for ``tm x tk x tn`` tiles (``m``, ``k``, ``n`` multiples of them), its GEMM
    tiles tensorized with the intrinsic of the weight ``mode``."""
    if m % tm or k % tk or n % tn:
        raise ValueError(f"a {m}x{k}x{n} layer is not a whole number of {tm}x{tk}x{tn} tiles")
    sch = s_tir.Schedule(layer_func(m, k, n, shift, relu))
    tile_layer(sch, tm, tk, tn, rows_outer)
    tensorize_layer(sch, shift, relu, mode)
    return sch.mod
