"""A synthetic vision-language world for SIC tests: class directions shared by images and nouns.

Images of class c have features normalize(d_c + noise); every noun is
normalize(a_common + own direction), as CLIP's text embeddings share a large common part:
3 nouns per class lie near d_c, distractor nouns point anywhere, and generic nouns lie
almost on a_common (what the uniqueness filter must drop). Images are tiny PNGs whose first
pixel encodes the sample index, and the `world:` encoder family looks their feature up, so
the whole engine (image folder, feature cache, training loop) runs on the world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deepclust.encoders.base import FAMILIES, Encoder, register_family
from deepclust.encoders.vision_language import FunctionText

TEMPLATE = "a photo of a {}"


def make_world(
    k: int = 5,
    per_class: int = 60,
    dim: int = 32,
    noise: float = 0.9,
    distractors: int = 300,
    generic: int = 5,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """-> features [N, D] (unit), labels [N], {noun: unit embedding}, class names."""
    g = torch.Generator().manual_seed(seed)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)

    dirs = unit(torch.randn(k, dim, generator=g))
    labels = torch.arange(k).repeat_interleave(per_class)
    feats = unit(dirs[labels] + noise * torch.randn(len(labels), dim, generator=g) / dim**0.5)
    common = unit(torch.randn(dim, generator=g))
    names = [f"class{c}" for c in range(k)]
    nouns: dict[str, torch.Tensor] = {}
    for c in range(k):
        for j in range(3):
            own = dirs[c] + 0.3 * torch.randn(dim, generator=g) / dim**0.5
            nouns[f"{names[c]} noun{j}"] = unit(0.5 * common + own)
    for j in range(distractors):
        nouns[f"other{j}"] = unit(0.5 * common + unit(torch.randn(dim, generator=g)))
    for j in range(generic):
        nouns[f"generic{j}"] = unit(common + 0.05 * torch.randn(dim, generator=g) / dim**0.5)
    return feats, labels, nouns, names


def write_images(root: Path, labels: torch.Tensor, names: list[str]) -> Path:
    """One 2x2 PNG per sample under root/<class name>/, its index coded in the first pixel."""
    for i, c in enumerate(labels.tolist()):
        folder = root / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        px = np.zeros((2, 2, 3), np.uint8)
        px[0, 0] = (i % 256, i // 256, 0)
        Image.fromarray(px).save(folder / f"{i:05d}.png")
    return root


_WORLDS: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor], bool]] = {}


class _Lookup(torch.nn.Module):
    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x[:, 0, 0, 0] * 255).round().long() + 256 * (x[:, 1, 0, 0] * 255).round().long()
        return self.table[idx.clamp(0, len(self.table) - 1)]


def _build(model: str, req) -> Encoder:
    table, nouns, with_text = _WORLDS[model]
    enc = Encoder(
        _Lookup(table.clone()),
        table.shape[1],
        trainable=False,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        identity=f"world:{model}",
    )
    if with_text:
        prefix = TEMPLATE.replace("{}", "")
        enc.text_encoder = FunctionText(
            lambda texts: torch.stack([nouns[t.removeprefix(prefix)] for t in texts]),
            f"world-text:{model}",
        )
    return enc


def register_world(
    name: str, features: torch.Tensor, nouns: dict[str, torch.Tensor], with_text: bool = True
) -> str:
    """Make `world:<name>` an encoder (image lookup + text tower unless with_text is False)."""
    if "world" not in FAMILIES:
        register_family("world", "test-only synthetic vision-language world")(_build)
    _WORLDS[name] = (features, nouns, with_text)
    return f"world:{name}"
