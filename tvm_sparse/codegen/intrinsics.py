"""The device's tensor intrinsics (``tvm.s_tir.TensorIntrin``), one set per tile shape.

Each intrinsic pairs a description (the tile computation in TIR) with an
implementation that is a single ``call_extern`` of the device operation
(``sparse_accel.dma_load``, ``sparse_accel.gemm``, ...). Tensorizing a
layer's schedule with them leaves a loop nest whose leaves are device
operations on tiles; :mod:`.lowering` turns that nest into the instruction
stream. On-chip buffers are the storage scopes ``global.sa_inp``,
``global.sa_wgt`` and ``global.sa_acc``.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ..hw.isa import GemmMode

INP_SCOPE, WGT_SCOPE, ACC_SCOPE = "global.sa_inp", "global.sa_wgt", "global.sa_acc"
LOAD_INP, LOAD_WGT, GEMM, FILL, EPILOGUE = (
    "sparse_accel.dma_load_inp",
    "sparse_accel.dma_load_wgt",
    "sparse_accel.gemm",
    "sparse_accel.acc_reset",
    "sparse_accel.requant_store",
)
#: The GEMM tile operation of each weight mode: one computation (the description), three encodings of the
#: weight tile (the implementation the lowering turns into GEMM, GEMM_NM or GEMM_BLOCK).
GEMM_OPS: dict[GemmMode, str] = {
    "dense": GEMM,
    "nm": "sparse_accel.gemm_nm",
    "block": "sparse_accel.gemm_block",
}
OPERATIONS = (LOAD_INP, LOAD_WGT, FILL, EPILOGUE, *GEMM_OPS.values())


def _load(rows: int, cols: int, scope: str, op: str):
    @T.prim_func(s_tir=True)
    def desc(src: T.handle, dst: T.handle) -> None:
        S = T.match_buffer(src, (rows, cols), "int8", offset_factor=1)
        D = T.match_buffer(dst, (rows, cols), "int8", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(S[0:rows, 0:cols])
            T.writes(D[0:rows, 0:cols])
            for i, j in T.grid(rows, cols):
                with T.sblock("copy"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    D[vi, vj] = S[vi, vj]

    @T.prim_func(s_tir=True)
    def impl(src: T.handle, dst: T.handle) -> None:
        S = T.match_buffer(src, (rows, cols), "int8", offset_factor=1)
        D = T.match_buffer(dst, (rows, cols), "int8", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(S[0:rows, 0:cols])
            T.writes(D[0:rows, 0:cols])
            T.evaluate(T.call_extern("int32", op, S.data, S.elem_offset, D.elem_offset, rows, cols))

    return desc, impl


def _gemm(tm: int, tk: int, tn: int, op: str):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (tm, tk), "int8", offset_factor=1, scope=INP_SCOPE)
        B = T.match_buffer(b, (tk, tn), "int8", offset_factor=1, scope=WGT_SCOPE)
        C = T.match_buffer(c, (tm, tn), "int32", offset_factor=1, scope=ACC_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:tm, 0:tn], A[0:tm, 0:tk], B[0:tk, 0:tn])
            T.writes(C[0:tm, 0:tn])
            for i, j, k in T.grid(tm, tn, tk):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], "int32") * T.cast(B[vk, vj], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (tm, tk), "int8", offset_factor=1, scope=INP_SCOPE)
        B = T.match_buffer(b, (tk, tn), "int8", offset_factor=1, scope=WGT_SCOPE)
        C = T.match_buffer(c, (tm, tn), "int32", offset_factor=1, scope=ACC_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:tm, 0:tn], A[0:tm, 0:tk], B[0:tk, 0:tn])
            T.writes(C[0:tm, 0:tn])
            T.evaluate(
                T.call_extern("int32", op, A.elem_offset, B.elem_offset, C.elem_offset, tm, tk, tn)
            )

    return desc, impl


def _fill(tm: int, tn: int):
    @T.prim_func(s_tir=True)
    def desc(c: T.handle) -> None:
        C = T.match_buffer(c, (tm, tn), "int32", offset_factor=1, scope=ACC_SCOPE)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:tm, 0:tn])
            for i, j in T.grid(tm, tn):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = 0

    @T.prim_func(s_tir=True)
    def impl(c: T.handle) -> None:
        C = T.match_buffer(c, (tm, tn), "int32", offset_factor=1, scope=ACC_SCOPE)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:tm, 0:tn])
            T.evaluate(T.call_extern("int32", FILL, C.elem_offset, tm, tn))

    return desc, impl


def _epilogue(tm: int, tn: int, shift: int, relu: bool):
    low = 0 if relu else -128

    @T.prim_func(s_tir=True)
    def desc(c: T.handle, b: T.handle, s: T.handle, y: T.handle) -> None:
        C = T.match_buffer(c, (tm, tn), "int32", offset_factor=1, scope=ACC_SCOPE)
        Bias = T.match_buffer(b, (tn,), "int32", offset_factor=1)
        Mult = T.match_buffer(s, (tn,), "int64", offset_factor=1)
        Y = T.match_buffer(y, (tm, tn), "int8", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:tm, 0:tn], Bias[0:tn], Mult[0:tn])
            T.writes(Y[0:tm, 0:tn])
            for i, j in T.grid(tm, tn):
                with T.sblock("requant"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    Y[vi, vj] = requant_expr(C[vi, vj], Bias[vj], Mult[vj], shift, low)

    @T.prim_func(s_tir=True)
    def impl(c: T.handle, b: T.handle, s: T.handle, y: T.handle) -> None:
        C = T.match_buffer(c, (tm, tn), "int32", offset_factor=1, scope=ACC_SCOPE)
        Bias = T.match_buffer(b, (tn,), "int32", offset_factor=1)
        Mult = T.match_buffer(s, (tn,), "int64", offset_factor=1)
        Y = T.match_buffer(y, (tm, tn), "int8", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:tm, 0:tn], Bias[0:tn], Mult[0:tn])
            T.writes(Y[0:tm, 0:tn])
            T.evaluate(
                T.call_extern(
                    "int32", EPILOGUE, C.elem_offset, Y.data, Y.elem_offset, tm, tn, shift, low
                )
            )

    return desc, impl


def requant_expr(acc, bias, multiplier, shift: int, low: int):
    """``clip(round((acc + bias) * multiplier >> shift), low, 127)`` as int8: the device's BIAS_REQUANT
    (with RELU for low = 0), in TIR; :func:`tvm_sparse.hw.integer.requantize` is its definition."""
    scaled = (T.Cast("int64", acc + bias) * multiplier + T.int64(1 << (shift - 1))) >> T.int64(
        shift
    )
    return T.Cast("int8", T.max(T.min(scaled, T.int64(127)), T.int64(low)))


def intrinsic_names(
    tm: int, tk: int, tn: int, shift: int, relu: bool, mode: GemmMode = "dense"
) -> dict[str, str]:
    """Register (once) and name the intrinsics of one tile shape and weight mode."""
    names = {
        LOAD_INP: f"{LOAD_INP}.{tm}x{tk}",
        LOAD_WGT: f"{LOAD_WGT}.{tk}x{tn}",
        GEMM: f"{GEMM_OPS[mode]}.{tm}x{tk}x{tn}",
        FILL: f"{FILL}.{tm}x{tn}",
        EPILOGUE: f"{EPILOGUE}.{tm}x{tn}.s{shift}{'.relu' if relu else ''}",
    }
    makers = {
        LOAD_INP: lambda: _load(tm, tk, INP_SCOPE, LOAD_INP),
        LOAD_WGT: lambda: _load(tk, tn, WGT_SCOPE, LOAD_WGT),
        GEMM: lambda: _gemm(tm, tk, tn, GEMM_OPS[mode]),
        FILL: lambda: _fill(tm, tn),
        EPILOGUE: lambda: _epilogue(tm, tn, shift, relu),
    }
    for op, name in names.items():
        if TensorIntrin.get(name, allow_missing=True) is None:  # TVM's registry is the record
            TensorIntrin.register(name, *makers[op]())
    return names
