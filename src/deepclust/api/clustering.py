"""estimate K for a config, without labels (clustering a folder of photos is deepclust.practice)."""

from __future__ import annotations

from typing import Any

from deepclust.config import RunConfig


def estimate_k(
    cfg: RunConfig, k_range: tuple[int, int] | None = None, estimator: str | None = None
) -> Any:
    """The number of clusters for `cfg`'s fit set, chosen without labels from its frozen
    encoder's cached features: a cluster.k_estimation.KEstimate (k, curve over K, ...)."""
    from deepclust.choose_k import estimate_for_config

    return estimate_for_config(cfg, k_range, estimator, cfg.train.device)
