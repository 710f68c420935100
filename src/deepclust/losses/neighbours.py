"""SCAN's clustering objective (Van Gansbeke et al., ECCV 2020, Eq. 2).

A sample and one of its mined nearest neighbours should get the same cluster with
confidence: -log <p(anchor), p(neighbour)>. Alone this collapses every sample into one
cluster, so the entropy of the batch-mean assignment is maximised beside it:

    L = -mean_b log <p_a[b], p_n[b]>  -  w * H(mean_b p_a[b])        (SCAN uses w = 5)
"""

from __future__ import annotations

import torch

from deepclust.engine.distributed import all_reduce_sum, all_reduce_sum_grad
from deepclust.losses.common import entropy


def global_mean(p: torch.Tensor) -> torch.Tensor:
    """p [..., B, K] -> the mean over the global batch [..., K], with gradient.

    Under torch.distributed the sum is all-reduced (all_reduce_sum_grad), so after DDP
    averages gradients each parameter gets the one-process gradient of the global batch.
    """
    count = all_reduce_sum(torch.tensor(float(p.shape[-2]), device=p.device))
    return all_reduce_sum_grad(p.float().sum(dim=-2)) / count


def neighbour_consistency(
    p_anchor: torch.Tensor, p_neighbour: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """-mean_b log <p_a[b], p_n[b]>: p_anchor, p_neighbour [..., B, K] -> [...].

    A per-sample mean: DDP's average of the processes' local means is the global one.
    """
    agreement = (p_anchor.float() * p_neighbour.float()).sum(dim=-1)
    return -(agreement.clamp_min(eps).log()).mean(dim=-1)


def scan_loss(
    p_anchor: torch.Tensor, p_neighbour: torch.Tensor, entropy_weight: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCAN's loss of anchors and neighbours [..., B, K] (softmax rows).

    Returns (total, consistency, entropy of the global batch-mean anchor assignment), each [...].
    """
    consistency = neighbour_consistency(p_anchor, p_neighbour)
    spread = entropy(global_mean(p_anchor), dim=-1)
    return consistency - entropy_weight * spread, consistency, spread
