"""A worker for the 2-process SIC test, in a module that imports little (spawn re-imports it)."""

from __future__ import annotations

import torch

from deepclust.losses.semantic import sic_losses


def sic_weight_gradient(rank: int, z: torch.Tensor, nb: torch.Tensor, y: torch.Tensor, world: int):
    """Gradient of SIC's objective w.r.t. a shared weight, this process holding 1/world of the batch."""
    w = torch.eye(z.shape[1], requires_grad=True)
    half = len(z) // world
    rows = slice(rank * half, (rank + 1) * half)
    loss = sum(sic_losses(z[rows] @ w, nb[rows] @ w, y[rows]).values())
    loss.backward()
    return w.grad
