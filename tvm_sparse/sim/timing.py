"""What an instruction costs: cycles on its queue and energy by component.

Cycles: a DMA moves ``dram_bytes_per_cycle`` per cycle after a fixed setup
(a coded weight load is priced by the index bytes it moves: the table lookup
keeps pace with the DMA; a run-length coded activation load by its value and
run bytes: the expander keeps pace too, as in SCNN, whose PEs read the
compressed activations directly);
a GEMM tile takes the PE cycles its mode needs (see :mod:`.execute`) after a
fixed issue latency; the ALU processes ``output_lanes`` values per cycle.
Energy (pJ, the device's per-action figures): a multiply per issued MAC whose
activation is not gated, an add per issued MAC, SRAM and DRAM per 32 bits moved.
"""

from __future__ import annotations

import math

from ..hw.device import Device
from ..hw.isa import Instruction, Opcode
from .execute import Work

DMA_SETUP_CYCLES = 8
GEMM_ISSUE_CYCLES = 2
ALU_ISSUE_CYCLES = 1


def cycles(device: Device, ins: Instruction, work: Work) -> int:
    if ins.opcode in (Opcode.LOAD, Opcode.LOAD_CODED, Opcode.LOAD_RLE, Opcode.STORE):
        return DMA_SETUP_CYCLES + math.ceil(work.dma_bytes / device.dram_bytes_per_cycle)
    if ins.opcode in (
        Opcode.GEMM,
        Opcode.GEMM_BLOCK,
        Opcode.GEMM_NM,
        Opcode.BASIS_CONV,
        Opcode.DECOMP_CONV,
    ):
        return GEMM_ISSUE_CYCLES + work.pe_cycles
    if ins.opcode == Opcode.ALU:
        return ALU_ISSUE_CYCLES + work.pe_cycles
    return 1


def issue_cycles(device: Device, ins: Instruction, work: Work) -> int:
    """Cycles until the instruction's queue may start its next one: all of them, except for a pipelined
    unit that takes new work while its last stages drain (``DECOMP_CONV``)."""
    if work.issue_cycles is None:
        return cycles(device, ins, work)
    return GEMM_ISSUE_CYCLES + work.issue_cycles


def release_cycles(device: Device, ins: Instruction, work: Work) -> int:
    """Cycles until the instruction no longer reads the buffers the previous queue fills (its ``PUSH_PREV``):
    all of them, except for a pipelined unit whose last stages only write results (``DECOMP_CONV``)."""
    if work.release_cycles is None:
        return cycles(device, ins, work)
    return GEMM_ISSUE_CYCLES + work.release_cycles


def energy_pj(device: Device, work: Work) -> dict[str, float]:
    e = device.energy_pj
    return {
        "mac": (work.macs_issued - work.macs_gated) * e["int8_mult"]
        + (work.macs_issued + work.alu_ops) * e["int8_add"],
        "sram": work.sram_read_bytes / 4 * e["sram_read_32b"]
        + work.sram_write_bytes / 4 * e["sram_write_32b"],
        "dram": work.dma_bytes / 4 * e["dram_32b"],
    }
