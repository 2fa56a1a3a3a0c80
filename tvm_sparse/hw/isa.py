"""The device's instruction set, programs and their binary and text forms.

Memory. DRAM is a byte-addressed image. On chip there are four buffers,
addressed in elements: ``INP`` (int8 activations), ``WGT`` (int8 weights),
``META`` (bytes of sparse metadata) and ``ACC`` (int32 accumulators), and,
on devices with weight sharing, the load unit's ``TABLE`` of shared int8
weight values that ``LOAD_CODED`` expands indices through. ``LOAD_RLE``
expands run-length coded activations (devices with activation compression).
The fused decomposed-convolution engine keeps its intermediate maps in a line
buffer of its own that no instruction addresses (``DECOMP_CONV``).

Queues. As in VTA, instructions run on three queues that overlap: ``LOAD``
(DMA into the buffers), ``COMPUTE`` (GEMM tiles and the ALU) and ``STORE``
(DMA out of ``ACC``). Each queue runs its instructions in program order;
dependency flags order the queues: an instruction may wait for a token from
its neighbouring queue before it starts (``POP_PREV``/``POP_NEXT``) and send
one when it ends (``PUSH_PREV``/``PUSH_NEXT``). The load queue's next is
compute, compute's next is store. Double buffering is two buffer halves and
tokens that say which half is free. A pipelined unit (the fused engine) frees
its queue once its first stage is done, releases its inputs (``PUSH_PREV``)
once they are read and signals its results (``PUSH_NEXT``) when complete.

Encoding. Every instruction is 32 bytes, little endian: opcode (u8), flags
(u8), layer tag (u16), then seven 32-bit fields whose meaning depends on the
opcode (``FIELDS``). A program is the instructions, the initial DRAM image
and the layer tag names; :meth:`Program.to_bytes` / :meth:`Program.from_bytes`
round-trip it and :func:`disassemble` prints it.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from ..errors import TVMSparseError


class ProgramError(TVMSparseError):
    """A malformed instruction stream or program file; the message names the instruction."""


class DeviceFault(TVMSparseError):
    """The program did something the device cannot do; the message names the instruction."""


class Opcode(enum.IntEnum):
    LOAD = 1  # DRAM -> buffer, 2-D strided
    STORE = 2  # ACC -> DRAM, 2-D strided, as int8 (saturating) or int32
    GEMM = 3  # ACC[m, n] (+)= INP[m, k] @ WGT[k, n]
    GEMM_BLOCK = 4  # same, WGT holds only the stored blocks, META their positions
    GEMM_NM = 5  # same, WGT holds N of every M values along k, META their positions
    ALU = 6  # elementwise on an ACC tile, with an immediate or a broadcast ACC row
    NOP = 7  # a queue step that only moves dependency tokens
    BASIS_CONV = 8  # ESCALATE's second step: ACC[p, o] (+)= sum_r basis_r (*) INP[:, :, r * C + o]
    LOAD_CODED = 9  # DRAM index_bits-bit indices -> WGT int8 values TABLE[index] (a contiguous rows x cols tile)
    ENGINE_CONFIG = (
        10  # set the decomposed-convolution engine's registers for the DECOMP_CONVs that follow
    )
    DECOMP_CONV = 11  # a decomposed convolution's band: coefficient GEMM -> int8 maps on chip -> basis conv -> requantize
    LOAD_RLE = 12  # DRAM nonzero values + run_bits-bit zero runs (SCNN) -> INP (a contiguous rows x cols tile)


#: How a GEMM tile's weights are stored: all values (``GEMM``), N of every M (``GEMM_NM``) or the nonzero
#: blocks (``GEMM_BLOCK``).
GemmMode = Literal["dense", "nm", "block"]


class Buffer(enum.IntEnum):
    INP = 0
    WGT = 1
    META = 2
    ACC = 3
    TABLE = 4


BUFFER_DTYPES = {
    Buffer.INP: np.int8,
    Buffer.WGT: np.int8,
    Buffer.META: np.uint8,
    Buffer.ACC: np.int32,
    Buffer.TABLE: np.int8,
}


class AluOp(enum.IntEnum):
    ADD = 0  # x + operand
    MUL = 1  # x * operand (wraps as int32, like the hardware)
    SHR = 2  # arithmetic shift right by operand, rounding half up
    MAX = 3  # max(x, operand); ReLU is MAX with immediate 0
    MIN = 4
    REQUANT = 5  # clip(round((x * operand) >> shift), -128 (0 with Flag.RELU), 127): operand per column, shift in ``shift``
    BIAS_REQUANT = 6  # REQUANT of (x + addend): the bias add in the same pass (row operands only)


class Queue(enum.IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


class Flag(enum.IntFlag):
    POP_PREV = 1
    POP_NEXT = 2
    PUSH_PREV = 4
    PUSH_NEXT = 8
    ACCUMULATE = 16  # GEMM*: add to ACC instead of overwriting
    ROW_OPERAND = 32  # ALU: the operand is an ACC row broadcast over rows (else an immediate)
    INT32_OUT = 64  # STORE: write int32 instead of saturated int8
    RELU = 128  # ALU REQUANT: clip to [0, 127] instead of [-128, 127] (ReLU in the same pass)


NO_FLAGS = Flag(0)


#: The seven 32-bit fields of each opcode, in encoding order.
FIELDS: dict[Opcode, tuple[str, ...]] = {
    Opcode.LOAD: ("buffer", "sram_addr", "dram_addr", "rows", "cols", "dram_stride", "sram_stride"),
    Opcode.STORE: ("sram_addr", "dram_addr", "rows", "cols", "dram_stride", "sram_stride"),
    Opcode.GEMM: ("acc_addr", "inp_addr", "wgt_addr", "m", "k", "n"),
    Opcode.GEMM_BLOCK: ("acc_addr", "inp_addr", "wgt_addr", "m", "k", "n", "meta_addr"),
    Opcode.GEMM_NM: ("acc_addr", "inp_addr", "wgt_addr", "m", "k", "n", "meta_addr"),
    Opcode.ALU: ("alu_op", "acc_addr", "rows", "cols", "operand", "shift", "addend"),
    Opcode.NOP: (),
    Opcode.BASIS_CONV: (
        "acc_addr",
        "inp_addr",
        "wgt_addr",
        "height",
        "width",
        "channels",
        "geometry",
    ),
    Opcode.LOAD_CODED: ("sram_addr", "dram_addr", "rows", "cols", "table_addr", "index_bits"),
    Opcode.ENGINE_CONFIG: (
        "channels",
        "outputs",
        "band",
        "geometry",
        "pads",
        "params_addr",
        "order",
    ),
    Opcode.DECOMP_CONV: (
        "acc_addr",
        "inp_addr",
        "wgt_addr",
        "meta_addr",
        "basis_addr",
        "coef_mode",
    ),
    Opcode.LOAD_RLE: ("sram_addr", "dram_addr", "rows", "cols", "meta_addr", "entries", "run_bits"),
}
#: Fields read as signed (immediates); all others are unsigned.
SIGNED_FIELDS = {"operand"}
QUEUE_OF = {
    Opcode.LOAD: Queue.LOAD,
    Opcode.LOAD_CODED: Queue.LOAD,
    Opcode.LOAD_RLE: Queue.LOAD,
    Opcode.STORE: Queue.STORE,
    Opcode.GEMM: Queue.COMPUTE,
    Opcode.GEMM_BLOCK: Queue.COMPUTE,
    Opcode.GEMM_NM: Queue.COMPUTE,
    Opcode.ALU: Queue.COMPUTE,
    Opcode.BASIS_CONV: Queue.COMPUTE,
    Opcode.ENGINE_CONFIG: Queue.COMPUTE,
    Opcode.DECOMP_CONV: Queue.COMPUTE,
}
INSTRUCTION_BYTES = 32


def conv_geometry(kernel: int, basis: int, stride: int = 1, padding: int = 0) -> int:
    """The ``geometry`` field of ``BASIS_CONV``: kernel size, basis count, stride and padding, a byte each."""
    for name, value in (
        ("kernel", kernel),
        ("basis", basis),
        ("stride", stride),
        ("padding", padding),
    ):
        if not 0 <= value < 256 or (name != "padding" and value == 0):
            raise ProgramError(f"BASIS_CONV {name} {value} does not fit its byte")
    return kernel | basis << 8 | stride << 16 | padding << 24


def split_geometry(geometry: int) -> tuple[int, int, int, int]:
    """``(kernel, basis, stride, padding)`` of a ``BASIS_CONV`` geometry field."""
    return geometry & 255, geometry >> 8 & 255, geometry >> 16 & 255, geometry >> 24 & 255


#: ``DECOMP_CONV``'s coefficient encodings (its ``coef_mode`` field holds the index in ``COEF_MODES``).
CoefMode = Literal["dense", "block"]
COEF_MODES: tuple[CoefMode, ...] = get_args(CoefMode)
#: ``ENGINE_CONFIG``'s orders (its ``order`` field holds the index in ``ENGINE_ORDERS``).
EngineOrder = Literal["combine-first", "basis-first"]
ENGINE_ORDERS: tuple[EngineOrder, ...] = get_args(EngineOrder)


def engine_band(height: int, width: int) -> int:
    """The ``band`` field of ``ENGINE_CONFIG``: the band's input rows and their width, 16 bits each."""
    if not (0 <= height < 2**16 and 0 <= width < 2**16):
        raise ProgramError(f"ENGINE_CONFIG band {height}x{width} does not fit two 16-bit halves")
    return height | width << 16


def split_band(band: int) -> tuple[int, int]:
    """``(height, width)`` of an ``ENGINE_CONFIG`` band field."""
    return band & 0xFFFF, band >> 16


def engine_pads(pad_top: int, pad_bottom: int, maps_shift: int, out_shift: int) -> int:
    """The ``pads`` field of ``ENGINE_CONFIG``: the band's zero map rows above and below it and the two
    requantization shifts (maps, output), a byte each."""
    for name, value in (
        ("pad_top", pad_top),
        ("pad_bottom", pad_bottom),
        ("maps_shift", maps_shift),
        ("out_shift", out_shift),
    ):
        if not 0 <= value < 256:
            raise ProgramError(f"ENGINE_CONFIG {name} {value} does not fit its byte")
    return pad_top | pad_bottom << 8 | maps_shift << 16 | out_shift << 24


def split_pads(pads: int) -> tuple[int, int, int, int]:
    """``(pad_top, pad_bottom, maps_shift, out_shift)`` of an ``ENGINE_CONFIG`` pads field."""
    return pads & 255, pads >> 8 & 255, pads >> 16 & 255, pads >> 24 & 255


_HEADER = struct.Struct("<BBH")
_SLOTS = 7


@dataclass(frozen=True)
class Instruction:
    """One instruction; ``args`` holds the opcode's fields (missing ones are 0)."""

    opcode: Opcode
    args: dict = field(default_factory=dict)
    flags: Flag = NO_FLAGS
    tag: int = 0
    queue: Queue | None = None  # NOP only: the queue it steps

    def __getattr__(self, name):
        args = self.__dict__.get("args", {})
        if name in args:
            return args[name]
        if name in FIELDS.get(self.__dict__.get("opcode"), ()):
            return 0
        raise AttributeError(name)

    @property
    def on_queue(self) -> Queue:
        return self.queue if self.opcode == Opcode.NOP else QUEUE_OF[self.opcode]

    def encode(self) -> bytes:
        names = FIELDS[self.opcode]
        unknown = set(self.args) - set(names)
        if unknown:
            raise ProgramError(f"{self.opcode.name}: unknown field(s) {sorted(unknown)}")
        slots = [int(self.args.get(name, 0)) for name in names]
        if self.opcode == Opcode.NOP:
            slots = [int(self.queue if self.queue is not None else Queue.COMPUTE)]
        slots += [0] * (_SLOTS - len(slots))
        fmt = (
            "<"
            + "".join("i" if n in SIGNED_FIELDS else "I" for n in names)
            + "I" * (_SLOTS - len(names))
        )
        if self.opcode == Opcode.NOP:
            fmt = "<" + "I" * _SLOTS
        try:
            return _HEADER.pack(int(self.opcode), int(self.flags), self.tag) + struct.pack(
                fmt, *slots
            )
        except struct.error as err:
            raise ProgramError(
                f"{self.opcode.name}: a field does not fit 32 bits ({err})"
            ) from None

    @staticmethod
    def decode(raw: bytes, index: int = 0) -> Instruction:
        if len(raw) != INSTRUCTION_BYTES:
            raise ProgramError(
                f"instruction {index}: {len(raw)} bytes, expected {INSTRUCTION_BYTES}"
            )
        code, flags, tag = _HEADER.unpack_from(raw)
        try:
            opcode = Opcode(code)
        except ValueError:
            raise ProgramError(f"instruction {index}: unknown opcode {code}") from None
        if flags & ~int(sum(Flag)):
            raise ProgramError(f"instruction {index} ({opcode.name}): unknown flag bits {flags:#x}")
        names = FIELDS[opcode]
        fmt = (
            "<"
            + "".join("i" if n in SIGNED_FIELDS else "I" for n in names)
            + "I" * (_SLOTS - len(names))
        )
        values = struct.unpack_from(fmt, raw, _HEADER.size)
        if opcode == Opcode.NOP:
            try:
                return Instruction(opcode, {}, Flag(flags), tag, Queue(values[0]))
            except ValueError:
                raise ProgramError(
                    f"instruction {index} (NOP): unknown queue {values[0]}"
                ) from None
        args = dict(zip(names, values))
        for name, kind in (("buffer", Buffer), ("alu_op", AluOp)):
            if name in args and args[name] not in kind._value2member_map_:
                raise ProgramError(
                    f"instruction {index} ({opcode.name}): unknown {name} {args[name]}"
                )
        return Instruction(opcode, args, Flag(flags), tag)


@dataclass
class Program:
    """An instruction stream, the DRAM image it starts from, and the names of its layer tags."""

    instructions: list[Instruction]
    dram: bytes
    tags: list[str] = field(default_factory=lambda: ["program"])
    device: str = ""

    _MAGIC = b"SPAX"
    _VERSION = 1

    def to_bytes(self) -> bytes:
        meta = json.dumps({"tags": self.tags, "device": self.device}).encode()
        code = b"".join(ins.encode() for ins in self.instructions)
        head = struct.pack(
            "<4sHIIQ", self._MAGIC, self._VERSION, len(meta), len(self.instructions), len(self.dram)
        )
        return head + meta + code + bytes(self.dram)

    @staticmethod
    def from_bytes(data: bytes) -> Program:
        head = struct.Struct("<4sHIIQ")
        if len(data) < head.size:
            raise ProgramError(
                f"program: {len(data)} bytes is shorter than the {head.size}-byte header"
            )
        magic, version, meta_len, count, dram_len = head.unpack_from(data)
        if magic != Program._MAGIC:
            raise ProgramError(f"program: bad magic {magic!r} (not a sparse-accel program)")
        if version != Program._VERSION:
            raise ProgramError(
                f"program: version {version}, this simulator reads version {Program._VERSION}"
            )
        expected = head.size + meta_len + count * INSTRUCTION_BYTES + dram_len
        if len(data) != expected:
            raise ProgramError(
                f"program: {len(data)} bytes, the header announces {expected} (truncated or padded)"
            )
        offset = head.size
        try:
            meta = json.loads(data[offset : offset + meta_len])
            tags, device = [str(t) for t in meta["tags"]], str(meta["device"])
        except (ValueError, KeyError, TypeError) as err:
            raise ProgramError(f"program: unreadable metadata ({err})") from None
        offset += meta_len
        instructions = [
            Instruction.decode(
                data[offset + i * INSTRUCTION_BYTES : offset + (i + 1) * INSTRUCTION_BYTES], i
            )
            for i in range(count)
        ]
        offset += count * INSTRUCTION_BYTES
        program = Program(instructions, bytes(data[offset:]), tags, device)
        for i, ins in enumerate(instructions):
            if ins.tag >= len(tags):
                raise ProgramError(
                    f"instruction {i} ({ins.opcode.name}): layer tag {ins.tag} has no name"
                )
        return program


def _flag_text(flags: Flag) -> str:
    names = [f.name.lower() for f in Flag if f in flags and f.name]
    return f" [{' '.join(names)}]" if names else ""


def disassemble(program: Program) -> str:
    """One line per instruction: index, queue, opcode, fields, flags, layer tag."""
    lines = [
        f"; sparse-accel program: {len(program.instructions)} instructions, {len(program.dram)} DRAM bytes, device {program.device or '?'}"
    ]
    for i, ins in enumerate(program.instructions):
        if ins.opcode == Opcode.NOP:
            fields = ""
        else:
            parts = []
            for name in FIELDS[ins.opcode]:
                value = getattr(ins, name)
                if name == "buffer":
                    value = Buffer(value).name if value in Buffer._value2member_map_ else value
                elif name == "geometry":
                    value = "k{}/r{}/s{}/p{}".format(*split_geometry(value))
                elif name == "band":
                    value = "{}x{}".format(*split_band(value))
                elif name == "pads":
                    value = "top{}/bottom{}/shifts{},{}".format(*split_pads(value))
                elif name == "order":
                    value = ENGINE_ORDERS[value] if value < len(ENGINE_ORDERS) else value
                elif name == "coef_mode":
                    value = COEF_MODES[value] if value < len(COEF_MODES) else value
                elif name == "alu_op":
                    value = AluOp(value).name if value in AluOp._value2member_map_ else value
                elif name.endswith("addr"):
                    value = f"{value:#x}"
                parts.append(f"{name}={value}")
            fields = " " + " ".join(parts)
        tag = program.tags[ins.tag] if ins.tag < len(program.tags) else ins.tag
        lines.append(
            f"{i:5d}: {ins.on_queue.name.lower():7s} {ins.opcode.name:10s}{fields}{_flag_text(ins.flags)}  ; {tag}"
        )
    return "\n".join(lines)
