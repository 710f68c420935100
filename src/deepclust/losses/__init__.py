"""Losses as small pure functions, one idea each, correct when the batch is split over processes."""

from deepclust.losses.common import entropy, soft_cross_entropy
from deepclust.losses.sinkhorn import sinkhorn

__all__ = ["entropy", "sinkhorn", "soft_cross_entropy"]
