"""k nearest neighbours of feature rows by cosine similarity: exact up to EXACT_MAX rows,
faiss inverted lists above it, with the recall of the approximation measured every time.

Exact: the chunked matrix product that deepclust always used (N^2 D multiply-adds; 100,000
x 1,280 rows is about 25 TFLOP, minutes on a few CPU cores). Approximate: a faiss
IndexIVFFlat (inner product on unit rows, so exact similarities for every candidate; only
the inverted lists probed are approximate). Its recall@k is measured on a seeded sample of
queries against exact search over all rows, and the number of probed lists doubles until the
sample's recall reaches `recall_target`, so the graph's quality is a measured number, not a
hope. Rows may be a memory-mapped float16 array: they are read in chunks, never copied whole.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

EXACT_MAX = 100_000  # rows: above this, faiss IVF (see benchmarks/scale.py, part "choice")
RECALL_SAMPLE = 2000  # queries whose approximate neighbours are checked against exact search
RECALL_TARGET = 0.95
_ROWS = 32_768  # rows converted to float32 at once (160 MiB at 1,280 dims)
_SIM_ELEMENTS = 1 << 26  # similarities per exact block (256 MiB), whatever N


@dataclass
class NeighbourGraph:
    """indices [N, k] int64 (row i's own index first); exact, or the measured recall@k of the
    approximation on `sample` queries with `nprobe` of `nlist` inverted lists searched."""

    indices: torch.Tensor
    exact: bool
    seconds: float
    recall: float | None = None
    sample: int = 0
    nlist: int = 0
    nprobe: int = 0

    def describe(self) -> str:
        n, k = self.indices.shape
        if self.exact:
            return f"{k}-NN of {n:,} rows: exact, {self.seconds:.0f} s"
        return (
            f"{k}-NN of {n:,} rows: approximate (faiss IVF, {self.nprobe} of {self.nlist} lists), "
            f"recall@{k} {self.recall:.3f} on {self.sample:,} queries against exact, "
            f"{self.seconds:.0f} s"
        )

    def record(self) -> dict[str, object]:
        """What a run's summary.json says of the graph: exact, or the measured recall."""
        n, k = self.indices.shape
        out: dict[str, object] = {"rows": n, "k": k, "exact": self.exact}
        if not self.exact:
            out.update(
                recall_at_k=round(float(self.recall or 0.0), 4),
                recall_queries=self.sample,
                lists_probed=self.nprobe,
                lists=self.nlist,
            )
        return {**out, "seconds": round(self.seconds, 1)}


@torch.no_grad()
def nearest_neighbours(
    features: torch.Tensor, k: int, chunk: int = 4096, centre: bool = False
) -> torch.Tensor:
    """features [N, D] -> indices [N, k] of the k most cosine-similar samples (self first).

    centre: subtract the mean feature first. Pooled post-ReLU features all lie in the positive
    orthant, where the shared mean direction dominates every cosine; without it the
    neighbours follow the features' differences. Above EXACT_MAX rows the search is
    approximate (neighbour_graph; its recall is printed).
    """
    return announced_graph(features, k, centre=centre, chunk=chunk).indices


def announced_graph(
    features: torch.Tensor, k: int, chunk: int = 4096, centre: bool = False
) -> NeighbourGraph:
    """neighbour_graph, its description printed when it is approximate (with its recall)."""
    graph = neighbour_graph(features, k, centre=centre, chunk=chunk)
    if not graph.exact:
        print(f"nearest neighbours: {graph.describe()}", flush=True)
    return graph


def neighbour_graph(
    features: torch.Tensor | np.ndarray,
    k: int,
    *,
    centre: bool = False,
    exact_max: int | None = None,
    recall_target: float = RECALL_TARGET,
    sample: int = RECALL_SAMPLE,
    seed: int = 0,
    chunk: int = 4096,
) -> NeighbourGraph:
    """The k-NN graph of the rows of `features` [N, D] (any float dtype, memory-mapped or not):
    exact up to exact_max rows (default EXACT_MAX), faiss IVF above."""
    t0 = time.perf_counter()
    exact_max = EXACT_MAX if exact_max is None else exact_max
    features = torch.as_tensor(features)
    k = min(k, len(features))
    if len(features) <= exact_max:
        x = features.float()
        if centre:
            x = x - x.mean(dim=0)
        x = F.normalize(x, dim=1)
        chunk = min(chunk, max(1, _SIM_ELEMENTS // len(x)))  # rows per similarity block
        return NeighbourGraph(exact_knn(x, x, k, 0, chunk), True, time.perf_counter() - t0)
    graph = approximate_knn(UnitRows(features, centre), k, recall_target, sample, seed)
    graph.seconds = time.perf_counter() - t0
    return graph


class UnitRows:
    """Rows of features [N, D] as float32 unit vectors (mean-centred first when asked), in chunks."""

    def __init__(self, features: torch.Tensor, centre: bool) -> None:
        self.features = features
        self.n, self.dim = self.features.shape
        self.mean = self._mean() if centre else None

    def _mean(self) -> torch.Tensor:
        total = torch.zeros(self.dim, dtype=torch.float64)
        for s in range(0, self.n, _ROWS):
            total += self.features[s : s + _ROWS].double().sum(dim=0)
        return (total / self.n).float()

    def read(self, start: int, stop: int) -> torch.Tensor:
        x = self.features[start:stop].float()
        if self.mean is not None:
            x = x - self.mean
        return F.normalize(x, dim=1)

    def chunks(self) -> list[tuple[int, int]]:
        return [(s, min(s + _ROWS, self.n)) for s in range(0, self.n, _ROWS)]


def exact_knn(
    queries: torch.Tensor, base: torch.Tensor, k: int, offset: int = 0, chunk: int = 4096
) -> torch.Tensor:
    """Unit rows queries [Q, D] (rows offset.. of base) x base [N, D] -> top-k indices [Q, k],
    each query's own row first even among duplicates."""
    out = []
    for start in range(0, len(queries), chunk):
        sim = queries[start : start + chunk] @ base.T
        own = torch.arange(offset + start, offset + start + len(sim))
        sim[torch.arange(len(sim)), own] = float("inf")
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def exact_knn_of_sample(rows: UnitRows, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Exact top-k [Q, k] over all rows for the row indices `queries` [Q], base read in chunks."""
    q = _gather(rows, queries)
    best_sim = torch.full((len(queries), k), -float("inf"))
    best_idx = torch.zeros(len(queries), k, dtype=torch.long)
    for start, stop in rows.chunks():
        sim = q @ rows.read(start, stop).T
        mine = (queries >= start) & (queries < stop)
        sim[mine.nonzero().squeeze(1), queries[mine] - start] = float("inf")
        sims = torch.cat([best_sim, sim], dim=1)
        idx = torch.cat([best_idx, torch.arange(start, stop).expand(len(queries), -1)], dim=1)
        best_sim, pos = sims.topk(k, dim=1)
        best_idx = idx.gather(1, pos)
    return best_idx


def recall_at_k(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean fraction of each row of truth [Q, k] that found [Q, k] holds."""
    hits = (found.unsqueeze(2) == truth.unsqueeze(1)).any(dim=2).sum()
    return float(hits) / truth.numel()


def _self_first(found: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Put each row's own index first (removing it where faiss ranked it elsewhere or missed
    it, e.g. among duplicates); -1 (fewer hits than k) becomes the row itself too."""
    k = found.shape[1]
    others = torch.where(found == own[:, None], -1, found)
    order = torch.sort((others < 0).to(torch.int8), dim=1, stable=True).indices
    others = others.gather(1, order)[:, : k - 1]
    return torch.cat([own[:, None], torch.where(others < 0, own[:, None], others)], dim=1)


def approximate_knn(
    rows: UnitRows, k: int, recall_target: float, sample: int, seed: int
) -> NeighbourGraph:
    """faiss IVF-Flat k-NN of every row, nprobe doubled until the sample's recall@k is reached."""
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    index = _ivf_index(rows, seed)
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randperm(rows.n, generator=gen)[: min(sample, rows.n)].sort().values
    truth = exact_knn_of_sample(rows, queries, k)
    q = _gather(rows, queries).numpy()
    nprobe = 4
    while True:
        index.nprobe = nprobe
        found = _self_first(torch.from_numpy(index.search(q, k)[1]), queries)
        recall = recall_at_k(found, truth)
        if recall >= recall_target or nprobe >= index.nlist:
            break
        nprobe = min(2 * nprobe, index.nlist)
    out = torch.empty(rows.n, k, dtype=torch.long)
    for start, stop in rows.chunks():
        hits = torch.from_numpy(index.search(rows.read(start, stop).numpy(), k)[1])
        out[start:stop] = _self_first(hits, torch.arange(start, stop))
    return NeighbourGraph(out, False, 0.0, recall, len(queries), index.nlist, nprobe)


def _ivf_index(rows: UnitRows, seed: int):  # -> faiss.IndexIVFFlat
    """An inner-product IVF-Flat index of all rows: about 4 sqrt(N) lists, trained by k-means
    (10 iterations) on 40 rows per list."""
    import faiss

    nlist = max(1, min(rows.n // 40, round(4 * math.sqrt(rows.n))))
    quantizer = faiss.IndexFlatIP(rows.dim)
    index = faiss.IndexIVFFlat(quantizer, rows.dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.seed = seed
    gen = torch.Generator().manual_seed(seed)
    train = torch.randperm(rows.n, generator=gen)[: 40 * nlist].sort().values
    index.train(_gather(rows, train).numpy())
    for start, stop in rows.chunks():
        index.add(rows.read(start, stop).numpy())
    return index


def _gather(rows: UnitRows, idx: torch.Tensor) -> torch.Tensor:
    """Unit rows at sorted indices idx [M] -> [M, D], read chunk by chunk."""
    parts = [torch.empty(0, rows.dim)]
    for start, stop in rows.chunks():
        sel = idx[(idx >= start) & (idx < stop)]
        if len(sel):
            parts.append(rows.read(start, stop)[sel - start])
    return torch.cat(parts)
