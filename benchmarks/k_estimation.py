"""Choosing the number of clusters without labels: every K estimator on frozen features, as JSON.

    python benchmarks/k_estimation.py --seeds 0,1,2

(placeholder: the estimator part follows; `--features-only` extracts and caches the features.)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from deepclust.data.datasets import load_protocol, load_split
from deepclust.encoders import build_encoder
from deepclust.encoders.cache import extract_features, extraction_info

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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--features-only", action="store_true")
    args = ap.parse_args()
    for name in args.cases.split(","):
        x, y, facts = load_case(CASES[name])
        print(name, x.shape, np.bincount(y).tolist(), facts, flush=True)


if __name__ == "__main__":
    main()
