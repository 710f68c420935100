"""Clustering metrics: ACC, NMI, ARI and purity against ground-truth labels.

Conventions
-----------
* Labels are class ids in ``[0, C)``; a label ``< 0`` marks an unlabelled sample, which is
  dropped before scoring (``n`` counts only labelled samples).
* Cluster ids are ints in ``[0, K)``. K and C may differ.
* The confusion matrix is ``[C, K]`` with rows = classes and columns = clusters.

ACC (strict, one-to-one)
    Hungarian matching (``scipy.optimize.linear_sum_assignment``, ``maximize=True``) on the
    rectangular confusion matrix maps ``min(K, C)`` clusters to distinct classes so that the
    matched counts are maximal. ACC = matched count / n. When ``K > C`` the samples of the
    unmatched clusters count as errors, so ACC <= 1 always, and over-clustering is penalised.

Purity (lenient, many-to-one)
    Each cluster is mapped to its majority class (several clusters may share a class);
    purity = sum of the column maxima / n. Purity >= ACC, with equality when ``K == C`` and
    the majority classes of the clusters are all distinct. Reported beside ACC because it
    is the common number for over-clustering (``K > C``).

NMI is scikit-learn's ``normalized_mutual_info_score`` with the arithmetic average and ARI
is scikit-learn's ``adjusted_rand_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

if TYPE_CHECKING:
    import torch

    IntArray = np.ndarray | torch.Tensor | Sequence[int]
else:
    IntArray = Any

__all__ = [
    "ClusteringScores",
    "cluster_accuracy",
    "confusion",
    "hungarian_match",
    "score",
]


@dataclass
class ClusteringScores:
    """All clustering metrics of one prediction (see the module docstring for definitions)."""

    acc: float
    nmi: float
    ari: float
    purity: float
    n: int
    num_clusters: int
    num_classes: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict of the fields (for logs and JSON reports)."""
        return asdict(self)


def _as_int_array(x: IntArray, name: str) -> np.ndarray:
    """1-d int64 numpy array from a list, numpy array or torch tensor."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer ids, got non-integer floats")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu" and arr.size > 0:
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _labelled(labels: IntArray, clusters: IntArray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels, clusters) with the unlabelled (label < 0) samples removed."""
    y = _as_int_array(labels, "labels")
    c = _as_int_array(clusters, "clusters")
    if y.shape != c.shape:
        raise ValueError(
            f"labels and clusters must have the same length, got {y.shape[0]} and {c.shape[0]}"
        )
    keep = y >= 0
    if not keep.any():
        raise ValueError(
            f"no labelled samples to score: all {y.shape[0]} labels are < 0 (unlabelled) "
            "or the input is empty; clustering metrics need ground-truth labels"
        )
    y, c = y[keep], c[keep]
    if (c < 0).any():
        raise ValueError(f"cluster ids must be >= 0, got {int(c.min())}")
    return y, c


def _check_size(ids: np.ndarray, size: int | None, what: str, arg: str) -> int:
    """Size of the id range: ``max + 1`` when ``size`` is None, else ``size`` (checked)."""
    top = int(ids.max()) + 1
    if size is None:
        return top
    if size < 1:
        raise ValueError(f"{arg} must be >= 1, got {size}")
    if top > size:
        raise ValueError(f"{what} id {top - 1} is out of range for {arg}={size}")
    return int(size)


def confusion(
    labels: IntArray,
    clusters: IntArray,
    num_classes: int | None = None,
    num_clusters: int | None = None,
) -> np.ndarray:
    """Counts ``[C, K]`` (rows = classes, columns = clusters) over the labelled samples.

    C and K default to ``max id + 1``; unlabelled samples (label < 0) are ignored.
    """
    y, c = _labelled(labels, clusters)
    num_c = _check_size(y, num_classes, "class", "num_classes")
    num_k = _check_size(c, num_clusters, "cluster", "num_clusters")
    flat = np.bincount(y * num_k + c, minlength=num_c * num_k)
    return flat.reshape(num_c, num_k).astype(np.int64, copy=False)


def hungarian_match(conf: np.ndarray) -> dict[int, int]:
    """One-to-one map cluster -> class maximising the matched counts of ``conf`` [C, K].

    Holds ``min(C, K)`` pairs; clusters left out have no class.
    """
    conf = np.asarray(conf)
    if conf.ndim != 2:
        raise ValueError(f"confusion matrix must be 2-d [C, K], got shape {conf.shape}")
    rows, cols = linear_sum_assignment(conf, maximize=True)
    return {int(k): int(j) for j, k in zip(rows, cols, strict=True)}


def _acc_from_conf(conf: np.ndarray) -> float:
    mapping = hungarian_match(conf)
    matched = sum(int(conf[j, k]) for k, j in mapping.items())
    return matched / int(conf.sum())


def _purity_from_conf(conf: np.ndarray) -> float:
    return int(conf.max(axis=0).sum()) / int(conf.sum())


def cluster_accuracy(
    labels: IntArray, clusters: IntArray, num_clusters: int | None = None
) -> float:
    """Strict one-to-one Hungarian accuracy (unmatched clusters count as errors)."""
    return _acc_from_conf(confusion(labels, clusters, num_clusters=num_clusters))


def score(
    labels: IntArray, clusters: IntArray, num_clusters: int | None = None
) -> ClusteringScores:
    """ACC, NMI, ARI and purity of ``clusters`` against ``labels`` (label < 0 = unlabelled).

    ``num_clusters`` in the result is the K given, else the number of distinct clusters
    among the labelled samples; ``num_classes`` is the number of distinct labelled classes.
    """
    y, c = _labelled(labels, clusters)
    conf = confusion(y, c, num_clusters=num_clusters)
    return ClusteringScores(
        acc=_acc_from_conf(conf),
        nmi=float(normalized_mutual_info_score(y, c, average_method="arithmetic")),
        ari=float(adjusted_rand_score(y, c)),
        purity=_purity_from_conf(conf),
        n=int(y.shape[0]),
        num_clusters=int(num_clusters) if num_clusters is not None else int(np.unique(c).size),
        num_classes=int(np.unique(y).size),
    )


def majority_correct(labels: IntArray, clusters: IntArray) -> np.ndarray:
    """[n] bool over the labelled samples: the sample's class is its cluster's majority class
    (what a person looking at the cluster would call right)."""
    y, c = _labelled(labels, clusters)
    conf = confusion(y, c)
    return y == conf.argmax(axis=0)[c]


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """ECE (Guo et al. 2017): sum over equal-width confidence bins of |accuracy - mean
    confidence| weighted by the bin's share of samples. confidence [n] in [0, 1], correct [n]."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, weights=correct, minlength=bins)
        - np.bincount(which, weights=confidence, minlength=bins)
    )
    return float(gap.sum() / max(len(confidence), 1)) if total.sum() else 0.0
