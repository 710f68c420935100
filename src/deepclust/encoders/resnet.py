"""ResNet-18/34/50 with a stem chosen for the image size.

`cifar` stem: 3x3 stride-1 conv, no max-pool (32 px images keep their detail);
`cifar_maxpool`: the same plus a 2x2 max-pool (IMC-SwAV's STL-10 / Tiny-ImageNet variant);
`imagenet`: the standard 7x7 stride-2 conv + 3x3 max-pool. `auto` picks cifar below 64 px,
cifar_maxpool from 64 to below 128 px, imagenet from 128 px.
"""

from __future__ import annotations

import torchvision
from torch import nn

from deepclust.encoders.base import ENCODERS, Encoder, EncoderEntry
from deepclust.errors import ConfigError

STEMS = ("auto", "cifar", "cifar_maxpool", "imagenet")


def resolve_stem(stem: str, image_size: int) -> str:
    if stem not in STEMS:
        raise ConfigError(f"encoder.stem must be one of {', '.join(STEMS)}; got '{stem}'.")
    if stem != "auto":
        return stem
    if image_size < 64:
        return "cifar"
    return "cifar_maxpool" if image_size < 128 else "imagenet"


def resnet(depth: int, stem: str, image_size: int) -> Encoder:
    """torchvision ResNet-{18,34,50}, randomly initialised, classifier removed."""
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    stem = resolve_stem(stem, image_size)
    if stem != "imagenet":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.MaxPool2d(2, 2) if stem == "cifar_maxpool" else nn.Identity()
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return Encoder(net, feature_dim)


for _depth in (18, 34, 50):
    ENCODERS.register(f"resnet{_depth}")(
        EncoderEntry(
            build=lambda req, d=_depth: resnet(d, req.stem, req.image_size),
            description=f"ResNet-{_depth} trained from scratch (CIFAR stem below 64 px)",
        )
    )
