"""Rules that may raise on functions they do not handle, made to decline them instead."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target


class Declining(ScheduleRule):
    """``rule``, returning ``None`` (not applicable) where it raises a schedule error.

    dlight's CPU ``Reduction`` raises on some functions it accepts at first
    sight (e.g. training-mode batch norm, whose statistics are outputs too);
    declining leaves the function to the next rule or unscheduled, as TVM's
    default pipeline compiles it.
    """

    def __init__(self, rule: ScheduleRule):
        self.rule = rule

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        try:
            return self.rule.apply(func, target, tunable)
        except ScheduleError:
            return None
