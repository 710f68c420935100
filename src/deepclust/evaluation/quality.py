"""How good a clustering looks without labels, from the features' nearest neighbours.

A photo's *agreement* is the share of its k nearest neighbours (by cosine similarity of the
features, itself left out) that sit in its own cluster: 1.0 when its neighbourhood is all
one cluster, low when the photo sits between clusters or in a cluster that mixes things the
features tell apart. Everything here derives from that one graph:

* per cluster, its *coherence*: the mean agreement of its photos;
* per run, the *quality*: the mean agreement over all photos (the k-NN consistency of the
  partition), shown with a verdict; under `POOR_QUALITY` the run gets a warning;
* pairs of clusters that look alike: the share of the pair's neighbour links that cross
  between them (a merge hint when over `MERGE_HINT`);
* outliers: photos with agreement at most `OUTLIER_AGREEMENT` (at most 2 of 10 neighbours
  in their own cluster), listed apart in the report.

The thresholds were set on the development half of benchmarks/k_suite.py and checked on
its held-out half (see its JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepclust.cluster.cut import link_shares

NEIGHBOURS = 10
OUTLIER_AGREEMENT = 0.2
POOR_QUALITY = 0.7  # set on the K suite's dev pool (no false alarm there), checked on held-out
GOOD_QUALITY = 0.85
MERGE_HINT = 0.15
SHOWN_PAIRS = 5


@dataclass
class Quality:
    """Label-free quality of one partition of N photos into K clusters.

    agreement [N]: per photo, the share of its neighbours in its own cluster. coherence [K]:
    mean agreement per cluster (NaN for an empty one). score: mean agreement. similar: up to
    SHOWN_PAIRS (a, b, share) pairs, most linked first. outliers: photo indices, lowest
    agreement first.
    """

    agreement: np.ndarray
    coherence: np.ndarray
    score: float
    similar: list[tuple[int, int, float]]
    outliers: np.ndarray
    neighbours: int = NEIGHBOURS
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready summary (per-photo agreement goes to predictions.csv, not here)."""
        return {
            "score": round(self.score, 4),
            "verdict": verdict(self.score),
            "neighbours": self.neighbours,
            "coherence": [None if np.isnan(c) else round(float(c), 4) for c in self.coherence],
            "similar_pairs": [
                {"clusters": [a, b], "link_share": round(s, 4)} for a, b, s in self.similar
            ],
            "outliers": len(self.outliers),
            "outlier_agreement_at_most": OUTLIER_AGREEMENT,
        }


def verdict(score: float) -> str:
    """A word for the run's quality score."""
    if score >= GOOD_QUALITY:
        return "good"
    if score >= POOR_QUALITY:
        return "fair"
    return "poor"


def neighbour_agreement(neighbours: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """neighbours [N, k] (row indices, the row itself excluded), clusters [N] -> [N] in [0, 1]."""
    return (clusters[neighbours] == clusters[:, None]).mean(1)


def assess(neighbours: np.ndarray, clusters: np.ndarray, k: int) -> Quality:
    """The Quality of clusters [N] (ids in 0..k-1) on the k-NN graph neighbours [N, n]."""
    clusters = np.asarray(clusters, dtype=np.int64)
    agreement = neighbour_agreement(neighbours, clusters)
    sizes = np.bincount(clusters, minlength=k)
    sums = np.bincount(clusters, weights=agreement, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        coherence = np.where(sizes > 0, sums / np.maximum(sizes, 1), np.nan)
    share = link_shares(neighbours, clusters, k)
    a, b = np.triu_indices(k, 1)
    order = np.argsort(-share[a, b], kind="stable")[:SHOWN_PAIRS]
    similar = [
        (int(a[i]), int(b[i]), float(share[a[i], b[i]])) for i in order if share[a[i], b[i]] > 0
    ]
    low = np.flatnonzero(agreement <= OUTLIER_AGREEMENT)
    outliers = low[np.argsort(agreement[low], kind="stable")]
    q = Quality(
        agreement, coherence, float(agreement.mean()), similar, outliers, neighbours.shape[1]
    )
    q.warnings = quality_warnings(q)
    return q


def quality_warnings(q: Quality) -> list[str]:
    """Sentences for the console, summary.json and the report when the answer looks poor."""
    out = []
    if q.score < POOR_QUALITY:
        out.append(
            f"the clusters look poor: on average only {q.score:.0%} of a photo's "
            f"{q.neighbours} nearest neighbours share its cluster. The photos may not form "
            "clear groups for this encoder, or K is off: look at the report before using them."
        )
    hints = [(a, b, s) for a, b, s in q.similar if s >= MERGE_HINT]
    if hints:
        pairs = ", ".join(f"{a} and {b} ({s:.0%})" for a, b, s in hints[:3])
        out.append(f"clusters that look alike (share of neighbour links between them): {pairs}.")
    return out


def quality_of(
    features: np.ndarray, clusters: np.ndarray, k: int, graph: np.ndarray | None = None
) -> tuple[Quality, np.ndarray]:
    """(Quality, neighbours [N, NEIGHBOURS]) of clusters [N] on features [N, D]: the k-NN graph
    by cosine after centring (cluster/neighbours.py: exact, or faiss with measured recall).

    graph: that graph of the same rows with more than NEIGHBOURS columns, self first (a
    frozen run's view neighbours), whose first columns are reused instead of searching again.
    """
    import torch

    from deepclust.cluster.neighbours import neighbour_graph

    if graph is not None and graph.shape[0] == len(features) and graph.shape[1] > NEIGHBOURS:
        neighbours = np.asarray(graph[:, 1 : NEIGHBOURS + 1])
        return assess(neighbours, clusters, k), neighbours
    count = min(NEIGHBOURS, len(features) - 1)
    found = neighbour_graph(torch.as_tensor(np.asarray(features)), count + 1, centre=True)
    neighbours = found.indices[:, 1:].numpy()  # self first: left out
    return assess(neighbours, clusters, k), neighbours
