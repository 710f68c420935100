"""The HTML report: self-contained, every section present, and it renders in a real browser."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import toy_method  # registers the test-only method "toy"
from deepclust import api
from deepclust.evaluation import report as rep

CHROMIUM = rep.find_chromium()
CHROME_FLAGS = list(rep.HEADLESS_CHROMIUM_FLAGS)
# Sets a marker on <html> once every <img> has loaded with a real size.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.length > 0 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.documentElement.setAttribute('data-images', ok ? 'loaded-' + imgs.length : 'broken');
});
</script>"""
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest: one torch thread


@pytest.fixture(scope="module")
def kmeans_report(tmp_path_factory):
    """k-means on digits with cluster names and a (small) shift table, and its report."""
    root = tmp_path_factory.mktemp("report")
    cfg = api.make_config("kmeans", "digits", overrides={"train.progress": False})
    run_dir = api.train(cfg, out=root / "km").run_dir
    (run_dir / "cluster_names.json").write_text(json.dumps(NAMES))
    api.shift(run_dir, corruptions=["contrast", "jpeg"], severities=(1, 5), max_images=300)
    return api.report(run_dir, max_points=400)


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory):
    """A trainable method's run (loss and evaluation per epoch), t-SNE embedding."""
    root = tmp_path_factory.mktemp("toyreport")
    overrides = {
        "encoder.name": "pixels",
        "data.protocol": "all",
        "train.epochs": 3,
        "train.batch_size": 256,
        "train.optimizer.lr": 0.01,
        "train.progress": False,
    }
    cfg = api.make_config(toy_method.Toy.name, "digits", overrides=overrides)
    run_dir = api.train(cfg, out=root / "toy").run_dir
    return api.report(run_dir, out=root / "toy.html", embedding="tsne", max_points=300)


def test_self_contained_with_every_section(kmeans_report):
    page = kmeans_report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r"""src=["']?([^"' >]+)""", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for section in rep.SECTIONS:  # a labelled run with names and a shift table: all of them
        assert f'<section id="{section}">' in page, section
    assert '<section id="warnings"' not in page  # a healthy run
    for fact in ("train+test", "pixels", "ACC", "NMI", "ARI", "seed", "device", "epochs"):
        assert fact in page
    assert "three" in page and "nine" in page  # cluster names from cluster_names.json
    assert page.count('<div class="thumbs">') == 10  # one row of samples per cluster
    assert page.count("<figure>") == 10 * 12 and re.search(r">image \d+<br>", page)  # captions
    assert "classes × clusters" in page and "images per cluster" in page
    assert "PCA of encoder features, by cluster" in page and "by true class" in page
    assert "contrast" in page and "jpeg" in page  # the shift table
    assert "no loss curve" in page  # k-means: no gradient training


def test_training_curves_and_tsne(toy_report):
    page = toy_report.read_text()
    assert "loss per epoch" in page and "evaluation per epoch" in page
    assert "learning rate at the end of each epoch" in page
    assert "t-SNE of encoder features" in page
    assert "Not computed for this run" in page  # no shift.json yet


def test_strip_is_upscaled_nearest_and_framed():
    imgs = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    strip = rep.image_strip(imgs, [rep.MATCH, rep.MISMATCH], scale=3, pad=2)
    assert strip.shape == (4 * 3 + 4, 2 * (4 * 3 + 4 + 2), 3)
    cell = strip[2:14, 2:14]
    assert np.array_equal(cell[::3, ::3], imgs[0].permute(1, 2, 0).numpy())
    assert tuple(strip[0, 0]) == rep.MATCH and tuple(strip[0, 18]) == rep.MISMATCH
    assert rep.thumb_scale(32) == 2 and rep.thumb_scale(8) == 9


def test_chromium_is_there_in_ci():
    """CI installs Debian's chromium (the README's test command): the browser test must run
    there, not skip; elsewhere it skips when no browser is installed."""
    if os.environ.get("CI") == "true":
        assert CHROMIUM is not None, "CI must have chromium: apt-get install chromium"


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)"
)
def test_renders_in_chromium_with_every_image(kmeans_report, tmp_path):
    page = kmeans_report.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    flags = [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    assert f'data-images="loaded-{page.count("<img ")}"' in dom, dom[:300]
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,3000", probe.as_uri()],
        capture_output=True,
        timeout=180,
    )
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (3000, 1200)
    assert img.std() > 20  # text, pictures and charts, not a blank page
