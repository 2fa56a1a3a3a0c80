"""Assembling programs: a DRAM image allocator and one method per instruction."""

from __future__ import annotations

import numpy as np

from ..hw.encoding import encode_runs
from ..hw.isa import (
    COEF_MODES,
    NO_FLAGS,
    AluOp,
    Buffer,
    CoefMode,
    Flag,
    Instruction,
    Opcode,
    Program,
    ProgramError,
    Queue,
    conv_geometry,
    engine_band,
    engine_pads,
)


class ProgramBuilder:
    """Builds a :class:`Program`: place arrays in DRAM, emit instructions, name layers."""

    def __init__(self, device: str = ""):
        self.device = device
        self.instructions: list[Instruction] = []
        self.tags = ["program"]
        self._tag = 0
        self._dram = bytearray()

    # -- DRAM -------------------------------------------------------------------
    def place(self, array: np.ndarray, align: int = 64) -> int:
        """Copy ``array`` (C order) into the DRAM image; returns its byte address."""
        self._dram.extend(b"\0" * (-len(self._dram) % align))
        addr = len(self._dram)
        self._dram.extend(np.ascontiguousarray(array).tobytes())
        return addr

    def place_runs(self, tile: np.ndarray, run_bits: int) -> tuple[int, int, int]:
        """Place int8 ``tile`` run-length coded (:func:`~tvm_sparse.hw.encoding.encode_runs`): ``(values address, runs
        address, entries)`` for :meth:`load_rle`."""
        values, runs = encode_runs(tile, run_bits)
        return self.place(values), self.place(np.frombuffer(runs, np.uint8)), values.size

    def reserve(self, nbytes: int, align: int = 64) -> int:
        """Zeroed DRAM for outputs; returns its byte address."""
        return self.place(np.zeros(nbytes, np.uint8), align)

    # -- layers -----------------------------------------------------------------
    def layer(self, name: str) -> None:
        """Tag the instructions that follow with layer ``name``."""
        if name not in self.tags:
            self.tags.append(name)
        self._tag = self.tags.index(name)

    # -- instructions -------------------------------------------------------------
    def emit(
        self, opcode: Opcode, flags: Flag = NO_FLAGS, queue: Queue | None = None, **fields
    ) -> Instruction:
        ins = Instruction(opcode, fields, Flag(flags), self._tag, queue)
        self.instructions.append(ins)
        return ins

    def load(
        self,
        buffer: Buffer,
        sram_addr: int,
        dram_addr: int,
        rows: int,
        cols: int,
        dram_stride: int | None = None,
        sram_stride: int | None = None,
        flags: Flag = NO_FLAGS,
    ):
        """DMA ``rows x cols`` elements; ``dram_stride`` in bytes and ``sram_stride`` in elements (default:
        rows are contiguous; a wider on-chip stride places column ranges side by side)."""
        itemsize = 4 if buffer == Buffer.ACC else 1
        stride = cols * itemsize if dram_stride is None else dram_stride
        return self.emit(
            Opcode.LOAD,
            flags,
            buffer=int(buffer),
            sram_addr=sram_addr,
            dram_addr=dram_addr,
            rows=rows,
            cols=cols,
            dram_stride=stride,
            sram_stride=cols if sram_stride is None else sram_stride,
        )

    def load_coded(
        self,
        sram_addr: int,
        dram_addr: int,
        rows: int,
        cols: int,
        index_bits: int,
        table_addr: int = 0,
        flags: Flag = NO_FLAGS,
    ):
        """DMA a contiguous ``rows x cols`` weight tile stored as packed ``index_bits``-bit indices into ``WGT``,
        each index replaced by its ``TABLE`` entry (counted from ``table_addr``)."""
        return self.emit(
            Opcode.LOAD_CODED,
            flags,
            sram_addr=sram_addr,
            dram_addr=dram_addr,
            rows=rows,
            cols=cols,
            table_addr=table_addr,
            index_bits=index_bits,
        )

    def load_rle(
        self,
        sram_addr: int,
        dram_addr: int,
        meta_addr: int,
        entries: int,
        rows: int,
        cols: int,
        run_bits: int,
        flags: Flag = NO_FLAGS,
    ):
        """DMA a run-length coded activation tile (:func:`~tvm_sparse.hw.encoding.encode_runs`: ``entries`` int8 values at
        ``dram_addr``, their packed ``run_bits``-bit zero runs at ``meta_addr``) into a contiguous ``rows x cols``
        ``INP`` tile."""
        return self.emit(
            Opcode.LOAD_RLE,
            flags,
            sram_addr=sram_addr,
            dram_addr=dram_addr,
            rows=rows,
            cols=cols,
            meta_addr=meta_addr,
            entries=entries,
            run_bits=run_bits,
        )

    def store(
        self,
        sram_addr: int,
        dram_addr: int,
        rows: int,
        cols: int,
        dram_stride: int | None = None,
        int32: bool = False,
        flags: Flag = NO_FLAGS,
    ):
        stride = cols * (4 if int32 else 1) if dram_stride is None else dram_stride
        flags = Flag(flags) | (Flag.INT32_OUT if int32 else Flag(0))
        return self.emit(
            Opcode.STORE,
            flags,
            sram_addr=sram_addr,
            dram_addr=dram_addr,
            rows=rows,
            cols=cols,
            dram_stride=stride,
            sram_stride=cols,
        )

    def gemm(
        self,
        mode: Opcode,
        acc_addr: int,
        inp_addr: int,
        wgt_addr: int,
        m: int,
        k: int,
        n: int,
        meta_addr: int = 0,
        accumulate: bool = False,
        flags: Flag = NO_FLAGS,
    ):
        flags = Flag(flags) | (Flag.ACCUMULATE if accumulate else Flag(0))
        fields = {
            "acc_addr": acc_addr,
            "inp_addr": inp_addr,
            "wgt_addr": wgt_addr,
            "m": m,
            "k": k,
            "n": n,
        }
        if mode != Opcode.GEMM:
            fields["meta_addr"] = meta_addr
        return self.emit(mode, flags, **fields)

    def alu(
        self,
        op: AluOp,
        acc_addr: int,
        rows: int,
        cols: int,
        operand: int = 0,
        row_operand: bool = False,
        shift: int = 0,
        addend: int = 0,
        flags: Flag = NO_FLAGS,
    ):
        """``op`` on an ACC tile; ``operand`` is an immediate, or with ``row_operand`` the ACC address of a row
        (``addend``: the ACC address of BIAS_REQUANT's bias row)."""
        flags = Flag(flags) | (Flag.ROW_OPERAND if row_operand else Flag(0))
        return self.emit(
            Opcode.ALU,
            flags,
            alu_op=int(op),
            acc_addr=acc_addr,
            rows=rows,
            cols=cols,
            operand=operand,
            shift=shift,
            addend=addend,
        )

    def basis_conv(
        self,
        acc_addr: int,
        inp_addr: int,
        wgt_addr: int,
        height: int,
        width: int,
        channels: int,
        kernel: int,
        basis: int,
        stride: int = 1,
        padding: int = 0,
        accumulate: bool = False,
        flags: Flag = NO_FLAGS,
    ):
        """ESCALATE's basis step on ``INP`` maps ``[height, width, basis * channels]`` (basis-major: map ``r * channels + o``)
        with ``WGT`` kernels ``[basis, kernel, kernel]``."""
        flags = Flag(flags) | (Flag.ACCUMULATE if accumulate else Flag(0))
        geometry = conv_geometry(kernel, basis, stride, padding)
        return self.emit(
            Opcode.BASIS_CONV,
            flags,
            acc_addr=acc_addr,
            inp_addr=inp_addr,
            wgt_addr=wgt_addr,
            height=height,
            width=width,
            channels=channels,
            geometry=geometry,
        )

    def engine_config(
        self,
        channels: int,
        outputs: int,
        height: int,
        width: int,
        kernel: int,
        basis: int,
        stride: int,
        padding: int,
        pad_top: int,
        pad_bottom: int,
        maps_shift: int,
        out_shift: int,
        params_addr: int,
        basis_first: bool = False,
        flags: Flag = NO_FLAGS,
    ):
        """Set the fused engine's registers and latch its parameters from ``ACC`` (see
        :class:`~tvm_sparse.sim.engine.EngineConfig`), combine-first or ``basis_first``."""
        return self.emit(
            Opcode.ENGINE_CONFIG,
            flags,
            channels=channels,
            outputs=outputs,
            band=engine_band(height, width),
            geometry=conv_geometry(kernel, basis, stride, padding),
            pads=engine_pads(pad_top, pad_bottom, maps_shift, out_shift),
            params_addr=params_addr,
            order=int(basis_first),
        )

    def decomp_conv(
        self,
        acc_addr: int,
        inp_addr: int,
        wgt_addr: int,
        basis_addr: int,
        coef_mode: CoefMode,
        meta_addr: int = 0,
        relu: bool = False,
        flags: Flag = NO_FLAGS,
    ):
        """A band of a decomposed convolution on the fused engine (:mod:`tvm_sparse.sim.engine`): ``INP`` rows,
        coefficients at ``wgt_addr`` (``coef_mode`` ``dense`` or ``block`` with ``META`` at ``meta_addr``),
        basis kernels at ``basis_addr``."""
        if coef_mode not in COEF_MODES:
            raise ProgramError(
                f"coefficient mode {coef_mode!r} is not one of {', '.join(COEF_MODES)}"
            )
        flags = Flag(flags) | (Flag.RELU if relu else Flag(0))
        return self.emit(
            Opcode.DECOMP_CONV,
            flags,
            acc_addr=acc_addr,
            inp_addr=inp_addr,
            wgt_addr=wgt_addr,
            meta_addr=meta_addr,
            basis_addr=basis_addr,
            coef_mode=COEF_MODES.index(coef_mode),
        )

    def nop(self, queue: Queue, flags: Flag):
        return self.emit(Opcode.NOP, flags, queue=queue)

    def build(self) -> Program:
        return Program(list(self.instructions), bytes(self._dram), list(self.tags), self.device)
