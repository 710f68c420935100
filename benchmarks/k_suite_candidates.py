"""The candidates for choosing K, side by side on the K suite's cases (benchmarks/k_suite.py),
from one set of shared ingredients per case. Writes JSON.

    python benchmarks/k_suite_candidates.py --pool dev

Per case (the same features, cases and pools as k_suite.py): the rows as every estimator
sees them (cluster.k_estimation.prepare), their 30 nearest neighbours, and one k-means
partition per K (1 start, seed 0, as the modularity estimator fits them). Each candidate then
chooses K from those:

* ``modularity`` (Newman & Girvan) of the k-means partitions on the k-NN graph, over graph
  degrees 5/10/20 and resolutions gamma 0.8/1.0/1.2 (Reichardt & Bornholdt's generalisation);
* ``plateau``: the K chosen most often over resolutions 0.7..1.3 (multi-resolution
  stability of the modularity choice);
* ``density``: generalised modularity density (Li et al. 2008; Chen et al. 2018), the sum
  over clusters of (share of links inside - t), free of modularity's resolution limit;
* ``merge``: over-cluster to K_max, then merge the pair with the largest share of crossing
  neighbour links until no pair shares more than tau (PAGA-like connectivity);
* ``louvain``: the number of Louvain communities (networkx) holding at least 1 % of the rows,
  at resolution 0.5 and 1.

Labels only score. The default estimator was chosen on the dev pool.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix

from k_suite import RESULTS, features, make_cases

Candidate = Callable[[dict], int]


def ingredients(x: np.ndarray, seed: int = 0) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.neighbors import NearestNeighbors

    from deepclust.cluster.k_estimation import MAX_SAMPLES, default_k_max, prepare

    k_max = max(2, default_k_max(len(x)))
    z = prepare(x, seed, max_samples=max(MAX_SAMPLES, 10 * k_max))
    idx = NearestNeighbors(n_neighbors=31).fit(z).kneighbors(z)[1][:, 1:]
    labels = {
        k: KMeans(k, n_init=1, max_iter=100, random_state=seed).fit(z).labels_
        for k in range(2, k_max + 1)
    }
    return {"idx": idx, "labels": labels, "k_max": k_max}


def graph(idx: np.ndarray, k: int) -> csr_matrix:
    n = len(idx)
    g = csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), idx[:, :k].ravel())), (n, n))
    return csr_matrix(g.maximum(g.T))


def cluster_links(g: csr_matrix, labels: np.ndarray, k: int) -> np.ndarray:
    e = g.tocoo()
    m = np.zeros((k, k))
    np.add.at(m, (labels[e.row], labels[e.col]), e.data)
    return m


def modularity_parts(m: np.ndarray) -> tuple[float, float]:
    """(share of links inside clusters, expected share) of a cluster link matrix."""
    total = m.sum()
    return float(np.trace(m) / total), float(((m.sum(1) / total) ** 2).sum())


def curve(ing: dict, knn: int, score: Callable[[np.ndarray], float]) -> tuple[list[int], list]:
    g = graph(ing["idx"], knn)
    ks = sorted(ing["labels"])
    return ks, [score(cluster_links(g, ing["labels"][k], k)) for k in ks]


def modularity(knn: int, gamma: float) -> Candidate:
    def choose(ing: dict) -> int:
        ks, values = curve(ing, knn, lambda m: (lambda p: p[0] - gamma * p[1])(modularity_parts(m)))
        return ks[int(np.argmax(values))]

    return choose


def plateau(knn: int) -> Candidate:
    def choose(ing: dict) -> int:
        ks, parts = curve(ing, knn, modularity_parts)
        p = np.array(parts)
        votes: dict[int, int] = {}
        for gamma in np.linspace(0.7, 1.3, 7):
            k = ks[int(np.argmax(p[:, 0] - gamma * p[:, 1]))]
            votes[k] = votes.get(k, 0) + 1
        return max(votes, key=lambda k: (votes[k], -k))

    return choose


def density(knn: int, t: float) -> Candidate:
    def score(m: np.ndarray) -> float:
        return float((np.diag(m) / np.maximum(m.sum(1), 1e-12) - t).sum())

    def choose(ing: dict) -> int:
        ks, values = curve(ing, knn, score)
        return ks[int(np.argmax(values))]

    return choose


def merge(knn: int, tau: float) -> Candidate:
    def choose(ing: dict) -> int:
        k0 = ing["k_max"]
        m = cluster_links(graph(ing["idx"], knn), ing["labels"][k0], k0)
        alive = list(range(k0))
        while len(alive) > 2:
            sub = m[np.ix_(alive, alive)]
            d = sub.sum(1)
            share = (sub + sub.T) / np.maximum(d[:, None] + d[None, :], 1e-12)
            np.fill_diagonal(share, 0)
            i, j = np.unravel_index(int(np.argmax(share)), share.shape)
            if share[i, j] < tau:
                break
            a, b = alive[i], alive[j]
            m[a] += m[b]
            m[:, a] += m[:, b]
            m[b] = 0
            m[:, b] = 0
            alive.remove(b)
        return len(alive)

    return choose


def louvain(knn: int, resolution: float) -> Candidate:
    def choose(ing: dict) -> int:
        import networkx as nx
        from networkx.algorithms.community import louvain_communities

        g = graph(ing["idx"], knn)
        found = louvain_communities(nx.from_scipy_sparse_array(g), resolution=resolution, seed=0)
        return max(2, sum(len(c) >= max(3, 0.01 * g.shape[0]) for c in found))

    return choose


CANDIDATES: dict[str, Candidate] = {
    **{f"modularity k{k} g{g}": modularity(k, g) for k in (5, 10, 20) for g in (0.8, 1.0, 1.2)},
    "plateau k10": plateau(10),
    **{f"density k10 t{t}": density(10, t) for t in (0.6, 0.7)},
    **{f"merge k10 tau{t}": merge(10, t) for t in (0.1, 0.15)},
    **{f"louvain k10 r{r}": louvain(10, r) for r in (0.5, 1.0)},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pool", default="dev", choices=["dev", "held-out"])
    ap.add_argument("--per-class", type=int, default=500)
    args = ap.parse_args()
    x, y = features(args.per_class)
    chosen: dict[str, list[int]] = {name: [] for name in CANDIDATES}
    cases = []
    for case in make_cases(y, {"dev": 0, "held-out": 1}[args.pool]):
        t0 = time.time()
        ing = ingredients(x[case["index"]])
        for name, choose in CANDIDATES.items():
            chosen[name].append(choose(ing))
        cases.append({"name": case["name"], "k": case["k"], "n": len(case["index"])})
        print(case["name"], case["k"], f"{time.time() - t0:.0f} s", flush=True)
    truth = np.array([c["k"] for c in cases])
    summary = {}
    for name, ks in chosen.items():
        err = np.array(ks) - truth
        summary[name] = {
            "exact": round(float(np.mean(err == 0)), 3),
            "within_1": round(float(np.mean(np.abs(err) <= 1)), 3),
            "mean_error": round(float(err.mean()), 2),
            "mean_abs_error": round(float(np.abs(err).mean()), 2),
        }
        print(f"{name:24s} {summary[name]}")
    out = {
        "what": "K-choosing candidates side by side on the K suite (k-means partitions per K)",
        "command": f"python benchmarks/k_suite_candidates.py --pool {args.pool}",
        "pool": args.pool,
        "summary": summary,
        "cases": [{**c, "chosen": {n: chosen[n][i] for n in chosen}} for i, c in enumerate(cases)],
    }
    path = Path(RESULTS) / f"k_suite_candidates_{args.pool}.json"
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
