"""Elementwise, broadcast and layout (injective) functions: parallel and vectorized."""

from __future__ import annotations

from tvm import relax, s_tir, tirx
from tvm.ir import Call, Op, TensorLoad
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base.common_schedules import try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

#: Below this many elements a function runs on one thread: forking costs more.
MIN_PARALLEL_ELEMENTS = 16384


def _vector_safe(op: Op) -> bool:
    """Whether LLVM code generation takes ``op`` on vectors. TVM scalarizes the ops not marked
    ``TVectorizable``; of the marked ones, those whose only lowering is the scalar libm call
    (cosh, sinh) reach code generation as vectors and fail."""
    if not op.get_attr("TVectorizable") or op.get_attr("default.FLowerIntrinsic") is None:
        return True
    return any(
        op.get_attr(key) is not None
        for key in ("llvm.FLowerIntrinsic", "llvm.FLegalize", "default.FLegalize")
    )


def _vectorizable(block: s_tir.SBlock) -> bool:
    if not isinstance(block.body, tirx.BufferStore):
        return True
    ops = []
    relax.analysis.post_order_visit(
        block.body.value, lambda e: ops.append(e.op) if isinstance(e, Call) else None
    )
    return all(_vector_safe(op) for op in ops if isinstance(op, Op))


def _strided_reads(block: s_tir.SBlock) -> bool:
    """Whether a read walks memory with a stride along the block's last axis, as a transpose does (the
    last iteration variable indexes an axis of the read other than its last): a vector along that axis
    becomes a gather, and fused loops a division per element (NCHW -> NHWC of a 224x224 image: 0.32 ms
    fused and vectorized, 0.38 ms fused, 0.023 ms as :func:`_strided` schedules it)."""
    if not isinstance(block.body, tirx.BufferStore) or not block.iter_vars:
        return False
    last = block.iter_vars[-1].var
    loads = []
    relax.analysis.post_order_visit(
        block.body.value, lambda e: loads.append(e) if isinstance(e, TensorLoad) else None
    )
    return any(
        u.same_as(last)
        for load in loads
        for index in load.indices[:-1]
        for u in tirx.analysis.undefined_vars(index)
    )


def _lanes(extent: int, max_lanes: int) -> int:
    """The widest power-of-two vector that divides ``extent`` (1 if none does)."""
    lanes = max_lanes
    while lanes > 1 and extent % lanes:
        lanes //= 2
    return lanes


class Injective(CPUScheduleRule):
    """Inline every block into the last one, then fuse, vectorize and parallelize it."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if not blocks or not all(b.is_injective() for b in blocks):
            return None
        remaining = try_inline(sch, blocks)
        if len(remaining) != 1:
            return None
        loops = sch.get_loops(remaining[0].block_rv)
        if not loops:
            return None
        block = sch.get(remaining[0].block_rv)
        dtype_bits = max(8, block.writes[0].source.dtype.bits) if block.writes else 32
        if _strided_reads(block):
            return _strided(sch, loops)
        max_lanes = (
            max(1, llvm_get_vector_width(target) // dtype_bits) if _vectorizable(block) else 1
        )
        if max_lanes > 1 and not isinstance(sch.get(loops[-1]).extent, tirx.IntImm):
            return _symbolic_last_loop(sch, loops, max_lanes)
        # The trailing loops of static extent are fused and vectorized; the rest runs in parallel with
        # the leading ones (a symbolic batch or sequence among them: at batch 1 they alone give one thread).
        split = len(loops)
        while split > 0 and isinstance(sch.get(loops[split - 1]).extent, tirx.IntImm):
            split -= 1
        inner = sch.fuse(*loops[split:]) if split < len(loops) else None
        outer = sch.fuse(*loops[:split]) if split > 0 else None
        static = int(sch.get(inner).extent) if inner is not None else 1
        lanes = _lanes(static, max_lanes)
        if lanes > 1:
            rest, vector = sch.split(inner, [None, lanes])
            sch.vectorize(vector)
            inner = rest if static > lanes else None
        if outer is None:  # all static: parallel over the rest when there is enough work
            if inner is not None and static >= MIN_PARALLEL_ELEMENTS:
                sch.parallel(inner)
        else:
            sch.parallel(sch.fuse(outer, inner) if inner is not None else outer)
        return sch


def _strided(sch: s_tir.Schedule, loops: list) -> s_tir.Schedule:
    """A transpose-like function: the innermost loops keep plain indices (no per-element division, no
    gathers): the two innermost of four or more, else the last; the loops before them are fused and run
    in parallel. (Tiling the two innermost loops by 16 helped a 768x3072 transpose, 7.6 -> 4.6 ms, and
    slowed a 64x56x56 -> 56x56x64 one, 0.042 -> 0.062 ms.)"""
    if len(loops) > 3:
        sch.parallel(sch.fuse(*loops[:-2]))
    else:
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 1 else loops[0])
    return sch


def _symbolic_last_loop(sch: s_tir.Schedule, loops: list, lanes: int) -> s_tir.Schedule:
    """A last loop of symbolic extent ``n``: split by ``lanes`` and vectorized, with the hint that has TVM's
    ``LoopPartition`` peel the iterations whose vector would cross ``n`` (the main loop then carries no
    predicate; the schedule primitive ``loop_partition`` takes static extents only); the leading loops
    fused, in parallel."""
    outer = sch.fuse(*loops[:-1]) if len(loops) > 1 else None
    chunks, vector = sch.split(loops[-1], [None, lanes])
    sch.vectorize(vector)
    sch.annotate(chunks, "pragma_loop_partition_hint", 1)
    sch.parallel(outer if outer is not None else chunks)
    return sch
