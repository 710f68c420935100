"""Encoders: a registry of backbones that map images [B,3,H,W] to features [B,D]."""

from deepclust.encoders.base import ENCODERS, Encoder, build_encoder

__all__ = ["ENCODERS", "Encoder", "build_encoder"]
