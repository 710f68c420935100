"""Mutual information between cluster predictions and prototype assignments (IMC-SwAV Eq. 6).

The joint distribution of (Y, U) over a batch is P = (1/B) sum_b p_y[b]^T p_u[b] (K x P).
The objective H(Y|U) - beta H(Y) = -[I(Y;U) + (beta - 1) H(Y)] asks that the prototype
determine the cluster (H(Y|U) -> 0) and that clusters be used equally (H(Y) -> log K).
"""

from __future__ import annotations

import torch

from deepclust.engine.distributed import all_reduce_sum_grad
from deepclust.losses.common import entropy


def joint_distribution(p_y: torch.Tensor, p_u: torch.Tensor) -> torch.Tensor:
    """p_y [..., B, K], p_u [..., B, P] (rows are distributions) -> joint [..., K, P] summing to 1.

    The batch is the global one: under torch.distributed the sum over samples is all-reduced
    with a gradient, so after DDP averages gradients every parameter gets the gradient of the
    one-process loss. Leading dimensions broadcast (e.g. [V, 1, B, K] with [1, V, B, P] gives
    all V x V view pairs at once, with one all-reduce).
    """
    wide = torch.promote_types(torch.promote_types(p_y.dtype, p_u.dtype), torch.float32)
    counts = all_reduce_sum_grad(p_y.to(wide).transpose(-2, -1) @ p_u.to(wide))  # >= float32
    total = counts.sum(dim=(-2, -1), keepdim=True)
    return counts / total.clamp_min(torch.finfo(counts.dtype).tiny)  # no samples: all zeros


def information_objective(
    joint: torch.Tensor, beta: float = 4.0, eps: float = 1e-12
) -> torch.Tensor:
    """H(Y|U) - beta H(Y) of joint [..., K, P] (summing to 1) -> [...]."""
    p_u = joint.sum(dim=-2, keepdim=True)  # [..., 1, P]
    p_y = joint.sum(dim=-1)  # [..., K]
    cond = -(joint * ((joint + eps).log() - (p_u + eps).log())).sum(dim=(-2, -1))
    return cond - beta * entropy(p_y, dim=-1, eps=eps)


def mutual_information_loss(
    p_y: torch.Tensor, p_u: torch.Tensor, beta: float = 4.0, eps: float = 1e-12
) -> torch.Tensor:
    """information_objective of the batch joint of p_y [..., B, K] and p_u [..., B, P] -> [...].

    eps guards the logs (0: the authors' formula exactly, about 1e-9 relative apart)."""
    return information_objective(joint_distribution(p_y, p_u), beta, eps)


def logit_penalty(logits: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """mean_b sum_k relu(|logits_bk| - bound): logits [..., K] -> scalar.

    The MI objective keeps sharpening the classifier's softmax; this keeps its logits
    bounded (IMC-SwAV weighs it 0.01).
    """
    excess = torch.relu(logits.float().abs() - bound).sum(dim=-1)
    return excess.sum() / max(excess.numel(), 1)  # 0, not NaN, for no rows
