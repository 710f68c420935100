"""Encoders: a registry of backbones that map images [B,3,H,W] to features [B,D].

The names below load on first use (they import torch), so that torch-free modules of this
package (catalog, hub) answer at once, e.g. a CLI check that fails before torch loads.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ENCODERS",
    "FAMILIES",
    "FAMILY_HELP",
    "Encoder",
    "EncoderRequest",
    "build_encoder",
    "check_encoder_name",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from deepclust.encoders import base

        return getattr(base, name)
    raise AttributeError(f"module 'deepclust.encoders' has no attribute '{name}'")
