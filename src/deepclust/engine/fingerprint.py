"""A fingerprint of a run's fit set, stored in its checkpoints and checked on resume.

It holds the image count and size, the classes, and a hash of the content of a fixed
sample of images and labels, so a resume on other images (even of the same shape) or other
classes is refused before anything in the run folder changes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from deepclust.config import RunConfig
from deepclust.data.store import ImageSet
from deepclust.errors import RunFolderError, option

SAMPLE = 64  # images hashed, evenly spaced over the fit set


def data_fingerprint(images: ImageSet) -> dict[str, Any]:
    """{count, image_size, classes, sample_hash} of a fit set."""
    n = len(images)
    index = torch.linspace(0, n - 1, min(SAMPLE, n)).round().long() if n else torch.zeros(0).long()
    h = hashlib.blake2b(digest_size=16)
    h.update(images.images[index].contiguous().numpy().tobytes())
    h.update(images.labels[index].contiguous().numpy().tobytes())
    labels = images.labels[images.labels >= 0]
    return {
        "count": n,
        "image_size": list(images.image_size),
        "classes": list(images.class_names) or sorted({int(v) for v in labels.unique()}),
        "sample_hash": h.hexdigest(),
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    if old.get("count") != new["count"]:
        diffs.append(f"{new['count']} images instead of {old.get('count')}")
    if old.get("image_size") != new["image_size"]:
        diffs.append(f"{new['image_size']} px instead of {old.get('image_size')}")
    if old.get("classes") != new["classes"]:
        diffs.append(f"classes {_short(new['classes'])} instead of {_short(old.get('classes'))}")
    if not diffs and old.get("sample_hash") != new["sample_hash"]:
        diffs.append(
            f"other image content (the hash of {SAMPLE} sampled images and labels differs)"
        )
    return diffs


def _short(items: Any) -> str:
    items = list(items or [])
    return str(items if len(items) <= 6 else [*items[:6], "..."]) + f" ({len(items)})"


def check_same_data(state: dict[str, Any], fingerprint: dict[str, Any], cfg: RunConfig) -> None:
    """Refuse to resume on data other than the run's (checkpoints without one: the count)."""
    meta = state["meta"]
    old = meta.get("data") or {"count": meta["num_samples"], **_known(fingerprint)}
    diffs = _differences(old, fingerprint)
    if diffs:
        where = cfg.data.data_dir or f"the default folder of '{cfg.dataset}'"
        raise RunFolderError(
            f"--resume: the data in {where} differ from the run's: {'; '.join(diffs)}. Point "
            f"{option('data.data_dir')} at the run's images, or start a new run with another --out."
        )


def _known(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What an old checkpoint did not store is taken as unchanged."""
    return {k: v for k, v in fingerprint.items() if k != "count"}


def check_resume_epochs(state: dict[str, Any], cfg: RunConfig) -> None:
    """--epochs below the checkpoint's epoch would relabel a model trained longer."""
    if cfg.train.epochs < state["epoch"]:
        raise RunFolderError(
            f"--resume: the run is at epoch {state['epoch']}, so --epochs {cfg.train.epochs} is "
            f"too low: pass --epochs {state['epoch']} or more (the checkpoint cannot be rewound)."
        )
