"""Choosing K without labels, on a suite of photo collections with known K; and how well the
label-free quality score tells good answers from poor ones. Writes JSON.

    python benchmarks/k_suite.py --pools dev,held-out

Features: EfficientNet-Lite2 @ 224 px (what `deepclust cluster` extracts by default), from
the deepclust feature cache, of the first `--per-class` images of every class of CIFAR-10
(JPEG copy) test, Fashion-MNIST test and scikit-learn's digits, in one space.

Cases, built twice from disjoint halves of those images (pool `dev`: even positions within
each class, `held-out`: odd positions), each a random draw of classes and images:
per source (cifar, fmnist, digits) and K = 2..10, a balanced case (30, 100 or 500 images a
class; digits 30, 60 or 85) and an imbalanced one (class sizes spaced geometrically from the
largest to a tenth of it); mixtures of classes across the three sources with K = 20, 25 and
30; and each source's ten classes whole. The estimators' thresholds and the default were
chosen on the dev pool; the held-out pool reports them untouched.

Per case and estimator: the chosen K (and the runners-up), seconds, and the cost of its K:
k-means (2 restarts, seed 0, centred unit rows, all rows) with the chosen and with the true K,
scored by ACC / NMI. Labels only score. For the default estimator's partitions the
label-free quality (evaluation/quality.py) is set against ACC (Spearman), the poor-quality
warning counted against ACC < 0.5, and the expected calibration error (15 bins) of two
per-photo confidences against correctness: k-means' softmax over negative squared distances
(what the baselines report) and the neighbour agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from k_estimation import cosine_rows  # centred unit rows, as k_estimation.py clusters them

RESULTS = Path(__file__).parent / "results"
CIFAR_DIR = "/work/shared/datasets/cifar10-jpeg/test"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
SOURCES = ("cifar", "fmnist", "digits")
ENCODER, INPUT_SIZE = "efficientnet_lite2", 224


# --------------------------------------------------------------------------- features
def source_images(source: str, per_class: int):  # -> ImageSet
    import torch

    from deepclust.data.datasets import load_protocol, load_split

    if source == "cifar":
        images = load_protocol("imagefolder", "all", CIFAR_DIR)[0]
    elif source == "fmnist":
        images = load_split("fashion_mnist", "test", FASHION_DIR)
    else:
        images = load_split("digits", "train", None)
    y = images.labels.numpy()
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    return images.subset(torch.from_numpy(np.sort(keep)))


def features(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D] float32, labels [N]: class + 100 * source index) of every source."""
    from deepclust.encoders import build_encoder
    from deepclust.encoders.cache import extract_features

    xs, ys = [], []
    for s, source in enumerate(SOURCES):
        images = source_images(source, per_class)
        encoder = build_encoder(ENCODER, images.image_size[0], input_size=INPUT_SIZE)
        t0 = time.time()
        x = extract_features(encoder, images, "clean", "cpu", 128, None, progress=True)
        print(f"{source}: {tuple(x.shape)} features in {time.time() - t0:.0f} s", flush=True)
        xs.append(x.numpy().astype(np.float32))
        ys.append(images.labels.numpy() + 100 * s)
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------- cases
BALANCED = {"cifar": (30, 100, 500), "fmnist": (30, 100, 500), "digits": (30, 60, 85)}
IMBALANCED_LARGEST = {"cifar": 400, "fmnist": 400, "digits": 85}
MIXTURES = ((20, 100), (25, 60), (30, 80))  # (K, images a class)


def class_sizes(k: int, largest: int, imbalanced: bool) -> list[int]:
    if not imbalanced:
        return [largest] * k
    return [max(3, round(s)) for s in largest * np.geomspace(1.0, 0.1, k)]


def make_cases(y: np.ndarray, pool: int) -> list[dict]:
    """The suite's cases on one pool: {name, index [n] into the features, k, imbalanced}."""
    rng = np.random.default_rng(1000 * pool)
    members = {c: np.flatnonzero(y == c)[pool::2] for c in np.unique(y)}
    cases: list[dict] = []

    def add(name: str, classes: list[int], largest: int, imbalanced: bool) -> None:
        sizes = class_sizes(len(classes), largest, imbalanced)
        order = rng.permutation(len(classes))
        index = [
            rng.choice(members[c], min(n, len(members[c])), replace=False)
            for c, n in zip(np.asarray(classes)[order], sizes, strict=True)
        ]
        cases.append(
            {
                "name": name,
                "index": np.concatenate(index),
                "k": len(classes),
                "imbalanced": imbalanced,
            }
        )

    for s, source in enumerate(SOURCES):
        classes = [c for c in members if c // 100 == s]
        for k in range(2, 11):
            per = min(BALANCED[source][k % 3], 5000 // k)
            add(
                f"{source}-k{k}-bal-{per}",
                sorted(rng.choice(classes, k, replace=False)),
                per,
                False,
            )
            largest = IMBALANCED_LARGEST[source]
            add(
                f"{source}-k{k}-imb-{largest}",
                sorted(rng.choice(classes, k, replace=False)),
                largest,
                True,
            )
    everything = list(members)
    for k, per in MIXTURES:
        add(f"mix-k{k}-bal-{per}", sorted(rng.choice(everything, k, replace=False)), per, False)
    for s, source in enumerate(SOURCES):
        add(f"{source}-k10-all", [c for c in members if c // 100 == s], 10_000, False)
    return cases


# --------------------------------------------------------------------------- measuring
class CaseScorer:
    """k-means with a given K on one case (cached per K), and what it scores."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from deepclust.evaluation.quality import quality_of

        self.x, self.y, self.rows = x, y, cosine_rows(x)
        self.fits: dict[int, dict] = {}
        self._quality_of = quality_of
        self.neighbours: np.ndarray | None = None

    def kmeans(self, k: int) -> dict:
        if k in self.fits:
            return self.fits[k]
        from sklearn.cluster import KMeans

        from deepclust.evaluation.metrics import score

        km = KMeans(n_clusters=k, n_init=2, max_iter=100, random_state=0).fit(self.rows)
        s = score(self.y, km.labels_, num_clusters=k)
        fit = {"k": k, "acc": round(s.acc, 4), "nmi": round(s.nmi, 4), "labels": km.labels_}
        fit["distances"] = km.transform(self.rows) ** 2
        self.fits[k] = fit
        return fit

    def quality(self, k: int) -> dict:
        """Label-free quality of the k-means partition, and the two confidences' ECE."""
        from deepclust.evaluation.metrics import expected_calibration_error, majority_correct
        from deepclust.evaluation.quality import assess

        fit = self.kmeans(k)
        if self.neighbours is None:
            _, self.neighbours = self._quality_of(self.x, fit["labels"], k)
        q = assess(self.neighbours, fit["labels"], k)
        d2 = fit["distances"]
        own = d2[np.arange(len(d2)), fit["labels"]]
        # the baselines' confidence: softmax(-d^2 / T) of the own (nearest) centroid, T the
        # mean squared distance to it; relative to the own logit every term is <= 0
        softmax = 1.0 / np.exp(-(d2 - own[:, None]) / max(float(own.mean()), 1e-12)).sum(1)
        right = majority_correct(self.y, fit["labels"])
        return {
            "quality": round(q.score, 4),
            "ece_softmax": round(expected_calibration_error(softmax, right), 4),
            "ece_agreement": round(expected_calibration_error(q.agreement, right), 4),
        }


def run_case(case: dict, x: np.ndarray, y: np.ndarray, names: list[str]) -> dict:
    """Every estimator on one case: its K, runners-up, seconds; k-means at that K and the
    true K; the label-free quality of the chosen partition."""
    from deepclust.cluster.k_estimation import estimate_k

    xc, yc = x[case["index"]], y[case["index"]]
    scorer = CaseScorer(xc, yc)
    true = scorer.kmeans(case["k"])
    out = {k: v for k, v in case.items() if k != "index"}
    out.update(n=len(yc), true_k_acc=true["acc"], true_k_nmi=true["nmi"], estimators={})
    for name in names:
        est = estimate_k(xc, estimator=name, seed=0)
        chosen = scorer.kmeans(est.k)
        out["estimators"][name] = {
            "k": est.k,
            "also_plausible": est.alternatives,
            "seconds": round(est.seconds, 2),
            "acc": chosen["acc"],
            "nmi": chosen["nmi"],
            **scorer.quality(est.k),
        }
    return out


def summarise(cases: list[dict], name: str) -> dict:
    """One estimator over the cases: exact and within-1 shares, mean ACC / NMI with its K and
    with the true K, mean seconds."""
    mine = [c["estimators"][name] for c in cases if name in c["estimators"]]
    err = np.array([m["k"] - c["k"] for m, c in zip(mine, cases, strict=True)])
    return {
        "cases": len(mine),
        "exact": round(float(np.mean(err == 0)), 3),
        "within_1": round(float(np.mean(np.abs(err) <= 1)), 3),
        "mean_error": round(float(err.mean()), 2),
        "mean_abs_error": round(float(np.abs(err).mean()), 2),
        "acc_chosen_k": round(float(np.mean([m["acc"] for m in mine])), 4),
        "acc_true_k": round(float(np.mean([c["true_k_acc"] for c in cases])), 4),
        "nmi_chosen_k": round(float(np.mean([m["nmi"] for m in mine])), 4),
        "nmi_true_k": round(float(np.mean([c["true_k_nmi"] for c in cases])), 4),
        "mean_seconds": round(float(np.mean([m["seconds"] for m in mine])), 2),
    }


def quality_summary(cases: list[dict], name: str) -> dict:
    """Over the default estimator's partitions: Spearman(quality, ACC), the poor-quality
    warning against ACC < 0.5, and the mean ECE of the two confidences."""
    from scipy.stats import spearmanr

    from deepclust.evaluation.quality import POOR_QUALITY

    mine = [c["estimators"][name] for c in cases]
    acc = np.array([m["acc"] for m in mine])
    quality = np.array([m["quality"] for m in mine])
    warned = quality < POOR_QUALITY  # the warning's rule, on the stored scores
    return {
        "runs": len(mine),
        "poor_quality_under": POOR_QUALITY,
        "spearman_quality_acc": round(float(spearmanr(quality, acc).statistic), 3),
        "runs_acc_under_0.5": int((acc < 0.5).sum()),
        "warned_of_those": int((warned & (acc < 0.5)).sum()),
        "warned_with_acc_0.5_or_more": int((warned & (acc >= 0.5)).sum()),
        "ece_softmax_mean": round(float(np.mean([m["ece_softmax"] for m in mine])), 4),
        "ece_agreement_mean": round(float(np.mean([m["ece_agreement"] for m in mine])), 4),
    }


def main() -> None:
    from deepclust.cluster.k_estimation import DEFAULT_ESTIMATOR
    from deepclust.engine.machine import cpu_model, load_average

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pools", default="dev,held-out")
    ap.add_argument("--estimators", default=f"{DEFAULT_ESTIMATOR},modularity,eigengap")
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--name", default="k_suite")
    ap.add_argument(
        "--resummarise",
        action="store_true",
        help="recompute the summaries of results/<name>.json from its cases (no new runs)",
    )
    args = ap.parse_args()
    if args.resummarise:
        return resummarise(RESULTS / f"{args.name}.json")
    names = list(dict.fromkeys(args.estimators.split(",")))
    x, y = features(args.per_class)
    out: dict = {
        "what": "K chosen without labels on collections of known K, and label-free quality",
        "command": f"python benchmarks/k_suite.py --pools {args.pools} --estimators "
        f"{','.join(names)} --per-class {args.per_class}",
        "encoder": f"{ENCODER} @ {INPUT_SIZE} px, frozen (ImageNet)",
        "sources": "CIFAR-10 (JPEG copy) test, Fashion-MNIST test, scikit-learn digits: the "
        f"first {args.per_class} images of each class",
        "clustering_scored": "k-means (2 restarts, seed 0) on centred unit features, all rows",
        "default_estimator": DEFAULT_ESTIMATOR,
        "device": f"cpu ({cpu_model()}, {os.cpu_count()} cores)",
        "pools": {},
    }
    path = RESULTS / f"{args.name}.json"
    for pool_name in args.pools.split(","):
        pool = {"dev": 0, "held-out": 1}[pool_name]
        cases = []
        for case in make_cases(y, pool):
            load = load_average()
            cases.append({**run_case(case, x, y, names), "loadavg_before": load})
            e = cases[-1]["estimators"]
            print(pool_name, case["name"], case["k"], {n: e[n]["k"] for n in names}, flush=True)
            out["pools"][pool_name] = {
                "summary": {n: summarise(cases, n) for n in names},
                "quality": quality_summary(cases, DEFAULT_ESTIMATOR),
                "cases": cases,
            }
            path.write_text(json.dumps(out, indent=1, default=_plain))
    print(json.dumps({p: v["summary"] for p, v in out["pools"].items()}, indent=1))


def resummarise(path: Path) -> None:
    """The summaries again from the stored cases (after a threshold of the summary changed)."""
    from deepclust.cluster.k_estimation import DEFAULT_ESTIMATOR

    out = json.loads(path.read_text())
    for pool in out["pools"].values():
        names = list(pool["summary"])
        pool["summary"] = {n: summarise(pool["cases"], n) for n in names}
        pool["quality"] = quality_summary(pool["cases"], DEFAULT_ESTIMATOR)
    path.write_text(json.dumps(out, indent=1, default=_plain))


def _plain(value: object) -> object:
    if isinstance(value, np.integer | np.floating | np.bool_):
        return value.item()
    raise TypeError(type(value))


if __name__ == "__main__":
    main()
