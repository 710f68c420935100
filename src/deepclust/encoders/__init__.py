"""Encoders: a registry of backbones that map images [B,3,H,W] to features [B,D]."""

from deepclust.encoders.base import (
    ENCODERS,
    FAMILIES,
    FAMILY_HELP,
    Encoder,
    EncoderRequest,
    build_encoder,
    check_encoder_name,
)

__all__ = [
    "ENCODERS",
    "FAMILIES",
    "FAMILY_HELP",
    "Encoder",
    "EncoderRequest",
    "build_encoder",
    "check_encoder_name",
]
