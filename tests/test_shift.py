"""The corruption suite: deterministic, shape- and dtype-preserving, monotone in severity,
with the CIFAR-10-C parameters."""

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from deepclust.evaluation import shift
from deepclust.evaluation.shift import CORRUPTIONS, PARAMS, SEVERITIES, corrupt, mean_abs_diff

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest: one torch thread


@pytest.fixture(scope="module")
def images():
    """32 px images with smooth gradients, edges and texture (like small photos)."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    out = []
    for i in range(24):
        base = torch.stack(
            [
                40 + 5 * xx + 2 * i,
                200 - 4 * yy,
                80 + 60 * torch.sin((xx + yy + i) / 4),
            ]
        )
        square = ((xx - 10 - i % 8).abs() < 6) & ((yy - 16).abs() < 7)
        base = torch.where(square, 255 - base, base)
        base = base + 25 * torch.randn(3, 32, 32, generator=gen)
        out.append(base.clamp(0, 255).round().to(torch.uint8))
    return torch.stack(out)


def test_the_suite_is_the_issue_list():
    for name in (
        "gaussian_noise",
        "shot_noise",
        "gaussian_blur",
        "contrast",
        "brightness",
        "jpeg",
        "pixelate",
    ):
        assert name in CORRUPTIONS
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_shape_dtype(images, name):
    a = corrupt(images, name, 3, seed=7)
    b = corrupt(images, name, 3, seed=7)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, images)
    if name in ("gaussian_noise", "shot_noise"):  # random: another seed, other draws
        assert not torch.equal(a, corrupt(images, name, 3, seed=8))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_moves_monotonically_away(images, name):
    dist = [mean_abs_diff(corrupt(images, name, s, seed=0), images) for s in SEVERITIES]
    assert all(b > a for a, b in itertools.pairwise(dist)), dist
    assert dist[0] > 0


def test_parameters_are_cifar10c():
    # Hendrycks & Dietterich (2019), make_cifar_c.py
    assert PARAMS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert PARAMS["shot_noise"] == (500, 250, 100, 75, 50)
    assert PARAMS["gaussian_blur"] == (0.4, 0.6, 0.7, 0.8, 1.0)
    assert PARAMS["defocus_blur"][3] == (1.0, 0.2)
    assert PARAMS["contrast"] == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert PARAMS["brightness"] == (0.05, 0.1, 0.15, 0.2, 0.3)
    assert PARAMS["jpeg"] == (80, 65, 58, 50, 40)
    assert PARAMS["pixelate"] == (0.95, 0.9, 0.85, 0.75, 0.65)
    doc = shift.__doc__ or ""
    for name, values in PARAMS.items():
        assert name in doc
        if name != "defocus_blur":
            for v in values:
                assert f"{v:g}" in doc, (name, v)


def grey(level, n=8, size=32):
    return torch.full((n, 3, size, size), level, dtype=torch.uint8)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_noise_strengths_follow_the_parameters(severity):
    x = grey(128, n=16)
    std = PARAMS["gaussian_noise"][severity - 1]
    got = corrupt(x, "gaussian_noise", severity).float().std().item()
    assert got == pytest.approx(std * 255, rel=0.05)
    c = PARAMS["shot_noise"][severity - 1]
    expected = np.sqrt(128 / 255 * c) / c * 255  # Poisson(x c) / c has std sqrt(x c) / c
    assert corrupt(x, "shot_noise", severity).float().std().item() == pytest.approx(
        expected, rel=0.05
    )


def test_contrast_brightness_blur_by_hand(images):
    c = PARAMS["contrast"][4]
    out = corrupt(images, "contrast", 5).float()
    x = images.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(out, ((x - mean) * c + mean).clamp(0, 255), atol=0.51)
    # brightness adds c to the HSV value (the max channel), keeping hue and saturation
    pix = torch.tensor([100, 50, 25], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    out = corrupt(pix.contiguous(), "brightness", 5)[0, :, 0, 0].float()
    v = 100 / 255 + 0.3
    assert out.tolist() == pytest.approx([v * 255, v * 255 / 2, v * 255 / 4], abs=0.51)
    assert corrupt(grey(0, 1), "brightness", 2).unique().tolist() == [round(0.1 * 255)]
    # scipy's rule: radius int(4 sigma + 0.5); defocus at (1.5, 0.1) is a 3x3 box
    assert len(shift.gaussian_kernel_1d(1.0)) == 9
    k = shift.defocus_kernel(1.5, 0.1)
    assert k.shape == (3, 3) and torch.allclose(k, torch.full((3, 3), 1 / 9), atol=1e-4)
    assert torch.equal(corrupt(grey(90), "gaussian_blur", 5), grey(90))  # flat stays flat


def test_jpeg_and_pixelate_are_pil(images):
    img = images[3].permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=58)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    got = corrupt(images[3:4], "jpeg", 3)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, ref)
    small = Image.fromarray(img).resize((24, 24), Image.Resampling.BOX)
    ref = np.asarray(small.resize((32, 32), Image.Resampling.BOX))
    got = corrupt(images[3:4], "pixelate", 4)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, ref)


def test_bad_names_and_levels():
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(grey(1), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(grey(1), "jpeg", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(torch.zeros(1, 3, 4, 4), "jpeg", 1)
    assert shift.parse_severities("1-3,5") == (1, 2, 3, 5)
    with pytest.raises(ValueError):
        shift.parse_severities("0,1")
    assert shift.parse_corruptions(["jpeg,contrast"]) == ("jpeg", "contrast")
    assert shift.parse_corruptions(None) == CORRUPTIONS
