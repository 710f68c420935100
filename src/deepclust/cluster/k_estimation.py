"""Choosing the number of clusters K without labels.

`estimate_k(features [N, D]) -> KEstimate` tries every K in [k_min, k_max] under one
criterion and returns the chosen K with the whole curve (criterion value per K), so a report
can plot it and mark the choice. Estimators, by name in `ESTIMATORS`:

* ``eigengap`` - the largest gap between consecutive eigenvalues of the normalised Laplacian
  of a k-NN graph (von Luxburg 2007, "A tutorial on spectral clustering", section 8.3), with
  self-tuning edge weights exp(-d^2 / (s_i s_j)), s_i the distance to the 7th neighbour
  (Zelnik-Manor & Perona 2004). K clusters that the graph separates give K eigenvalues near 0
  and a jump after the K-th; curve[K] = lambda_{K+1} - lambda_K (higher is better).
* ``modularity`` - the Newman-Girvan modularity (Newman & Girvan 2004, "Finding and
  evaluating community structure in networks") of the k-means partition with K clusters,
  measured on the unweighted symmetrised 10-NN graph: the share of graph edges inside
  clusters minus its expectation under random rewiring with the same degrees. Splitting a
  real group cuts many edges, merging two groups raises the expected share, so the curve
  peaks near the number of groups the neighbourhoods support (higher is better). Unlike
  the global criteria below it does not favour the coarse 2-3 way splits (vehicles vs.
  animals) that dominate ImageNet features of CIFAR images.
* ``stability`` - agreement of k-means partitions fitted on two disjoint random halves of
  the data and both applied to all of it (Lange, Roth, Braun & Buhmann 2004; Ben-Hur,
  Elisseeff & Guyon 2002): curve[K] = mean adjusted Rand index over the repeats (higher is
  better). The ARI is corrected for chance, so larger K are not favoured by chance agreement.
* ``bic`` - the Bayesian information criterion of a Gaussian mixture with diagonal covariances
  on the PCA-reduced features (lower is better).
* ``silhouette`` and ``calinski_harabasz`` - internal indices of a k-means partition for each
  K (higher is better): weak references, kept for comparison.

Preparation, shared by every estimator: rows are centred (pooled post-ReLU features share a
large mean direction that would otherwise dominate every cosine) and L2-normalised, then
reduced by PCA to at most `PCA_DIMS` dimensions. The expensive parts run on a random subsample
of at most `MAX_SAMPLES` rows drawn with `seed`, so the same features and seed always give the
same K. On 10,000 x 1,280 features an estimator takes seconds (eigengap) to about a minute
and a half (stability) on 2 busy CPU cores with K in 2..30; see benchmarks/k_estimation.py.

The default, ``modularity``, measured best of the six in benchmarks/results/k_estimation.json
(digits pixels, CIFAR-10 with EfficientNet-Lite2, Fashion-MNIST with Lite0, CIFAR-10's first
five classes; 3 seeds): K per seed 14/16/14 (true 10), 11/12/9 (10), 11/10/10 (10), 6/6/6 (5),
and k-means with its K lost 0.006 NMI on average against the true K. Eigengap, stability,
silhouette and Calinski-Harabasz chose 2 or 3 on the CIFAR cases, BIC 23-30 everywhere.
The modularity estimator was added after the first five had been measured on these same
cases: there is no held-out set behind the choice of default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix, diags

from deepclust.errors import ConfigError, option, unknown_name

MAX_SAMPLES = 4000  # rows an estimator works on at most (a seeded random subsample beyond)
PCA_DIMS = 64  # dimensions kept after centring and L2 normalisation
BIC_DIMS = 16  # a Gaussian mixture needs fewer dimensions than there are rows per component
MIN_PER_CLUSTER = 5  # fewest images per cluster at k_max that estimate_k accepts
DEFAULT_K_MAX = 50
ALTERNATIVES = 2  # runners-up a KEstimate names besides its choice


@dataclass
class KEstimate:
    """The chosen number of clusters and how it was chosen.

    k: the chosen K. estimator: its name. curve: {K: criterion value} for every K tried,
    in increasing K. higher_is_better: how to read the curve (the chosen K is its best
    point). criterion: what the curve holds, in words. seconds: wall time of estimate_k.
    details: a few facts (rows and dimensions used, seed, estimator settings).
    """

    k: int
    estimator: str
    curve: dict[int, float]
    higher_is_better: bool
    criterion: str
    seconds: float
    details: dict = field(default_factory=dict)

    @property
    def alternatives(self) -> list[int]:
        """Up to ALTERNATIVES other K that the curve nearly supports, best first: its other
        local optima, then the best remaining K."""
        ks = sorted(self.curve)
        sign = 1.0 if self.higher_is_better else -1.0
        value = {k: sign * self.curve[k] for k in ks}

        def local_best(i: int) -> bool:
            return all(value[ks[i]] >= value[ks[j]] for j in (i - 1, i + 1) if 0 <= j < len(ks))

        peaks = [k for i, k in enumerate(ks) if local_best(i) and k != self.k]
        rest = [k for k in ks if k != self.k and k not in peaks]
        ranked = sorted(peaks, key=lambda k: -value[k]) + sorted(rest, key=lambda k: -value[k])
        return ranked[:ALTERNATIVES]

    def as_dict(self) -> dict:
        """JSON-ready: curve keys become strings."""
        return {
            "k": self.k,
            "also_plausible": self.alternatives,
            "estimator": self.estimator,
            "criterion": self.criterion,
            "higher_is_better": self.higher_is_better,
            "seconds": round(self.seconds, 3),
            "curve": {str(k): round(float(v), 6) for k, v in self.curve.items()},
            "details": self.details,
        }


@dataclass(frozen=True)
class Estimator:
    """fit(x [n, d] prepared rows, ks, seed, progress) -> (values per K in ks, details)."""

    fit: Callable[[np.ndarray, list[int], int, bool], tuple[list[float], dict]]
    higher_is_better: bool
    criterion: str
    description: str
    rows: int = MAX_SAMPLES  # subsample size (raised to 10 * k_max when that is larger)


def default_k_max(n: int) -> int:
    """min(50, N // 10): at least ten images per cluster on average, at most 50 clusters."""
    return min(DEFAULT_K_MAX, n // 10)


def parse_k_range(text: str) -> tuple[int, int]:
    """'MIN:MAX' (e.g. '2:30') -> (2, 30); ConfigError naming the problem otherwise."""
    parts = text.strip().split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        k_min, k_max = int(parts[0]), int(parts[1])
    except ValueError:
        raise ConfigError(
            f"--k-range '{text}' is not MIN:MAX: give two whole numbers, e.g. --k-range 2:30."
        ) from None
    _check_range(k_min, k_max)
    return k_min, k_max


def _check_range(k_min: int, k_max: int, n: int | None = None) -> None:
    if k_min < 2:
        raise ConfigError(
            f"k_min is {k_min}: the smallest K worth trying is 2, use {option('k_min')} >= 2."
        )
    if k_min > k_max:
        raise ConfigError(
            f"k_min ({k_min}) is larger than k_max ({k_max}): give {option('k_min')} <= "
            f"{option('k_max')}, e.g. 2:30."
        )
    if n is not None and k_max > n:
        raise ConfigError(
            f"k_max ({k_max}) is larger than the number of images ({n}): use "
            f"{option('k_max')} <= {n}."
        )


def _check_input(features: np.ndarray, k_min: int, k_max: int | None) -> tuple[np.ndarray, int]:
    """-> (features as float64 [N, D], k_max); ConfigError for bad shapes or ranges."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(
            f"features have shape {x.shape}: estimate_k needs a 2-d array [N images, D dims]."
        )
    n = x.shape[0]
    needed = MIN_PER_CLUSTER * max(k_min, 2)
    if n < needed:
        raise ConfigError(
            f"only {n} images: estimating K from {k_min} up needs at least {needed} "
            f"({MIN_PER_CLUSTER} per cluster); add images or lower {option('k_min')}."
        )
    if k_max is None:
        k_max = max(k_min, default_k_max(n))
    _check_range(k_min, k_max, n)
    if n < MIN_PER_CLUSTER * k_max:
        raise ConfigError(
            f"only {n} images for up to {k_max} clusters: need {MIN_PER_CLUSTER} per cluster, "
            f"so lower {option('k_max')} to {n // MIN_PER_CLUSTER} or add images."
        )
    if not np.isfinite(x).all():
        raise ConfigError("features contain NaN or infinite values: fix the features first.")
    return x, k_max


def prepare(
    features: np.ndarray, seed: int, max_samples: int = MAX_SAMPLES, dims: int = PCA_DIMS
) -> np.ndarray:
    """features [N, D] -> [min(N, max_samples), min(dims, D, n)]: a seeded random subsample,
    centred, rows L2-normalised, then PCA-reduced (the principal axes of the subsample)."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), max_samples, replace=False))
        x = x[rows]
    x = x - x.mean(0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x -= x.mean(0)
    dims = min(dims, x.shape[1], x.shape[0])
    if x.shape[1] <= x.shape[0]:  # principal axes from the [D, D] scatter matrix
        _, vecs = np.linalg.eigh(x.T @ x)
        return x @ vecs[:, ::-1][:, :dims]
    vals, vecs = np.linalg.eigh(x @ x.T)  # fewer rows than dimensions: from the [n, n] Gram
    return vecs[:, ::-1][:, :dims] * np.sqrt(np.maximum(vals[::-1][:dims], 0.0))


def _steps(ks: list[int], progress: bool, name: str):  # type: ignore[no-untyped-def]
    from tqdm.auto import tqdm

    return tqdm(ks, desc=f"K ({name})", disable=not progress, leave=False, unit="K")


# --------------------------------------------------------------------------- estimators

EIGENGAP_NEIGHBOURS = 10  # k-NN graph degree before symmetrisation
SCALE_NEIGHBOUR = 7  # local scale s_i: distance to this neighbour (self-tuning weights)
DENSE_BELOW = 500  # graph components up to this size are solved with a dense eigensolver


def knn_graph(x: np.ndarray, weighted: bool = True) -> csr_matrix:
    """Rows x [n, d] -> the symmetrised k-NN graph [n, n] (sparse; an edge where either row is
    among the other's EIGENGAP_NEIGHBOURS nearest), with self-tuning weights
    W_ij = exp(-d_ij^2 / (s_i s_j)) (s_i: distance to the SCALE_NEIGHBOUR-th neighbour), or
    weight 1 on every edge when weighted is False."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    nn = min(EIGENGAP_NEIGHBOURS, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=nn + 1).fit(x).kneighbors(x)
    dist, idx = dist[:, 1:], idx[:, 1:]
    scale = np.maximum(dist[:, min(SCALE_NEIGHBOUR, nn) - 1], 1e-12)
    weights = np.exp(-(dist**2) / (scale[:, None] * scale[idx])) if weighted else np.ones_like(dist)
    w = csr_matrix((weights.ravel(), (np.repeat(np.arange(n), nn), idx.ravel())), shape=(n, n))
    return csr_matrix(w.maximum(w.T))


def knn_affinity(x: np.ndarray) -> csr_matrix:
    """Rows x [n, d] -> the normalised affinity D^-1/2 W D^-1/2 [n, n] (sparse) of their
    weighted k-NN graph W (knn_graph)."""
    w = knn_graph(x)
    inv_sqrt = diags(1.0 / np.sqrt(np.maximum(np.asarray(w.sum(1)).ravel(), 1e-12)))
    return csr_matrix(inv_sqrt @ w @ inv_sqrt)


def knn_laplacian_spectrum(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The `count` smallest eigenvalues (ascending, in [0, 2]) of the symmetric normalised
    Laplacian I - D^-1/2 W D^-1/2 of the k-NN graph of rows x [n, d] (see knn_affinity).

    Each connected component is solved on its own (Lanczos, as ARPACK, finds one copy of a
    repeated eigenvalue, and a graph with c components has the eigenvalue 0 c times); small
    components are solved densely."""
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import eigsh

    affinity = knn_affinity(x)
    _, component = connected_components(affinity, directed=False)
    top = []
    for c in range(component.max() + 1):
        rows = np.flatnonzero(component == c)
        sub = affinity[rows][:, rows]
        m = min(count, len(rows))
        if len(rows) <= max(DENSE_BELOW, 2 * count):
            top.append(np.linalg.eigvalsh(sub.toarray())[-m:])
        else:
            v0 = np.random.default_rng(seed).standard_normal(len(rows))
            top.append(eigsh(sub, k=m, which="LA", v0=v0, return_eigenvectors=False))
    return np.sort(1.0 - np.concatenate(top))[:count]


def _eigengap(x: np.ndarray, ks: list[int], seed: int, progress: bool) -> tuple[list[float], dict]:
    lam = knn_laplacian_spectrum(x, max(ks) + 1, seed)
    gaps = [float(lam[k] - lam[k - 1]) for k in ks]  # lam[k - 1] is the k-th eigenvalue
    details = {
        "neighbours": EIGENGAP_NEIGHBOURS,
        "scale_neighbour": SCALE_NEIGHBOUR,
        "eigenvalues": [round(float(v), 6) for v in lam],
    }
    return gaps, details


STABILITY_REPEATS = 4


def _kmeans_labels(x: np.ndarray, k: int, seed: int, n_init: int = 1) -> tuple[np.ndarray, object]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, max_iter=100, random_state=seed).fit(x)
    return km.labels_, km


def _stability(x: np.ndarray, ks: list[int], seed: int, progress: bool) -> tuple[list[float], dict]:
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(seed)
    halves = [np.split(rng.permutation(len(x)), [len(x) // 2]) for _ in range(STABILITY_REPEATS)]
    values = []
    for k in _steps(ks, progress, "stability"):
        aris = []
        for r, (a, b) in enumerate(halves):
            la = _kmeans_labels(x[a], k, seed * 1000 + 2 * r)[1].predict(x)  # type: ignore[attr-defined]
            lb = _kmeans_labels(x[b], k, seed * 1000 + 2 * r + 1)[1].predict(x)  # type: ignore[attr-defined]
            aris.append(adjusted_rand_score(la, lb))
        values.append(float(np.mean(aris)))
    return values, {"repeats": STABILITY_REPEATS, "agreement": "ARI on all rows"}


def modularity(graph: csr_matrix, labels: np.ndarray) -> float:
    """Newman-Girvan modularity of a partition labels [n] of a symmetric graph [n, n]: the
    share of edge weight inside clusters minus its expectation when edges are rewired at
    random with the same degrees, sum_c (e_cc / 2m - (a_c / 2m)^2). In [-1/2, 1)."""
    degree = np.asarray(graph.sum(1)).ravel()
    total = degree.sum()
    edges = graph.tocoo()
    inside = edges.data[labels[edges.row] == labels[edges.col]].sum() / total
    share = np.bincount(labels, weights=degree) / total
    return float(inside - (share**2).sum())


def _modularity(
    x: np.ndarray, ks: list[int], seed: int, progress: bool
) -> tuple[list[float], dict]:
    graph = knn_graph(x, weighted=False)
    values = []
    for k in _steps(ks, progress, "modularity"):
        labels, _ = _kmeans_labels(x, k, seed)
        values.append(modularity(graph, labels))
    return values, {"neighbours": EIGENGAP_NEIGHBOURS, "partition": "k-means (1 start) per K"}


def _bic(x: np.ndarray, ks: list[int], seed: int, progress: bool) -> tuple[list[float], dict]:
    from sklearn.mixture import GaussianMixture

    z = x[:, :BIC_DIMS]
    values = []
    for k in _steps(ks, progress, "bic"):
        gm = GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=1e-6)
        values.append(float(gm.fit(z).bic(z)))
    return values, {"dims": z.shape[1], "covariance": "diag"}


def _internal(index: str) -> Callable[[np.ndarray, list[int], int, bool], tuple[list[float], dict]]:
    def fit(x: np.ndarray, ks: list[int], seed: int, progress: bool) -> tuple[list[float], dict]:
        from sklearn.metrics import calinski_harabasz_score, silhouette_score

        values = []
        for k in _steps(ks, progress, index):
            labels, _ = _kmeans_labels(x, k, seed, n_init=2)
            if index == "silhouette":
                values.append(float(silhouette_score(x, labels)))
            else:
                values.append(float(calinski_harabasz_score(x, labels)))
        return values, {"partition": "k-means (2 restarts) per K"}

    return fit


ESTIMATORS: dict[str, Estimator] = {
    "eigengap": Estimator(
        _eigengap,
        True,
        "eigengap lambda_{K+1} - lambda_K of the normalised k-NN graph Laplacian",
        "largest eigengap of the self-tuned k-NN graph Laplacian",
    ),
    "modularity": Estimator(
        _modularity,
        True,
        "modularity of the k-means partition on the k-NN graph",
        "Newman-Girvan modularity of k-means on the k-NN graph",
    ),
    "stability": Estimator(
        _stability,
        True,
        "mean ARI between k-means fitted on two random halves, applied to all rows",
        "split-half k-means stability (adjusted Rand index)",
        rows=2000,
    ),
    "bic": Estimator(
        _bic,
        False,
        f"BIC of a diagonal Gaussian mixture on the first {BIC_DIMS} principal components",
        "Bayesian information criterion of a Gaussian mixture",
    ),
    "silhouette": Estimator(
        _internal("silhouette"),
        True,
        "silhouette (cosine) of the k-means partition",
        "silhouette of k-means (weak reference)",
        rows=3000,
    ),
    "calinski_harabasz": Estimator(
        _internal("calinski_harabasz"),
        True,
        "Calinski-Harabasz index of the k-means partition",
        "Calinski-Harabasz of k-means (weak reference)",
        rows=3000,
    ),
}
DEFAULT_ESTIMATOR = "modularity"


def estimate_k(
    features: np.ndarray,
    k_min: int = 2,
    k_max: int | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
    seed: int = 0,
    progress: bool = False,
) -> KEstimate:
    """Choose the number of clusters of features [N, D] without labels.

    Tries every K in [k_min, k_max] (k_max defaults to min(50, N // 10)) under `estimator`
    (a name in ESTIMATORS) on the prepared rows (see `prepare`: centred, L2-normalised,
    PCA-reduced, a seeded subsample of at most MAX_SAMPLES rows) and returns the K at the
    best point of the curve (ties: the smallest K). Same features and seed -> same result.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(unknown_name("K estimator", estimator, ESTIMATORS))
    t0 = time.perf_counter()
    x, k_max = _check_input(features, k_min, k_max)
    est = ESTIMATORS[estimator]
    rows = max(est.rows, 2 * MIN_PER_CLUSTER * k_max)
    z = prepare(x, seed, max_samples=rows)
    ks = list(range(k_min, k_max + 1))
    values, details = est.fit(z, ks, seed, progress)
    best = int(np.argmax(values) if est.higher_is_better else np.argmin(values))
    details = {"rows": z.shape[0], "dims": z.shape[1], "seed": seed, **details}
    return KEstimate(
        k=ks[best],
        estimator=estimator,
        curve=dict(zip(ks, values, strict=True)),
        higher_is_better=est.higher_is_better,
        criterion=est.criterion,
        seconds=time.perf_counter() - t0,
        details=details,
    )
