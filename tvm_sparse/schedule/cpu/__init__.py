"""Default schedule rules for the host CPU (dlight contract: apply(func, target, tunable))."""

from tvm.s_tir.dlight.cpu import GEMV, Reduction

from .guard import Declining
from .injective import Injective


def default_rules():
    """Rules tried in order on every unscheduled PrimFunc; the first that applies wins."""
    return [Injective(), Declining(Reduction()), Declining(GEMV())]


__all__ = ["GEMV", "Declining", "Injective", "Reduction", "default_rules"]
