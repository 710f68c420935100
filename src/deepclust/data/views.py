"""Declarative multi-crop views, generated batch-wise with per-sample randomness.

One implementation serves both paths: DataLoader workers call it on CPU batches, and the
engine calls it on device-resident batches (GPU). Randomness comes from an explicit CPU
torch.Generator (all parameters are drawn on the CPU, then the small parameter tensors move
to the images' device), so a (seed, epoch, batch) triple always gives the same views,
whichever path or worker made them (this is what makes --resume exact); see batch_generator.

Per crop the pipeline follows torchvision's per-image recipe
RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter) -> RandomGrayscale ->
RandomApply(GaussianBlur) -> ToTensor -> Normalize, vectorised over the batch (no Python
loops over samples). Differences from torchvision's (PIL) pipeline:

- Random streams: the same distributions, but not the same draws as torchvision for a seed.
  Every parameter is drawn whatever the probabilities are, so e.g. the crop boxes depend
  only on the seed, batch and image size.
- Crop + resize is torchvision's tensor resized_crop(antialias=True) (crop, then bilinear
  resize with the PIL-style triangle filter widened when downscaling, so no aliasing),
  computed for all samples at once as per-sample separable resampling matrices (two
  batched matmuls); the horizontal flip is folded into the horizontal matrix. Matches
  torchvision's tensor path to float precision; PIL works on uint8 and rounds.
- Everything is computed in float32 in [0, 1]; PIL rounds to uint8 after every op.
- ColorJitter: per-sample factors and per-sample random op order, like torchvision; hue is
  rotated in float HSV as torchvision's tensor path does (PIL's uint8 HSV differs slightly).
  Brightness/contrast/saturation and grayscale use luma 0.299 R + 0.587 G + 0.114 B
  (torchvision's tensor path uses 0.2989 for R). Contrast blends with the mean luma.
- Per-sample choices (which samples jitter/grey/blur, the jitter order) become index
  lists computed on the CPU from the CPU parameters, so each op runs only on the samples
  that use it. On CUDA every host->device copy goes through pinned memory without
  blocking (engine.transfer.to_device) and constants are cached per device, so a call
  never waits for the GPU: the host can queue the next step while the current one runs.
- Gaussian blur: kornia's gaussian_blur2d with reflect padding, kernel size odd about 10%
  of the crop size (at least 3), sigma uniform in blur_sigma per sample.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass, field, replace

import torch
import torchvision.transforms.functional as TF
from kornia.filters import gaussian_blur2d

from deepclust.engine.transfer import to_device
from deepclust.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor, made once per device (creating it on CUDA syncs the host)."""
    return torch.tensor(values, dtype=dtype).to(device)


@dataclass(frozen=True)
class CropSpec:
    """`count` crops of `size` px with the same augmentation recipe.

    scale/ratio: RandomResizedCrop area fraction and aspect ratio ranges.
    jitter: ColorJitter strengths (brightness, contrast, saturation, hue), applied with jitter_p.
    blur_p / blur_sigma: Gaussian blur probability and sigma range (kernel ~ 10% of size, odd).
    """

    count: int
    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)


@dataclass(frozen=True)
class ViewSpec:
    """The views a method asks for: crop groups in order, then normalisation."""

    crops: tuple[CropSpec, ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # frozen features (engine/frozen.py): the first `anchors` views are the sample's own
    # feature, never a neighbour's (SCAN's and TEMI's anchor of a neighbour pair)
    anchors: int = 0

    @property
    def num_views(self) -> int:
        return sum(c.count for c in self.crops)


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation preprocessing: the stored image at full size, normalised only.

    size: resize the shorter side to this and centre-crop a square (pretrained encoders).
    center_crop: then keep only the centre center_crop x center_crop pixels (e.g. ImageNet
    subsets stored at 256 px and evaluated on their centre 160 px, as ConCURL does).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size: int | None = field(default=None)
    center_crop: int | None = None


def with_eval_resize(transform: EvalTransform, size: int | None, trainable: bool) -> EvalTransform:
    """transform, resizing evaluation images to `size` (None: unchanged; trained encoders only).

    Crops taken from larger stored images (closer to the originals) are scored at the
    crop size, as DigPro's authors score resized originals.
    """
    if size is None:
        return transform
    if not trainable:
        raise ConfigError(
            "data.eval_resize applies to trained encoders; a frozen encoder evaluates on its "
            "own preprocessing (encoder.input_size). Remove data.eval_resize."
        )
    return replace(transform, size=size)


# --------------------------------------------------------------------------- crop boxes

_CROP_TRIES = 10


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """RandomResizedCrop boxes for `n` samples at once -> int64 [n, 4] (top, left, h, w).

    torchvision's algorithm, vectorised: each sample draws 10 candidates (area fraction
    uniform in `scale`, aspect ratio log-uniform in `ratio`, w = round(sqrt(area * ratio)),
    h = round(sqrt(area / ratio))) and keeps the first one that fits, with a uniform random
    top/left; samples with no fitting candidate get torchvision's centre-crop fallback.
    All draws come from `generator` (CPU) in float64.
    """
    kw = {"generator": generator, "dtype": torch.float64}
    u_area = torch.rand(n, _CROP_TRIES, **kw)
    u_ratio = torch.rand(n, _CROP_TRIES, **kw)
    u_top = torch.rand(n, **kw)
    u_left = torch.rand(n, **kw)

    target = float(height * width) * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)

    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try (0 if none)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    top = torch.floor(u_top * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(u_left * (width - w + 1)).clamp_(max=width - w)

    failed = ~valid.any(dim=1)
    if bool(failed.any()):
        fh, fw = _fallback_crop(height, width, ratio)
        h[failed], w[failed] = float(fh), float(fw)
        top[failed], left[failed] = float((height - fh) // 2), float((width - fw) // 2)
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback: the largest centred crop with the aspect ratio clamped to `ratio`."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width
    if in_ratio > max(ratio):
        return height, round(height * max(ratio))
    return height, width


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ViewParams:
    """Per-sample random parameters of one crop group (CPU tensors, n = count * B).

    Row r is view r // B of image r % B.
    boxes: int64 [n, 4] (top, left, h, w); flip/jitter/gray/blur: bool [n] (op applied);
    factors: float32 [n, 4] (brightness, contrast, saturation factors, hue shift in turns);
    order: int64 [n, 4], order[r, t] = jitter op (index into factors) applied at step t;
    sigma: float32 [n] blur sigma.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor

    def take(self, rows: torch.Tensor) -> ViewParams:
        """The parameters of the given rows only (same field order)."""
        return ViewParams(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def sample_view_params(
    crop: CropSpec, n: int, height: int, width: int, generator: torch.Generator
) -> ViewParams:
    """Draw all random parameters of `n` crops of an [height, width] image from `generator`.

    Every draw is made whatever the probabilities/strengths are, so the stream layout (and
    thus e.g. the crop boxes) depends only on the seed, n and the image size.
    """
    if generator.device.type != "cpu":
        raise ValueError(f"views need a CPU torch.Generator, got one on {generator.device}")
    kw = {"generator": generator, "dtype": torch.float64}
    boxes = sample_crop_boxes(n, height, width, crop.scale, crop.ratio, generator)
    flip = torch.rand(n, **kw) < crop.flip_p
    jitter = torch.rand(n, **kw) < crop.jitter_p
    u_fac = torch.rand(n, 4, **kw)
    order = torch.argsort(torch.rand(n, 4, **kw), dim=1)  # uniform random permutation per row
    gray = torch.rand(n, **kw) < crop.grayscale_p
    blur = torch.rand(n, **kw) < crop.blur_p
    u_sigma = torch.rand(n, **kw)

    b, c, s, hue = crop.jitter
    lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue], dtype=u_fac.dtype)
    hi = torch.tensor([1 + b, 1 + c, 1 + s, hue], dtype=u_fac.dtype)
    factors = (lo + (hi - lo) * u_fac).to(torch.float32)
    s_lo, s_hi = crop.blur_sigma
    sigma = (s_lo + (s_hi - s_lo) * u_sigma).to(torch.float32)
    return ViewParams(boxes, flip, jitter, factors, order, gray, blur, sigma)


# --------------------------------------------------------------------------- colour ops

_LUMA = (0.299, 0.587, 0.114)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma: float [N, 3, H, W] -> [N, 1, H, W]."""
    r, g, b = x.unbind(-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1], factor [N] -> x * factor, clamped."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend [N, 3, H, W] with each image's mean luma by factor [N], clamped."""
    return _blend(x, rgb_to_luma(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend [N, 3, H, W] with its luma image by factor [N], clamped."""
    return _blend(x, rgb_to_luma(x), factor)


_HUE_OFFSETS = (5.0, 3.0, 1.0)  # HSV -> RGB phase of r, g, b in sextants


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of [N, 3, H, W] in [0, 1] by shift [N] turns (in [-0.5, 0.5]).

    Value (max) and max - min are kept, so only the hue changes; grey pixels stay unchanged.
    """
    r, g, b = x.unbind(-3)
    maxc = x.amax(dim=-3)
    delta = maxc - x.amin(dim=-3)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(
        maxc == r,
        (g - b) / safe,  # in [-1, 1]: the remainder below wraps it
        torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )  # hue in sextants, modulo 6
    h = h + 6.0 * shift.view(-1, 1, 1)
    offsets = _constant(_HUE_OFFSETS, x.dtype, x.device).view(1, 3, 1, 1)
    k = torch.remainder(offsets + h.unsqueeze(-3), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return (maxc.unsqueeze(-3) - delta.unsqueeze(-3) * ramp).clamp_(0, 1)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _rows(mask: torch.Tensor) -> torch.Tensor | None:
    """Indices of the True entries of a bool [n] mask, or None when there are none."""
    idx = mask.nonzero().squeeze(1)
    return idx if idx.numel() else None


def _jitter_(
    x: torch.Tensor,
    factors: torch.Tensor,
    order: torch.Tensor,
    mask: torch.Tensor,
    ops: tuple[int, ...],
) -> torch.Tensor:
    """In-place per-sample ColorJitter (see apply_color_jitter); index math on mask's device."""
    for t in range(4):
        for k in ops:
            idx = _rows(mask & (order[:, t] == k))
            if idx is None:
                continue
            dev_idx = to_device(idx, x.device)
            x[dev_idx] = _JITTER_OPS[k](x[dev_idx], to_device(factors[idx, k], x.device))
    return x


def apply_color_jitter(
    x: torch.Tensor,
    factors: torch.Tensor,
    order: torch.Tensor,
    mask: torch.Tensor | None = None,
    ops: tuple[int, ...] = (0, 1, 2, 3),
) -> torch.Tensor:
    """ColorJitter with per-sample factors and per-sample op order; returns a new tensor.

    x: float [N, 3, H, W] in [0, 1]; factors: [N, 4] (brightness, contrast, saturation,
    hue shift); order: int [N, 4], a permutation of 0..3 per sample; mask: bool [N], the
    samples to change (default all); ops: the enabled ops (others are skipped, as torchvision
    skips ops with strength 0). factors/order/mask live on one device (CPU avoids syncs).
    Step t applies op order[:, t] to the rows that chose it, so the work is one op
    evaluation per enabled op and jittered sample, not four.
    """
    if mask is None:
        mask = torch.ones(x.shape[0], dtype=torch.bool, device=order.device)
    return _jitter_(x.clone(), factors, order, mask, ops)


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel size of about 10% of the crop size, at least 3."""
    k = round(0.1 * size)
    return max(3, k if k % 2 else k + 1)


# --------------------------------------------------------------------------- rendering


def resize_weights(
    start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, flip: torch.Tensor
) -> torch.Tensor:
    """Per-sample 1-D crop+resize matrices: [n] crop start/length -> float32 [n, out_size, in_size].

    Row i holds the weights of output pixel i: the antialiased bilinear (triangle) filter of
    torchvision's tensor resize (antialias=True; the same filter as PIL's bilinear), centred
    at crop coordinate (i + 0.5) * length / out_size, widened by the scale factor when
    downscaling, restricted to the crop and normalised. For upscaling this is plain bilinear
    interpolation (align_corners=False, edge-clamped to the crop). flip [n] bool mirrors the
    output (horizontal flip folded into the resampling). Built on start's device.
    """
    dtype = torch.float32
    scale = (length.to(dtype) / out_size).view(-1, 1, 1)
    i = torch.arange(out_size, device=start.device, dtype=dtype).view(1, -1, 1)
    i = torch.where(flip.view(-1, 1, 1), out_size - 1 - i, i)
    center = scale * (i + 0.5)
    support = scale.clamp(min=1.0)
    j = torch.arange(in_size, device=start.device, dtype=dtype).view(1, 1, -1)
    j = j - start.to(dtype).view(-1, 1, 1)  # input pixel index in crop coordinates
    weight = (1.0 - ((j + 0.5 - center) / support).abs()).clamp_(min=0.0)
    weight = weight * ((j >= 0) & (j < length.to(dtype).view(-1, 1, 1)))
    return weight / weight.sum(dim=-1, keepdim=True)


def render_views(images: torch.Tensor, params: ViewParams, crop: CropSpec) -> torch.Tensor:
    """Apply one crop group's parameters: float [B, 3, H, W] in [0, 1] -> [n, 3, S, S] in [0, 1].

    Row r of the result is a crop of image r % B (see ViewParams). Not normalised.
    """
    device = images.device
    n, size = params.boxes.shape[0], crop.size
    batch, _, height, width = images.shape
    if batch == 0 or n % batch:
        raise ValueError(f"{n} parameter rows do not split into views of a batch of {batch}")
    boxes = to_device(params.boxes, device)
    flip = to_device(params.flip, device)
    no_flip = torch.zeros_like(flip)
    # separable crop + resize (+ flip) as two batched matmuls: out = Wy @ image @ Wx^T
    wy = resize_weights(boxes[:, 0], boxes[:, 2], height, size, no_flip)  # [n, S, H]
    wx = resize_weights(boxes[:, 1], boxes[:, 3], width, size, flip)  # [n, S, W]
    src = images.repeat(n // batch, 1, 1, 1)  # row r -> image r % B
    out = torch.matmul(wy.unsqueeze(1), src)  # [n, 3, S, W]
    out = torch.matmul(out, wx.transpose(1, 2).unsqueeze(1)).clamp_(0, 1)  # [n, 3, S, S]

    ops = tuple(k for k, strength in enumerate(crop.jitter) if strength > 0)
    if ops and crop.jitter_p > 0:
        _jitter_(out, params.factors, params.order, params.jitter, ops)

    idx = _rows(params.gray)
    if idx is not None:
        idx = to_device(idx, device)
        out[idx] = rgb_to_luma(out[idx]).expand(-1, 3, -1, -1)

    sel = _rows(params.blur)
    if sel is not None:
        k = blur_kernel_size(size)
        sigma = to_device(params.sigma[sel], device).unsqueeze(1).expand(-1, 2).contiguous()
        idx = to_device(sel, device)
        out[idx] = gaussian_blur2d(out[idx], (k, k), sigma, border_type="reflect")
    return out


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = _constant(tuple(mean), x.dtype, x.device).view(1, 3, 1, 1)
    s = _constant(tuple(std), x.dtype, x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images of shape [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )


class ViewGenerator:
    """Batched multi-crop views with per-sample random parameters.

    Call with uint8 [B, 3, H, W] images on any device and a CPU torch.Generator; returns
    spec.num_views float32 tensors [B, 3, size, size] on the images' device, normalised,
    in the order of spec.crops (all crops of group 0, then group 1, ...).
    """

    def __init__(self, spec: ViewSpec) -> None:
        if not spec.crops:
            raise ValueError("ViewSpec needs at least one CropSpec")
        self.spec = spec

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        offset: int = 0,
        total: int | None = None,
    ) -> list[torch.Tensor]:
        """images are samples offset..offset+B-1 of a global batch of `total` (default B).

        Parameters are drawn for the whole global batch and this slice's rows are used, so
        a sample's views do not depend on how the batch is split over processes.
        """
        _check_images(images)
        batch, _, height, width = images.shape
        total = batch if total is None else total
        if offset < 0 or offset + batch > total:
            raise ValueError(
                f"slice {offset}..{offset + batch} is outside a global batch of {total}"
            )
        x = images.to(torch.float32).div_(255.0)
        views: list[torch.Tensor] = []
        with torch.no_grad():
            for crop in self.spec.crops:
                params = sample_view_params(crop, crop.count * total, height, width, generator)
                if total != batch:
                    rows = (
                        torch.arange(crop.count)[:, None] * total + offset + torch.arange(batch)
                    ).flatten()
                    params = params.take(rows)
                if batch == 0:
                    empty = x.new_empty(0, 3, crop.size, crop.size)
                    views.extend(empty for _ in range(crop.count))
                    continue
                out = _normalise(render_views(x, params, crop), self.spec.mean, self.spec.std)
                views.extend(out.split(batch))
        return views

    def __repr__(self) -> str:
        return f"ViewGenerator({self.spec!r})"


def eval_images(images: torch.Tensor, transform: EvalTransform) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 [B, 3, H', W'] normalised.

    With transform.size set: resize the shorter side to size (bilinear, antialiased), then
    centre-crop size x size (H' = W' = size); otherwise the full image (H' = H, W' = W).
    With transform.center_crop set: then the centre center_crop x center_crop pixels.
    """
    _check_images(images)
    x = images.to(torch.float32).div_(255.0)
    size = transform.size
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = TF.resize(x, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        x = TF.center_crop(x, [size, size])
    crop = transform.center_crop
    if crop is not None and tuple(x.shape[-2:]) != (crop, crop):
        if min(x.shape[-2:]) < crop:
            raise ValueError(f"center_crop {crop} is larger than the {tuple(x.shape[-2:])} images.")
        x = TF.center_crop(x, [crop, crop])
    return _normalise(x.contiguous(), transform.mean, transform.std)


def batch_generator(
    seed: int, epoch: int, batch_index: int, rank: int = 0, stream: str = "views"
) -> torch.Generator:
    """A CPU generator seeded from a stable hash of (stream, seed, epoch, batch_index, rank).

    Stable across processes, platforms and Python hash randomisation. `stream` separates the
    randomness of independent batch streams (e.g. a method's auxiliary batches).
    """
    key = f"deepclust.{stream}:{int(seed)}:{int(epoch)}:{int(batch_index)}:{int(rank)}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen
