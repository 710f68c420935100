"""Encoder interface and registry.

An encoder is an nn.Module mapping normalised images [B,3,H,W] to features [B,D]; methods
read only `feature_dim`, `trainable` and the normalisation (`mean`, `std`) it expects,
so they never care which backbone is underneath.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deepclust.data.views import IMAGENET_MEAN, IMAGENET_STD
from deepclust.registry import Registry


class Encoder(nn.Module):
    """Backbone wrapper: `forward(images [B,3,H,W]) -> features [B, feature_dim]`."""

    def __init__(
        self,
        body: nn.Module,
        feature_dim: int,
        trainable: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.trainable = trainable
        self.mean = mean
        self.std = std
        if not trainable:
            self.body.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


@dataclass(frozen=True)
class EncoderEntry:
    build: Callable[[str, int], Encoder]  # (stem, image_size) -> Encoder
    description: str


ENCODERS: Registry[EncoderEntry] = Registry("encoder")


def build_encoder(name: str, image_size: int, stem: str = "auto") -> Encoder:
    """Build encoder `name` for images of `image_size` px (the stem adapts to the size)."""
    return ENCODERS.get(name).build(stem, image_size)


# Registration side effects: each module registers its encoders.
from deepclust.encoders import pixels as _pixels  # noqa: E402, F401
from deepclust.encoders import resnet as _resnet  # noqa: E402, F401
from deepclust.encoders import small_cnn as _small_cnn  # noqa: E402, F401
