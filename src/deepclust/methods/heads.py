"""Heads on a frozen encoder's cached features: several side by side, the lowest-loss one predicts.

SCAN and TEMI train H independent heads on the same features and keep the head whose
loss is lowest at the end (their answer to a head that settles in a poor optimum). The
loss of each head is averaged over the last epoch's steps; under torch.distributed the
processes' averages are averaged, so every process picks the same head. Both train on
(sample, neighbour) feature pairs: `PairHeadsMethod` holds what they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from deepclust.data.views import CropSpec, ViewSpec
from deepclust.encoders.base import Encoder
from deepclust.engine.distributed import all_reduce_sum, world_size
from deepclust.errors import ConfigError
from deepclust.methods.base import Method

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


def require_frozen(name: str, encoder: Encoder) -> None:
    """A one-line error for a method that trains on frozen features only."""
    if encoder.trainable:
        raise ConfigError(
            f"{name} trains heads on a frozen pretrained encoder's features; encoder "
            f"'{encoder.identity or 'this one'}' trains. Use a pretrained encoder, e.g. "
            f"--config frozen (configs/{name}/frozen.yaml)."
        )


def feature_views(encoder: Encoder, count: int, anchors: int = 0) -> ViewSpec:
    """`count` feature views (frozen encoders: no crops), the first `anchors` the sample itself."""
    views = CropSpec(
        count=count, size=1, scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0
    )
    return ViewSpec((views,), mean=encoder.mean, std=encoder.std, anchors=anchors)


class HeadBank(nn.Module):
    """H heads [B, D] -> [B, K]; `all_heads` gives [H, ..., K], `forward` the chosen head's."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.register_buffer("best", torch.tensor(0))
        self.register_buffer("loss_sum", torch.zeros(len(heads)), persistent=False)
        self.register_buffer("loss_steps", torch.zeros(()), persistent=False)

    def all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> every head's output [H, ..., K]."""
        return torch.stack([head(x) for head in self.heads])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads[int(self.best)](x)

    @torch.no_grad()
    def record(self, losses: torch.Tensor) -> None:
        """Add one step's per-head losses [H] to the running sums."""
        self.loss_sum += losses.detach().float()
        self.loss_steps += 1

    @torch.no_grad()
    def reset(self) -> None:
        self.loss_sum.zero_()
        self.loss_steps.zero_()

    @torch.no_grad()
    def select(self) -> torch.Tensor:
        """Choose the head of lowest mean recorded loss; returns the per-head means [H]."""
        if float(self.loss_steps) == 0:
            return self.loss_sum
        means = all_reduce_sum(self.loss_sum / self.loss_steps) / world_size()
        self.best.fill_(int(means.argmin()))
        return means


class PairHeadsMethod(Method):
    """A method training a HeadBank (`bank`) on (sample, neighbour) pairs of frozen features."""

    @property
    def bank(self) -> HeadBank:
        raise NotImplementedError

    def view_spec(self) -> ViewSpec:
        """View 0 the sample itself, view 1 one of its nearest neighbours."""
        return feature_views(self.encoder, 2, anchors=1)

    def on_epoch_start(self, ctx: FitContext) -> None:
        self.bank.reset()

    def on_train_end(self, ctx: FitContext) -> None:
        self.bank.select()
