import json

import pytest

from tvm_sparse.kernels import BSRKernelParams
from tvm_sparse.schedule.records import KernelRecords

RECORD = {
    "kernel": "block_matmul",
    "m": 128,
    "k": 768,
    "n": 3072,
    "block": [16, 768],
    "rows_per_tile": 12,
    "ms": 2.9,
}


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_records_apply_to_their_shape_only(tmp_path):
    write(tmp_path, "znver4.json", {"cpu": "znver4", "records": [RECORD]})
    records = KernelRecords.for_cpu("znver4", tmp_path)
    assert records.lookup(128, 768, 3072, (16, 768)) == BSRKernelParams(12)
    assert records.lookup(128, 768, 3072, (8, 8)) is None
    assert records.lookup(64, 768, 3072, (16, 768)) is None


@pytest.mark.parametrize(
    "doc, message",
    [
        ("{not json", "not a kernel record file"),
        ({"cpu": "znver4"}, "records"),
        ({"cpu": "znver4", "records": [dict(RECORD, rows_per_tile=0)]}, "rows_per_tile"),
    ],
)
def test_malformed_record_files_are_skipped_with_a_warning(tmp_path, doc, message):
    write(tmp_path, "znver4.json", doc)
    with pytest.raises(ValueError, match=message):
        KernelRecords.load(tmp_path / "znver4.json")
    with pytest.warns(UserWarning, match="ignoring"):
        assert KernelRecords.for_cpu("znver4", tmp_path).params == {}


def test_records_for_another_cpu_are_not_applied(tmp_path):
    write(tmp_path, "znver4.json", {"cpu": "skylake-avx512", "records": [RECORD]})
    with pytest.warns(UserWarning, match="recorded for CPU 'skylake-avx512'"):
        assert KernelRecords.for_cpu("znver4", tmp_path).params == {}
    assert KernelRecords.for_cpu("icelake-server", tmp_path).params == {}  # no file for it at all
