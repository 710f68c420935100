"""Spherical (cosine) k-means in PyTorch, on the device the features live on.

Rows of x are L2-normalised; a point belongs to the centroid of highest cosine similarity,
and a centroid is the normalised sum (= normalised mean) of its points. Initialisation is
greedy k-means++ (as scikit-learn: 2 + ln K candidates per centre, the one that lowers the
potential most is kept), with D^2 = ||x - c||^2 = 2 - 2 cos on the sphere.

Determinism: every random number is drawn on the CPU from a torch.Generator seeded by the
caller (`stream_seed` turns a tuple such as (seed, "estep", epoch) into a seed), then used
on the device; centroid sums on GPUs are one-hot matmuls, not atomic scatter-adds, so the same
features and seed give the same partition on every process of a distributed run.

Stopping, as scikit-learn's Lloyd loop: after at most `max_iter` iterations, when the labels
stop changing, or when the total squared centroid shift falls to tol * mean per-dimension
variance of the (normalised) data. A cluster left empty is re-seeded with the point
farthest from its own centroid (lowest similarity), one distinct point per empty cluster.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_CHUNK_ELEMENTS = 1 << 24  # rows x clusters per similarity chunk (64 MiB in float32)


@dataclass
class KMeansResult:
    """centroids [K, D] unit rows; labels [N] int64; inertia = sum_i (1 - cos(x_i, c_label))."""

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: float
    n_iter: int
    converged: bool


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from a stable hash of `parts` (same on every process and platform)."""
    key = ("deepclust.cluster:" + ":".join(str(p) for p in parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def _chunk_rows(k: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(k, 1))


def assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D], centroids [K, D] (both unit rows) -> (labels [N] int64, best cosine [N])."""
    labels, sims = [], []
    for part in x.split(_chunk_rows(centroids.shape[0])):
        best, idx = (part @ centroids.T).max(dim=1)
        labels.append(idx)
        sims.append(best)
    return torch.cat(labels), torch.cat(sims)


def _cluster_sums(
    x: torch.Tensor, labels: torch.Tensor, k: int, matmul: bool | None = None
) -> torch.Tensor:
    """sum of the rows of x per label -> [K, D].

    On CPUs an index_add (deterministic there); elsewhere (or with matmul=True) one-hot
    matmuls, because scatter-adds with atomics can differ in the last bits between runs on GPUs.
    """
    sums = x.new_zeros(k, x.shape[1])
    use_matmul = x.device.type != "cpu" if matmul is None else matmul
    if not use_matmul:
        return sums.index_add_(0, labels, x)
    step = _chunk_rows(k)
    for start in range(0, x.shape[0], step):
        onehot = F.one_hot(labels[start : start + step], k).to(x.dtype)
        sums += onehot.T @ x[start : start + step]
    return sums


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64).to(device)


def kmeans_plus_plus(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ on unit rows x [N, D] -> indices [K] of the initial centroids.

    The first centre is uniform; each next one is the best (lowest potential sum_i D^2_i) of
    `n_local_trials` (default 2 + ln K) candidates drawn with probability proportional to D^2.
    """
    n = x.shape[0]
    trials = n_local_trials if n_local_trials is not None else 2 + int(math.log(k))
    first = min(int(_uniform(1, generator, torch.device("cpu")).item() * n), n - 1)
    chosen = [first]
    closest = (2 - 2 * (x @ x[first])).clamp_min_(0).double()  # [N] D^2 to the nearest centre
    for _ in range(1, k):
        cumulative = closest.cumsum(0)
        draws = _uniform(trials, generator, x.device) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws).clamp_(max=n - 1)
        d2 = (2 - 2 * (x[candidates] @ x.T)).clamp_min_(0).double()  # [trials, N]
        d2 = torch.minimum(d2, closest)
        best = int(d2.sum(dim=1).argmin())
        chosen.append(int(candidates[best]))
        closest = d2[best]
    return torch.tensor(chosen, dtype=torch.long, device=x.device)


def _lloyd(x: torch.Tensor, centroids: torch.Tensor, max_iter: int, tol_abs: float) -> KMeansResult:
    k = centroids.shape[0]
    labels_old: torch.Tensor | None = None
    converged, n_iter = False, 0
    for iteration in range(1, max_iter + 1):
        n_iter = iteration
        labels, sims = assign(x, centroids)
        new = _cluster_sums(x, labels, k)
        empty = torch.bincount(labels, minlength=k) == 0
        n_empty = int(empty.sum())
        if n_empty:
            farthest = torch.argsort(sims, stable=True)[:n_empty]
            new[empty] = x[farthest]
        new = F.normalize(new, dim=1)
        if labels_old is not None and not n_empty and torch.equal(labels, labels_old):
            centroids, converged = new, True
            break
        shift = float((new - centroids).pow(2).sum())
        centroids, labels_old = new, labels
        if shift <= tol_abs:
            converged = True
            break
    labels, sims = assign(x, centroids)
    return KMeansResult(centroids, labels, float((1 - sims).sum()), n_iter, converged)


def spherical_kmeans(
    x: torch.Tensor,
    k: int,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: int = 0,
    n_init: int = 1,
    init: torch.Tensor | None = None,
) -> KMeansResult:
    """Cluster the rows of x [N, D] (normalised here) into k groups by cosine similarity.

    seed: the k-means++ random stream (use `stream_seed`); n_init: independent k-means++
    starts, the lowest inertia wins; init [K, D]: explicit initial centroids instead.
    Runs in float32 with autocast disabled, on x's device.
    """
    if x.ndim != 2:
        raise ValueError(f"spherical_kmeans expects features [N, D], got {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be between 1 and the number of points {x.shape[0]}; got {k}")
    if max_iter < 1 or n_init < 1:
        raise ValueError(f"max_iter and n_init must be >= 1; got {max_iter}, {n_init}")
    with torch.autocast(x.device.type, enabled=False), torch.no_grad():
        x = F.normalize(x.float(), dim=1)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("spherical_kmeans: the features hold NaN or infinite values")
        tol_abs = tol * float(x.var(dim=0, unbiased=False).mean())
        if init is not None:
            if init.shape != (k, x.shape[1]):
                raise ValueError(f"init must be [{k}, {x.shape[1]}], got {tuple(init.shape)}")
            return _lloyd(x, F.normalize(init.float().to(x.device), dim=1), max_iter, tol_abs)
        generator = torch.Generator().manual_seed(seed)
        best: KMeansResult | None = None
        for _ in range(n_init):
            start = x[kmeans_plus_plus(x, k, generator)]
            result = _lloyd(x, start, max_iter, tol_abs)
            if best is None or result.inertia < best.inertia:
                best = result
        assert best is not None
        return best
