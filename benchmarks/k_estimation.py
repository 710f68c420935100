"""Choosing the number of clusters without labels: every K estimator on frozen features, as JSON.

    python benchmarks/k_estimation.py --seeds 0,1,2

Cases (features from the deepclust feature cache, extracted cold the first time):
digits (raw pixels), CIFAR-10 (JPEG copy) test with EfficientNet-Lite2 @ 224 px, Fashion-MNIST
test with EfficientNet-Lite0 @ 128 px, and CIFAR-10 test restricted to its first five classes
(the same Lite2 features; true K = 5). For every case, seed and estimator in
deepclust.cluster.k_estimation.ESTIMATORS: the estimated K against the number of classes,
the criterion's curve and the wall time. Then the cost of a wrong K: k-means on the same
features (scikit-learn KMeans, 2 restarts, a fixed seed, one clustering per K; rows centred
and L2-normalised as the estimators see them, all N rows, no PCA) with the estimated K and with
the true K, scored by ACC / NMI / ARI. Labels are used only for scoring, never to choose.
`--features-only` extracts and caches the features and stops. One JSON per run in
benchmarks/results/k_estimation<suffix>.json, written again after every case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepclust.cluster.k_estimation import DEFAULT_ESTIMATOR, ESTIMATORS, estimate_k, parse_k_range
from deepclust.data.datasets import load_protocol, load_split
from deepclust.encoders import build_encoder
from deepclust.encoders.cache import extract_features, extraction_info
from deepclust.engine.machine import cpu_model, load_average
from deepclust.evaluation.metrics import score

RESULTS = Path(__file__).parent / "results"

CIFAR_DIR = "/work/shared/datasets/cifar10-jpeg/test"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class Case:
    """One benchmark case: a dataset, the frozen encoder whose features are clustered, and
    optionally the subset of classes kept (labels only select images, never a K)."""

    name: str
    dataset: str
    data_dir: str | None
    split: str
    encoder: str
    input_size: int | None
    classes: tuple[int, ...] | None = None
    description: str = ""


CASES = {
    "digits": Case(
        "digits", "digits", None, "train", "pixels", None,
        description="scikit-learn digits, 1,797 8x8 images, raw pixels (grey copied to 3 channels)",
    ),
    "cifar10": Case(
        "cifar10", "imagefolder", CIFAR_DIR, "all", "efficientnet_lite2", 224,
        description="CIFAR-10 (JPEG copy) test split, 10,000 images, EfficientNet-Lite2 @ 224 px",
    ),
    "fashion_mnist": Case(
        "fashion_mnist", "fashion_mnist", FASHION_DIR, "test", "efficientnet_lite0", 128,
        description="Fashion-MNIST test split, 10,000 images, EfficientNet-Lite0 @ 128 px "
        "(the smaller encoder and resolution keep CPU extraction time sane)",
    ),
    "cifar10_5": Case(
        "cifar10_5", "imagefolder", CIFAR_DIR, "all", "efficientnet_lite2", 224, (0, 1, 2, 3, 4),
        description="CIFAR-10 (JPEG copy) test split, only its first five classes (airplane, "
        "automobile, bird, cat, deer; 5,000 images), EfficientNet-Lite2 @ 224 px features",
    ),
}  # fmt: skip


def load_case(case: Case) -> tuple[np.ndarray, np.ndarray, dict]:
    """-> (features [N, D] float32, labels [N] int, extraction facts) of one case; the
    features come from (or go into) the deepclust feature cache."""
    if case.split == "all":
        images, _ = load_protocol(case.dataset, "all", case.data_dir)
    else:
        images = load_split(case.dataset, case.split, case.data_dir)
    encoder = build_encoder(case.encoder, images.image_size[0], input_size=case.input_size)
    t0 = time.time()
    feats = extract_features(encoder, images, "clean", "cpu", 256, None, progress=True)
    facts = {"read_or_extract_s": round(time.time() - t0, 1)}
    facts["cold_extraction"] = extraction_info(encoder, images)
    x, y = feats.numpy().astype(np.float32), images.labels.numpy().astype(np.int64)
    if case.classes is not None:
        keep = np.isin(y, case.classes)
        x, y = x[keep], y[keep]
    return x, y, facts


def cosine_rows(x: np.ndarray) -> np.ndarray:
    """[N, D] -> centred, L2-normalised rows (float32): what k-means clusters here."""
    x = x - x.mean(0)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


KMEANS_SEED = 0
KMEANS_RESTARTS = 2


def kmeans_scores(x: np.ndarray, y: np.ndarray, k: int) -> dict:
    """k-means with K = k on rows x [N, D] -> ACC / NMI / ARI against labels y, and seconds."""
    from sklearn.cluster import KMeans

    t0 = time.time()
    km = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, max_iter=100, random_state=KMEANS_SEED)
    clusters = km.fit_predict(x)
    s = score(y, clusters, num_clusters=k)
    return {
        "k": k,
        "acc": round(s.acc, 4),
        "nmi": round(s.nmi, 4),
        "ari": round(s.ari, 4),
        "seconds": round(time.time() - t0, 1),
    }


def run_case(case: Case, seeds: list[int], names: list[str], k_range: tuple[int, int]) -> dict:
    """Every estimator on one case, for every seed, with the k-means cost of its K."""
    x, y, facts = load_case(case)
    true_k = int(np.unique(y).size)
    rows = cosine_rows(x)
    clusterings: dict[int, dict] = {}  # one k-means per K (fixed seed): a property of K

    def clustering(k: int) -> dict:
        if k not in clusterings:
            clusterings[k] = kmeans_scores(rows, y, k)
        return clusterings[k]

    runs = []
    for seed in seeds:
        for name in names:
            load_before = load_average()
            est = estimate_k(x, k_range[0], k_range[1], name, seed=seed)
            with_true, with_est = clustering(true_k), clustering(est.k)
            runs.append(
                {
                    "seed": seed,
                    **est.as_dict(),
                    "true_k": true_k,
                    "error": est.k - true_k,
                    "ratio": round(est.k / true_k, 3),
                    "kmeans_estimated_k": with_est,
                    "kmeans_true_k": with_true,
                    "nmi_loss": round(with_true["nmi"] - with_est["nmi"], 4),
                    "loadavg_before": load_before,
                }
            )
            print(
                f"{case.name:14s} seed {seed} {name:18s} K {est.k:3d} (true {true_k}) "
                f"{est.seconds:6.1f} s  NMI {with_est['nmi']:.4f} vs {with_true['nmi']:.4f}",
                flush=True,
            )
    return {
        "case": case.name,
        "description": case.description,
        "n": len(y),
        "dims": x.shape[1],
        "true_k": true_k,
        "classes_kept": list(case.classes) if case.classes is not None else "all",
        "features": facts,
        "summary": summarise(runs, names),
        "runs": runs,
    }


def summarise(runs: list[dict], names: list[str]) -> dict:
    """Per estimator: the K of each seed, the worst error and ratio, the mean seconds and
    the mean NMI lost by clustering with the estimated instead of the true K."""
    out = {}
    for name in names:
        mine = [r for r in runs if r["estimator"] == name]
        out[name] = {
            "k_per_seed": [r["k"] for r in mine],
            "within_1_all_seeds": all(abs(r["error"]) <= 1 for r in mine),
            "worst_ratio": round(max(max(r["ratio"], 1 / r["ratio"]) for r in mine), 3),
            "mean_seconds": round(float(np.mean([r["seconds"] for r in mine])), 2),
            "mean_nmi_loss": round(float(np.mean([r["nmi_loss"] for r in mine])), 4),
        }
    return out


def overall(cases: list[dict]) -> dict:
    """Per estimator over the cases: in how many every seed's K was within 1 of the truth,
    the worst ratio max(K / true, true / K) of any run, the mean NMI lost to the estimated K
    and the mean seconds."""
    names = list(dict.fromkeys(n for c in cases for n in c["summary"]))
    out = {}
    for name in names:
        mine = [c["summary"][name] for c in cases if name in c["summary"]]
        out[name] = {
            "cases": len(mine),
            "cases_within_1_all_seeds": sum(s["within_1_all_seeds"] for s in mine),
            "worst_ratio": max(s["worst_ratio"] for s in mine),
            "mean_nmi_loss": round(float(np.mean([s["mean_nmi_loss"] for s in mine])), 4),
            "mean_seconds": round(float(np.mean([s["mean_seconds"] for s in mine])), 1),
        }
    return out


def always_list(x: str | list[str]) -> list[str]:
    return x if isinstance(x, list) else [x]


def merge_case(cases: list[dict], result: dict, names: list[str]) -> list[dict]:
    """cases with `result` merged in: its estimators' runs replace the old ones of that case,
    the other estimators' runs are kept (same case, same K range assumed), summary redone."""
    old = next((c for c in cases if c["case"] == result["case"]), None)
    if old is not None:
        kept = [r for r in old["runs"] if r["estimator"] not in names]
        result["runs"] = kept + result["runs"]
        done = list(dict.fromkeys(r["estimator"] for r in result["runs"]))
        result["summary"] = summarise(result["runs"], done)
    return [c for c in cases if c["case"] != result["case"]] + [result]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k-range", default="2:30", help="MIN:MAX, the K tried (default 2:30)")
    ap.add_argument("--suffix", default="", help="results/k_estimation<suffix>.json")
    ap.add_argument("--features-only", action="store_true")
    ap.add_argument(
        "--append",
        action="store_true",
        help="merge into an existing JSON: these cases' runs of these estimators are replaced",
    )
    args = ap.parse_args()
    cases = [CASES[c] for c in args.cases.split(",")]
    if args.features_only:
        for case in cases:
            x, y, facts = load_case(case)
            print(case.name, x.shape, np.bincount(y).tolist(), facts, flush=True)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.estimators.split(",")
    k_range = parse_k_range(args.k_range)
    out = {
        "what": "number of clusters chosen without labels, per estimator, vs the true number",
        "command": "python benchmarks/k_estimation.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v and k not in ("features_only", "append")
        ),
        "default_estimator": DEFAULT_ESTIMATOR,
        "estimators": {n: ESTIMATORS[n].description for n in names},
        "k_range": list(k_range),
        "seeds": seeds,
        "clustering": f"scikit-learn KMeans ({KMEANS_RESTARTS} restarts, max_iter 100, "
        f"random_state {KMEANS_SEED}: one clustering per K, shared by seeds and estimators) on "
        "all rows, centred and L2-normalised, with the estimated K and with the true K",
        "labels": "used only for scoring (error vs true K, ACC/NMI/ARI), never to choose",
        "device": f"cpu ({cpu_model()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores)",
        "platform": platform.platform(),
        "cases": [],
    }
    path = RESULTS / f"k_estimation{args.suffix}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.append and path.exists():
        old = json.loads(path.read_text())
        out["cases"] = old["cases"]
        out["estimators"] = {**old["estimators"], **out["estimators"]}
        out["command"] = [*always_list(old["command"]), out["command"]]
    for case in cases:
        result = run_case(case, seeds, names, k_range)
        out["cases"] = merge_case(out["cases"], result, names)
        out["overall"] = overall(out["cases"])
        path.write_text(json.dumps(out, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
