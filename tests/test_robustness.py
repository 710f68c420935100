"""Issue 18: nothing lost, nothing silently wrong (run folders and inputs). One test per item."""

from __future__ import annotations

import errno
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import toy_method  # registers the test-only method "toy"
from conftest import make_separable_images
from deepclust import api
from deepclust.cli import main
from deepclust.config import build_config
from deepclust.engine import checkpoint as ckpt
from deepclust.errors import CheckpointError, ConfigError, DeepclustError
from deepclust.training.trainer import Trainer

SRC = str(Path(__file__).resolve().parents[1] / "src")
TOY = {
    "encoder.name": "pixels",
    "data.protocol": "all",
    "train.epochs": 2,
    "train.batch_size": 256,
    "train.optimizer.lr": 0.01,
    "train.progress": False,
}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def toy(**extra):
    return api.make_config("toy", "digits", overrides={**TOY, **extra})


@pytest.fixture(scope="module")
def km_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "km"
    argv = ["train", "--method", "kmeans", "--dataset", "digits", "--out", str(out)]
    assert main([*argv, "--no-progress", "--set", "params.n_init=1"]) == 0
    return out


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run folder's lock until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from deepclust.engine.runlock import RunLock
        lock = RunLock({str(run_dir)!r}, "train")
        lock.acquire()
        print("locked", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# ------------------------------------------------------------------ 1. run folder lock


def test_1_a_run_folder_has_one_writer(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    train = ["train", "--method", "kmeans", "--dataset", "digits", "--out", out, "--no-progress"]
    holder = hold_lock(out)
    try:
        code, _, err = run(capsys, *train)
        assert code == 2 and "in use by process" in err and str(holder.pid) in err
        assert not (out / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="no longer runs"):  # the dead holder's stale lock
        assert run(capsys, *train)[0] == 0
    assert not (out / ".deepclust.lock").exists()  # released on exit
    holder = hold_lock(out)
    try:
        code, _, err = run(capsys, "train", "--resume", "--out", out, "--no-progress")
        assert code == 2 and "in use by process" in err
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ 2. outputs never overwrite


def test_2_outputs_never_overwrite_what_they_did_not_write(km_run, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(photo)
    other = tmp_path / "other.png"
    shutil.copy(photo, other)
    before = photo.read_bytes()
    code, _, err = run(capsys, "predict", km_run, photo, other, "--out", photo)
    assert code == 2 and "one of the inputs" in err and photo.read_bytes() == before
    own = (km_run / "predictions.csv").read_bytes()
    for force in ([], ["--force"]):
        code, _, err = run(
            capsys, "predict", km_run, photo, "--out", km_run / "predictions.csv", *force
        )
        assert code == 2 and "run's own" in err and (km_run / "predictions.csv").read_bytes() == own
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,notes\n")
    code, _, err = run(capsys, "predict", km_run, photo, "--out", notes)
    assert code == 2 and "--force" in err and notes.read_text() == "my,own,notes\n"
    assert run(capsys, "predict", km_run, photo, "--out", notes, "--force")[0] == 0
    assert run(capsys, "predict", km_run, photo, "--out", notes)[0] == 0  # now its own file
    page = tmp_path / "page.html"
    page.write_text("<html>mine</html>")
    code, _, err = run(capsys, "report", km_run, "--out", page)
    assert code == 2 and page.read_text() == "<html>mine</html>"
    code, _, err = run(capsys, "select", km_run, "--out", km_run / "summary.json")
    assert code == 2 and "run's own" in err
    other = tmp_path / "other-run"  # any run's own files, not only the command's run's
    other.mkdir()
    shutil.copy(km_run / "last.pt", other / "last.pt")
    (other / "predictions.csv").write_text("index,path,label,cluster,confidence\n")
    code, _, err = run(
        capsys, "predict", km_run, photo, "--out", other / "predictions.csv", "--force"
    )
    assert code == 2 and "run's own" in err


# ------------------------------------------------------------------ 3. train --out a foreign folder


def test_3_train_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    files = {
        "config.yaml": "# my carefully commented config\nmethod: kmeans\ndataset: digits\n",
        "summary.json": '{"mine": true}',
        "predictions.csv": "a,b\n",
        "metrics.jsonl": '{"loss": 1}\n',
    }
    for name, text in files.items():
        (out / name).write_text(text)
    argv = ["train", "--config", out / "config.yaml", "--out", out, "--no-progress"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "not a deepclust run" in err
    assert all(name in err for name in files)
    assert {p.name: p.read_text() for p in out.iterdir()} == files
    # a run killed before its first checkpoint left only what deepclust writes: restartable
    fresh = tmp_path / "fresh"
    assert run(capsys, "train", "--method", "kmeans", "--dataset", "digits", "--out", fresh)[0] == 0
    for name in ("last.pt", "previous.pt", "summary.json", "predictions.csv"):
        (fresh / name).unlink(missing_ok=True)
    assert run(capsys, "train", "--method", "kmeans", "--dataset", "digits", "--out", fresh)[0] == 0


# ------------------------------------------------------------------ 4. --epochs below the checkpoint


def test_4_resume_below_the_checkpoint_epoch_is_refused(tmp_path):
    api.train(toy(**{"train.epochs": 3}), out=tmp_path / "run")
    shorter = api.resume_config(tmp_path / "run", overrides={"train.epochs": 1})
    with pytest.raises(DeepclustError, match=r"at epoch 3.*--epochs 3 or more"):
        api.train(shorter, out=tmp_path / "run", resume=True)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 3


# ------------------------------------------------------------------ 5. data fingerprint


def test_5_resume_on_other_data_is_refused_before_any_write(tmp_path):
    first = make_separable_images(tmp_path / "a", per_class=8, seed=0)
    overrides = {**TOY, "data.data_dir": str(first), "train.batch_size": 16, "train.epochs": 1}
    cfg = api.make_config("toy", "imagefolder", overrides=overrides)
    api.train(cfg, out=tmp_path / "run")
    other = make_separable_images(tmp_path / "b", per_class=8, seed=1)  # same shape
    fewer = make_separable_images(tmp_path / "c", per_class=8, seed=0)
    shutil.rmtree(fewer / "yellow_disk")
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    for data, what in ((other, "other image content"), (fewer, "classes")):
        cfg = api.resume_config(
            tmp_path / "run", overrides={"data.data_dir": str(data), "train.epochs": 2}
        )
        with pytest.raises(DeepclustError, match=f"differ from the run's.*{what}"):
            api.train(cfg, out=tmp_path / "run", resume=True)
        assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == snapshot
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)  # the same images elsewhere: accepted
    cfg = api.resume_config(
        tmp_path / "run", overrides={"data.data_dir": str(moved), "train.epochs": 2}
    )
    assert api.train(cfg, out=tmp_path / "run", resume=True).summary["epochs"] == 2


def test_5_older_checkpoints_without_a_fingerprint_check_the_count():
    from deepclust.data.store import ImageSet
    from deepclust.engine.fingerprint import check_same_data, data_fingerprint

    images = ImageSet(torch.zeros(5, 3, 4, 4, dtype=torch.uint8), torch.zeros(5, dtype=torch.long))
    fingerprint = data_fingerprint(images)
    cfg = build_config("kmeans", "digits")
    check_same_data({"meta": {"num_samples": 5}}, fingerprint, cfg)
    with pytest.raises(DeepclustError, match="5 images instead of 6"):
        check_same_data({"meta": {"num_samples": 6}}, fingerprint, cfg)


# ------------------------------------------------------------------ 6. every PIL mode


def _modes() -> dict[str, tuple[Image.Image, np.ndarray]]:
    """mode -> (an image in that mode, the RGB it should decode to)."""
    ramp = np.linspace(0, 1, 16).reshape(4, 4)
    gray8 = np.rint(ramp * 255).astype(np.uint8)
    rgb = np.stack([gray8, 255 - gray8, np.full_like(gray8, 60)], -1)
    alpha = np.where(np.arange(16).reshape(4, 4) % 2 == 0, 255, 0).astype(np.uint8)
    on_white = np.where(alpha[..., None] == 255, rgb, 255).astype(np.uint8)
    gray_on_white = np.where(alpha == 255, gray8, 255).astype(np.uint8)
    as_rgb = lambda g: np.repeat(g[..., None], 3, -1)  # noqa: E731
    palette = Image.fromarray(rgb).quantize(16)
    palette_rgb = np.asarray(palette.convert("RGB"))
    transparent = palette.copy()
    transparent.info["transparency"] = int(np.asarray(palette)[0, 0])
    t_index = np.asarray(palette) == transparent.info["transparency"]
    return {
        "1": (Image.fromarray(gray8 > 127), as_rgb(np.where(gray8 > 127, 255, 0).astype(np.uint8))),
        "L": (Image.fromarray(gray8), as_rgb(gray8)),
        "LA": (Image.fromarray(np.stack([gray8, alpha], -1), "LA"), as_rgb(gray_on_white)),
        "P": (palette, palette_rgb),
        "P+transparency": (transparent, np.where(t_index[..., None], 255, palette_rgb)),
        "PA": (
            Image.merge("RGBA", [*Image.fromarray(rgb).split(), Image.fromarray(alpha)]).convert(
                "PA"
            ),
            None,
        ),
        "RGB": (Image.fromarray(rgb), rgb),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), on_white),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), rgb),
        "YCbCr": (Image.fromarray(rgb).convert("YCbCr"), rgb),
        "HSV": (Image.fromarray(rgb).convert("HSV"), rgb),
        "I;16": (Image.fromarray((ramp * 65535).astype(np.uint16)), as_rgb(gray8)),
        "I (16-bit values)": (Image.fromarray((ramp * 65535).astype(np.int32), "I"), as_rgb(gray8)),
        "I (8-bit values)": (Image.fromarray(gray8.astype(np.int32), "I"), as_rgb(gray8)),
        "F (0..1)": (Image.fromarray(ramp.astype(np.float32), "F"), as_rgb(gray8)),
        "F (0..255)": (Image.fromarray(gray8.astype(np.float32), "F"), as_rgb(gray8)),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_6_every_image_mode_decodes_to_its_colours(mode, tmp_path):
    from deepclust.data.readers import decode_image, to_rgb

    image, expected = _modes()[mode]
    got = np.asarray(to_rgb(image))
    if expected is None:  # PA: the palette of a quantised image, transparency over white
        expected = np.asarray(to_rgb(image.convert("RGBA")))
        assert (got[np.asarray(image.getchannel("A")) == 0] == 255).all()
    assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 5, mode
    if mode in ("I;16", "RGBA", "LA", "L", "P"):  # a real file round trip as well
        path = tmp_path / "x.png"
        image.save(path)
        decoded = decode_image(str(path), None)
        assert np.abs(decoded.astype(int) - expected).max() <= 3


# ------------------------------------------------------------------ 7. failed saves


def test_7_failed_saves_leave_no_temp_file_and_say_why(tmp_path, monkeypatch):
    state = {"model": {"w": torch.zeros(1000)}}
    target = tmp_path / "last.pt"

    def full_disk(obj, fh):
        fh.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 10))
    with pytest.raises(CheckpointError, match=r"no space left.*needs about"):
        ckpt.save_atomic(state, target)
    assert list(tmp_path.iterdir()) == []

    def read_only(obj, fh):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(ckpt.torch, "save", read_only)
    with pytest.raises(CheckpointError, match="read-only"):
        ckpt.save_atomic(state, target)

    def killed(obj, fh):
        fh.write(b"x" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_atomic(state, target)
    assert list(tmp_path.iterdir()) == []


def test_7_stale_temp_files_are_swept_on_start(tmp_path):
    api.train(toy(**{"train.epochs": 1}), out=tmp_path / "run")
    stale = tmp_path / "run" / ".last.pt.tmp-99999"
    stale.write_bytes(b"x" * 1000)
    cfg = api.resume_config(tmp_path / "run", overrides={"train.epochs": 2})
    api.train(cfg, out=tmp_path / "run", resume=True)
    assert not stale.exists()


# ------------------------------------------------------------------ 8. metrics.jsonl on resume


def test_8_resume_drops_the_lines_of_redone_epochs(tmp_path, monkeypatch):
    extra = {"train.epochs": 4, "train.checkpoint_every": 2}
    api.train(toy(**extra), out=tmp_path / "full")
    original = toy_method.Toy.training_step

    def dies_in_epoch_4(self, views, info):
        if info.epoch == 3 and info.epoch_step == 2:
            raise KeyboardInterrupt
        return original(self, views, info)

    monkeypatch.setattr(toy_method.Toy, "training_step", dies_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        api.train(toy(**extra), out=tmp_path / "killed")
    monkeypatch.setattr(toy_method.Toy, "training_step", original)
    Trainer(api.resume_config(tmp_path / "killed"), tmp_path / "killed", resume=True).fit()

    def events(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(r["event"], r["epoch"]) for r in map(json.loads, lines) if r["event"] != "resume"]

    assert events("killed") == events("full")
    assert [e for e, _ in events("full")].count("train") == 4


def test_8_older_checkpoints_cut_the_log_by_epoch(tmp_path):
    from deepclust.engine.runfolder import truncate_log

    log = tmp_path / "metrics.jsonl"
    records = [{"event": "train", "epoch": 1}, {"event": "eval", "epoch": 1}]
    later = [{"event": "train", "epoch": 2}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records + later) + '{"event": "tr')
    truncate_log(log, {"epoch": 1})  # no log_bytes: every record of a later epoch goes
    assert [json.loads(x) for x in log.read_text().splitlines()] == records
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


# ------------------------------------------------------------------ 9. unwritable feature cache


def test_9_unwritable_feature_cache_warns_and_runs(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("DEEPCLUST_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="feature cache .* not writable"):
        result = api.train(toy(**{"train.epochs": 1}), out=tmp_path / "run")
    assert result.summary["metrics"]["n"] == 1797


# ------------------------------------------------------------------ 10. config values


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.optimizer.lr", 0),
        ("train.optimizer.lr", -0.1),
        ("train.optimizer.lr", math.nan),
        ("train.batch_size", 0),
        ("train.checkpoint_every", 0),
        ("train.eval_batch_size", 0),
        ("data.num_workers", -1),
        ("train.epochs", -1),
        ("train.optimizer.betas", [0.9, 1.5]),
        ("train.schedule.min_lr_ratio", 2.0),
        ("train.schedule.warmup_fraction", 1.5),
        ("train.min_steps", -1),
        ("encoder.neighbours_share", -0.5),
    ],
)
def test_10_config_values_are_validated(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}' must be .*got "):
        build_config("kmeans", "digits", None, [(key, value)])


# ------------------------------------------------------------------ 11. one-line errors


def test_11_expected_errors_are_one_line_and_bugs_ask_for_a_report(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("")
    code, _, err = run(
        capsys, "train", "--method", "kmeans", "--dataset", "digits", "--out", a_file
    )
    assert code == 2 and "is a file" in err and "Traceback" not in err
    for raised, status, words in (
        (OSError(errno.EROFS, "Read-only file system", "/ro/run"), 2, "read-only"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (ValueError("boom"), 1, "please report it"),
    ):

        def fail(*args, error=raised, **kwargs):
            raise error

        monkeypatch.setattr(api, "train", fail)
        code, _, err = run(capsys, "train", "--method", "kmeans", "--dataset", "digits")
        assert code == status and words in err.lower(), err
        assert ("Traceback" in err) == (status == 1)
    monkeypatch.undo()


def test_11_predict_into_a_missing_folder_and_crafted_checkpoints(km_run, tmp_path, capsys):
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    code, _, err = run(capsys, "predict", km_run, photo, "--out", tmp_path / "nope" / "p.csv")
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    torch.save({"format": ckpt.FORMAT_VERSION, "model": {}}, crafted / "last.pt")
    code, _, err = run(capsys, "evaluate", crafted)
    assert code == 2 and "lacks a valid" in err and "config" in err


@pytest.mark.parametrize("broken", ["", "method: [unclosed\n", "just text\n"])
def test_11_resume_with_a_broken_config_uses_the_checkpoint(tmp_path, capsys, broken):
    api.train(toy(**{"train.epochs": 1}), out=tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text(broken)
    with pytest.warns(UserWarning, match="checkpoint's config"):
        code, _, err = run(capsys, "train", "--resume", "--out", tmp_path / "run", "--epochs", "2")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 2


# ------------------------------------------------------------------ 12. evaluate --data-dir


def test_12_evaluate_a_run_whose_data_moved(tmp_path, capsys, separable_images):
    data = tmp_path / "data"
    shutil.copytree(separable_images, data)
    train = ["train", "--method", "kmeans", "--dataset", "imagefolder", "--data-dir", data]
    assert (
        run(capsys, *train, "--protocol", "all", "--encoder", "pixels", "--out", tmp_path / "r")[0]
        == 0
    )
    data.rename(tmp_path / "moved")
    code, _, err = run(capsys, "evaluate", tmp_path / "r")
    assert code == 2 and "--data-dir" in err
    code, out, _ = run(
        capsys, "evaluate", tmp_path / "r", "--data-dir", tmp_path / "moved", "--json"
    )
    assert code == 0 and json.loads(out)["n"] == 160


# ------------------------------------------------------------------ 13. empty data, failed start


def test_13_empty_data_folder_says_no_images_and_leaves_no_run_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    out = tmp_path / "r"
    argv = [
        "train",
        "--method",
        "kmeans",
        "--dataset",
        "imagefolder",
        "--data-dir",
        tmp_path / "data",
    ]
    code, _, err = run(capsys, *argv, "--out", out)
    assert code == 2 and "no images" in err and "single split" not in err
    assert not out.exists()
