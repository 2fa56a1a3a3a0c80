"""Device targets carry their description: they resolve without a registry, in any process."""

import json
import subprocess
import sys

import pytest
import tvm

from tvm_sparse.accel import DeviceError, load_device, shipped_devices
from tvm_sparse.hw.device import Device
from tvm_sparse.target import (
    DESCRIPTION_ATTR,
    accel_target,
    device_of,
    encode_description,
    is_accel_target,
    resolve_target,
)


def _user_doc(name="my-accel") -> dict:
    doc = json.loads(shipped_devices()["sparse-accel"].read_text())
    doc["name"] = name
    doc["pe_array"] = {"reduction_lanes": 8, "output_lanes": 8}
    doc["sparse_modes"]["block"] = {"block_rows": 8, "block_cols": 8, "index_bits": 16}
    return doc


def _with(tgt: tvm.target.Target, **attrs) -> tvm.target.Target:
    """``tgt`` with some attributes replaced (``None`` drops one)."""
    config = {k: v for k, v in json.loads(str(tgt)).items() if k != "tag"}
    config.update(attrs)
    return tvm.target.Target({k: v for k, v in config.items() if v is not None})


RESOLVE = (
    "import json, sys, tvm, tvm_sparse\n"
    "from tvm_sparse.target import device_of\n"
    "print(json.dumps(device_of(tvm.target.Target(sys.argv[1])).doc))\n"
)


def test_a_user_device_target_resolves_from_its_text_in_a_fresh_process(tmp_path):
    doc = _user_doc()
    path = tmp_path / "my.json"
    path.write_text(json.dumps(doc))
    text = str(accel_target(str(path)))
    assert "sparse-accel-device=my-accel" in text  # the name stays readable
    path.unlink()  # the description travels in the target, not in the file
    out = subprocess.run(
        [sys.executable, "-c", RESOLVE, text], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == doc


def test_the_description_survives_export_and_text_unchanged(tmp_path):
    path = tmp_path / "my.json"
    path.write_text(json.dumps(_user_doc()))
    loaded = load_device(path)
    tgt = accel_target(str(path))
    for rebuilt in (tgt, tvm.target.Target(tgt.export()), tvm.target.Target(str(tgt))):
        device = device_of(rebuilt)
        # key order included: the layer headers the compiler writes hold this description
        assert json.dumps(device.doc) == json.dumps(loaded.doc)
        assert (device.name, device.pe_array, device.modes) == (
            loaded.name,
            loaded.pe_array,
            loaded.modes,
        )
    assert device_of(resolve_target(str(tgt))).name == "my-accel"
    assert device_of(accel_target(loaded)).name == "my-accel"


def test_shipped_variants_resolve_by_tag_and_by_name():
    for name in shipped_devices():
        tgt = tvm.target.Target(name)  # the tag import tvm_sparse registers
        assert is_accel_target(tgt)
        assert json.dumps(device_of(tgt).doc) == json.dumps(load_device(name).doc)
    # a target naming a shipped variant without a description (written by hand or by an older version)
    bare = _with(accel_target("sparse-accel-dense"), **{DESCRIPTION_ATTR: None})
    assert device_of(bare).name == "sparse-accel-dense"
    keys_only = tvm.target.Target({"kind": "llvm", "keys": ["sparse-accel", "cpu"]})
    assert device_of(keys_only).name == "sparse-accel"  # the default device


def test_bad_descriptions_are_named():
    tgt = accel_target("sparse-accel")
    with pytest.raises(DeviceError, match="garbled device description"):
        device_of(_with(tgt, **{DESCRIPTION_ATTR: "sparse-accel:v1:@@not-base64"}))
    with pytest.raises(DeviceError, match="not a sparse-accel device description"):
        device_of(_with(tgt, **{DESCRIPTION_ATTR: "snapdragon835"}))
    other = encode_description(Device.from_dict(_user_doc("other-accel")))
    with pytest.raises(
        DeviceError,
        match="target names device 'sparse-accel' .* description .* is of device 'other-accel'",
    ):
        device_of(_with(tgt, **{DESCRIPTION_ATTR: other}))
    bad = Device.from_dict(_user_doc())
    bad.doc["pe_array"]["output_lanes"] = 0  # a description that no longer validates
    with pytest.raises(DeviceError, match=r"invalid device description: pe_array\.output_lanes"):
        device_of(
            _with(
                tgt,
                keys=["sparse-accel", "sparse-accel-device=my-accel", "cpu"],
                **{DESCRIPTION_ATTR: encode_description(bad)},
            )
        )
    unknown = tvm.target.Target(
        {"kind": "llvm", "keys": ["sparse-accel", "sparse-accel-device=mystery", "cpu"]}
    )
    with pytest.raises(DeviceError, match="names device 'mystery' but carries no description"):
        device_of(unknown)


def test_making_a_target_registers_nothing(tmp_path):
    path = tmp_path / "my.json"
    path.write_text(json.dumps(_user_doc("unregistered-accel")))
    accel_target(str(path))
    with pytest.raises(ValueError, match="unregistered-accel"):
        tvm.target.Target("unregistered-accel")
