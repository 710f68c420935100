"""SCAN's self-labelling loss (Van Gansbeke et al., ECCV 2020, Sec. 3.3).

Samples whose weak-view prediction is confident (max probability above a threshold, 0.99
in SCAN) become labelled with that cluster; the strong view must predict it. Each class
weighs 1 / (its share of the confident samples), so that large clusters do not swallow
the small ones (SCAN's class balancing): the loss is the weighted mean

    L = sum_{b confident} w[y_b] * -log p_strong[b, y_b]  /  sum_{b confident} w[y_b].
"""

from __future__ import annotations

import torch

from deepclust.engine.distributed import all_reduce_sum


def confident_targets(p_weak: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p_weak [B, K] -> (mask [B] of rows whose max probability exceeds threshold, argmax [B])."""
    confidence, targets = p_weak.max(dim=1)
    return confidence > threshold, targets


def class_weights(targets: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """1 / share of each class among the confident targets of the global batch -> [K].

    Classes without a confident sample weigh 1 (they appear in no term). Counts are
    all-reduced, so every process weighs with the global batch's shares.
    """
    counts = torch.bincount(targets[mask], minlength=num_classes).float()
    counts = all_reduce_sum(counts)
    total = counts.sum()
    weights = torch.ones(num_classes, device=targets.device)
    present = counts > 0
    weights[present] = total / counts[present]
    return weights


def self_label_loss(
    p_weak: torch.Tensor,
    log_p_strong: torch.Tensor,
    threshold: float = 0.99,
    balance: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted cross-entropy of confident pseudo-labels.

    p_weak [B, K] (no gradient), log_p_strong [B, K] log-probabilities of the strong view.
    Returns (loss, confident count of the global batch). Under torch.distributed the
    loss is this process's share of the global one (its terms over the global
    normaliser): summing the processes' gradients gives the one-process gradient. No
    confident sample: 0, with a gradient of zeros.
    """
    mask, targets = confident_targets(p_weak.detach(), threshold)
    k = p_weak.shape[1]
    weights = class_weights(targets, mask, k) if balance else torch.ones(k, device=p_weak.device)
    w = weights[targets] * mask.float()
    nll = -log_p_strong.float().gather(1, targets[:, None]).squeeze(1)
    normaliser = all_reduce_sum(w.sum().detach().clone())
    confident = all_reduce_sum(mask.float().sum())
    return (w * nll).sum() / normaliser.clamp_min(1e-12), confident
