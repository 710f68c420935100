"""Label-free model selection: rank runs (seeds, hyper-parameter variants) without labels.

The published code of ConCURL picks its checkpoint by train-set accuracy and SIC stops on
test-set accuracy: both read labels. deepclust ranks candidates only by criteria computed
from images and the models' own outputs, and compares the pick with the best-by-labels
afterwards, as a separate step, so the gap can be reported honestly.

Criteria (all on the same images for every candidate; labels are never read):

  views              NMI between the cluster assignments of two augmented views of each
                     image (crops, flips, colour jitter): a clustering that follows image
                     content, not nuisances, is stable under them. Higher is better.
  consensus          mean NMI between this run's assignments and every other run's (the
                     medoid of the ensemble; needs >= 3 runs to separate them). Higher.
  silhouette         silhouette of the assignments in the run's own encoder features, on
                     a subsample (cosine distance). Higher.
  calinski_harabasz  between/within dispersion ratio in the same features. Higher.
  loss               the method's own training objective on held-out images (fit images
                     with their indices when per-sample state such as a memory bank needs
                     them); no value for methods without gradient training. Lower.

silhouette and Calinski-Harabasz compare runs fairly only when they share a feature space
(e.g. seeds of one configuration), and the loss only when the objective is the same.

A degenerate clustering (fewer than half of the K clusters non-empty) agrees perfectly with
itself under any view, so candidates flagged `degenerate` are ranked after all others.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from torch import nn

from deepclust.data.store import ImageSet
from deepclust.data.views import CropSpec, ViewGenerator, ViewSpec, batch_generator

# name -> True when higher is better
CRITERIA: dict[str, bool] = {
    "views": True,
    "consensus": True,
    "silhouette": True,
    "calinski_harabasz": True,
    "loss": False,
}
SELECTION_SEED = 20240601  # fixed, so every candidate sees the same subsample and views


def without_labels(images: ImageSet) -> ImageSet:
    """A copy of `images` whose labels are all -1: what every criterion receives."""
    return ImageSet(
        images.images,
        torch.full((len(images),), -1, dtype=torch.long),
        [],
        images.paths,
        images.name,
    )


def subsample_index(
    n: int, max_images: int | None, seed: int = SELECTION_SEED
) -> torch.Tensor | None:
    """Sorted indices of at most `max_images` of n items drawn by a fixed seed (None = all)."""
    if max_images is None or n <= max_images:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:max_images].sort().values


def view_spec(image_size: int) -> ViewSpec:
    """The two views of the `views` criterion: crops of 50-100% area, flips, colour jitter."""
    crop = CropSpec(
        count=2,
        size=image_size,
        scale=(0.5, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
    )
    return ViewSpec((crop,), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def augmented_pair(
    images: ImageSet, seed: int = SELECTION_SEED, batch: int = 512
) -> tuple[ImageSet, ImageSet]:
    """Two augmented uint8 copies of `images` (same draws for the same seed and images)."""
    gen = ViewGenerator(view_spec(images.image_size[0]))
    first, second = [], []
    for i, start in enumerate(range(0, len(images), batch)):
        a, b = gen(images.images[start : start + batch], batch_generator(seed, 0, i))
        first.append(a.mul(255).round().clamp(0, 255).to(torch.uint8))
        second.append(b.mul(255).round().clamp(0, 255).to(torch.uint8))
    blank = torch.full((len(images),), -1, dtype=torch.long)
    return (
        ImageSet(torch.cat(first), blank, [], None, images.name + ":view1"),
        ImageSet(torch.cat(second), blank.clone(), [], None, images.name + ":view2"),
    )


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """NMI and ARI between two assignments of the same images (1 = identical partitions)."""
    return {
        "nmi": float(normalized_mutual_info_score(a, b, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(a, b)),
    }


def consensus(assignments: list[np.ndarray]) -> list[float | None]:
    """For each run, the mean NMI of its assignments with every other run's (None if alone)."""
    n = len(assignments)
    if n < 2:
        return [None] * n
    nmi = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            nmi[i, j] = nmi[j, i] = agreement(assignments[i], assignments[j])["nmi"]
    return [float((nmi[i].sum() - 1.0) / (n - 1)) for i in range(n)]


def balance(clusters: np.ndarray, num_clusters: int) -> dict[str, float | int]:
    """Normalised entropy of the cluster sizes (1 = equal sizes) and the non-empty count."""
    counts = np.bincount(clusters, minlength=num_clusters).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum() / math.log(num_clusters)) if num_clusters > 1 else 1.0
    return {"balance": entropy, "non_empty": int((counts > 0).sum())}


def internal_indices(
    features: np.ndarray, clusters: np.ndarray, max_n: int = 2000, seed: int = SELECTION_SEED
) -> dict[str, float | None]:
    """Silhouette (cosine) and Calinski-Harabasz of `clusters` in `features`, on <= max_n."""
    if len(np.unique(clusters)) < 2:
        return {"silhouette": None, "calinski_harabasz": None}
    rng = np.random.default_rng(seed)
    idx = np.arange(len(clusters))
    if len(idx) > max_n:
        idx = np.sort(rng.choice(idx, max_n, replace=False))
    f, c = features[idx].astype(np.float64), clusters[idx]
    if len(np.unique(c)) < 2:
        return {"silhouette": None, "calinski_harabasz": None}
    return {
        "silhouette": float(silhouette_score(f, c, metric="cosine")),
        "calinski_harabasz": float(calinski_harabasz_score(f, c)),
    }


@torch.no_grad()
def method_loss(
    method: Any,
    images: ImageSet,
    device: torch.device,
    batch_size: int,
    max_batches: int = 4,
    indices: torch.Tensor | None = None,
    epoch: int = 0,
    autocast_dtype: torch.dtype | None = None,
    seed: int = SELECTION_SEED,
    features: Any = None,
    feature_noise: float = 0.0,
) -> float | None:
    """Mean training objective of `method` (a deepclust Method) on batches of `images`.

    Runs on a deep copy in train mode without gradients, so the run's model and its
    state (BatchNorm statistics, memory banks) are untouched. `indices` are the images'
    fit-set indices where per-sample state needs them. None if the method has no training.
    features: the images' FrozenFeatures for heads on a frozen encoder, whose views are
    then feature views as in training (engine/frozen.py), not image crops.
    """
    from deepclust.engine.frozen import EpochFeatureViews
    from deepclust.methods.base import StepInfo

    spec = method.view_spec()
    if spec is None:
        return None
    bs = min(batch_size, len(images))
    batches = min(max_batches, len(images) // bs)
    if batches == 0:
        return None
    model = copy.deepcopy(method).to(device).train()
    rows = [torch.arange(i * bs, (i + 1) * bs) for i in range(batches)]
    feature_views = (
        EpochFeatureViews(features, rows, spec.num_views, feature_noise, seed, epoch, 0, bs)
        if features is not None
        else None
    )
    render = ViewGenerator(spec)
    total, count = 0.0, 0
    for i in range(batches):
        sl = slice(i * bs, (i + 1) * bs)
        if feature_views is not None:
            views = feature_views[i][0]
        else:
            views = render(images.images[sl], batch_generator(seed, epoch, i))
        info = StepInfo(
            epoch=epoch,
            step=epoch * batches + i,
            epoch_step=i,
            steps_per_epoch=batches,
            total_steps=(epoch + 1) * batches,
            indices=None if indices is None else indices[sl].to(device),
        )
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            losses = model.training_step([v.to(device) for v in views], info)
        total += float(torch.stack([v.float() for v in losses.values()]).sum())
        count += 1
    return total / count


class RememberedOutputs(nn.Module):
    """A frozen encoder body whose outputs are remembered by the content of its input.

    Scoring runs that share one frozen encoder (seeds and variants of heads on a pretrained
    model) would otherwise push the same images and views through it once per run and
    criterion: with EfficientNet-Lite2 on a CPU that is minutes each time. `memory` is shared
    by every run of one encoder; deep copies (the loss criterion copies the method) share it.
    """

    def __init__(self, body: nn.Module, memory: dict[tuple, torch.Tensor]) -> None:
        super().__init__()
        self.body, self.memory = body, memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        content = hashlib.blake2b(x.detach().cpu().contiguous().numpy().data, digest_size=16)
        key = (tuple(x.shape), str(x.dtype), torch.is_autocast_enabled(), content.hexdigest())
        if key not in self.memory:
            self.memory[key] = self.body(x)
        return self.memory[key].clone()  # callers may work in place

    def __deepcopy__(self, memo: dict) -> RememberedOutputs:
        return self  # frozen: copies may share the weights and the memory


def remember_frozen_outputs(methods: list[Any]) -> None:
    """Wrap the bodies of frozen encoders in RememberedOutputs, one memory per encoder identity."""
    memories: dict[str, dict[tuple, torch.Tensor]] = {}
    for method in methods:
        encoder = method.encoder
        if encoder.trainable or not encoder.identity or isinstance(encoder.body, RememberedOutputs):
            continue
        encoder.body = RememberedOutputs(encoder.body, memories.setdefault(encoder.identity, {}))


@dataclass
class Candidate:
    """What the criteria need of one run, computed on the shared unlabelled images."""

    name: str
    clusters: np.ndarray  # [M] assignments of the clean images
    num_clusters: int
    view_clusters: tuple[np.ndarray, np.ndarray] | None = None
    features: np.ndarray | None = None  # [M, D] encoder features
    loss: float | None = None
    loss_images: str = ""


def score_candidates(cands: list[Candidate], max_n: int = 2000) -> list[dict[str, Any]]:
    """Every criterion for every candidate (None where it does not apply), plus balance."""
    cons = consensus([c.clusters for c in cands])
    rows = []
    for c, con in zip(cands, cons, strict=True):
        row: dict[str, Any] = {"name": c.name, "consensus": con}
        bal = balance(c.clusters, c.num_clusters)
        row.update(bal)
        row["degenerate"] = bal["non_empty"] < max(2, math.ceil(c.num_clusters / 2))
        if c.view_clusters is not None:
            ag = agreement(*c.view_clusters)
            row["views"], row["views_ari"] = ag["nmi"], ag["ari"]
        else:
            row["views"] = row["views_ari"] = None
        if c.features is not None:
            row.update(internal_indices(c.features, c.clusters, max_n))
        else:
            row["silhouette"] = row["calinski_harabasz"] = None
        row["loss"] = c.loss
        if c.loss is not None:
            row["loss_images"] = c.loss_images
        rows.append(row)
    return rows


def rank(rows: list[dict[str, Any]], criterion: str) -> list[int]:
    """Indices of `rows` from best to worst by `criterion`; degenerate and missing last.

    Ties are broken by the views criterion, then by the order given.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion '{criterion}'; choose from {', '.join(CRITERIA)}.")
    sign = 1.0 if CRITERIA[criterion] else -1.0

    def key(i: int) -> tuple:
        v, views = rows[i].get(criterion), rows[i].get("views")
        return (
            bool(rows[i].get("degenerate")),
            v is None,
            -sign * v if v is not None else 0.0,
            -views if views is not None else 0.0,
            i,
        )

    return sorted(range(len(rows)), key=key)


def default_criterion(num_runs: int) -> str:
    """consensus when there are at least 3 runs to vote, else view agreement."""
    return "consensus" if num_runs >= 3 else "views"


def _spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def compare_with_labels(
    rows: list[dict[str, Any]], metrics: list[dict[str, Any] | None], by: str = "acc"
) -> dict[str, Any] | None:
    """How far each criterion's pick lands from the best-by-labels run.

    metrics[i]: the labelled scores of run i (from its own evaluation), or None.
    Returns None when no run has labels. Gap = best ACC - pick's ACC (>= 0).
    """
    if not rows or any(m is None or m.get(by) is None for m in metrics):
        return None
    values = [float(m[by]) for m in metrics]  # type: ignore[index]
    best = int(np.argmax(values))
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out: dict[str, Any] = {
        "metric": by,
        "best_by_labels": {"name": rows[best]["name"], **_scores(metrics[best])},
        "worst_by_labels": {"name": rows[order[-1]]["name"], **_scores(metrics[order[-1]])},
        "criteria": {},
    }
    for crit in CRITERIA:
        if all(r.get(crit) is None for r in rows):
            continue
        pick = rank(rows, crit)[0]
        scored = [i for i, r in enumerate(rows) if r.get(crit) is not None]
        out["criteria"][crit] = {
            "pick": rows[pick]["name"],
            **{f"pick_{k}": v for k, v in _scores(metrics[pick]).items()},
            f"gap_{by}": round(values[best] - values[pick], 6),
            "pick_rank_by_labels": order.index(pick) + 1,
            "spearman_with_labels": _spearman(
                [rows[i][crit] * (1 if CRITERIA[crit] else -1) for i in scored],
                [values[i] for i in scored],
            ),
        }
    return out


def _scores(m: dict[str, Any] | None) -> dict[str, Any]:
    return {k: m[k] for k in ("acc", "nmi", "ari") if m and k in m}
