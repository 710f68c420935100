"""A small 4-block CNN (~58 MFLOPs at 32 px, 10x less than ResNet-18), for CPU runs and tests.

Same 512-d output as ResNet-18, so a method's heads and configs carry over unchanged.
"""

from __future__ import annotations

from torch import nn

from deepclust.encoders.base import ENCODERS, Encoder, EncoderEntry


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def small_cnn(width: int = 64) -> Encoder:
    body = nn.Sequential(
        *_block(3, width, 1),
        *_block(width, 2 * width, 2),
        *_block(2 * width, 4 * width, 2),
        *_block(4 * width, 8 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Encoder(body, feature_dim=8 * width)


ENCODERS.register("small_cnn")(
    EncoderEntry(
        build=lambda req: small_cnn(),
        description="4-block CNN, 512-d (fast CPU runs and tests)",
    )
)
