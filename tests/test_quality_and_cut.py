"""Label-free quality (evaluation/quality.py) and another K from a finished partition
(cluster/cut.py): known values on small graphs, and invariances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepclust.cluster.cut import Cut, link_shares, nearer_half, recut
from deepclust.evaluation.quality import (
    OUTLIER_AGREEMENT,
    POOR_QUALITY,
    assess,
    neighbour_agreement,
)


def blobs(sizes: list[int], dims: int = 8, spread: float = 0.05, seed: int = 0):
    """Well separated unit-ish blobs: (features [N, D], labels [N])."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dims)[: len(sizes)] * 3.0
    x = np.concatenate(
        [c + spread * rng.standard_normal((s, dims)) for c, s in zip(centres, sizes, strict=True)]
    )
    y = np.repeat(np.arange(len(sizes)), sizes)
    return x, y


def knn(x: np.ndarray, k: int = 10) -> np.ndarray:
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :k]


def test_agreement_counts_the_share_of_neighbours_in_the_own_cluster() -> None:
    neighbours = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    clusters = np.array([0, 0, 1, 1])
    assert neighbour_agreement(neighbours, clusters).tolist() == [0.5, 0.5, 0.0, 0.0]


def test_link_shares_known_values_and_symmetry() -> None:
    # 0 -> 1 (cluster 0 to 0), 1 -> 2 (0 to 1), 2 -> 3 (1 to 1), 3 -> 0 (1 to 0)
    neighbours = np.array([[1], [2], [3], [0]])
    share = link_shares(neighbours, np.array([0, 0, 1, 1]), 2)
    assert share[0, 1] == pytest.approx(2 / 4)  # 2 crossing links of 4 out of both
    assert np.allclose(share, share.T) and share[0, 0] == 0


def test_a_clean_partition_scores_one_and_a_shuffled_one_poorly() -> None:
    x, y = blobs([40, 40, 40])
    nb = knn(x)
    good = assess(nb, y, 3)
    assert good.score == pytest.approx(1.0) and not good.warnings
    assert len(good.outliers) == 0
    shuffled = np.random.default_rng(1).permutation(y)
    bad = assess(nb, shuffled, 3)
    assert bad.score < POOR_QUALITY and "look poor" in bad.warnings[0]
    assert len(bad.outliers) > 0
    assert (bad.agreement[bad.outliers] <= OUTLIER_AGREEMENT).all()


def test_a_split_blob_is_named_as_the_pair_that_looks_alike() -> None:
    x, y = blobs([40, 40, 80])
    clusters = y.copy()
    third = np.flatnonzero(y == 2)
    clusters[third[::2]] = 3  # blob 2 cut in two at random: its halves share most links
    q = assess(knn(x), clusters, 4)
    assert sorted(q.similar[0][:2]) == [2, 3]
    assert any("look alike" in w for w in q.warnings)


def onehot(clusters: np.ndarray) -> np.ndarray:
    return np.eye(int(clusters.max()) + 1)[clusters]


def test_recut_merges_the_halves_back_and_splits_a_merged_pair() -> None:
    x, y = blobs([40, 40, 80])
    nb = knn(x)
    over = y.copy()
    third = np.flatnonzero(y == 2)
    over[third[::2]] = 3
    cut, merged = recut(onehot(over), x, nb, 3)
    assert cut.steps == [("merge", 2, 3)] and (merged.argmax(1) == y).all()
    under = np.where(y == 1, 0, y)  # blobs 0 and 1 in one cluster, blob 2 is cluster 2
    under[under == 2] = 1
    cut, split = recut(onehot(under), x, nb, 3)
    assert cut.to_k == 3 and cut.steps[0][0] == "split" and cut.steps[0][1] == 0
    pairs = set(zip(split.argmax(1).tolist(), y.tolist(), strict=True))
    assert len(pairs) == 3  # a one-to-one match with the blobs


def test_cut_apply_reproduces_the_recut_and_round_trips() -> None:
    """Soft probabilities: a photo whose two runner-up clusters merge may change cluster, and
    the recut's partition is exactly what Cut.apply gives new photos."""
    x, y = blobs([30, 30, 30, 30])
    nb = knn(x)
    rng = np.random.default_rng(0)
    start = np.where(y == 3, 2, y)  # 3 clusters: blobs 2 and 3 merged
    probs = 0.6 * np.eye(3)[start] + 0.4 * rng.dirichlet(np.ones(3), len(y))
    cut, out = recut(probs, x, nb, 4)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(cut.apply(probs, unit), out) and np.allclose(out.sum(1), 1.0)
    again = Cut.from_dict(json.loads(json.dumps(cut.as_dict()))).apply(probs, unit)
    assert (again.argmax(1) == out.argmax(1)).all()  # through cut.json
    down, merged = recut(out, x, nb, 2)
    assert (down.apply(out, unit).argmax(1) == merged.argmax(1)).all()
    assert len(down.steps) == 2 and all(s[0] == "merge" for s in down.steps)


def test_nearer_half_is_the_nearer_centre_by_cosine() -> None:
    centres = np.array([[1.0, 0.0], [0.0, 1.0]])
    rows = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert nearer_half(rows, centres).tolist() == [0, 1]


def test_expected_calibration_error_known_values() -> None:
    from deepclust.evaluation.metrics import expected_calibration_error, majority_correct

    # perfectly calibrated: in the 0.8 bin 4 of 5 are right
    conf = np.full(5, 0.8)
    assert expected_calibration_error(conf, np.array([1, 1, 1, 1, 0])) == pytest.approx(0.0)
    # always 1.00 and right half the time: ECE 0.5
    assert expected_calibration_error(np.ones(4), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    # two bins, weighted by their share: |1 - 0.9| * 0.5 + |0 - 0.1| * 0.5
    ece = expected_calibration_error(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0]))
    assert ece == pytest.approx(0.1)
    right = majority_correct(np.array([0, 0, 1, 1, 1]), np.array([0, 0, 0, 1, 1]))
    assert right.tolist() == [True, True, False, True, True]


def test_quality_reuses_a_wider_graph_of_the_same_rows() -> None:
    import torch

    from deepclust.cluster.neighbours import neighbour_graph
    from deepclust.evaluation.quality import quality_of

    x, y = blobs([30, 30, 30], spread=0.8)
    searched, nb = quality_of(x, y, 3)
    wider = neighbour_graph(torch.as_tensor(x), 21, centre=True).indices.numpy()
    reused, nb_reused = quality_of(x, y, 3, wider)
    assert (nb_reused == nb).all() and np.allclose(reused.agreement, searched.agreement)
    narrow = wider[:, :5]  # too few columns: searched again
    assert (quality_of(x, y, 3, narrow)[1] == nb).all()
