"""Default schedule rules for the host CPU (dlight contract: apply(func, target, tunable))."""

from tvm.s_tir.dlight.cpu import GEMV, Reduction

from .injective import Injective


def default_rules():
    """Rules tried in order on every unscheduled PrimFunc; the first that applies wins."""
    return [Injective(), Reduction(), GEMV()]


__all__ = ["GEMV", "Injective", "Reduction", "default_rules"]
