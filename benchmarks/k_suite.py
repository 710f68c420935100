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
import platform
import time
from pathlib import Path

import numpy as np

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
