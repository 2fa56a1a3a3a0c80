"""From a tensorized layer to the device's tile operations, in program order.

The tensorized loop nest (:mod:`.tir_layer`) has constant extents; its leaves
are blocks whose body is one ``call_extern`` of a device operation, with
``match_buffer`` regions saying which tile it touches. :func:`tile_operations`
runs the nest (enumerating the loops, evaluating the block bindings and the
regions' origins) and returns one :class:`TileOp` per device operation; the
program emitter (:mod:`.gemm_program`) assigns buffer halves and dependency
tokens and encodes the sparse weight tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

from .intrinsics import OPERATIONS


@dataclass(frozen=True)
class TileOp:
    """One device operation: its name and the origin and shape of each operand tile."""

    op: str
    tiles: tuple  # ((origin..., shape...) per match_buffer, in the intrinsic's argument order)

    def origin(self, index: int) -> tuple[int, ...]:
        return self.tiles[index][0]

    def shape(self, index: int) -> tuple[int, ...]:
        return self.tiles[index][1]


_BINARY = {
    tirx.Add: lambda a, b: a + b,
    tirx.Sub: lambda a, b: a - b,
    tirx.Mul: lambda a, b: a * b,
    tirx.FloorDiv: lambda a, b: a // b,
    tirx.FloorMod: lambda a, b: a % b,
    tirx.Min: min,
    tirx.Max: max,
}


def _eval(expr, env: dict) -> int:
    if isinstance(expr, int):
        return expr
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, tvm.ir.Var):
        return env[expr.name]
    op = _BINARY.get(type(expr))
    if op is None:
        raise NotImplementedError(f"cannot evaluate {type(expr).__name__} in a tile index: {expr}")
    return op(_eval(expr.a, env), _eval(expr.b, env))


def _device_call(stmt) -> str | None:
    """The device operation a tensorized block's body calls, if it is one."""
    if (
        isinstance(stmt, tirx.Evaluate)
        and isinstance(stmt.value, tvm.ir.Call)
        and stmt.value.op.same_as(tvm.ir.Op.get("tirx.call_extern"))
    ):
        name = str(stmt.value.args[0].value)
        return name if name in OPERATIONS else None
    return None


def tile_operations(mod: tvm.IRModule) -> list[TileOp]:
    """The device operations of the tensorized ``mod["main"]``, in execution order."""
    ops: list[TileOp] = []

    def visit(stmt, env: dict) -> None:
        if isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                visit(s, env)
        elif isinstance(stmt, tirx.For):
            start, extent = _eval(stmt.min, env), _eval(stmt.extent, env)
            for value in range(start, start + extent):
                visit(stmt.body, {**env, stmt.loop_var.name: value})
        elif isinstance(stmt, s_tir.SBlockRealize):
            block = stmt.block
            inner = {
                **env,
                **{iv.var.name: _eval(v, env) for iv, v in zip(block.iter_vars, stmt.iter_values)},
            }
            name = _device_call(block.body)
            if name is None:
                visit(block.body, inner)
                return
            tiles = []
            for match in block.match_buffers:
                region = match.source.region
                tiles.append(
                    (
                        tuple(_eval(r.min, inner) for r in region),
                        tuple(_eval(r.extent, inner) for r in region),
                    )
                )
            ops.append(TileOp(name, tuple(tiles)))
        elif hasattr(stmt, "body"):  # allocations, declarations, attributes
            visit(stmt.body, env)
        else:
            raise NotImplementedError(
                f"unexpected {type(stmt).__name__} in a tensorized device layer"
            )

    visit(mod["main"].body, {})
    return ops
