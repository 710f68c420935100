"""A folder of photos, out of the box: the `cluster` command, schedules that scale with the
data, run-health warnings, and commands that read a frozen run's cached features."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from deepclust import api


def _csv_clusters(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        return np.array([int(r["cluster"]) for r in csv.DictReader(fh)])


def test_kmeans_fits_the_features_it_predicts_with(separable_images, tmp_path, one_thread):
    """The features k-means clusters at the end of training come from the encoder in eval
    mode (BatchNorm running statistics), as prediction does: the run's own predictions and
    a fresh prediction of the same images agree, and fitting leaves the statistics alone."""
    cfg = api.make_config(
        "kmeans",
        "imagefolder",
        overrides={
            "data.data_dir": str(separable_images),
            "data.protocol": "all",
            "encoder.name": "small_cnn",
            "train.progress": False,
        },
    )
    result = api.train(cfg, out=tmp_path / "km")
    run = api.load_run(result.run_dir, device="cpu")
    again = run.predict_proba(run.load_split()).argmax(1).numpy()
    stored = _csv_clusters(result.run_dir / "predictions.csv")
    assert (again == stored).all()
    bn = [m for m in run.method.encoder.modules() if hasattr(m, "running_mean")]
    assert bn and all(float(m.running_var.sub(1).abs().max()) == 0 for m in bn)
