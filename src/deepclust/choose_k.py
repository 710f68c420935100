"""`--k auto`: the number of clusters of a run, estimated from its frozen features.

The fit set of the config is loaded and its clean features taken from the feature cache
(extracted once, shared with the training that follows); cluster.k_estimation chooses K
from them without labels. The estimate, with the criterion's curve over K, is written to
the run folder as k_estimate.json, which the report plots.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from deepclust.config import RunConfig
from deepclust.errors import ConfigError

ESTIMATE_FILE = "k_estimate.json"


def parse_k(text: str) -> int | str:
    """'auto' or a whole number of clusters (at least 2), as given to --k / --clusters."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise ConfigError(f"--k must be a number of clusters or 'auto'; got '{text}'.") from None
    if k < 2:
        raise ConfigError(f"--k must be at least 2 clusters (or 'auto'); got {k}.")
    return k


def fit_features(cfg: RunConfig, device: str = "auto") -> tuple[Any, int] | None:
    """(clean features [N, D] float32 of `cfg`'s fit set from its frozen encoder, N), through
    the feature cache, so the training that follows reads them back instead of extracting;
    None when the encoder is trained from scratch (it has no features before training)."""
    import torch

    from deepclust.data.datasets import load_protocol
    from deepclust.encoders import build_encoder
    from deepclust.engine.device import autocast_dtype, resolve_device
    from deepclust.engine.frozen import clean_features

    e, d = cfg.encoder, cfg.data
    fit, _ = load_protocol(
        cfg.dataset, d.protocol, d.data_dir, image_size=d.image_size, bad_images=d.bad_images,
        include_unlabeled=d.include_unlabeled, all_splits=d.all_splits,
    )  # fmt: skip
    encoder = build_encoder(e.name, fit.image_size[0], e.stem, e.weights, e.input_size)
    if encoder.trainable:
        return None
    dev = resolve_device(device)
    feats = clean_features(encoder, fit, cfg, dev, autocast_dtype(cfg, dev), cfg.train.progress)
    return feats.to(torch.float32), len(fit)


def estimate_for_config(
    cfg: RunConfig,
    k_range: tuple[int, int] | None = None,
    estimator: str | None = None,
    device: str = "auto",
    features: Any = None,
) -> Any:
    """KEstimate for the fit set of `cfg` (its encoder must be frozen; features: its fit
    features when already at hand)."""
    from deepclust.cluster.k_estimation import DEFAULT_ESTIMATOR, estimate_k

    if features is None:
        found = fit_features(cfg, device)
        if found is None:
            raise ConfigError(
                f"--k auto needs a frozen pretrained encoder (e.g. --config frozen); "
                f"'{cfg.encoder.name}' is trained from scratch. Give the number of clusters instead."
            )
        features = found[0]
    k_min, k_max = k_range if k_range is not None else (2, None)
    return estimate_k(
        features.numpy(),
        k_min,
        k_max,
        estimator or DEFAULT_ESTIMATOR,
        seed=cfg.train.seed,
        progress=cfg.train.progress,
    )


def estimate_into(
    cfg: RunConfig,
    k_range: tuple[int, int] | None = None,
    estimator: str | None = None,
    device: str = "auto",
    features: Any = None,
) -> Any:
    """Estimate K for `cfg` (estimate_for_config), set cfg.clusters to it, return the estimate."""
    estimate = estimate_for_config(cfg, k_range, estimator, device, features)
    cfg.clusters = estimate.k
    return estimate


def describe(estimate: Any) -> str:
    """One line for the console: the chosen K, by what, over which K, in how long."""
    tried = f"{min(estimate.curve)}..{max(estimate.curve)}"
    others = ", ".join(map(str, estimate.alternatives))
    return (
        f"K = {estimate.k}, estimated without labels by {estimate.estimator} over K = {tried} "
        f"({estimate.seconds:.1f} s)" + (f"; also plausible: {others}" if others else "")
    )


def write_estimate(run_dir: str | Path, estimate: Any) -> Path:
    path = Path(run_dir) / ESTIMATE_FILE
    from deepclust.engine.files import write_atomic

    write_atomic(path, json.dumps(estimate.as_dict(), indent=1))
    return path


# k_estimate.json: each field the report reads, what it must be, and its words for the error
ESTIMATE_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "k": (int, "a whole number"),
    "estimator": (str, "a name"),
    "criterion": (str, "a text"),
    "higher_is_better": (bool, "true or false"),
    "seconds": ((int, float), "a number"),
    "curve": (dict, "an object of {K: value}"),
}


def read_estimate(run_dir: str | Path) -> dict[str, Any] | None:
    """k_estimate.json (None when absent), its shape checked: RunFileError names the field."""
    from deepclust.engine.runfolder import read_run_json, wrong_field

    path = Path(run_dir) / ESTIMATE_FILE
    estimate = read_run_json(path)
    if estimate is None:
        return None
    if not isinstance(estimate, dict):
        raise wrong_field(path, "the file", estimate, "an object")
    for key, (kind, want) in ESTIMATE_FIELDS.items():
        value = estimate.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise wrong_field(path, key, value, want)
    curve = estimate["curve"]
    if not curve or not all(
        re.fullmatch(r"[0-9]{1,6}", k) and isinstance(v, int | float) for k, v in curve.items()
    ):
        raise wrong_field(path, "curve", curve, "a non-empty object of {K: number}")
    return estimate
