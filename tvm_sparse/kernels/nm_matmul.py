"""TIR kernel for ``Y = X @ W.T + bias`` with a constant N:M-sparse ``W`` (AVX-512).

The reduction is walked in chunks of 16 inputs. A chunk of an N:M weight keeps
``slots = 16 / M * N`` values per output (8 for 2:4, 4 for 1:4 and 2:8), each
at a position known at compile time. For 16 outputs at once (the vector
lanes), slot ``s`` holds each output's ``s``-th kept value and its position in
the chunk; one ``vpermps`` gathers the matching inputs from the 16 loaded
activations of a row, and one FMA accumulates them. So a chunk costs ``slots``
permutes and FMAs per row instead of 16 broadcast FMAs: the permutes run on
the shuffle unit beside the FMAs, which is where 2:4 beats dense.

The value and position vectors of a chunk are shared by the ``MT`` rows of a
row tile (held in registers); ``X`` is repacked per row tile as
``[tile, chunk, MT, 16]`` so that each row's chunk is one aligned load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T
from tvm.target.codegen import target_has_features

from ..formats import NMMatrix
from .bsr_matmul import VECTOR_LANES
from .rows import Dim, own_vars, row_tiling

ROWS_PER_TILE = 8
PERMUTE = "llvm.x86.avx512.permvar.sf.512"


@dataclass(frozen=True)
class NMKernelArgs:
    """Constant tensors the kernel reads, in argument order after ``X``."""

    positions: np.ndarray  # int32 [N/16, K/16, slots, 16]: position within the chunk
    values: np.ndarray  # float32 [N/16, K/16, slots, 16]

    @staticmethod
    def from_nm(weight: NMMatrix) -> NMKernelArgs:
        if VECTOR_LANES % weight.m:
            raise ValueError(f"the N:M kernel needs M to divide {VECTOR_LANES}, got M={weight.m}")
        rows, cols = weight.shape
        n_pad, k_pad = -(-rows // VECTOR_LANES) * VECTOR_LANES, padded_reduction(cols)
        groups_pad = k_pad // weight.m
        positions = np.zeros((n_pad, groups_pad, weight.n), np.int32)
        values = np.zeros((n_pad, groups_pad, weight.n), np.float32)
        groups = weight.values.shape[1]
        positions[:rows, :groups] = weight.positions
        values[:rows, :groups] = weight.values
        positions += (np.arange(groups_pad) % (VECTOR_LANES // weight.m) * weight.m)[
            None, :, None
        ]  # group offset in the chunk
        chunks, slots = k_pad // VECTOR_LANES, VECTOR_LANES // weight.m * weight.n

        def lanes_last(a):
            return np.ascontiguousarray(
                a.reshape(n_pad // VECTOR_LANES, VECTOR_LANES, chunks, slots).transpose(0, 2, 3, 1)
            )

        return NMKernelArgs(lanes_last(positions), lanes_last(values))


def nm_kernel_available(target: tvm.target.Target | None = None) -> bool:
    """Whether ``target`` (default: the current one, else the host) has the AVX-512 permutes the kernel uses."""
    from ..target import host_target

    target = target or tvm.target.Target.current(allow_none=True) or host_target()
    return str(target.kind.name) == "llvm" and bool(target_has_features("avx512f", target))


def padded_reduction(k: int) -> int:
    return -(-k // VECTOR_LANES) * VECTOR_LANES


def nm_matmul_kernel(
    m: Dim,
    weight: NMMatrix,
    name: str = "nm_matmul",
    relu: bool = False,
    rows_per_tile: int = ROWS_PER_TILE,
):
    """Return the PrimFunc ``name(X[m, Kp], positions, values, bias[Np], Y[m, Np])``.

    ``rows_per_tile`` rows of ``X`` share each chunk's value and position vectors (the kernel's knob).
    ``m`` may be symbolic (one kernel for every row count, see :mod:`.rows`).
    ``Kp``/``Np`` are ``K``/``N`` rounded up to 16; the caller pads ``X`` with
    zero columns and crops ``Y``. Raises ``ValueError`` when the current target
    (else the host) lacks AVX-512, whose 16-lane permute the kernel is built on.
    """
    if not nm_kernel_available():
        raise ValueError("the N:M kernel needs AVX-512 (a 16-lane vpermps); this target has none")
    rows, cols = weight.shape
    n_pad, k_pad = -(-rows // VECTOR_LANES) * VECTOR_LANES, padded_reduction(cols)
    panels, chunks = n_pad // VECTOR_LANES, k_pad // VECTOR_LANES
    slots = VECTOR_LANES // weight.m * weight.n
    (m,) = own_vars((m,), "m")
    mt, full_tiles, tails = row_tiling(m, rows_per_tile)
    has_tail = bool(tails)
    row_tiles = full_tiles + has_tail
    lanes = VECTOR_LANES

    def vec(base):
        return T.Ramp(base, 1, lanes)

    def finish(value):
        return T.max(value, T.Broadcast(T.float32(0), lanes)) if relu else value

    @T.macro
    def row_tile(X_tiles, P, V, B, Y, t, p, count, x0):
        acc = T.decl_buffer((mt, lanes), "float32")  # on the stack: LLVM keeps it in registers
        for mm in T.unroll(count):
            acc[mm, vec(0)] = B[vec(p * lanes)]
        for kc in range(chunks):
            for mm in T.unroll(count):
                for s in T.unroll(slots):
                    gathered = T.call_llvm_pure_intrin(
                        "float32x16",
                        T.llvm_lookup_intrinsic_id(PERMUTE),
                        X_tiles[t, kc, x0 + mm, vec(0)],
                        P[p, kc, s, vec(0)],
                    )
                    acc[mm, vec(0)] = acc[mm, vec(0)] + gathered * V[p, kc, s, vec(0)]
        for mm in T.unroll(count):
            Y[t * mt + x0 + mm, vec(p * lanes)] = finish(acc[mm, vec(0)])

    @T.macro
    def tail_tile(X_tiles, P, V, B, Y, i):
        # The i-th tile of the rows past the full tiles (if there is one, and the row count takes it).
        if i < len(tails):
            if tails[i].when:
                for p in T.parallel(panels):
                    row_tile(X_tiles, P, V, B, Y, full_tiles, p, tails[i].rows, tails[i].offset)

    @T.prim_func
    def kernel(
        X: T.Buffer((m, k_pad), "float32"),
        P: T.Buffer((panels, chunks, slots, lanes), "int32"),
        V: T.Buffer((panels, chunks, slots, lanes), "float32"),
        B: T.Buffer((n_pad,), "float32"),
        Y: T.Buffer((m, n_pad), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        X_tiles = T.alloc_buffer((row_tiles, chunks, mt, lanes), "float32")
        for t in T.parallel(row_tiles):
            for kc in range(chunks):
                for mm in T.unroll(mt):
                    X_tiles[t, kc, mm, vec(0)] = X[T.min(t * mt + mm, m - 1), vec(kc * lanes)]
        for w in T.parallel(full_tiles * panels):
            row_tile(X_tiles, P, V, B, Y, w // panels, w % panels, mt, 0)
        if has_tail:
            tail_tile(X_tiles, P, V, B, Y, 0)
            tail_tile(X_tiles, P, V, B, Y, 1)
            tail_tile(X_tiles, P, V, B, Y, 2)
            tail_tile(X_tiles, P, V, B, Y, 3)
            tail_tile(X_tiles, P, V, B, Y, 4)

    return kernel.with_attr("global_symbol", name)
