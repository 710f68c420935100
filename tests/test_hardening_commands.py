"""Issue #29, group C: the feature cache under a full disk and two writers, the export
command, `cluster --resume`, flags named per command, predict's rows, and report's pairing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from deepclust.cli import main

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest: one torch thread

PIXELS = {"encoder.input_size": None, "train.epochs": 2}
# A tiny frozen recipe for cluster runs (as in test_photo_folder.py).
TINY = [
    "--set", "encoder.name=efficientnet_lite0",
    "--set", "encoder.input_size=32",
    "--set", "train.min_steps=30",
    "--set", "params.num_prototypes=50",
]  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> list[Path]:
    """60 digits as PNG files (8x8 grey)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    d = load_digits()
    paths = []
    for i, image in enumerate(d.images[:60]):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def pixel_model(digit_files, tmp_path_factory):
    from deepclust.api import DeepClusterer

    with_one_thread = DeepClusterer(
        encoder="pixels", k=4, device="cpu", overrides=PIXELS, out=tmp_path_factory.mktemp("dc")
    )
    return with_one_thread.fit(digit_files[0].parent)


# ---- item 20: predict's rows, plurals, lists of paths --------------------------------------


def test_predict_writes_absolute_paths_and_empty_unknowns(
    pixel_model, digit_files, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(digit_files[0].parent.parent)
    rel = Path(digit_files[0].parent.name) / digit_files[0].name
    out = tmp_path / "p.csv"
    assert (
        main(["--no-progress", "predict", str(pixel_model.run_dir_), str(rel), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "1 image clustered" in printed and "1 images" not in printed
    assert "cluster 0 (" not in printed  # no names: no per-cluster name lines
    (row,) = _rows(out)
    assert row["path"] == str(digit_files[0])
    assert row["name"] == "" and row["label"] == ""
    stored = _rows(pixel_model.run_dir_ / "predictions.csv")
    assert all(r["label"] == "" and r["name"] == "" for r in stored)


def test_estimator_takes_a_list_of_paths_or_one_path(pixel_model, digit_files, tmp_path):
    from deepclust.api import DeepClusterer

    by_list = pixel_model.predict([str(p) for p in digit_files[:5]])
    assert by_list.shape == (5,)
    assert np.array_equal(by_list, pixel_model.labels_[:5])
    assert pixel_model.predict(digit_files[3]).shape == (1,)
    assert pixel_model.transform(digit_files[:2]).shape == (2, 3 * 8 * 8)
    model = DeepClusterer(encoder="pixels", k=4, device="cpu", overrides=PIXELS, out=tmp_path)
    model.fit([str(p) for p in digit_files[::-1]])
    assert model.paths_ == [str(p) for p in digit_files[::-1]]
    assert np.array_equal(model.predict(digit_files[::-1]), model.labels_)
