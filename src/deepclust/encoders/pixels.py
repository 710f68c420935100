"""The identity encoder: normalised pixels, flattened. The classic k-means baseline input."""

from __future__ import annotations

from torch import nn

from deepclust.encoders.base import ENCODERS, Encoder, EncoderEntry


def pixels(image_size: int) -> Encoder:
    return Encoder(
        nn.Flatten(), feature_dim=3 * image_size * image_size, trainable=False, identity="pixels"
    )


ENCODERS.register("pixels")(
    EncoderEntry(
        build=lambda req: pixels(req.image_size), description="raw pixels, flattened (no training)"
    )
)
