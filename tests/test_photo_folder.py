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


def test_plan_steps_scales_small_sets_and_leaves_large_ones():
    from deepclust.engine.schedule import plan_steps

    assert plan_steps(10_000, 256, 5, 150) == (256, 5)  # 39 steps an epoch: as configured
    assert plan_steps(300, 256, 5, 150) == (32, 17)  # 9 steps an epoch, 153 in all
    assert plan_steps(1_000, 256, 5, 150) == (120, 19)
    assert plan_steps(40, 256, 5, 150) == (32, 150)  # never under 32 images a batch
    assert plan_steps(300, 256, 5, 0) == (256, 5) and plan_steps(300, 256, 0, 150) == (256, 0)


def test_warmup_fraction_scales_with_the_run():
    from deepclust.config import ScheduleConfig
    from deepclust.engine.schedule import lr_factor, warmup_steps

    cfg = ScheduleConfig(name="cosine", warmup_fraction=0.25)
    assert warmup_steps(cfg, 10, 200) == 50 and warmup_steps(cfg, 10, 40) == 10
    assert lr_factor(9, cfg, 10, 40) == 1.0 and lr_factor(4, cfg, 10, 40) == 0.5


def test_schedule_warnings_name_what_never_ended():
    from deepclust.evaluation.health import Schedule, schedule_warnings

    short = schedule_warnings(Schedule(5, 50, {"the prototype freeze": 50}))
    assert len(short) == 3
    assert "inside its learning-rate warm-up (5 optimiser steps, warm-up 50)" in short[0]
    assert "the prototype freeze lasted the whole run (50 of 5 steps)" in short[1]
    assert "only 5 optimiser steps" in short[2]
    assert schedule_warnings(Schedule(195, 49, {"the prototype freeze": 49})) == []
    assert schedule_warnings(Schedule(0, 50)) == []  # no gradient training: nothing to say


def test_prediction_warnings_see_collapse_emptiness_and_flat_confidence():
    from deepclust.evaluation.health import prediction_warnings

    k, n = 10, 300
    rng = np.random.default_rng(0)
    healthy = np.eye(k)[np.arange(n) % k] * 0.8 + 0.02
    assert prediction_warnings(healthy, trained=True) == []
    collapsed = np.full((n, k), 0.1)
    collapsed[:156, 0] = collapsed[156:, 1:9] = 0.12  # 156 in one cluster, cluster 9 empty
    collapsed[156:, 1:9] += rng.random((n - 156, 8)) * 0.01
    text = " | ".join(prediction_warnings(collapsed, trained=True))
    assert "1 of 10 clusters are empty (clusters 9)" in text
    assert "cluster 0 holds 52% of the images" in text
    assert "confidences are near uniform (mean 0.12; uniform is 0.10)" in text
    assert "near uniform" not in " ".join(prediction_warnings(collapsed, trained=False))
    tiny = healthy.copy()
    tiny[np.arange(0, 280, k)] = np.eye(k)[1]  # cluster 0 keeps 2 of its 30 images
    assert any("tiny cluster(s) (clusters 0)" in w for w in prediction_warnings(tiny, True))
