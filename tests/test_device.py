"""The device description: shipped variants load; every bad field is named."""

import copy
import json

import pytest

from tvm_sparse.accel import Device, DeviceError, load_device, shipped_devices
from tvm_sparse.hw.device import DEFAULT_ENERGY_PJ


def test_shipped_variants_load_with_the_same_provisioning():
    devices = {name: load_device(name) for name in shipped_devices()}
    assert {"sparse-accel", "sparse-accel-dense", "sparse-accel-escalate"} <= set(devices)
    dense, default, escalate = (
        devices["sparse-accel-dense"],
        devices["sparse-accel"],
        devices["sparse-accel-escalate"],
    )
    assert dense.modes.names == ("dense",)
    assert (
        set(default.modes.names) == {"dense", "block", "nm"}
        and default.modes.activation_skipping == "skip"
    )
    assert escalate.modes.decomposed_conv is not None
    for device in devices.values():  # comparably provisioned: only the modes differ
        assert (device.pe_array, device.buffers, device.dram_bytes_per_cycle, device.clock_mhz) == (
            dense.pe_array,
            dense.buffers,
            dense.dram_bytes_per_cycle,
            dense.clock_mhz,
        )
    assert default.modes.nm.metadata_bits_per_value == 2
    assert default.modes.weight_sharing.table_size == 16 and dense.modes.weight_sharing is None


def _doc():
    return json.loads(shipped_devices()["sparse-accel"].read_text())


def _with(path: str, value):
    doc = _doc()
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("pe_array.reduction_lanes", KeyError, "pe_array.reduction_lanes: missing"),
        ("pe_array.output_lanes", 0, "pe_array.output_lanes: must be a positive integer"),
        ("buffers.weight_bytes", -4, "buffers.weight_bytes: must be a positive integer"),
        (
            "buffers.weight_bytes",
            100,
            "buffers.weight_bytes: 100 bytes cannot hold the smallest tile",
        ),
        ("buffers.accumulator_bytes", 32, "buffers.accumulator_bytes"),
        ("datatypes.weight", "int4", "datatypes.weight: must be one of int8"),
        ("dram_bytes_per_cycle", "fast", "dram_bytes_per_cycle: must be a positive number"),
        ("clock_mhz", KeyError, "clock_mhz: missing"),
        (
            "sparse_modes.activation_skipping",
            "sometimes",
            "sparse_modes.activation_skipping: must be one of",
        ),
        ("sparse_modes.nm", {"n": 4, "m": 4}, "n must be smaller than m"),
        (
            "sparse_modes.block",
            {"block_rows": 16, "block_cols": 5, "index_bits": 16},
            "sparse_modes.block.block_cols: 5 must divide output_lanes",
        ),
        (
            "sparse_modes.block",
            {"block_rows": 16, "block_cols": 16, "index_bits": 17},
            "sparse_modes.block.index_bits: at most 16",
        ),
        (
            "sparse_modes.block",
            {"block_rows": 16, "block_cols": 16, "index_bits": 0},
            "sparse_modes.block.index_bits: must be a positive integer",
        ),
        ("sparse_modes.bitmap", {}, "sparse_modes.bitmap: unknown field"),
        ("sparse_modes.weight_sharing", {"index_bits": 9}, "index_bits: at most 8"),
        (
            "sparse_modes.weight_sharing",
            {"bits": 4},
            "sparse_modes.weight_sharing.index_bits: missing",
        ),
        ("buffers.extra_bytes", 4, "buffers.extra_bytes: unknown field"),
        ("energy_pj.int8_mult", 0, "energy_pj.int8_mult: must be a positive number"),
        ("name", "", "name: must be a non-empty string"),
    ],
)
def test_bad_fields_are_named(path, value, message):
    with pytest.raises(DeviceError, match=message.replace(".", r"\.").replace("(", r"\(")):
        Device.from_dict(_with(path, value))


def test_description_round_trips_through_to_dict_and_dumps():
    device = load_device("sparse-accel")
    doc = device.to_dict()
    assert Device.from_dict(doc, device.source) == device and json.loads(device.dumps()) == doc
    doc["name"] = "changed"  # a copy
    assert device.doc["name"] == "sparse-accel"
    with pytest.warns(DeprecationWarning, match=r"to_json\(\) is deprecated: use dumps"):
        assert device.to_json() == device.dumps()


def test_energy_defaults_are_horowitz_45nm():
    doc = _doc()
    del doc["energy_pj"]
    assert Device.from_dict(doc).energy_pj == DEFAULT_ENERGY_PJ
    assert DEFAULT_ENERGY_PJ["int8_mult"] == 0.2 and DEFAULT_ENERGY_PJ["dram_32b"] == 640.0


def test_user_files_and_bad_files(tmp_path):
    doc = copy.deepcopy(_doc())
    doc["name"] = "my-device"
    good = tmp_path / "my_device.json"
    good.write_text(json.dumps(doc))
    assert load_device(good).name == "my-device"
    assert load_device(str(good)).source == str(good)
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": ')
    with pytest.raises(DeviceError, match="broken.json: not JSON"):
        load_device(broken)
    with pytest.raises(DeviceError, match="cannot read"):
        load_device(tmp_path / "missing.json")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        load_device("tpu")
    with pytest.raises(DeviceError, match="description: expected an object"):
        Device.from_dict([1, 2])


def test_data_folders_resolve_in_source_and_wheel_installs():
    import sys
    from pathlib import Path

    from tvm_sparse.data import data_dir

    assert data_dir("target") == Path(__file__).resolve().parents[1] / "target"  # this checkout
    assert (
        data_dir("no-such-folder") == Path(sys.prefix) / "share" / "tvm-sparse" / "no-such-folder"
    )  # a wheel's data
