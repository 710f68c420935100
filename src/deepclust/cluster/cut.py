"""Another K from a finished partition: merge the clusters that look most alike, or split the
cluster whose halves the neighbour graph separates best, without training again.

A `Cut` is the list of steps that turns a run's K clusters into K' clusters:

* ``merge a b``: cluster b joins cluster a (ids above b move down by one); chosen as the
  pair whose neighbour links cross most (`link_shares`, the measure the report's "clusters
  that look alike" uses);
* ``split c``: cluster c is cut in two by 2-means of its members' features (unit rows); the
  half nearer the second centre becomes a new cluster at the end. Chosen as the cluster whose
  split gains most Newman-Girvan modularity on the k-NN graph.

`apply` maps cluster probabilities [N, K] (and unit features [N, D], needed when the cut
splits) to [N, K']: merged columns are summed and a split column goes whole to the nearer
half, so new images are assigned exactly as the photos of the run were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Cut:
    """steps: ("merge", a, b) or ("split", c, centres [2, D]) in order; from_k -> to_k."""

    from_k: int
    steps: list[tuple] = field(default_factory=list)

    @property
    def to_k(self) -> int:
        return self.from_k + sum(1 if s[0] == "split" else -1 for s in self.steps)

    @property
    def needs_features(self) -> bool:
        return any(s[0] == "split" for s in self.steps)

    def fits(self, features: np.ndarray | None) -> bool:
        """Whether every split's centres have the features' size [N, D] (True without splits)."""
        sizes = {np.asarray(s[2]).shape[1] for s in self.steps if s[0] == "split"}
        return not sizes or (features is not None and sizes == {features.shape[1]})

    def apply(self, probs: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """probs [N, from_k] (+ unit features [N, D] when splitting) -> probs [N, to_k]."""
        p = np.array(probs, dtype=np.float64)  # a copy: the caller's array is left alone
        for step in self.steps:
            if step[0] == "merge":
                _, a, b = step
                p[:, a] += p[:, b]
                p = np.delete(p, b, axis=1)
            else:
                if features is None:
                    raise ValueError("this cut splits a cluster: apply() needs the features")
                _, c, centres = step
                half = nearer_half(features, np.asarray(centres))
                moved = np.where(half == 1, p[:, c], 0.0)
                p[:, c] -= moved
                p = np.concatenate([p, moved[:, None]], axis=1)
        return p

    def as_dict(self) -> dict:
        steps = [
            {"merge": [s[1], s[2]]} if s[0] == "merge" else
            {"split": s[1], "centres": np.asarray(s[2]).round(6).tolist()}
            for s in self.steps
        ]  # fmt: skip
        return {"from_k": self.from_k, "to_k": self.to_k, "steps": steps}

    @classmethod
    def from_dict(cls, data: dict) -> Cut:
        """The Cut of as_dict's output; ValueError when a step could not have been written
        by recut (ids out of range, centres not [2, D] finite numbers)."""
        k = int(data["from_k"])
        steps: list[tuple] = []
        for s in data["steps"]:
            if "merge" in s:
                a, b = int(s["merge"][0]), int(s["merge"][1])
                if not 0 <= a < b < k:
                    raise ValueError(f"merge {a} {b} with {k} clusters")
                steps.append(("merge", a, b))
                k -= 1
            else:
                c, centres = int(s["split"]), np.asarray(s["centres"], dtype=np.float64)
                if not 0 <= c < k or centres.ndim != 2 or len(centres) != 2:
                    raise ValueError(f"split {c} with {k} clusters, centres {centres.shape}")
                if not np.isfinite(centres).all():
                    raise ValueError("centres that are not finite")
                steps.append(("split", c, centres))
                k += 1
        return cls(int(data["from_k"]), steps)


def nearer_half(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[N] 0 or 1: which of the two centres [2, D] each unit row of features [N, D] is nearer."""
    return (features @ centres[1] > features @ centres[0]).astype(np.int64)


def unit_rows(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def recut(
    probs: np.ndarray, features: np.ndarray, neighbours: np.ndarray, to_k: int, seed: int = 0
) -> tuple[Cut, np.ndarray]:
    """The Cut from a partition's cluster probabilities probs [N, K] to `to_k` clusters, and
    the new probabilities [N, to_k] (their argmax is the new partition). Each step is chosen on
    the current argmax and applied to the probabilities, so a photo lands where `Cut.apply`
    puts it. features [N, D] (made unit rows here); neighbours [N, n]: the k-NN graph."""
    p = np.asarray(probs, dtype=np.float64)
    cut, x = Cut(p.shape[1]), unit_rows(features)
    while p.shape[1] != to_k:
        labels, k = p.argmax(1), p.shape[1]
        if k > to_k:
            step: tuple = ("merge", *most_alike(neighbours, labels, k))
        else:
            step = ("split", *best_split(x, neighbours, labels, k, seed))
        p = Cut(k, [step]).apply(p, x)
        cut.steps.append(step)
    return cut, p


def link_shares(neighbours: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """[K, K]: for a != b, the neighbour links between clusters a and b (both directions)
    over all links out of a and b; 0 on the diagonal. Symmetric. neighbours [N, n] (row
    indices, the row itself excluded), clusters [N] in 0..k-1."""
    links = np.zeros((k, k))
    np.add.at(links, (np.repeat(clusters, neighbours.shape[1]), clusters[neighbours].ravel()), 1)
    out_degree = links.sum(1)
    share = (links + links.T) / np.maximum(out_degree[:, None] + out_degree[None, :], 1)
    np.fill_diagonal(share, 0.0)
    return share


def most_alike(neighbours: np.ndarray, labels: np.ndarray, k: int) -> tuple[int, int]:
    """(a, b), a < b: the pair of clusters with the largest share of crossing neighbour links."""
    share = link_shares(neighbours, labels, k)
    a, b = np.triu_indices(k, 1)
    best = int(np.argmax(share[a, b]))  # ties (no crossing links at all): the lowest pair
    return int(a[best]), int(b[best])


def best_split(
    x: np.ndarray, neighbours: np.ndarray, labels: np.ndarray, k: int, seed: int
) -> tuple[int, np.ndarray]:
    """(cluster, centres [2, D]): the 2-means split with the largest modularity gain."""
    from sklearn.cluster import KMeans

    degree = neighbours.shape[1] * 2.0  # symmetrised: out-links plus (on average) in-links
    total = degree * len(labels)
    best: tuple[float, int, np.ndarray] | None = None
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 4:
            continue
        km = KMeans(2, n_init=2, random_state=seed).fit(x[rows])
        centres = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
        half = np.full(len(labels), -1)
        half[rows] = nearer_half(x[rows], centres)
        gain = _split_gain(neighbours, rows, half, degree, total)
        if best is None or gain > best[0]:
            best = (gain, c, centres)
    if best is None:
        raise ValueError("no cluster has enough members to split")
    return best[1], best[2]


def _split_gain(
    neighbours: np.ndarray, rows: np.ndarray, half: np.ndarray, degree: float, total: float
) -> float:
    """Modularity gain of splitting `rows` by half [N] (0/1 on rows, -1 elsewhere): minus the
    links cut between the halves, plus the drop in expected links (2 a_0 a_1)."""
    own = half[rows]
    across = (half[neighbours[rows]] == (1 - own)[:, None]).sum()
    a0, a1 = (own == 0).sum() * degree / total, (own == 1).sum() * degree / total
    return float(-across / total + 2 * a0 * a1)
