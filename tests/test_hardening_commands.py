"""Issue #29, group C: the feature cache under a full disk and two writers, the export
command, `cluster --resume`, flags named per command, predict's rows, and report's pairing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from deepclust import api
from deepclust.cli import main
from tiny_recipe import TINY

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest: one torch thread

PIXELS = {"encoder.input_size": None, "train.epochs": 2}


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
    from deepclust.practice import DeepClusterer

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
    from deepclust.practice import DeepClusterer

    by_list = pixel_model.predict([str(p) for p in digit_files[:5]])
    assert by_list.shape == (5,)
    assert np.array_equal(by_list, pixel_model.labels_[:5])
    assert pixel_model.predict(digit_files[3]).shape == (1,)
    assert pixel_model.transform(digit_files[:2]).shape == (2, 3 * 8 * 8)
    model = DeepClusterer(encoder="pixels", k=4, device="cpu", overrides=PIXELS, out=tmp_path)
    model.fit([str(p) for p in digit_files[::-1]])
    assert model.paths_ == [str(p) for p in digit_files[::-1]]
    assert np.array_equal(model.predict(digit_files[::-1]), model.labels_)


# ---- items 4 and 9: report names its folder, asks for it on another host, pairs by path ----


def test_report_from_another_machine_needs_data_dir(pixel_model, tmp_path, capsys):
    import json
    import shutil
    import socket

    summary = json.loads((pixel_model.run_dir_ / "summary.json").read_text())
    assert summary["host"] == socket.gethostname()
    run = tmp_path / "run"
    shutil.copytree(pixel_model.run_dir_, run)
    summary["host"] = "elsewhere"
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["--no-progress", "report", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another machine (elsewhere)" in err and "--data-dir" in err
    assert len(err.splitlines()) == 1
    folder = summary["data_dir"]
    argv = ["--no-progress", "report", str(run), "--device", "cpu", "--data-dir", folder]
    assert main(argv) == 0
    assert f"reading the run's images from {folder}" in capsys.readouterr().out


def test_report_pairs_stored_predictions_by_path(pixel_model, digit_files, tmp_path, monkeypatch):
    import shutil

    from deepclust.evaluation import report as rep

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    n = len(digit_files)
    for i, f in enumerate(digit_files):  # every file takes its neighbour's name
        shutil.copy(f, renamed / digit_files[(i + 1) % n].name)
    seen, lines = {}, []
    render = rep.render_html
    monkeypatch.setattr(rep, "render_html", lambda d: seen.setdefault("d", d) and render(d))
    out = tmp_path / "r.html"
    api.report(pixel_model.run_dir_, out, "cpu", data_dir=str(renamed), tell=lines.append)
    fresh = pixel_model.predict(renamed)
    stored = pixel_model.labels_
    assert not np.array_equal(fresh, stored)  # the stale order would pair them wrongly
    assert np.array_equal(seen["d"].clusters, fresh)
    assert any(f"{n} photos in the run's predictions are missing" in x for x in lines)


# ---- item 17: each message names a flag of the command in use --------------------------


def test_cluster_messages_name_clusters_flags(separable_images, tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(separable_images.rglob("*.png"))[:5]:
        (few / f.name).write_bytes(f.read_bytes())
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(separable_images), "--k", "500"], "--k 500 is larger than"),
        ([str(few)], "lower the MIN of --k-range"),
        ([str(tmp_path / "empty"), "--k", "3"], "or point PHOTOS at the folder"),
    ]
    for argv, fragment in cases:
        assert (
            main(["--no-progress", "cluster", *argv, "--out", str(tmp_path / argv[0][-3:]), *TINY])
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1, err
        assert "--clusters" not in err and "--data-dir" not in err and "lower k_" not in err


def test_option_names_the_flag_per_command():
    from deepclust.errors import command, option

    assert option("encoder.name", "hf:/x") == "--encoder hf:/x"  # Python callers, train
    with command("cluster"):
        assert option("encoder.name", "hf:/x") == "--encoder hf:/x"  # cluster has --encoder
        assert option("encoder.weights", "W") == "--set encoder.weights=W"
        assert option("clusters", 7) == "--k 7"
    with command("train"):
        assert option("k_max") == "the MAX of --k-range"


# ---- item 16: `cluster --resume` continues a killed run and writes its report and export --


def test_cluster_resume_finishes_with_report_and_export(
    separable_images, tmp_path, capsys, monkeypatch
):
    from deepclust.methods.imc_swav import IMCSwAV

    run = tmp_path / "run"
    argv = ["--no-progress", "cluster", str(separable_images), "--k", "4", "--out", str(run)]
    argv += [*TINY, "--set", "train.checkpoint_every=1"]
    original, calls = IMCSwAV.training_step, []

    def dies_late(self, views, info):
        calls.append(1)
        if len(calls) == 25:
            raise KeyboardInterrupt  # the process is killed mid-run
        return original(self, views, info)

    monkeypatch.setattr(IMCSwAV, "training_step", dies_late)
    assert main(argv) == 130
    monkeypatch.setattr(IMCSwAV, "training_step", original)
    assert main(argv) == 2
    assert "Pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume", "--export"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "160 images -> 4 clusters" in out and "report.html" in out
    assert (run / "report.html").is_file()
    assert len([p for p in (run / "clusters").rglob("*.png") if p.is_symlink()]) == 160


# ---- item 15: export shortens long names; `deepclust export` completes or redoes one -----


def _fake_run(tmp_path: Path, digit_files: list[Path]) -> tuple[Path, list[Path]]:
    """A run folder holding only predictions.csv: 12 photos in 2 clusters, two of them with
    the same 250-byte name in two albums (the clash name passes 255 bytes)."""
    photos = []
    long = "x" * 246 + ".png"
    for i, f in enumerate(digit_files[:12]):
        where = tmp_path / "photos" / (f"album{i % 2}" if i < 2 else "")
        where.mkdir(parents=True, exist_ok=True)
        photos.append(where / (long if i < 2 else f.name))
        photos[-1].write_bytes(f.read_bytes())
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "path", "cluster", "confidence", "name", "label"])
        w.writerows([i, p, i % 2 if i > 1 else 0, 0.9, "", ""] for i, p in enumerate(photos))
    return run, photos


def test_export_shortens_names_too_long_for_the_file_system(digit_files, tmp_path):
    from deepclust.practice.exporting import export_clusters

    run, photos = _fake_run(tmp_path, digit_files)
    target = export_clusters(run, copy=True)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    assert len(files) == 12 and all(len(p.name.encode()) <= 255 for p in files)
    assert all(p.suffix == ".png" for p in files)
    longs = [p for p in files if "x" * 100 in p.name]
    assert len(longs) == 2 and longs[0].name != longs[1].name
    assert {p.read_bytes() for p in longs} == {photos[0].read_bytes(), photos[1].read_bytes()}


def test_export_command_completes_an_interrupted_export_and_redoes(
    digit_files, tmp_path, monkeypatch, capsys
):
    import errno
    import shutil

    run, photos = _fake_run(tmp_path, digit_files)
    real, calls = shutil.copy2, []

    def disk_fills(src, dst, *a, **k):
        calls.append(src)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copy2", disk_fills)
    assert main(["export", str(run), "--copy"]) == 2
    err = capsys.readouterr().err
    assert f"deepclust export {run} --copy" in err and len(err.strip().splitlines()) == 1
    written = {p: p.stat().st_mtime_ns for p in (run / "clusters").rglob("*") if p.is_file()}
    assert len(written) == 4 and not [p for p in (run / "clusters").rglob(".*")]
    monkeypatch.setattr(shutil, "copy2", real)
    assert main(["export", str(run), "--copy"]) == 0
    files = [p for p in (run / "clusters").rglob("*") if p.is_file()]
    assert len(files) == 12 and not any(p.is_symlink() for p in files)
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())  # kept, not redone
    assert main(["export", str(run), "--redo"]) == 0
    links = [p for p in (run / "clusters").rglob("*") if p.is_symlink()]
    assert len(links) == 12 and {p.resolve() for p in links} == {p.resolve() for p in photos}


# ---- items 13 and 14: the feature cache on a full disk, and two runs at once --------------


def _pixel_set(n: int = 10, seed: int = 0):
    import torch

    from deepclust.data.store import ImageSet

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.full((n,), -1), [], None, "t")


def _no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_cache_disk_warns_once_and_the_chunks_are_joined_later(tmp_path, monkeypatch):
    import torch

    from deepclust.encoders import cache as fc
    from deepclust.encoders.base import build_encoder

    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path))
    monkeypatch.setattr(fc, "CHUNK", 4)
    enc, data = build_encoder("pixels", 8), _pixel_set()
    monkeypatch.setattr(fc, "write_from_chunks", _no_space)  # the join fills the disk
    with pytest.warns(UserWarning) as caught:
        first = fc.extract_features(enc, data, progress=False)
    (line,) = [str(w.message) for w in caught]
    key = fc.cache_key(enc, "clean", data.images)
    assert f"{tmp_path / 'features' / key}.safetensors needs" in line and "is full" in line
    assert "KB are free" in line or "MB are free" in line
    monkeypatch.undo()
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path))
    monkeypatch.setattr(fc, "CHUNK", 4)
    monkeypatch.setattr(enc, "forward", lambda x: (_ for _ in ()).throw(AssertionError("again")))
    again = fc.extract_features(enc, data, progress=False)  # the saved chunks, joined now
    assert torch.equal(first, again) and (tmp_path / "features" / f"{key}.safetensors").is_file()


def test_a_full_disk_while_saving_a_chunk_names_the_space(tmp_path, monkeypatch):
    import torch

    from deepclust.encoders import cache as fc
    from deepclust.encoders.base import build_encoder

    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path))
    monkeypatch.setattr(fc, "CHUNK", 4)
    monkeypatch.setattr(fc, "save_file", _no_space)
    enc, data = build_encoder("pixels", 8), _pixel_set(seed=1)
    with pytest.warns(UserWarning, match=r"is full: .*00000\.safetensors needs 3 KB"):
        features = fc.extract_features(enc, data, progress=False)
    assert torch.equal(features, enc(fc.eval_images(data.images, enc.eval_transform())))
    assert not [p for p in (tmp_path / "features").rglob("*tmp*")]


TWO_RUNS = """
import sys, time, warnings
import numpy as np, torch
from deepclust.data.store import ImageSet
from deepclust.encoders import cache as fc
from deepclust.encoders.base import build_encoder
fc.CHUNK = 64
enc = build_encoder("pixels", 8)
forward, rows = enc.forward, []
def slow(x):
    rows.append(len(x)); time.sleep(0.05); return forward(x)
enc.forward = slow
g = torch.Generator().manual_seed(0)
data = ImageSet(torch.randint(0, 256, (640, 3, 8, 8), generator=g, dtype=torch.uint8),
                torch.full((640,), -1), [], None, "t")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    features = fc.extract_features(enc, data, batch_size=16, progress=False)
np.save(sys.argv[1], features.numpy())
print(sum(rows), "|".join(str(w.message) for w in caught))
"""


def test_two_runs_on_one_new_cache_extract_once(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DEEPCLUST_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_RUNS, str(tmp_path / f"{i}.npy")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [r.communicate(timeout=300) for r in runs]
    assert all(r.returncode == 0 for r in runs), outs
    rows = [int(out.split()[0]) for out, _ in outs]
    # one run extracted (640 rows and the one-image probe of its batch size), the other
    # waited for its file and ran the encoder on nothing
    assert sorted(rows) == [0, 641], rows
    assert not any("not writable" in out + err for out, err in outs), outs
    assert np.array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy"))


def test_export_never_writes_through_a_linked_folder(digit_files, tmp_path, capsys):
    """A RUN/clusters (or RUN/clusters/<id>) that is a link to a folder of the user's: the
    export refuses it in one line and writes nothing there."""
    run, _ = _fake_run(tmp_path, digit_files)
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (run / "clusters").symlink_to(elsewhere, target_is_directory=True)
    assert main(["export", str(run), "--copy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic link" in err[0]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    (run / "clusters").unlink()
    (run / "clusters").mkdir()
    (run / "clusters" / "0").symlink_to(elsewhere, target_is_directory=True)
    assert main(["export", str(run)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
