"""k-means for collections too large for scikit-learn's or deepclust's exact Lloyd loops.

Up to EXACT_MAX_WORK rows x clusters, callers keep their exact k-means (scikit-learn in the
kmeans baseline, spherical_kmeans elsewhere). Above it, faiss.Kmeans: Lloyd iterations from
k-means++ centres on a seeded sample of `points_per_centroid` rows per cluster (faiss's own
default is 256), then
every row is assigned to its nearest centroid in chunks, so the rows may be a memory-mapped
float16 array that is never copied whole. One start (no n_init restarts): at this size one
Lloyd run costs minutes (benchmarks/scale.py, part kmeans).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deepclust.cluster.spherical_kmeans import KMeansResult

EXACT_MAX_WORK = 200_000 * 100  # rows x clusters: e.g. 200k rows into 100 clusters
_ROWS = 32_768


def needs_scale(rows: int, k: int) -> bool:
    """True when exact k-means of rows x k is past EXACT_MAX_WORK."""
    return rows * k > EXACT_MAX_WORK


def _prepared(features: torch.Tensor, start: int, stop: int, spherical: bool) -> np.ndarray:
    x = features[start:stop].float()
    return (F.normalize(x, dim=1) if spherical else x).numpy()


def _plus_plus(train: np.ndarray, k: int, seed: int, per_centroid: int = 64) -> np.ndarray:
    """k-means++ centres [K, D] drawn (scikit-learn's greedy version) from the first
    per_centroid x K rows of the shuffled sample: faiss's own start is k uniform rows,
    which leaves merged and split clusters behind far more often."""
    from sklearn.cluster import kmeans_plusplus

    centres, _ = kmeans_plusplus(train[: per_centroid * k], k, random_state=seed % 2**32)
    return np.ascontiguousarray(centres, dtype=np.float32)


def kmeans_rows(
    features: torch.Tensor | np.ndarray,
    k: int,
    *,
    seed: int = 0,
    spherical: bool = True,
    niter: int = 20,
    points_per_centroid: int = 256,
) -> KMeansResult:
    """faiss k-means of the rows of features [N, D] (cosine on unit rows when spherical,
    else Euclidean) -> centroids [K, D], labels [N], inertia (sum of 1 - cos, or of squared
    distances), niter; converged is False (a fixed number of iterations ran)."""
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    features = torch.as_tensor(features)
    n, dim = features.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of rows {n}; got {k}")
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randperm(n, generator=gen)[: k * points_per_centroid].sort().values
    order = torch.randperm(len(sample), generator=gen).numpy()  # k-means++ takes a prefix
    train = np.concatenate(
        [
            _prepared(features, s, min(s + _ROWS, n), spherical)[
                (sample[(sample >= s) & (sample < s + _ROWS)] - s).numpy()
            ]
            for s in range(0, n, _ROWS)
        ]
    )[order]
    km = faiss.Kmeans(
        dim, k, niter=niter, spherical=spherical, seed=seed % 2**31, max_points_per_centroid=10**9
    )
    km.train(train, init_centroids=_plus_plus(train, k, seed))
    index = faiss.IndexFlatIP(dim) if spherical else faiss.IndexFlatL2(dim)
    index.add(km.centroids)
    labels = torch.empty(n, dtype=torch.long)
    inertia = 0.0
    for s in range(0, n, _ROWS):
        dist, idx = index.search(_prepared(features, s, min(s + _ROWS, n), spherical), 1)
        labels[s : s + len(idx)] = torch.from_numpy(idx[:, 0])
        inertia += float((1 - dist).sum()) if spherical else float(dist.sum())
    return KMeansResult(torch.from_numpy(km.centroids), labels, inertia, niter, False)
