"""The practitioner's path (deepclust.practice): label-free quality in every frozen run, a
recut to another K without training, labels only when asked for, and a console that says
what happens as it happens."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tiny_recipe import TINY


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def four_cluster_run(separable_images, tmp_path_factory):
    """A `cluster --k 4 --labels-from-folders` run on the 4-class folder, and its console."""
    import contextlib
    import io

    from deepclust.cli import main

    run = tmp_path_factory.mktemp("practice") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["--no-progress", "cluster", str(separable_images), "--k", "4", "--out", str(run)]
        code = main([*argv, "--labels-from-folders", "--no-report", *TINY])
    assert code == 0
    return run, out.getvalue()


def test_a_frozen_run_records_its_label_free_quality(four_cluster_run):
    run, console = four_cluster_run
    summary = json.loads((run / "summary.json").read_text())
    quality = summary["quality"]
    assert 0.0 <= quality["score"] <= 1.0 and len(quality["coherence"]) == 4
    rows = _rows(run / "predictions.csv")
    agreement = np.array([float(r["agreement"]) for r in rows])
    assert agreement.mean() == pytest.approx(quality["score"], abs=1e-3)
    assert "quality (no labels):" in console and "agreement" in console
    # the console told what happened as it happened, in order
    lines = console.splitlines()
    starts = [next(i for i, line in enumerate(lines) if line.startswith(p)) for p in
              ("features: 160 images", "training imc-swav heads for K = 4", "160 images -> 4")]  # fmt: skip
    assert starts == sorted(starts)


def test_a_frozen_run_names_its_clusters_from_the_encoders_classifier(four_cluster_run):
    from deepclust import api

    run, console = four_cluster_run
    names = json.loads((run / "cluster_names.json").read_text())
    concepts = json.loads((run / "cluster_concepts.json").read_text())
    assert len(names) == 4 and all(isinstance(n, str) and n for n in names)
    assert len(set(names)) == 4  # the same name twice is told apart
    assert [c["name"] for c in concepts["clusters"]] == names
    assert all(len(c["classes"]) == 3 for c in concepts["clusters"])
    assert api.read_cluster_names(run, 4) == dict(enumerate(names))
    for row in _rows(run / "predictions.csv"):
        assert row["name"] == names[int(row["cluster"])]
    for c, name in enumerate(names):  # the console prints each cluster's name with its size
        assert any(line.startswith(f"  cluster  {c}: {name} ") for line in console.splitlines())


def test_sub_folders_are_scored_only_with_the_flag(separable_images, tmp_path, capsys, one_thread):
    from deepclust.cli import main

    run = tmp_path / "run"
    argv = ["--no-progress", "cluster", str(separable_images), "--k", "4", "--out", str(run)]
    assert main([*argv, "--no-report", *TINY]) == 0
    out = capsys.readouterr().out
    assert "scored against" not in out and "ACC" not in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"] is None and summary["dataset"] == "photos"
    assert all(r["label"] == "" for r in _rows(run / "predictions.csv"))


def test_labels_from_folders_needs_class_folders(tmp_path, capsys):
    from PIL import Image

    from deepclust.cli import main

    (tmp_path / "photos" / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / "photos" / "a" / f"{i}.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "photos" / "loose.png")
    code = main(["--no-progress", "cluster", str(tmp_path / "photos"), "--k", "2",
                 "--labels-from-folders", "--out", str(tmp_path / "r"), *TINY])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--labels-from-folders" in err and len(err.strip().splitlines()) == 1


def test_recut_merges_and_splits_into_new_folders(four_cluster_run, tmp_path, capsys):
    from deepclust import api
    from deepclust.cli import main

    run, _ = four_cluster_run
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for k in (3, 6):
        out = tmp_path / f"k{k}"
        assert main(["--no-progress", "recut", str(run), "--k", str(k), "--out", str(out)]) == 0
        console = capsys.readouterr().out
        assert f"4 -> {k} clusters" in console
        summary = json.loads((out / "summary.json").read_text())
        assert summary["num_clusters"] == k and summary["recut"]["from_k"] == 4
        assert summary["metrics"]["acc"] > 0 and "quality" in summary
        rows = _rows(out / "predictions.csv")
        stored = np.array([int(r["cluster"]) for r in rows])
        assert sorted(set(stored.tolist())) == list(range(k))
        # the recut run predicts its own photos exactly as it stored them
        again = api.load_run(out, device="cpu")
        assert again.meta["num_clusters"] == k
        predicted = again.predict_proba(again.load_split(), progress=False).argmax(1).numpy()
        assert (predicted == stored).all()
        assert (out / "report.html").is_file()
        # the new clusters get their own names, from the features the recut read
        names = json.loads((out / "cluster_names.json").read_text())
        assert len(names) == k and len(set(names)) == k
        assert {r["name"] for r in rows} == set(names)
        concepts = json.loads((out / "cluster_concepts.json").read_text())
        assert [c["name"] for c in concepts["clusters"]] == names
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_recut_of_a_recut_composes_and_refuses_bad_k(four_cluster_run, tmp_path, capsys):
    from deepclust import api
    from deepclust.cli import main

    run, _ = four_cluster_run
    first, second = tmp_path / "k2", tmp_path / "k5"
    assert (
        main(["--no-progress", "recut", str(run), "--k", "2", "--out", str(first), "--no-report"])
        == 0
    )
    assert (
        main(
            ["--no-progress", "recut", str(first), "--k", "5", "--out", str(second), "--no-report"]
        )
        == 0
    )
    cut = json.loads((second / "cut.json").read_text())
    assert cut["from_k"] == 4 and cut["to_k"] == 5 and len(cut["steps"]) == 5
    again = api.load_run(second, device="cpu")
    stored = np.array([int(r["cluster"]) for r in _rows(second / "predictions.csv")])
    assert (
        again.predict_proba(again.load_split(), progress=False).argmax(1).numpy() == stored
    ).all()
    capsys.readouterr()
    assert (
        main(["--no-progress", "recut", str(run), "--k", "4", "--out", str(tmp_path / "same")]) == 2
    )
    assert main(["--no-progress", "recut", str(run), "--k", "3", "--out", str(second)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "already has 4 clusters" in err[0] and "not empty" in err[1]


def test_k_estimate_names_runners_up():
    from deepclust.cluster.k_estimation import KEstimate

    curve = {2: 0.1, 3: 0.5, 4: 0.3, 5: 0.45, 6: 0.2, 7: 0.4}
    e = KEstimate(3, "modularity", curve, True, "", 0.0)
    assert e.alternatives == [5, 7] and e.as_dict()["also_plausible"] == [5, 7]


def test_the_practice_facade_names_functions():
    from deepclust import practice
    from deepclust.practice import exporting, recutting  # noqa: F401  (submodules loaded first)

    assert callable(practice.export) and callable(practice.recut) and callable(practice.cluster)
    assert practice.recut.__name__ == "recut_run" and practice.export.__name__ == "export_clusters"


def test_a_tampered_cut_is_one_line(four_cluster_run, tmp_path, capsys, separable_images):
    from deepclust.cli import main

    run, _ = four_cluster_run
    out = tmp_path / "k5"
    assert (
        main(["--no-progress", "recut", str(run), "--k", "5", "--out", str(out), "--no-report"])
        == 0
    )
    photo = str(next(separable_images.rglob("*.png")))
    bad = [
        {"from_k": 4, "steps": [{"split": 9, "centres": [[1.0]]}]},  # no such cluster
        {"from_k": 4, "steps": [{"split": 0, "centres": [[1.0, 2.0], [3.0, 4.0]]}]},  # size
        {"from_k": 7, "steps": []},  # not the model's K
        {"from_k": 4, "steps": [{"merge": [2, 2]}]},
    ]
    capsys.readouterr()
    for cut in bad:
        (out / "cut.json").write_text(json.dumps(cut))
        argv = ["--no-progress", "predict", str(out), photo, "--out", str(tmp_path / "p.csv")]
        assert main([*argv, "--force"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cut.json" in err[0], err


def test_without_a_cache_a_given_k_extracts_once(separable_images, tmp_path, monkeypatch, capsys):
    from deepclust.cli import main
    from deepclust.encoders import cache

    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    real, passes = cache._Extraction.in_memory, []
    monkeypatch.setattr(
        cache._Extraction, "in_memory", lambda self, *a: passes.append(1) or real(self, *a)
    )
    argv = ["--no-progress", "cluster", str(separable_images), "--k", "4"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--no-report", *TINY]) == 0
    assert "features:" not in capsys.readouterr().out
    assert len(passes) == 1  # the training's own extraction, not one ahead of it as well


def test_the_console_examples_are_each_clusters_most_typical_photos(tmp_path):
    """cluster_sizes names, per cluster, the photos with the highest agreement (then
    confidence), not the first ones listed."""
    import csv

    from deepclust.evaluation.predictions import COLUMNS
    from deepclust.practice.folder import cluster_sizes

    rows = [  # (path, cluster, confidence, agreement)
        ("/p/a_first.jpg", 0, 0.99, 0.1),
        ("/p/a_best.jpg", 0, 0.50, 0.9),
        ("/p/a_tie_confident.jpg", 0, 0.90, 0.5),
        ("/p/a_tie.jpg", 0, 0.60, 0.5),
        ("/p/b_only.jpg", 1, 0.70, 0.3),
    ]
    with (tmp_path / "predictions.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for i, (path, c, conf, agree) in enumerate(rows):
            writer.writerow(
                {"index": i, "path": path, "cluster": c, "confidence": conf, "agreement": agree}
            )
    sizes, examples = cluster_sizes(tmp_path, 2, shown=3)
    assert sizes == [4, 1]
    assert examples == [["a_best.jpg", "a_tie_confident.jpg", "a_tie.jpg"], ["b_only.jpg"]]
