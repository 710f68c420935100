"""Dynamic grouping (DigPro, after SMoG): group centres updated batch by batch, and their loss.

K group centres G [K, D] live across steps. Each batch: a feature is assigned to the group
of highest cosine similarity; every group that received members moves by momentum toward
the mean of its members' normalised features (groups without members stay); the online
predictions are classified into groups by cosine similarity to G with a temperature.
Under torch.distributed the member sums and counts are all-reduced, so the centres move
by the statistics of the global batch and stay equal on every process. A ring-buffer
memory of recent features (`enqueue`) feeds the periodic k-means re-initialisation of G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepclust.engine.distributed import all_reduce_sum_grad


def assign_groups(features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """features [B, D], centres [K, D] -> argmax_k cos(features_b, centres_k) [B] (int64)."""
    sims = F.normalize(features.float(), dim=1) @ F.normalize(centres.float(), dim=1).T
    return sims.argmax(dim=1)


def moved_group_centres(
    centres: torch.Tensor,
    features: torch.Tensor,
    members: torch.Tensor,
    momentum: float,
    unit: bool = True,
) -> torch.Tensor:
    """centres [K, D], features [B, D], members [B] (group of each row) -> new centres [K, D].

    g_k <- momentum * g_k + (1 - momentum) * mean{f_b : members_b = k} for every group with
    at least one member in the global batch (f_b normalised when `unit`, raw otherwise as
    lightly's SMoG prototypes in the authors' code); the others are returned unchanged.
    Differentiable in `features` (the code lets L_group's gradient through the centres).
    """
    k = centres.shape[0]
    f = F.normalize(features.float(), dim=1) if unit else features.float()
    onehot = F.one_hot(members.long(), k).to(f.dtype)  # [B, K]
    stats = all_reduce_sum_grad(torch.cat([onehot.T @ f, onehot.sum(0)[:, None]], dim=1))
    sums, counts = stats[:, :-1], stats[:, -1:]
    means = sums / counts.clamp_min(1.0)
    moved = momentum * centres.float() + (1.0 - momentum) * means
    return torch.where(counts > 0, moved, centres.float()).to(centres.dtype)


@torch.no_grad()
def update_group_centres(
    centres: torch.Tensor,
    features: torch.Tensor,
    members: torch.Tensor,
    momentum: float,
    unit: bool = True,
) -> torch.Tensor:
    """moved_group_centres without gradient (the centres as a running statistic)."""
    return moved_group_centres(centres, features, members, momentum, unit)


def group_contrast_loss(
    predictions: torch.Tensor,
    centres: torch.Tensor,
    assignments: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """CE(norm(predictions) norm(centres)^T / t, assignments): predictions [B, D] -> scalar.

    A per-sample mean over this process's rows (DDP's gradient average makes it global).
    """
    logits = F.normalize(predictions.float(), dim=1) @ F.normalize(centres.float(), dim=1).T
    return F.cross_entropy(logits / temperature, assignments.long())


@torch.no_grad()
def enqueue(
    memory: torch.Tensor, pointer: torch.Tensor, filled: torch.Tensor, rows: torch.Tensor
) -> None:
    """Write rows [n, D] into the ring buffer memory [M, D] in place, oldest first out.

    pointer (int64 scalar tensor): next row to write; filled: rows holding data so far
    (at most M). Both are updated in place; no host synchronisation.
    """
    size = memory.shape[0]
    rows = rows[-size:].to(memory.dtype)
    n = rows.shape[0]
    index = (pointer + torch.arange(n, device=memory.device)) % size
    memory.index_copy_(0, index, rows)
    pointer.copy_((pointer + n) % size)
    filled.copy_(torch.clamp(filled + n, max=size))
