"""Issue 18: nothing lost, nothing silently wrong (run folders and inputs). One test per item."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import toy_method  # noqa: F401 - registers the test-only method "toy"
from deepclust import api
from deepclust.cli import main
from deepclust.config import build_config
from deepclust.errors import ConfigError

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
    ],
)
def test_10_config_values_are_validated(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}' must be .*got "):
        build_config("kmeans", "digits", None, [(key, value)])


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
