"""Several frozen encoders side by side: `encoder.name: efficientnet_lite0+efficientnet_lite2`.

The features of a joined encoder are its parts' features concatenated, [B, D_1 + ... + D_S];
`spaces` gives each part's width, so a method that works per representation space (TURTLE)
can split them again. Each part's features are cached under its own key (engine/frozen.py
extracts them part by part), so joining encoders reuses features already extracted.
"""

from __future__ import annotations

import torch
from torch import nn

from deepclust.encoders.base import Encoder
from deepclust.errors import ConfigError

SEPARATOR = "+"


class JoinedEncoder(Encoder):
    """Frozen parts run on the same preprocessed images; their features are concatenated."""

    def __init__(self, parts: list[Encoder]) -> None:
        first = parts[0]
        for part in parts:
            if part.trainable:
                raise ConfigError(
                    f"encoder '{part.identity}' trains; only frozen pretrained encoders can be "
                    f"joined with '{SEPARATOR}'."
                )
            if (part.mean, part.std, part.input_size) != (first.mean, first.std, first.input_size):
                raise ConfigError(
                    f"encoders joined with '{SEPARATOR}' must share their preprocessing (mean, std, "
                    "input size); set encoder.input_size to one size for all of them."
                )
        super().__init__(
            nn.ModuleList(parts),
            sum(p.feature_dim for p in parts),
            trainable=False,
            mean=first.mean,
            std=first.std,
            input_size=first.input_size,
            identity=SEPARATOR.join(p.identity for p in parts),
        )
        self.parts = parts
        self.spaces = [p.feature_dim for p in parts]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(images) for part in self.parts], dim=1)
