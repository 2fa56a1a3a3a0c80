"""The fused decomposed-convolution engine: ``ENGINE_CONFIG`` and ``DECOMP_CONV`` (semantics and timing).

A decomposed convolution (PENNI, Li et al. ICML'20; ESCALATE, Li et al. MICRO'21) is a 1x1 coefficient
convolution and a convolution with a few shared basis kernels. On a device whose
``sparse_modes.decomposed_conv`` has ``maps_buffer_bytes``, one ``DECOMP_CONV`` runs a band of output rows
of such a layer with the intermediate int8 maps kept in an on-chip line buffer (ESCALATE's stream
processing), in either order:

* combine-first: the PE array's coefficient GEMM turns each input row into ``basis * outputs`` maps (map
  ``j * outputs + o``), a requantizer writes them into the line buffer, and the basis stage
  (``basis_macs_per_cycle`` MACs of its own) convolves each output channel's ``basis`` maps with the basis
  kernels once the rows under its window are in;
* basis-first (ESCALATE's "basis-first" dataflow; it pays for strided layers): the basis stage convolves
  every input channel with each basis kernel (``basis * channels`` maps at the output resolution, map
  ``j * channels + c``), and the PE array's coefficient GEMM combines each row of maps.

Either way the output is requantized and written to ``ACC`` as int8 values (``STORE`` writes them out).
Zero operands of either stage are gated (no multiply energy) on a device that gates or skips zero
activations; the engine skips none.
The units work on different rows at once, across instructions: :class:`EnginePipeline` is that timing.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..hw.device import Device
from ..hw.integer import MAX_SHIFT, requantize, wrap32
from ..hw.isa import (
    COEF_MODES,
    ENGINE_ORDERS,
    Buffer,
    Flag,
    Instruction,
    Opcode,
    split_band,
    split_geometry,
    split_pads,
)
from .execute import INDEX_WORD_BITS, Work, _basis_taps, _block_weight, _ceil, block_chunks
from .machine import DeviceFault, Machine


@dataclass(frozen=True)
class EngineConfig:
    """The engine's registers (``ENGINE_CONFIG``).

    A band of ``height`` input rows of ``width`` pixels and ``channels`` channels in ``INP``, with
    ``pad_top``/``pad_bottom`` zero rows above and below it and ``padding`` zero columns on each side, gives
    ``outputs`` output channels, combine-first or ``basis_first``. ``params``: the requantizers' words
    ``[maps bias, maps multiplier (maps each), output bias, output multiplier (outputs each)]``, latched
    from ``ACC`` at ``params_addr`` by ``ENGINE_CONFIG`` (so that the next step's may load meanwhile); the
    shifts go with them."""

    channels: int
    outputs: int
    height: int
    width: int
    kernel: int
    basis: int
    stride: int
    padding: int
    pad_top: int
    pad_bottom: int
    maps_shift: int
    out_shift: int
    params_addr: int
    basis_first: bool = False
    params: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def maps(self) -> int:
        """Maps per pixel: ``basis * channels`` basis-first, ``basis * outputs`` combine-first."""
        return self.basis * (self.channels if self.basis_first else self.outputs)

    @property
    def out_hw(self) -> tuple[int, int]:
        rows = self.pad_top + self.height + self.pad_bottom
        return (rows - self.kernel) // self.stride + 1, (
            self.width + 2 * self.padding - self.kernel
        ) // self.stride + 1

    @property
    def map_width(self) -> int:
        """Pixels in a row of maps: the input's combine-first, the output's basis-first."""
        return self.out_hw[1] if self.basis_first else self.width

    @property
    def line_rows(self) -> int:
        """Rows of maps the line buffer must hold: a window and the rows written meanwhile (combine-first),
        the row being combined and the next (basis-first)."""
        return 2 if self.basis_first else self.kernel + self.stride

    def needs(self, out_row: int) -> int:
        """Combine-first: the last band row output row ``out_row`` reads (-1: only padding)."""
        return min(self.height - 1, out_row * self.stride + self.kernel - 1 - self.pad_top)

    def last_reader(self, band_row: int) -> int:
        """Combine-first: the last output row that reads band row ``band_row``."""
        return min(self.out_hw[0] - 1, (band_row + self.pad_top) // self.stride)


def _fused_engine(device: Device):
    mode = device.modes.decomposed_conv
    if mode is None or not mode.fused:
        raise DeviceFault(
            f"device {device.name} has no fused decomposed-convolution engine (sparse_modes.decomposed_conv.maps_buffer_bytes)"
        )
    return mode


def engine_config(machine: Machine, ins: Instruction) -> Work:
    """Check and latch the engine's registers and parameters."""
    mode = _fused_engine(machine.device)
    if ins.order >= len(ENGINE_ORDERS):
        raise DeviceFault(f"unknown order {ins.order}")
    basis_first = ENGINE_ORDERS[ins.order] == "basis-first"
    cfg = EngineConfig(
        ins.channels,
        ins.outputs,
        *split_band(ins.band),
        *split_geometry(ins.geometry),
        *split_pads(ins.pads),
        ins.params_addr,
        basis_first,
    )
    if (
        cfg.kernel not in mode.kernel_sizes
        or not 0 < cfg.basis <= mode.max_basis
        or cfg.stride == 0
    ):
        raise DeviceFault(
            f"{cfg.kernel}x{cfg.kernel} kernels with {cfg.basis} basis (stride {cfg.stride}) are not supported by the engine (kernels {list(mode.kernel_sizes)}, up to {mode.max_basis} basis)"
        )
    if not (cfg.channels and cfg.outputs and cfg.height and cfg.width) or min(cfg.out_hw) <= 0:
        raise DeviceFault(
            f"empty decomposed convolution ({cfg.height}x{cfg.width}x{cfg.channels} -> {cfg.outputs} channels, kernel {cfg.kernel})"
        )
    if max(cfg.pad_top, cfg.pad_bottom, cfg.padding) >= cfg.kernel:
        raise DeviceFault(
            f"padding {cfg.pad_top}/{cfg.pad_bottom}/{cfg.padding} is not smaller than the {cfg.kernel}x{cfg.kernel} kernel"
        )
    for name, shift in (("maps_shift", cfg.maps_shift), ("out_shift", cfg.out_shift)):
        if shift > MAX_SHIFT:
            raise DeviceFault(f"{name} {shift} is out of range (0..{MAX_SHIFT})")
    line = cfg.line_rows * cfg.map_width * cfg.maps
    if line > mode.maps_buffer_bytes:
        raise DeviceFault(
            f"{cfg.line_rows} rows of {cfg.map_width}x{cfg.maps} maps ({line} bytes) do not fit the {mode.maps_buffer_bytes}-byte maps buffer"
        )
    words = 2 * cfg.maps + 2 * cfg.outputs
    machine.engine = dataclasses.replace(
        cfg, params=machine.region(Buffer.ACC, cfg.params_addr, 1, words)[0].astype(np.int64)
    )
    return Work(sram_read_bytes=4 * words)


@dataclass(frozen=True)
class _Coefficients:
    """A ``DECOMP_CONV``'s coefficient weight ``[K, N]`` (``[channels, maps]`` combine-first, ``[maps,
    outputs]`` basis-first) and what it costs the PE array."""

    weight: np.ndarray
    pixel_macs: int  # MACs issued per pixel the GEMM computes
    pixel_cycles: int  # PE cycles per pixel
    setup_cycles: int  # once per instruction (decoding block indices)
    weight_bytes: int
    meta_bytes: int


def _coefficients(machine: Machine, ins: Instruction, k: int, n: int) -> _Coefficients:
    device = machine.device
    lanes, out_lanes = device.pe_array.reduction_lanes, device.pe_array.output_lanes
    if ins.coef_mode == COEF_MODES.index("dense"):
        weight = machine.region(Buffer.WGT, ins.wgt_addr, k, n)
        return _Coefficients(
            weight, k * n, _ceil(k, lanes) * _ceil(n, out_lanes), 0, weight.size, 0
        )
    if ins.coef_mode != COEF_MODES.index("block"):
        raise DeviceFault(f"unknown coefficient mode {ins.coef_mode}")
    weight, kb, nb, meta_bytes = _block_weight(machine, ins.wgt_addr, ins.meta_addr, k, n)
    block = device.modes.block
    stored = len(kb) * block.block_rows * block.block_cols
    decode = _ceil(len(kb) * block.index_bits, INDEX_WORD_BITS)  # as GEMM_BLOCK decodes its indices
    return _Coefficients(
        weight,
        stored,
        block_chunks(device, kb, nb * block.block_cols // out_lanes, k),
        decode,
        stored,
        meta_bytes,
    )


def decomp_conv(machine: Machine, ins: Instruction) -> Work:
    """A band of a decomposed convolution on the fused engine (module docstring). Bit for bit what the
    two steps through DRAM compute: ``GEMM`` + ``BIAS_REQUANT`` then ``BASIS_CONV`` + ``BIAS_REQUANT``
    (combine-first), or the basis step then the coefficient GEMM (basis-first)."""
    device = machine.device
    _fused_engine(device)
    cfg = machine.engine
    if cfg is None:
        raise DeviceFault("DECOMP_CONV before any ENGINE_CONFIG")
    (out_h, out_w), rows = cfg.out_hw, cfg.height * cfg.width
    x = machine.region(Buffer.INP, ins.inp_addr, rows, cfg.channels)
    coef = _coefficients(
        machine, ins, *((cfg.maps, cfg.outputs) if cfg.basis_first else (cfg.channels, cfg.maps))
    )
    maps_bias, maps_multiplier, out_bias, out_multiplier = np.split(
        cfg.params, [cfg.maps, 2 * cfg.maps, 2 * cfg.maps + cfg.outputs]
    )
    kernels = machine.region(Buffer.WGT, ins.basis_addr, cfg.basis, cfg.kernel**2).reshape(
        cfg.basis, cfg.kernel, cfg.kernel
    )
    out = machine.region(Buffer.ACC, ins.acc_addr, out_h * out_w, cfg.outputs)

    pad = ((cfg.pad_top, cfg.pad_bottom), (cfg.padding, cfg.padding), (0, 0), (0, 0))
    if cfg.basis_first:  # every channel convolved with each kernel, then combined
        padded = np.pad(x.reshape(cfg.height, cfg.width, cfg.channels, 1), pad)
        taps = [
            _basis_taps(padded, kernels[j : j + 1], cfg.stride, out_h, out_w)
            for j in range(cfg.basis)
        ]
        maps = requantize(
            wrap32(np.concatenate(taps, axis=2).reshape(out_h * out_w, cfg.maps)).astype(np.int64)
            + maps_bias,
            maps_multiplier,
            cfg.maps_shift,
            relu=False,
        )
        result = wrap32((maps.astype(np.float64) @ coef.weight.astype(np.float64)).astype(np.int64))
        gemm_pixels = out_h * out_w
    else:  # the coefficient GEMM gives each output channel's maps, then the basis convolution
        gemm = wrap32((x.astype(np.float64) @ coef.weight.astype(np.float64)).astype(np.int64))
        maps = requantize(gemm + maps_bias, maps_multiplier, cfg.maps_shift, relu=False)
        padded = np.pad(
            maps.reshape(cfg.height, cfg.width, cfg.basis, cfg.outputs).transpose(0, 1, 3, 2), pad
        )
        result = wrap32(
            _basis_taps(padded, kernels, cfg.stride, out_h, out_w).reshape(
                out_h * out_w, cfg.outputs
            )
        )
        gemm_pixels = rows
    out[...] = requantize(
        result.astype(np.int64) + out_bias, out_multiplier, cfg.out_shift, Flag.RELU in ins.flags
    )
    if machine.engine_pipeline is None:
        machine.engine_pipeline = EnginePipeline(device)
    issue, release, done = machine.engine_pipeline.run(
        cfg, coef.pixel_cycles, machine.now + coef.setup_cycles
    )

    basis_macs = (
        out_h
        * out_w
        * cfg.basis
        * cfg.kernel**2
        * (cfg.channels if cfg.basis_first else cfg.outputs)
    )
    gemm_macs = gemm_pixels * coef.pixel_macs
    gemm_input, basis_input = (maps, x) if cfg.basis_first else (x, maps)
    gated = 0
    if device.modes.activation_skipping != "none":  # the engine gates zero operands (it skips none)
        gated = _zero_share(gemm_input, gemm_macs) + _zero_share(basis_input, basis_macs)
    groups = _ceil(coef.weight.shape[1], device.pe_array.output_lanes)
    return Work(
        pe_cycles=done - machine.now,
        issue_cycles=issue - machine.now,
        release_cycles=release - machine.now,
        basis_macs=basis_macs,
        macs_dense=gemm_pixels * coef.weight.size + basis_macs,
        macs_issued=gemm_macs + basis_macs,
        macs_gated=gated,
        alu_ops=maps.size + out.size,
        sram_read_bytes=gemm_input.size * groups
        + basis_input.size
        + coef.weight_bytes
        + coef.meta_bytes
        + kernels.size,
        sram_write_bytes=maps.size + out.size * 4,
    )


def _zero_share(operand: np.ndarray, macs: int) -> int:
    """The MACs whose ``operand`` value is zero, ``operand``'s zeros being spread evenly over them."""
    return (operand.size - int(np.count_nonzero(operand))) * macs // max(1, operand.size)


class EnginePipeline:
    """The engine's units and its line buffer across ``DECOMP_CONV`` instructions (the device's timing model,
    also the compiler's estimate).

    Four units work row by row: the PE array (coefficient GEMM, ``pixel_cycles`` per pixel), the basis
    stage (``basis_macs_per_cycle`` MACs a cycle) and two requantizers (maps, output; ``output_lanes``
    values a cycle). A unit takes a row once the row it needs is done and it is free; a unit whose next
    unit has not taken its finished row waits; a row of maps needs room in the line buffer (the oldest rows
    leave once read for the last time). Units keep working on one instruction's last rows while the next
    instruction's first rows enter (ESCALATE's stream processing): an instruction's queue is free once the
    unit reading ``INP`` has finished with it.
    """

    UNITS = ("pe", "basis", "maps", "out")

    def __init__(self, device: Device):
        self.device = device
        self.capacity = device.modes.decomposed_conv.maps_buffer_bytes
        self.free = dict.fromkeys(self.UNITS, 0)  # the cycle each unit takes its next row
        self.rows: deque = (
            deque()
        )  # [bytes, cycle of the last read or None while unknown], oldest first
        self.held = 0  # bytes of the rows in the buffer

    def run(self, cfg: EngineConfig, pixel_cycles: int, start: int) -> tuple[int, int, int]:
        """``(issue end, release, completion)`` cycles of a ``DECOMP_CONV`` of ``cfg`` started at ``start``:
        when the unit reading ``INP`` is done with it, when the coefficients (``WGT``/``META``) are no longer
        read either, when the last output is written."""
        device, lanes = self.device, self.device.pe_array.output_lanes
        out_h, out_w = cfg.out_hw
        per_output = cfg.channels if cfg.basis_first else cfg.outputs
        costs = {
            "basis": _ceil(
                out_w * cfg.basis * cfg.kernel**2 * per_output,
                device.modes.decomposed_conv.basis_macs_per_cycle,
            ),
            "maps": cfg.map_width * _ceil(cfg.maps, lanes),
            "pe": cfg.map_width * pixel_cycles,
            "out": out_w * _ceil(cfg.outputs, lanes),
        }
        end = {
            unit: max(start, free) for unit, free in self.free.items()
        }  # each unit's last row so far
        run = self._basis_first if cfg.basis_first else self._combine_first
        issue = run(cfg, costs, end, cfg.map_width * cfg.maps)
        self.free = end
        return issue, max(issue, end["pe"]), end["out"]

    def _slot(self, nbytes: int) -> int:
        """The cycle from which a row of ``nbytes`` fits the line buffer."""
        ready = 0
        while self.held + nbytes > self.capacity:
            size, read = self.rows.popleft()
            if read is None:
                raise DeviceFault(
                    f"the {self.capacity}-byte maps buffer cannot hold the rows the basis window needs"
                )
            self.held -= size
            ready = max(ready, read)
        self.held += nbytes
        return ready

    def _write_row(self, nbytes: int, ready: int, end: dict, costs: dict) -> tuple[list, int]:
        """A row of maps into the line buffer (from ``ready``): its buffer entry and the cycle the maps
        requantizer took it."""
        taken = max(ready, end["maps"], self._slot(nbytes))
        end["maps"] = taken + costs["maps"]
        entry = [nbytes, None]
        self.rows.append(entry)
        return entry, taken

    def _basis_first(self, cfg: EngineConfig, costs: dict, end: dict, nbytes: int) -> int:
        """Per output row: basis stage -> maps requantizer -> line buffer -> PE array -> output requantizer."""
        taken = end["basis"]
        for _ in range(cfg.out_hw[0]):
            end["basis"] = max(end["basis"], taken) + costs["basis"]  # it holds one finished row
            entry, taken = self._write_row(nbytes, end["basis"], end, costs)
            end["pe"] = max(end["pe"], end["maps"]) + costs["pe"]
            entry[1] = end["pe"]
            end["out"] = max(end["out"], end["pe"]) + costs["out"]
        end["basis"] = taken  # free once the requantizer took its last row
        return taken

    def _combine_first(self, cfg: EngineConfig, costs: dict, end: dict, nbytes: int) -> int:
        """Per band row: PE array -> maps requantizer -> line buffer; per output row, once the rows under its
        window are in: basis stage -> output requantizer."""
        out_h = cfg.out_hw[0]
        written, entries = [], []  # per band row: when its maps are in, its buffer entry
        done = read = 0  # output rows computed; band rows read for the last time

        def output_row() -> None:
            nonlocal done, read
            need = cfg.needs(done)
            end["basis"] = max(end["basis"], written[need] if need >= 0 else 0) + costs["basis"]
            end["out"] = max(end["out"], end["basis"]) + costs["out"]
            while read < len(entries) and (cfg.last_reader(read) <= done or done == out_h - 1):
                entries[read][1] = end["basis"]
                read += 1
            done += 1

        taken = end["pe"]
        for i in range(cfg.height):
            while done < out_h and cfg.needs(done) < i:
                output_row()
            end["pe"] = max(end["pe"], taken) + costs["pe"]  # the array holds one finished row
            entry, taken = self._write_row(nbytes, end["pe"], end, costs)
            written.append(end["maps"])
            entries.append(entry)
        while done < out_h:
            output_row()
        for entry, ready in zip(entries, written):  # rows under no window leave once written
            if entry[1] is None:
                entry[1] = ready
        end["pe"] = taken
        return taken


def engine_cycles(cfg: EngineConfig, device: Device, pixel_cycles: int) -> int:
    """Cycles of one ``DECOMP_CONV`` of ``cfg`` on an idle engine."""
    return EnginePipeline(device).run(cfg, pixel_cycles, 0)[2]


#: The engine's instructions (the simulator dispatches them here).
SEMANTICS = {Opcode.ENGINE_CONFIG: engine_config, Opcode.DECOMP_CONV: decomp_conv}
