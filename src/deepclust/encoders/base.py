"""Encoder interface and registry.

An encoder is an nn.Module mapping normalised images [B,3,H,W] to features [B,D]; methods
read only `feature_dim`, `trainable` and the preprocessing it expects (`mean`, `std`,
`input_size`), so they never care which backbone is underneath.

Names are either registered ones (`resnet18`, `small_cnn`, `efficientnet_lite0`, ...) or
'<family>:<model>' for whole model zoos (`timm:vit_small_patch16_224`, `open_clip:ViT-B-32`,
`hf:openai/clip-vit-base-patch32`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deepclust.data.views import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from deepclust.errors import ConfigError, DeepclustError, unknown_name
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
        input_size: int | None = None,
        identity: str = "",
        class_head: nn.Linear | None = None,
    ) -> None:
        """input_size: resolution the encoder expects (images are resized to it; None = as stored).
        identity: names the weights for feature caches (e.g. 'timm:resnet50@/path/w.safetensors').
        class_head: the pretrained ImageNet-1k classifier on the features (frozen; logits [B,1000]
        = class_head(features [B, feature_dim])), which names clusters (cluster/naming.py)."""
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.trainable = trainable
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.input_size = input_size
        self.identity = identity
        self.class_head = class_head.requires_grad_(False) if class_head is not None else None
        if not trainable:
            self.body.requires_grad_(False)
            self.body.eval()

    def train(self, mode: bool = True) -> Encoder:
        """A frozen encoder stays in eval mode (BatchNorm statistics and dropout fixed)."""
        super().train(mode and self.trainable)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def eval_transform(self) -> EvalTransform:
        """The preprocessing this encoder expects for evaluation images."""
        return EvalTransform(mean=self.mean, std=self.std, size=self.input_size)  # type: ignore[arg-type]


def set_normalisation(
    encoder: Encoder,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
) -> Encoder:
    """Give a from-scratch encoder the configured input mean/std (None keeps its own).

    Pretrained encoders keep the statistics their weights were trained with.
    """
    if mean is None and std is None:
        return encoder
    if not encoder.trainable:
        raise ConfigError(
            f"encoder.mean / encoder.std apply to encoders trained from scratch; "
            f"'{encoder.identity or 'this encoder'}' is pretrained and keeps its own "
            "normalisation. Remove encoder.mean and encoder.std."
        )
    if mean is not None:
        encoder.mean = tuple(float(m) for m in mean)
    if std is not None:
        encoder.std = tuple(float(s) for s in std)
    return encoder


@dataclass(frozen=True)
class EncoderRequest:
    """What a builder gets: the stored image size and the user's encoder settings."""

    image_size: int
    stem: str = "auto"
    weights: str | None = None  # local file / folder, or a hub tag (pretrained encoders only)
    input_size: int | None = None  # resize images to this (pretrained encoders only)


@dataclass(frozen=True)
class EncoderEntry:
    build: Callable[[EncoderRequest], Encoder]
    description: str
    pretrained: bool = False  # takes `weights` and `input_size`, frozen


ENCODERS: Registry[EncoderEntry] = Registry("encoder")
FAMILIES: Registry[Callable[[str, EncoderRequest], Encoder]] = Registry("encoder family")
FAMILY_HELP: dict[str, str] = {}


def register_family(prefix: str, description: str) -> Callable:
    """Register a builder for '<prefix>:<model>' names: builder(model, request) -> Encoder."""
    FAMILY_HELP[prefix] = description
    return FAMILIES.register(prefix)


def check_encoder_name(name: str) -> None:
    """Raise a clear error for an unknown encoder name, without building anything."""
    if "+" in name:  # joined frozen encoders (encoders/joined.py)
        for part in name.split("+"):
            check_encoder_name(part)
        return
    if ":" in name:
        prefix, model = name.split(":", 1)
        FAMILIES.get(prefix)
        if not model:
            raise DeepclustError(f"encoder '{name}' names no model: write {prefix}:<model name>.")
    elif name not in ENCODERS:
        families = ", ".join(f"{p}:<model>" for p in FAMILIES.names())
        raise DeepclustError(
            f"{unknown_name('encoder', name, ENCODERS.names())[:-1]}; or a model zoo name: "
            f"{families} (deepclust list encoders)."
        )


def build_encoder(
    name: str,
    image_size: int,
    stem: str = "auto",
    weights: str | None = None,
    input_size: int | None = None,
) -> Encoder:
    """Build encoder `name` (registered name or '<family>:<model>') for images stored at image_size px.

    stem: ResNet stem (auto picks by size); weights: local file/folder or hub tag and
    input_size: resolution to resize to, both for pretrained encoders only.
    """
    request = EncoderRequest(image_size, stem, weights, input_size)
    check_encoder_name(name)
    if "+" in name:
        from deepclust.encoders.joined import JoinedEncoder

        parts = name.split("+")
        return JoinedEncoder(
            [build_encoder(p, image_size, stem, weights, input_size) for p in parts]
        )
    if ":" in name:
        prefix, model = name.split(":", 1)
        return FAMILIES.get(prefix)(model, request)
    entry = ENCODERS.get(name)
    if not entry.pretrained and (request.weights is not None or request.input_size is not None):
        raise ConfigError(
            f"encoder '{name}' is trained from scratch: encoder.weights and encoder.input_size apply only "
            "to pretrained encoders."
        )
    return entry.build(request)


# Registration side effects: each module registers its encoders.
from deepclust.encoders import curated as _curated  # noqa: E402, F401
from deepclust.encoders import pixels as _pixels  # noqa: E402, F401
from deepclust.encoders import pretrained as _pretrained  # noqa: E402, F401
from deepclust.encoders import resnet as _resnet  # noqa: E402, F401
from deepclust.encoders import small_cnn as _small_cnn  # noqa: E402, F401
