"""Several clustering heads trained side by side; the one with the lowest loss predicts.

SCAN and TEMI train H independent heads on the same features and keep the head whose
loss is lowest at the end (their answer to a head that settles in a poor optimum). The
loss of each head is averaged over the last epoch's steps; under torch.distributed the
processes' averages are averaged, so every process picks the same head.
"""

from __future__ import annotations

import torch
from torch import nn

from deepclust.engine.distributed import all_reduce_sum, world_size


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
