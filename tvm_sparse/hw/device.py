"""The ``sparse-accel`` device description: one validated JSON file per variant.

A description fixes what the compiler targets and what the simulator models
(the README's description schema): the PE array, datatypes, on-chip buffers, DRAM
bandwidth, clock, the sparse modes with their parameters, and per-action
energies. Loading checks every field and names the bad one, with its path
(``buffers.weight_bytes``), in a :class:`DeviceError`.

The PE array is ``reduction_lanes x output_lanes`` int8 MACs: each cycle it
multiplies one input row of ``reduction_lanes`` values by a
``reduction_lanes x output_lanes`` weight tile (VTA's ``BLOCK_IN x
BLOCK_OUT``). Sparse modes change how many weight values feed those lanes.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from ..data import data_dir
from ..errors import TVMSparseError
from .encoding import position_bits

#: Shipped device descriptions.
TARGET_DIR = data_dir("target")
DEFAULT_DEVICE = "sparse-accel"

#: What the PEs do with zero activations: nothing, gate them (no multiply energy), skip them in dense tiles
#: (nor cycles), or skip them in dense and block-sparse tiles alike (SCNN's two-sided sparsity).
ActivationSkipping = Literal["none", "gate", "skip", "two-sided"]
ACTIVATION_SKIPPING: tuple[ActivationSkipping, ...] = get_args(ActivationSkipping)
SUPPORTED_DATATYPES = {"input": "int8", "weight": "int8", "accumulator": "int32"}
#: Horowitz, ISSCC 2014, 45 nm (pJ per action).
DEFAULT_ENERGY_PJ = {
    "int8_mult": 0.2,
    "int8_add": 0.03,
    "sram_read_32b": 5.0,
    "sram_write_32b": 5.0,
    "dram_32b": 640.0,
}


class DeviceError(TVMSparseError):
    """An invalid device description; the message names the field."""


@dataclass(frozen=True)
class PEArray:
    reduction_lanes: int
    output_lanes: int

    @property
    def macs_per_cycle(self) -> int:
        return self.reduction_lanes * self.output_lanes


@dataclass(frozen=True)
class Buffers:
    """On-chip buffer capacities in bytes."""

    input_bytes: int
    weight_bytes: int
    metadata_bytes: int
    accumulator_bytes: int


@dataclass(frozen=True)
class BlockSparseMode:
    """Cambricon-S-style block selection: only stored ``block_rows x block_cols`` weight blocks are fetched and issued.

    ``block_cols`` divides the output lanes; ``block_rows`` need not divide the reduction lanes (a kernel row
    or a whole k x k kernel, Mao et al. 2017): a block straddling two lane chunks costs both."""

    block_rows: int  # along the reduction axis
    block_cols: int  # along the output axis
    index_bits: int  # per stored block: its relative index, the count of empty blocks skipped before it (1-16)


@dataclass(frozen=True)
class NMMode:
    """N:M fine-grained structure (2:4 as in Sparse Tensor Cores): N kept of every M along the reduction."""

    n: int
    m: int

    @property
    def metadata_bits_per_value(self) -> int:
        return position_bits(self.m)


@dataclass(frozen=True)
class DecomposedConvMode:
    """ESCALATE's engine: coefficients x shared basis kernels, up to ``max_basis`` per layer.

    With ``maps_buffer_bytes`` the engine runs a decomposed layer fused (``DECOMP_CONV``, ESCALATE's
    stream processing of the intermediate maps): the PE array's coefficient GEMM rows are requantized on
    their way into an on-chip line buffer of int8 maps, which the basis stage (``basis_macs_per_cycle``
    MACs of its own) convolves while the PE array computes the next rows. Without it the two steps run
    one after the other through DRAM (``BASIS_CONV``, on the PE array).
    """

    max_basis: int
    kernel_sizes: tuple[int, ...]
    maps_buffer_bytes: int | None = None  # the fused dataflow's line buffer of int8 maps
    basis_macs_per_cycle: int | None = None  # the fused dataflow's basis stage

    @property
    def fused(self) -> bool:
        return self.maps_buffer_bytes is not None


@dataclass(frozen=True)
class WeightSharingMode:
    """EIE-style shared weights: a weight tile arrives from DRAM as ``index_bits``-bit indices and the load
    unit expands them through an on-chip table of ``2**index_bits`` int8 values (Deep Compression's codebook)."""

    index_bits: int

    @property
    def table_size(self) -> int:
        return 1 << self.index_bits


@dataclass(frozen=True)
class ActivationCompressionMode:
    """SCNN/EIE-style compressed activations: an input tile arrives from DRAM as its nonzero int8 values, each
    with the count of zeros before it in ``run_bits`` bits, and ``LOAD_RLE`` expands it into ``INP``."""

    run_bits: int

    @property
    def max_run(self) -> int:
        return (1 << self.run_bits) - 1


@dataclass(frozen=True)
class SparseModes:
    block: BlockSparseMode | None
    nm: NMMode | None
    decomposed_conv: DecomposedConvMode | None
    activation_skipping: ActivationSkipping  # see ACTIVATION_SKIPPING
    weight_sharing: WeightSharingMode | None = (
        None  # orthogonal to the GEMM modes: how weight tiles are loaded
    )
    activation_compression: ActivationCompressionMode | None = (
        None  # orthogonal too: how input tiles are loaded
    )

    @property
    def skips_activations(self) -> bool:
        """Whether dense GEMM tiles issue only the nonzero activations (``skip`` and ``two-sided``)."""
        return self.activation_skipping in ("skip", "two-sided")

    @property
    def names(self) -> tuple[str, ...]:
        present = {"block": self.block, "nm": self.nm, "decomposed_conv": self.decomposed_conv}
        return ("dense", *(name for name, mode in present.items() if mode is not None))


@dataclass(frozen=True)
class Device:
    """A validated device description."""

    name: str
    pe_array: PEArray
    datatypes: dict
    buffers: Buffers
    dram_bytes_per_cycle: float
    clock_mhz: float
    modes: SparseModes
    energy_pj: dict
    source: str = ""  # the file it came from, if any
    doc: dict = field(default_factory=dict, compare=False, repr=False)  # the description as loaded

    def to_dict(self) -> dict:
        """The description as loaded (a copy: :meth:`from_dict` reads it back)."""
        return copy.deepcopy(self.doc)

    def dumps(self) -> str:
        """The description as loaded, as JSON."""
        return json.dumps(self.doc)

    def to_json(self) -> str:
        """Deprecated: :meth:`dumps`."""
        warnings.warn(
            "Device.to_json() is deprecated: use dumps() (or to_dict())",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.dumps()

    @staticmethod
    def from_dict(doc: dict, source: str = "") -> Device:
        return _parse_device(doc, source)

    @staticmethod
    def load(path) -> Device:
        """Read a JSON description; :class:`DeviceError` names the file and the bad field."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except OSError as err:
            raise DeviceError(
                f"{path}: cannot read device description ({err.strerror or err})"
            ) from None
        except json.JSONDecodeError as err:
            raise DeviceError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
        try:
            return _parse_device(doc, str(path))
        except DeviceError as err:
            raise DeviceError(f"{path}: {err}") from None


def shipped_devices() -> dict[str, Path]:
    """The variants in ``target/``, by name (the file stem)."""
    return {p.stem: p for p in sorted(TARGET_DIR.glob("*.json"))}


def load_device(name_or_path=DEFAULT_DEVICE) -> Device:
    """A shipped variant by name (``sparse-accel``, ...) or a description file by path."""
    if isinstance(name_or_path, Device):
        return name_or_path
    shipped = shipped_devices()
    if str(name_or_path) in shipped:
        return Device.load(shipped[str(name_or_path)])
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return Device.load(path)
    raise DeviceError(
        f"unknown device {str(name_or_path)!r} (shipped: {', '.join(shipped)}; or give a .json path)"
    )


# -- validation -----------------------------------------------------------------


class _Fields:
    """Reads one JSON object, checking keys and types; errors carry the field path."""

    def __init__(self, doc, path: str):
        if not isinstance(doc, dict):
            raise DeviceError(
                f"{path or 'description'}: expected an object, got {type(doc).__name__}"
            )
        self.doc, self.path, self.seen = doc, path, set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, default=...):
        self.seen.add(key)
        if key not in self.doc:
            if default is ...:
                raise DeviceError(f"{self._name(key)}: missing")
            return default
        return self.doc[key]

    def positive_int(self, key: str, default=...) -> int | None:
        """The field as a positive int; an absent field gives ``default`` (None: optional)."""
        value = self.raw(key, default)
        if value is None and default is None and key not in self.doc:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DeviceError(f"{self._name(key)}: must be a positive integer, got {value!r}")
        return value

    def positive_number(self, key: str, default=...) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise DeviceError(f"{self._name(key)}: must be a positive number, got {value!r}")
        return float(value)

    def choice(self, key: str, choices, default=...) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise DeviceError(
                f"{self._name(key)}: must be one of {', '.join(map(str, choices))}; got {value!r}"
            )
        return value

    def sub(self, key: str, default=...) -> _Fields | None:
        value = self.raw(key, default)
        return None if value is None else _Fields(value, self._name(key))

    def done(self) -> None:
        unknown = sorted(set(self.doc) - self.seen)
        if unknown:
            raise DeviceError(f"{self._name(unknown[0])}: unknown field")


def _parse_device(doc, source: str) -> Device:
    top = _Fields(doc, "")
    name = top.raw("name")
    if not isinstance(name, str) or not name:
        raise DeviceError(f"name: must be a non-empty string, got {name!r}")

    pe = top.sub("pe_array")
    pe_array = PEArray(pe.positive_int("reduction_lanes"), pe.positive_int("output_lanes"))
    pe.done()

    types = top.sub("datatypes")
    datatypes = {role: types.choice(role, (dtype,)) for role, dtype in SUPPORTED_DATATYPES.items()}
    types.done()

    buf = top.sub("buffers")
    buffers = Buffers(
        *(
            buf.positive_int(f)
            for f in ("input_bytes", "weight_bytes", "metadata_bytes", "accumulator_bytes")
        )
    )
    buf.done()
    _check_one_tile_fits(buffers, pe_array)

    modes = _parse_modes(top.sub("sparse_modes"), pe_array)

    energy_doc = top.sub("energy_pj", {})
    energy = {
        key: energy_doc.positive_number(key, default) for key, default in DEFAULT_ENERGY_PJ.items()
    }
    energy_doc.done()

    device = Device(
        name=name,
        pe_array=pe_array,
        datatypes=datatypes,
        buffers=buffers,
        dram_bytes_per_cycle=top.positive_number("dram_bytes_per_cycle"),
        clock_mhz=top.positive_number("clock_mhz"),
        modes=modes,
        energy_pj=energy,
        source=source,
        doc=doc,
    )
    top.raw("description", "")  # free text
    top.done()
    return device


def _parse_modes(fields: _Fields, pe: PEArray) -> SparseModes:
    block = nm = decomposed = None
    if (b := fields.sub("block", None)) is not None:
        block = BlockSparseMode(
            b.positive_int("block_rows"), b.positive_int("block_cols"), b.positive_int("index_bits")
        )
        b.done()
        if pe.output_lanes % block.block_cols:
            raise DeviceError(
                f"sparse_modes.block.block_cols: {block.block_cols} must divide output_lanes ({pe.output_lanes})"
            )
        if block.index_bits > 16:
            raise DeviceError(
                f"sparse_modes.block.index_bits: at most 16 (the width of a tile's block count), got {block.index_bits}"
            )
    if (f := fields.sub("nm", None)) is not None:
        nm = NMMode(f.positive_int("n"), f.positive_int("m"))
        f.done()
        if nm.n >= nm.m:
            raise DeviceError(f"sparse_modes.nm: n must be smaller than m, got {nm.n}:{nm.m}")
        if pe.reduction_lanes % nm.n:
            raise DeviceError(
                f"sparse_modes.nm.n: {nm.n} must divide reduction_lanes ({pe.reduction_lanes})"
            )
    if (d := fields.sub("decomposed_conv", None)) is not None:
        sizes = d.raw("kernel_sizes")
        if (
            not isinstance(sizes, list)
            or not sizes
            or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in sizes)
        ):
            raise DeviceError(
                f"sparse_modes.decomposed_conv.kernel_sizes: must be a non-empty list of positive integers, got {sizes!r}"
            )
        decomposed = DecomposedConvMode(
            d.positive_int("max_basis"),
            tuple(sizes),
            d.positive_int("maps_buffer_bytes", None),
            d.positive_int("basis_macs_per_cycle", None),
        )
        d.done()
        if (decomposed.maps_buffer_bytes is None) != (decomposed.basis_macs_per_cycle is None):
            given, missing = (
                ("maps_buffer_bytes", "basis_macs_per_cycle")
                if decomposed.basis_macs_per_cycle is None
                else ("basis_macs_per_cycle", "maps_buffer_bytes")
            )
            raise DeviceError(
                f"sparse_modes.decomposed_conv.{missing}: missing (the fused dataflow that {given} describes needs both)"
            )
    sharing = None
    if (w := fields.sub("weight_sharing", None)) is not None:
        sharing = WeightSharingMode(w.positive_int("index_bits"))
        w.done()
        if sharing.index_bits > 8:
            raise DeviceError(
                f"sparse_modes.weight_sharing.index_bits: at most 8 (a table of int8 values), got {sharing.index_bits}"
            )
    compression = None
    if (c := fields.sub("activation_compression", None)) is not None:
        compression = ActivationCompressionMode(c.positive_int("run_bits"))
        c.done()
        if compression.run_bits > 8:
            raise DeviceError(
                f"sparse_modes.activation_compression.run_bits: at most 8 (a zero-run count in a byte), got {compression.run_bits}"
            )
    skipping = fields.choice("activation_skipping", ACTIVATION_SKIPPING, "none")
    if skipping == "two-sided" and block is None:
        raise DeviceError(
            "sparse_modes.activation_skipping: two-sided skips zero activations in block tiles and "
            "needs sparse_modes.block (without one, use skip)"
        )
    fields.done()
    return SparseModes(block, nm, decomposed, skipping, sharing, activation_compression=compression)


def _check_one_tile_fits(buffers: Buffers, pe: PEArray) -> None:
    """The smallest tile: one input row, one weight tile, one accumulator row."""
    needs = {
        "input_bytes": pe.reduction_lanes,
        "weight_bytes": pe.macs_per_cycle,
        "accumulator_bytes": 4 * pe.output_lanes,
    }
    for name, need in needs.items():
        have = getattr(buffers, name)
        if have < need:
            raise DeviceError(
                f"buffers.{name}: {have} bytes cannot hold the smallest tile ({need} bytes for a {pe.reduction_lanes}x{pe.output_lanes} PE array)"
            )
