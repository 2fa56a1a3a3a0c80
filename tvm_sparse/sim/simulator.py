"""Run a program on the simulated device: three queues, dependency tokens, functional results and counters.

Each queue takes its instructions in program order. An instruction starts
when its queue is free and the tokens it pops are available; it ends after
its cost (:mod:`.timing`) and pushes its tokens then. Among the queues whose
next instruction can start, the earliest start goes first, and its effect on
the memories is applied then. When no queue can start, the program is
deadlocked: :class:`DeviceFault` names the instruction each queue is stuck on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..hw.device import Device, load_device
from ..hw.isa import Flag, Instruction, Program, Queue
from .engine import SEMANTICS as ENGINE_SEMANTICS
from .execute import execute
from .machine import DeviceFault, Machine
from .report import Counters, SimReport, TimelineEvent
from .timing import cycles, energy_pj, issue_cycles, release_cycles


@dataclass
class SimResult:
    dram: np.ndarray  # the DRAM image after the run (uint8)
    report: SimReport

    def read(self, addr: int, shape, dtype) -> np.ndarray:
        """A copy of DRAM at byte ``addr`` as a contiguous array."""
        count = int(np.prod(shape))
        nbytes = count * np.dtype(dtype).itemsize
        if addr < 0 or addr + nbytes > self.dram.size:
            raise DeviceFault(
                f"read of {nbytes} bytes at {addr:#x} is outside the {self.dram.size}-byte image"
            )
        return self.dram[addr : addr + nbytes].view(dtype).reshape(shape).copy()


def _neighbour(queue: Queue, offset: int) -> Queue | None:
    value = int(queue) + offset
    return Queue(value) if 0 <= value < len(Queue) else None


def _channels(ins: Instruction, queue: Queue, index: int) -> tuple[list, list]:
    """The (from, to) token channels an instruction pops and pushes."""
    pops, pushes = [], []
    for flag, offset, into in (
        (Flag.POP_PREV, -1, pops),
        (Flag.POP_NEXT, 1, pops),
        (Flag.PUSH_PREV, -1, pushes),
        (Flag.PUSH_NEXT, 1, pushes),
    ):
        if flag in ins.flags:
            other = _neighbour(queue, offset)
            if other is None:
                raise DeviceFault(
                    f"instruction {index} ({ins.opcode.name}): the {queue.name.lower()} queue has no {flag.name.split('_')[1].lower()} queue"
                )
            into.append((other, queue) if into is pops else (queue, other))
    return pops, pushes


def run(program: Program, device: Device | str | None = None) -> SimResult:
    """Execute ``program`` on the simulated device: functional results and timing.

    Parameters
    ----------
    program
        Instructions, the initial DRAM image and the layer names (:class:`~tvm_sparse.hw.isa.Program`).
    device
        A :class:`~tvm_sparse.hw.device.Device`, a shipped variant's name or a description file;
        default: the device the program names, else ``sparse-accel``.

    Returns
    -------
    SimResult
        The DRAM image after the run (read outputs with :meth:`SimResult.read`) and the report:
        cycles, MACs, traffic and energy per layer and in total, and the timeline.

    Raises
    ------
    DeviceFault
        An instruction the device cannot execute (out-of-bounds access, a mode the device lacks,
        bad metadata) or a deadlock of the queues' tokens; the message names the instruction.
    DeviceError
        An invalid device description.
    """
    device = load_device(device or program.device or "sparse-accel")
    machine = Machine(device, program.dram)
    queues = {q: deque() for q in Queue}
    for index, ins in enumerate(program.instructions):
        queues[ins.on_queue].append(index)
    tokens: dict = {}
    free_at = {q: 0 for q in Queue}
    total = Counters()
    layers: dict = {}
    timeline = []
    while any(queues.values()):
        best = None
        for queue, pending in queues.items():
            if not pending:
                continue
            index = pending[0]
            pops, _ = _channels(program.instructions[index], queue, index)
            if all(tokens.get(ch) for ch in pops):
                start = max([free_at[queue]] + [tokens[ch][0] for ch in pops])
                if best is None or start < best[0]:
                    best = (start, queue, index)
        if best is None:
            stuck = ", ".join(
                f"{q.name.lower()} queue at instruction {p[0]} ({program.instructions[p[0]].opcode.name})"
                for q, p in queues.items()
                if p
            )
            raise DeviceFault(
                f"deadlock: no queue can proceed ({stuck}); a token is popped that nothing will push"
            )
        start, queue, index = best
        queues[queue].popleft()
        ins = program.instructions[index]
        pops, pushes = _channels(ins, queue, index)
        for ch in pops:
            tokens[ch].popleft()
        try:
            machine.now = start
            work = ENGINE_SEMANTICS.get(ins.opcode, execute)(machine, ins)
        except DeviceFault as err:
            raise DeviceFault(f"instruction {index} ({ins.opcode.name}): {err}") from None
        end = start + cycles(device, ins, work)
        free_at[queue] = start + issue_cycles(device, ins, work)
        for ch in (
            pushes
        ):  # a pipelined unit releases its inputs (to the previous queue) before it completes
            released = start + release_cycles(device, ins, work) if ch[1] < queue else end
            tokens.setdefault(ch, deque()).append(released)
        energy = energy_pj(device, work)
        tag = program.tags[ins.tag] if ins.tag < len(program.tags) else str(ins.tag)
        total.add(queue, start, end, work, energy)
        layers.setdefault(tag, Counters()).add(queue, start, end, work, energy)
        timeline.append(TimelineEvent(index, queue, ins.opcode.name, tag, start, end))
    total.start_cycle = 0
    return SimResult(machine.dram, SimReport(device, total, layers, timeline))
