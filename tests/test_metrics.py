"""Tests for deepclust.evaluation.metrics: hand-computed cases and sklearn cross-checks."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from deepclust.evaluation.metrics import (
    ClusteringScores,
    cluster_accuracy,
    confusion,
    hungarian_match,
    score,
)


def _from_confusion(conf: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and clusters whose confusion matrix (rows = classes) is ``conf``."""
    labels, clusters = [], []
    for j, row in enumerate(conf):
        for k, count in enumerate(row):
            labels += [j] * count
            clusters += [k] * count
    return np.array(labels), np.array(clusters)


def test_perfect_clustering_with_permuted_ids() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    perm = np.array([2, 3, 0, 1])  # class j -> cluster perm[j]
    s = score(labels, perm[labels])
    assert s.acc == 1.0
    assert s.purity == 1.0
    assert s.nmi == pytest.approx(1.0)
    assert s.ari == pytest.approx(1.0)
    assert (s.n, s.num_clusters, s.num_classes) == (8, 4, 4)


def test_hand_three_class_hungarian_beats_greedy() -> None:
    # confusion (rows = classes 0..2, columns = clusters 0..2), n = 17:
    #            c0 c1 c2
    #   class0 [  5, 4, 0 ]
    #   class1 [  4, 0, 0 ]
    #   class2 [  0, 1, 3 ]
    # greedy (take the 5 first) gets 5 + 0 + 3 = 8; the optimum is
    # c1->class0 (4) + c0->class1 (4) + c2->class2 (3) = 11, so ACC = 11/17.
    # purity = column maxima 5 + 4 + 3 = 12/17 (c0 and c1 both go to class0).
    conf = [[5, 4, 0], [4, 0, 0], [0, 1, 3]]
    labels, clusters = _from_confusion(conf)
    np.testing.assert_array_equal(confusion(labels, clusters), np.array(conf))
    assert hungarian_match(np.array(conf)) == {0: 1, 1: 0, 2: 2}
    assert cluster_accuracy(labels, clusters) == pytest.approx(float(Fraction(11, 17)))
    s = score(labels, clusters)
    assert s.acc == pytest.approx(float(Fraction(11, 17)))
    assert s.purity == pytest.approx(float(Fraction(12, 17)))
    assert s.n == 17


def test_more_clusters_than_classes() -> None:
    # K = 4 clusters, C = 2 classes, n = 12:
    #            c0 c1 c2 c3
    #   class0 [  4, 2, 0, 0 ]
    #   class1 [  0, 0, 3, 3 ]
    # one-to-one: c0->class0 (4) + c2 or c3 -> class1 (3) = 7; c1 and the other of
    # c2/c3 are unmatched and count as errors: ACC = 7/12. Purity (many-to-one) = 12/12.
    conf = [[4, 2, 0, 0], [0, 0, 3, 3]]
    labels, clusters = _from_confusion(conf)
    mapping = hungarian_match(np.array(conf))
    assert len(mapping) == 2
    assert mapping[0] == 0
    assert set(mapping) - {0} <= {2, 3}
    assert mapping[next(k for k in mapping if k != 0)] == 1
    s = score(labels, clusters)
    assert s.acc == pytest.approx(7 / 12)
    assert s.purity == 1.0
    assert (s.num_clusters, s.num_classes) == (4, 2)


def test_fewer_clusters_than_classes() -> None:
    # K = 2 clusters, C = 3 classes, n = 10:
    #            c0 c1
    #   class0 [  4, 0 ]
    #   class1 [  1, 3 ]
    #   class2 [  0, 2 ]
    # c0->class0 (4) + c1->class1 (3) = 7; class2 has no cluster: ACC = 7/10.
    # purity: column maxima 4 + 3 = 7/10.
    conf = [[4, 0], [1, 3], [0, 2]]
    labels, clusters = _from_confusion(conf)
    assert hungarian_match(np.array(conf)) == {0: 0, 1: 1}
    s = score(labels, clusters)
    assert s.acc == pytest.approx(7 / 10)
    assert s.purity == pytest.approx(7 / 10)
    assert (s.num_clusters, s.num_classes) == (2, 3)


def test_num_clusters_given_counts_empty_clusters() -> None:
    labels = [0, 0, 1, 1]
    clusters = [3, 3, 1, 1]  # clusters 0 and 2 are empty
    assert confusion(labels, clusters, num_clusters=5).shape == (2, 5)
    s = score(labels, clusters, num_clusters=5)
    assert s.acc == 1.0
    assert s.num_clusters == 5
    assert score(labels, clusters).num_clusters == 2
    with pytest.raises(ValueError, match="out of range"):
        cluster_accuracy(labels, clusters, num_clusters=3)


def test_nmi_ari_match_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 300))
        labels = rng.integers(0, int(rng.integers(1, 8)), size=n)
        clusters = rng.integers(0, int(rng.integers(1, 12)), size=n)
        s = score(labels, clusters)
        assert s.nmi == pytest.approx(
            normalized_mutual_info_score(labels, clusters, average_method="arithmetic")
        )
        assert s.ari == pytest.approx(adjusted_rand_score(labels, clusters))
        assert 0.0 <= s.acc <= s.purity <= 1.0


def test_independent_balanced_labelling() -> None:
    # every (class, cluster) pair occurs once: clusters carry no information.
    labels = [0, 0, 1, 1]
    clusters = [0, 1, 0, 1]
    s = score(labels, clusters)
    assert s.nmi == pytest.approx(0.0, abs=1e-12)
    # ARI by hand: sum_ij C(n_ij, 2) = 0, rows 2 * C(2, 2) = 2, cols = 2,
    # expected = 2 * 2 / C(4, 2) = 2/3, max = 2: ARI = (0 - 2/3) / (2 - 2/3) = -1/2.
    assert s.ari == pytest.approx(-0.5)
    assert s.acc == 0.5
    assert s.purity == 0.5


def test_nmi_hand_case() -> None:
    # classes [0, 0, 1, 1], clusters [0, 0, 0, 1]; natural logs.
    # p(y) = (1/2, 1/2), p(c) = (3/4, 1/4), joint p(0,0) = 1/2, p(1,0) = 1/4, p(1,1) = 1/4.
    h_y = math.log(2)
    h_c = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75))
    mi += 0.25 * math.log(0.25 / (0.5 * 0.25))
    expected = mi / ((h_y + h_c) / 2)
    s = score([0, 0, 1, 1], [0, 0, 0, 1])
    assert s.nmi == pytest.approx(expected)
    assert s.acc == pytest.approx(3 / 4)


def test_acc_invariant_to_cluster_relabelling() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 200))
        num_c, num_k = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        labels = rng.integers(0, num_c, size=n)
        clusters = rng.integers(0, num_k, size=n)
        perm = rng.permutation(num_k)
        base = score(labels, clusters, num_clusters=num_k)
        moved = score(labels, perm[clusters], num_clusters=num_k)
        assert moved.acc == pytest.approx(base.acc)
        assert moved.purity == pytest.approx(base.purity)
        assert moved.nmi == pytest.approx(base.nmi)
        assert moved.ari == pytest.approx(base.ari)


def test_acc_equals_brute_force_over_permutations() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        labels = rng.integers(0, 4, size=40)
        clusters = rng.integers(0, 4, size=40)
        conf = confusion(labels, clusters, num_classes=4, num_clusters=4)
        best = max(sum(conf[p[k], k] for k in range(4)) for p in itertools.permutations(range(4)))
        assert cluster_accuracy(labels, clusters, num_clusters=4) == pytest.approx(best / 40)


def test_unlabelled_samples_are_ignored() -> None:
    labels = np.array([0, -1, 0, 1, -1, 1, -5])
    clusters = np.array([1, 0, 1, 0, 1, 0, 2])
    s = score(labels, clusters)
    assert s.n == 4
    assert s.acc == 1.0
    assert s.nmi == pytest.approx(1.0)
    assert s.num_clusters == 2
    np.testing.assert_array_equal(confusion(labels, clusters), [[0, 2], [2, 0]])


def test_all_unlabelled_raises() -> None:
    with pytest.raises(ValueError, match="no labelled samples"):
        score([-1, -1, -1], [0, 1, 0])
    with pytest.raises(ValueError, match="no labelled samples"):
        cluster_accuracy(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same length"):
        score([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="1-d"):
        score(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match=">= 0"):
        score([0, 1], [0, -1])
    with pytest.raises(ValueError, match="integer"):
        score([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        confusion([0, 2], [0, 1], num_classes=2)


def test_confusion_hand_case_and_input_types() -> None:
    labels = [0, 0, 1, 2, 2, 2]
    clusters = [1, 1, 0, 0, 2, 2]
    expected = np.array(
        [
            [0, 2, 0],  # class 0: two samples in cluster 1
            [1, 0, 0],  # class 1: one in cluster 0
            [1, 0, 2],  # class 2: one in cluster 0, two in cluster 2
        ]
    )
    variants = [
        (labels, clusters),
        (np.array(labels), np.array(clusters, dtype=np.int32)),
        (torch.tensor(labels), torch.tensor(clusters)),
        (torch.tensor(labels, dtype=torch.int32), np.array(clusters)),
    ]
    for y, c in variants:
        conf = confusion(y, c)
        assert conf.dtype == np.int64
        np.testing.assert_array_equal(conf, expected)
        # ACC: c1->0 (2) + c0->1 (1) + c2->2 (2) = 5/6
        assert cluster_accuracy(y, c) == pytest.approx(5 / 6)
    assert confusion(labels, clusters, num_classes=4, num_clusters=5).shape == (4, 5)


def test_torch_tensor_with_grad_and_as_dict() -> None:
    y = torch.tensor([0, 1, 1, 0])
    c = torch.tensor([1.0, 0.0, 0.0, 1.0], requires_grad=True)
    s = score(y, c)
    assert isinstance(s, ClusteringScores)
    d = s.as_dict()
    assert set(d) == {"acc", "nmi", "ari", "purity", "n", "num_clusters", "num_classes"}
    assert d["acc"] == 1.0 and d["n"] == 4
    assert all(isinstance(v, float) for k, v in d.items() if k in {"acc", "nmi", "ari", "purity"})
    assert all(isinstance(d[k], int) for k in ("n", "num_clusters", "num_classes"))
