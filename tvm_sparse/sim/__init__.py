"""The bundled simulator of the ``sparse-accel`` device: functional, timed, with counters and energy."""

from .machine import DeviceFault
from .report import Counters, SimReport
from .simulator import SimResult, run

__all__ = ["Counters", "DeviceFault", "SimReport", "SimResult", "run"]
