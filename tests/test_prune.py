import numpy as np
import pytest
from onnx import numpy_helper

from tvm_sparse.analysis import profile_weight
from tvm_sparse.formats import FormatError
from tvm_sparse.prune import Pattern, parse_pattern, prune_onnx, prune_weight
from tvm_sparse.testing import mlp, resnet


@pytest.mark.parametrize("density", [0.05, 0.3, 1.0])
def test_unstructured_keeps_the_largest(rng, density):
    w = rng.standard_normal((40, 30)).astype("float32")
    p = prune_weight(w, "unstructured", density)
    assert np.count_nonzero(p) == round(density * w.size)
    kept = np.abs(w[p != 0])
    dropped = np.abs(w[p == 0])
    assert dropped.size == 0 or kept.min() >= dropped.max()


@pytest.mark.parametrize("block", ["16x1", "8x8", "1x4", "5x3"])
def test_block_pruning_aligns_to_blocks(rng, block):
    w = rng.standard_normal((70, 50)).astype("float32")
    p = prune_weight(w, f"block:{block}", 0.2)
    prof = profile_weight(p, blocks=[tuple(int(v) for v in block.split("x"))])
    (fill,) = prof.block_fill.values()
    assert fill == 1.0  # zeros are whole blocks
    (bd,) = prof.block_density.values()
    assert bd == pytest.approx(0.2, abs=0.02)
    assert np.all((p == 0) | (p == w))


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8)])
def test_nm_pruning(rng, n, m):
    w = rng.standard_normal((8, 30)).astype("float32")
    p = prune_weight(w, f"nm:{n}:{m}")
    counts = np.pad(p != 0, ((0, 0), (0, -30 % m))).reshape(8, -1, m).sum(axis=2)
    assert counts.max() <= n
    assert np.all((p == 0) | (p == w))


@pytest.mark.parametrize("pattern", ["blocks:4x4", "nm:4:2", "nm:0:4", "block:0x1", "stripes"])
def test_bad_patterns(pattern):
    with pytest.raises(FormatError):
        parse_pattern(pattern)


def test_a_pattern_of_an_unknown_kind_names_the_kinds():
    with pytest.raises(FormatError, match="'channel' .*unstructured, block, nm, decompose"):
        Pattern("channel")


@pytest.mark.parametrize("density", [0, -0.1, 1.5])
def test_bad_density(rng, density):
    with pytest.raises(FormatError, match="density"):
        prune_weight(rng.standard_normal((4, 4)).astype("float32"), "unstructured", density)


def test_prune_onnx_matmul_and_gemm_orientation():
    for gemm in (True, False):
        model, layers = prune_onnx(mlp(sizes=(32, 64, 16), gemm=gemm), "block:16x1", 0.25)
        assert [lay.shape for lay in layers] == [(64, 32), (16, 64)]
        assert all(lay.density_after == pytest.approx(0.25, abs=0.05) for lay in layers)
        from tvm_sparse import analyze

        assert all(row.profile.structure == "block 16x1" for row in analyze(model).layers)


def test_prune_onnx_conv_in_the_kernels_reduction_order():
    model = resnet(image=16, width=16, blocks=(1,), classes=4)
    pruned, layers = prune_onnx(model, "nm:2:4")
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    w = inits["stage0.block0.conv2.weight"]  # [16, 16, 3, 3]
    groups = w.transpose(0, 2, 3, 1).reshape(
        16, -1, 4
    )  # (o, kh, kw, i) with i innermost, in groups of 4
    assert (np.count_nonzero(groups, axis=2) <= 2).all()
    assert {layer.name: layer.shape for layer in layers}["stage0.block0.conv2"] == (16, 3 * 3 * 16)


def test_nm_refuses_a_density_it_would_ignore(rng):
    w = rng.standard_normal((8, 16)).astype("float32")
    with pytest.raises(FormatError, match="density does not apply to nm:2:4"):
        prune_weight(w, "nm:2:4", 0.1)
    assert (prune_weight(w, "nm:2:4") != 0).sum() == w.size // 2


def test_block_pruning_scores_edge_blocks_by_the_entries_they_have():
    w = np.ones((20, 16), "float32")
    w[16:] = (
        1.5  # the edge block: 4 rows of larger weights, a smaller L2 norm than the full block's
    )
    kept = prune_weight(w, "block:16x16", 0.5)
    assert (kept[16:] == 1.5).all() and (kept[:16] == 0).all()
