"""The batched (GPU-style) views against torchvision's per-image pipeline, end to end.

tests/test_views.py checks the pieces (crop boxes against RandomResizedCrop.get_params,
each colour op against torchvision's, frequencies of flip / jitter / grey). Here whole
pipelines are compared by the statistics of the views they output: the same images go
through ViewGenerator (all samples at once) and through torchvision.transforms.v2 image by
image, and two-sample tests compare what comes out. Each test also runs a pipeline with
one setting changed and checks that the same statistics tell it apart, so they can fail.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from deepclust.data.views import CropSpec, ViewGenerator, ViewSpec

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # outputs stay in [0, 1]
N = 800  # views per pipeline
SAME, DIFFERENT = 0.01, 1e-4  # KS p-value bounds (fixed seeds: the tests are deterministic)


def batched(images: torch.Tensor, crop: CropSpec, seed: int) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> views [B, 3, S, S] in [0, 1] from one ViewGenerator call."""
    gen = torch.Generator().manual_seed(seed)
    return ViewGenerator(ViewSpec(crops=(crop,), **RAW))(images, gen)[0]


def per_image(images: torch.Tensor, crop: CropSpec, seed: int) -> torch.Tensor:
    """The same recipe as torchvision's v2 transforms, one image at a time."""
    b, c, s, h = crop.jitter
    pipeline = v2.Compose(
        [
            v2.RandomResizedCrop(crop.size, crop.scale, crop.ratio, antialias=True),
            v2.RandomHorizontalFlip(crop.flip_p),
            v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=crop.jitter_p),
            v2.RandomGrayscale(crop.grayscale_p),
        ]
    )
    torch.manual_seed(seed)
    x = images.float() / 255
    return torch.stack([pipeline(img) for img in x])


def coordinate_images(n: int, size: int = 48) -> torch.Tensor:
    """uint8 [n, 3, size, size]: red = column, green = row (ramps 0..255), blue = 128."""
    ramp = torch.linspace(0, 255, size)
    img = torch.stack(
        [ramp.expand(size, size), ramp[:, None].expand(size, size), torch.full((size, size), 128.0)]
    )
    return img.round().to(torch.uint8).expand(n, -1, -1, -1).contiguous()


def crop_geometry(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Crop width, height (fractions of the image), area and flip read off coordinate views.

    A resampled linear ramp stays linear, so the red (green) difference between the last
    and first output column (row) is the crop's width (height) times (S - 1) / S.
    """
    red, green = views[:, 0], views[:, 1]
    dx = (red[:, :, -1] - red[:, :, 0]).mean(1)
    dy = (green[:, -1, :] - green[:, 0, :]).mean(1)
    scale = views.shape[-1] / (views.shape[-1] - 1)
    w, h = dx.abs() * scale, dy * scale
    return {"width": w, "height": h, "area": w * h, "aspect": w / h, "flipped": dx < 0}


def colour_stats(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per view of a flat-colour image: HSV value, chroma (max - min), hue (turns), grey."""
    rgb = views.mean(dim=(-2, -1))  # the views of flat images are flat
    r, g, b = rgb.unbind(1)
    hi, lo = rgb.amax(1), rgb.amin(1)
    hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) / (2 * math.pi)
    return {"value": hi, "chroma": hi - lo, "hue": hue, "grey": (hi - lo) < 1e-5}


def flat_colour_images(n: int, seed: int = 0, size: int = 24) -> torch.Tensor:
    """uint8 [n, 3, size, size]: one random saturated-ish colour per image."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.randint(30, 226, (n, 3), generator=gen, dtype=torch.uint8)
    return colours[:, :, None, None].expand(-1, -1, size, size).contiguous()


def two_proportion_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """|z| of the difference between the True-rates of two bool samples."""
    p1, p2 = a.float().mean().item(), b.float().mean().item()
    pooled = (p1 * len(a) + p2 * len(b)) / (len(a) + len(b))
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)), 1e-12))
    return abs(p1 - p2) / se


def change(after: torch.Tensor, before: torch.Tensor, circular: bool) -> torch.Tensor:
    """after - before, wrapped to [-0.5, 0.5) for hues (turns)."""
    d = after - before
    return torch.remainder(d + 0.5, 1.0) - 0.5 if circular else d


def ks(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(ks_2samp(a.numpy(), b.numpy()).pvalue)


PLAIN = dict(jitter_p=0.0, grayscale_p=0.0)


def test_crop_scale_aspect_and_flip_match_torchvision() -> None:
    images = coordinate_images(N)
    crop = CropSpec(count=1, size=16, scale=(0.08, 1.0), flip_p=0.5, **PLAIN)
    ours = crop_geometry(batched(images, crop, seed=1))
    ref = crop_geometry(per_image(images, crop, seed=2))
    for key in ("width", "height", "area", "aspect"):
        assert ks(ours[key], ref[key]) > SAME, key
    assert two_proportion_z(ours["flipped"], ref["flipped"]) < 3
    assert abs(ours["area"].mean().item() - 0.54) < 0.05  # E[uniform(0.08, 1)], few rejections

    narrower = CropSpec(count=1, size=16, scale=(0.2, 1.0), flip_p=0.5, **PLAIN)
    assert ks(crop_geometry(batched(images, narrower, seed=1))["area"], ref["area"]) < DIFFERENT


def jitter_changes(views: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """How much each view's value, chroma and hue moved from its flat source colour."""
    after, before = colour_stats(views), colour_stats(images.float() / 255)
    out = {k: change(after[k], before[k], circular=k == "hue") for k in ("value", "chroma", "hue")}
    return {**out, "grey": after["grey"]}


def test_colour_jitter_and_grayscale_match_torchvision() -> None:
    images = flat_colour_images(N)
    crop = CropSpec(
        count=1,
        size=12,
        scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        grayscale_p=0.2,
    )
    ours = jitter_changes(batched(images, crop, seed=3), images)
    ref = jitter_changes(per_image(images, crop, seed=4), images)
    for key in ("value", "chroma", "hue"):
        assert ks(ours[key], ref[key]) > SAME, key
    assert two_proportion_z(ours["grey"], ref["grey"]) < 3
    assert abs(ours["grey"].float().mean().item() - 0.2) < 0.04

    # the same statistics notice a weaker jitter (brightness 0.2, hue 0.05)
    weaker = CropSpec(
        count=1,
        size=12,
        scale=(0.2, 1.0),
        jitter=(0.2, 0.4, 0.4, 0.05),
        jitter_p=0.8,
        grayscale_p=0.2,
    )
    other = jitter_changes(batched(images, weaker, seed=3), images)
    for key in ("value", "hue"):
        assert ks(other[key], ref[key]) < DIFFERENT, key


def test_each_jitter_range_matches_torchvision() -> None:
    """One op at a time (always applied): its effect on flat colours has torchvision's spread."""
    images = flat_colour_images(N // 2, seed=1)
    cases = {
        "brightness": ((0.4, 0.0, 0.0, 0.0), "value"),
        "contrast": ((0.0, 0.4, 0.0, 0.0), "chroma"),
        "saturation": ((0.0, 0.0, 0.4, 0.0), "chroma"),
        "hue": ((0.0, 0.0, 0.0, 0.1), "hue"),
    }
    for name, (jitter, key) in cases.items():
        crop = CropSpec(count=1, size=8, jitter=jitter, jitter_p=1.0, grayscale_p=0.0, flip_p=0.0)
        ours, ref = batched(images, crop, seed=5), per_image(images, crop, seed=6)
        source = colour_stats(images.float() / 255)[key]
        a = change(colour_stats(ours)[key], source, circular=key == "hue")
        b = change(colour_stats(ref)[key], source, circular=key == "hue")
        assert ks(a, b) > SAME, name
        assert b.std() > 1e-3, name  # the op did change the views
