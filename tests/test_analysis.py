import json

import numpy as np
import pytest
from conftest import block_sparse, linear_model

from tvm_sparse import analyze
from tvm_sparse.analysis import CPUCostModel, nm_compliance, profile_weight
from tvm_sparse.prune import prune_nm, prune_onnx
from tvm_sparse.testing import mlp


def test_profile_matches_brute_force(rng):
    w = block_sparse(rng, (48, 40), (8, 8), 0.4)
    p = profile_weight(w)
    assert p.density == pytest.approx(np.count_nonzero(w) / w.size)
    for (r, c), density in p.block_density.items():
        padded = np.pad(w, ((0, -48 % r), (0, -40 % c)))
        blocks = [
            np.any(padded[i : i + r, j : j + c])
            for i in range(0, padded.shape[0], r)
            for j in range(0, padded.shape[1], c)
        ]
        assert density == pytest.approx(np.mean(blocks))
    assert p.structure == "block 8x8"


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8)])
def test_nm_compliance(rng, n, m):
    w = prune_nm(rng.standard_normal((16, 37)).astype("float32"), n, m)
    assert nm_compliance(w, n, m) == 1.0
    assert profile_weight(w).nm_compliance[(n, m)] == 1.0
    dense = rng.standard_normal((16, 32)).astype("float32")
    assert nm_compliance(dense, n, m) == 0.0


def test_structure_labels(rng):
    assert profile_weight(np.ones((8, 8), "float32")).structure == "dense"
    assert profile_weight(np.zeros((8, 8), "float32")).structure == "all-zero"
    assert profile_weight(block_sparse(rng, (64, 64), (16, 1), 0.2)).structure == "block 16x1"
    assert (
        profile_weight(prune_nm(rng.standard_normal((8, 64)).astype("float32"), 2, 4)).structure
        == "2:4"
    )
    unstructured = np.where(rng.random((64, 64)) < 0.3, 1.0, 0.0).astype("float32")
    assert profile_weight(unstructured).structure == "unstructured"


def test_cost_model_break_even(rng):
    model = CPUCostModel()
    sparse = profile_weight(block_sparse(rng, (768, 768), (16, 1), 0.1))
    choice = model.choose(sparse)
    assert choice.format == "bsr" and choice.block_shape == (16, 1) and choice.predicted_speedup > 3
    moderate = profile_weight(block_sparse(rng, (768, 768), (16, 1), 0.8))
    assert model.choose(moderate).format == "dense"
    # unstructured 50% sparsity does not pay on the CPU
    half = np.where(rng.random((768, 768)) < 0.5, 1.0, 0.0).astype("float32")
    assert model.choose(profile_weight(half)).format == "dense"
    # predictions fall as density grows
    preds = [
        model.predict(profile_weight(block_sparse(rng, (256, 256), (16, 1), d)), (16, 1))
        for d in (0.05, 0.2, 0.5)
    ]
    assert preds[0] > preds[1] > preds[2]


def test_analyze_onnx_report_names_and_json(tmp_path):
    model, _ = prune_onnx(mlp(sizes=(64, 128, 32)), "block:16x1", 0.1)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    report = analyze(str(path))
    assert [layer.name for layer in report.layers] == ["fc0", "fc1"]
    assert all(layer.choice.label == "bsr 16x1" for layer in report.layers)
    data = json.loads(report.dumps())
    assert data["layers"][0]["weight_shape"] == [128, 64]
    assert data["layers"][0]["density"] == pytest.approx(0.1, abs=0.01)
    table = report.to_table()
    assert "fc0" in table and "bsr 16x1" in table
    assert report.to_dict() == data
    with pytest.warns(DeprecationWarning, match=r"to_json\(\) is deprecated: use to_dict"):
        assert report.to_json() == data


def test_analyze_reports_dense_for_weights_given_as_inputs(rng):
    model = linear_model(
        rng.standard_normal((32, 16)).astype("float32"), (4, 16), weight_as_input=True
    )
    assert analyze(model).layers == []
