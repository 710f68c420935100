"""A corruption suite for distribution-shift evaluation, on uint8 image tensors.

Each corruption maps uint8 [N, 3, H, W] to uint8 [N, 3, H, W] at a severity 1..5 and is
deterministic for a seed: the random draws of chunk i of CHUNK images come from a CPU
generator keyed by (seed, corruption, severity, i), so a result never depends on the
machine, the device or how the caller batches.

Severity parameters follow the CIFAR-10-C recipe of Hendrycks & Dietterich, "Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations" (ICLR 2019): the values
are those of `make_cifar_c.py` in github.com/hendrycks/robustness (ImageNet-C/create_c/),
read for the numbers only; the code here is written from the definitions below.

  name            parameter per severity 1..5            definition (x in [0, 1])
  gaussian_noise  std 0.04 0.06 0.08 0.09 0.10           x + N(0, std^2)
  shot_noise      photons 500 250 100 75 50              Poisson(x * c) / c
  gaussian_blur   sigma 0.4 0.6 0.7 0.8 1.0 px           Gaussian filter, truncated at 4 sigma,
                                                         edges replicated (skimage's default)
  defocus_blur    (radius, alias sigma) (0.3, 0.4)       disk of that radius, anti-aliased by
                  (0.4, 0.5) (0.5, 0.6) (1, 0.2) (1.5, 0.1)  a 3x3 Gaussian, reflected edges
  contrast        factor 0.75 0.5 0.4 0.3 0.15           (x - m) * c + m, m = per-channel mean
  brightness      +0.05 +0.1 +0.15 +0.2 +0.3             HSV value + c (hue and saturation kept)
  jpeg            quality 80 65 58 50 40                 PIL JPEG re-encode
  pixelate        scale 0.95 0.9 0.85 0.75 0.65          PIL BOX resize to int(side * c), back

Both blurs filter through kornia (as the training views' blur does), the Gaussian with
kornia's taps at scipy's truncation (float64 taps: the same uint8 results as before).

Differences from the recipe: results are rounded to the nearest uint8 level (the recipe
truncates with np.uint8, which darkens by half a level on average); random draws come from
torch, not numpy. The parameters are CIFAR's (32 px): blur radii are in pixels, so on larger
images the blurs are milder than ImageNet-C's; pixelate scales with the side, and on images
much smaller than 32 px two neighbouring severities may round to the same size.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import filter2d, filter2d_separable, get_gaussian_kernel1d
from PIL import Image

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
CHUNK = 1024  # images per random stream (keeps memory bounded; part of the determinism key)

# The CIFAR-10-C values (see the module docstring for the source).
PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "jpeg": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}


def _generator(seed: int, name: str, severity: int, chunk: int) -> torch.Generator:
    key = f"deepclust.shift:{int(seed)}:{name}:{int(severity)}:{int(chunk)}".encode()
    gen = torch.Generator(device="cpu")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


# --------------------------------------------------------------------------- float ops
# Each takes float32 [n, 3, H, W] in [0, 1], the severity's parameter and a generator.


def _gaussian_noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=gen)


def _shot_noise(x: torch.Tensor, photons: float, gen: torch.Generator) -> torch.Tensor:
    return torch.poisson(x * photons, generator=gen) / photons


def _filter(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with a 2-d kernel [kh, kw] (odd sides), padding by `mode`."""
    kh, kw = kernel.shape
    if mode == "reflect" and (kh // 2 >= x.shape[-2] or kw // 2 >= x.shape[-1]):
        mode = "replicate"  # reflection needs a pad smaller than the image
    return filter2d(x, kernel[None].to(x.dtype), border_type=mode)


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """kornia's normalised Gaussian taps on -r..r, r = int(truncate * sigma + 0.5) (scipy's
    rule, which the recipe's skimage filter follows)."""
    radius = max(int(truncate * sigma + 0.5), 1)
    return get_gaussian_kernel1d(2 * radius + 1, sigma, dtype=torch.float64).flatten().float()


def _gaussian_blur(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """kornia's separable Gaussian blur, edges replicated."""
    k = gaussian_kernel_1d(sigma)[None].to(x.dtype)
    return filter2d_separable(x, k, k, border_type="replicate")


def defocus_kernel(radius: float, alias_sigma: float) -> torch.Tensor:
    """A disk of `radius` px (pixel centres within it) on a 17x17 grid, normalised, then
    smoothed by a 3x3 Gaussian of `alias_sigma` and cropped to its support."""
    t = torch.arange(-8, 9, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).double()
    disk /= disk.sum()
    g = get_gaussian_kernel1d(3, alias_sigma, dtype=torch.float64).flatten()
    smooth = F.conv2d(disk[None, None], (g[:, None] * g[None, :])[None, None], padding=1)[0, 0]
    rows = torch.nonzero(smooth.abs().sum(1) > 1e-12).flatten()
    r = int(max(8 - int(rows.min()), int(rows.max()) - 8))
    return smooth[8 - r : 9 + r, 8 - r : 9 + r].float()


def _defocus_blur(x: torch.Tensor, p: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    return _filter(x, defocus_kernel(*p), "reflect")


def _contrast(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def _brightness(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    # For fixed hue and saturation, RGB is proportional to V = max(R, G, B): raising V to
    # min(V + c, 1) scales the pixel; a black pixel (V = 0, S = 0) becomes grey c.
    v = x.amax(dim=1, keepdim=True)
    new_v = (v + c).clamp(max=1.0)
    scale = torch.where(v > 0, new_v / v.clamp_min(1e-12), torch.zeros_like(v))
    return torch.where(v > 0, x * scale, new_v.expand_as(x))


_FLOAT_OPS: dict[str, Callable[[torch.Tensor, object, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,  # type: ignore[dict-item]
    "shot_noise": _shot_noise,  # type: ignore[dict-item]
    "gaussian_blur": _gaussian_blur,  # type: ignore[dict-item]
    "defocus_blur": _defocus_blur,  # type: ignore[dict-item]
    "contrast": _contrast,  # type: ignore[dict-item]
    "brightness": _brightness,  # type: ignore[dict-item]
}


# --------------------------------------------------------------------------- PIL ops
# Each takes uint8 HWC numpy and returns uint8 HWC numpy.


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


def _pixelate(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    small = (max(int(w * scale), 1), max(int(h * scale), 1))
    pil = Image.fromarray(img).resize(small, Image.Resampling.BOX)
    return np.asarray(pil.resize((w, h), Image.Resampling.BOX))


_PIL_OPS: dict[str, Callable[[np.ndarray, object], np.ndarray]] = {
    "jpeg": _jpeg,  # type: ignore[dict-item]
    "pixelate": _pixelate,  # type: ignore[dict-item]
}

CORRUPTIONS: tuple[str, ...] = tuple(PARAMS)


def check_corruption(name: str, severity: int) -> None:
    """ValueError naming the options for an unknown corruption or severity."""
    if name not in PARAMS:
        raise ValueError(f"unknown corruption '{name}'; choose from {', '.join(CORRUPTIONS)}.")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of 1, 2, 3, 4, 5; got {severity!r}.")


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> corrupted uint8 [N, 3, H, W] (CPU), deterministic for `seed`."""
    check_corruption(name, severity)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    param = PARAMS[name][severity - 1]
    images = images.cpu()
    out = torch.empty_like(images)
    for chunk, start in enumerate(range(0, images.shape[0], CHUNK)):
        part = images[start : start + CHUNK]
        if name in _PIL_OPS:
            op = _PIL_OPS[name]
            hwc = part.permute(0, 2, 3, 1).numpy()
            done = np.stack([op(np.ascontiguousarray(img), param) for img in hwc])
            out[start : start + CHUNK] = torch.from_numpy(done).permute(0, 3, 1, 2)
        else:
            gen = _generator(seed, name, severity, chunk)
            x = _FLOAT_OPS[name](part.float() / 255.0, param, gen)
            out[start : start + CHUNK] = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return out


def parse_severities(text: str) -> tuple[int, ...]:
    """'1,2,3' or '1-5' -> (1, 2, 3); ValueError for anything outside 1..5."""
    levels: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-", 1))
            levels += list(range(lo, hi + 1))
        else:
            levels.append(int(part))
    bad = [s for s in levels if s not in SEVERITIES]
    if bad or not levels:
        raise ValueError(f"severities must be in 1..5 (e.g. 1,2,3,4,5 or 1-5); got '{text}'.")
    return tuple(sorted(set(levels)))


def parse_corruptions(names: list[str] | None) -> tuple[str, ...]:
    """None or ['all'] -> every corruption; accepts comma-separated lists."""
    if not names:
        return CORRUPTIONS
    flat = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if flat == ["all"]:
        return CORRUPTIONS
    for n in flat:
        check_corruption(n, 1)
    return tuple(dict.fromkeys(flat))


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two uint8 tensors, in grey levels."""
    return float((a.float() - b.float()).abs().mean())


__all__ = [
    "CORRUPTIONS",
    "PARAMS",
    "SEVERITIES",
    "corrupt",
    "defocus_kernel",
    "gaussian_kernel_1d",
    "mean_abs_diff",
    "parse_corruptions",
    "parse_severities",
]
