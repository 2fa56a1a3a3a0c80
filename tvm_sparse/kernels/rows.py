"""Symbolic row counts for the kernel generators.

A kernel's row count (tokens x batch, or output pixels of a convolution) may
be a symbolic variable of a dynamic-shape Relax function; the generators then
emit one kernel that runs at any size. Rows are processed in tiles of ``MT``
register-resident rows; the rows that do not fill a last tile (the *tail*)
are handled by narrower unrolled tiles:

* a static row count has one tail tile of exactly ``m % MT`` rows;
* a symbolic one has one tile per power of two below ``MT``, each taken when
  the tail's binary expansion has that bit (13 rows with ``MT = 8``: a full
  tile, then 4 rows, then 1), so no row is computed twice and every tile's
  loops stay unrolled.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx

Dim = int | tirx.Expr
#: Tail tiles a kernel emits at most (the powers of two below the largest tile, 32 rows).
MAX_TAIL_TILES = 5


def is_static(dim) -> bool:
    return isinstance(dim, int) or isinstance(dim, tirx.IntImm)


def own_vars(shape, name: str = "d") -> tuple:
    """``shape`` with each symbolic dimension replaced by a fresh int64 variable.

    A PrimFunc defines its own shape variables (through its buffers): a
    kernel takes the static dimensions of a Relax shape as they are and gets
    a variable of its own, named like the dimension, for each other one.
    """
    return tuple(
        int(d)
        if is_static(d)
        else tirx.Var(d.name if isinstance(d, tirx.Var) else f"{name}{i}", "int64")
        for i, d in enumerate(shape)
    )


@dataclass(frozen=True)
class TailTile:
    """A tile of ``rows`` rows starting ``offset`` rows into the tail, taken when ``when`` holds."""

    rows: int
    offset: Dim
    when: object  # bool or PrimExpr


def rows_per_tile_error(rows_per_tile: int) -> str | None:
    """Why a kernel cannot tile its rows by ``rows_per_tile`` (None if it can): a tile has 1 to 32
    rows (its tail is at most :data:`MAX_TAIL_TILES` power-of-two tiles)."""
    if not 1 <= rows_per_tile <= 1 << MAX_TAIL_TILES:
        return f"rows per tile must be 1 to {1 << MAX_TAIL_TILES}, got {rows_per_tile}"
    return None


def row_tiling(m: Dim, rows_per_tile: int) -> tuple[int, Dim, list[TailTile]]:
    """``(MT, full tiles, tail tiles)`` for ``m`` rows in tiles of up to ``rows_per_tile`` (at most 32)."""
    error = rows_per_tile_error(rows_per_tile)
    if error is not None:
        raise ValueError(error)
    if is_static(m):
        m = int(m)
        mt = max(1, min(rows_per_tile, m))
        full, tail = divmod(m, mt)
        return mt, full, [TailTile(tail, 0, True)] if tail else []
    mt = rows_per_tile
    tail = m % mt
    tiles = []
    p = 1 << (mt - 1).bit_length() - 1 if mt > 1 else 0  # largest power of two below MT
    while p >= 1:
        tiles.append(TailTile(p, tail - tail % (2 * p), tail % (2 * p) >= p))
        p //= 2
    return mt, m // mt, tiles
