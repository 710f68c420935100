"""predict: new images (files or folders) into a trained run's clusters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from deepclust.api.runs import load_run, read_cluster_names
from deepclust.data.images import load_image_paths
from deepclust.engine.files import atomic_file
from deepclust.errors import ConfigError
from deepclust.evaluation.predictions import (
    prediction_rows,
    write_predictions_csv,
)


def features_path(out: str | Path) -> Path:
    """Where `predict --features` writes the features: next to the CSV, <stem>.features.npy."""
    out = Path(out)
    return out.with_name(out.stem + ".features.npy")


def predict(
    run_dir: str | Path,
    paths: list[str | Path],
    out: str | Path | None = None,
    device: str = "auto",
    bad_images: str = "skip",
    features: bool = False,
) -> list[dict[str, Any]]:
    """Cluster new images (files or folders). Returns rows {index, path, cluster, confidence,
    name, label} (evaluation/predictions.py); writes them as CSV if `out`.

    features=True also writes the encoder features as float32 [N, D] to
    `features_path(out)` (row i = CSV row i), e.g. predictions.csv -> predictions.features.npy.
    """
    if features and out is None:
        raise ConfigError("--features writes next to the CSV: give --out FILE.csv as well.")
    run = load_run(run_dir, device)
    images = load_image_paths(paths, image_size=run.meta["image_size"], bad_images=bad_images)
    probs = run.predict_proba(images)
    names = read_cluster_names(run.run_dir, probs.shape[1])  # e.g. SIC's nearest nouns
    files = [os.path.abspath(p) for p in images.paths]  # as `cluster` writes them
    rows = prediction_rows(probs, files, None, names)
    if out is not None:
        write_predictions_csv(out, rows)
        if features:
            with atomic_file(features_path(out)) as fh:  # never through a link
                np.save(fh, run.features(images).numpy().astype(np.float32))
    return rows
