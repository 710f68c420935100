"""cluster a folder of photos, and estimate K for a config, without labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepclust.config import RunConfig


def cluster(photos: str | Path, k: int, out: str | Path | None = None, **options: Any) -> Any:
    """`deepclust cluster`: every image under `photos` into k groups with the default frozen
    recipe; returns a photo_folder.ClusterResult (run folder, summary, sizes, report).
    options: method, image_size, seed, device, export, copy, report, overrides, resume
    (continue the killed run in `out`, then write its report and export)."""
    from deepclust.photo_folder import cluster_folder

    return cluster_folder(photos, k, out, **options)


def estimate_k(
    cfg: RunConfig, k_range: tuple[int, int] | None = None, estimator: str | None = None
) -> Any:
    """The number of clusters for `cfg`'s fit set, chosen without labels from its frozen
    encoder's cached features: a cluster.k_estimation.KEstimate (k, curve over K, ...)."""
    from deepclust.choose_k import estimate_for_config

    return estimate_for_config(cfg, k_range, estimator, cfg.train.device)
