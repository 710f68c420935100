"""TURTLE's objective for the task encoder (Gadetsky, Jiang, Brbic, ICML 2024, Eq. 12).

A task encoder labels the data: tau(x) = mean over representation spaces s of
softmax(theta_s phi_s(x)). On that labelling a linear classifier w_s is trained in each
space for a few steps (the inner loop); the task encoder then learns so that those
classifiers' predictions agree with its labelling (a labelling a linear classifier
generalises on is one with wide margins in every space), while the entropy of each
space's mean labelling keeps the clusters from collapsing:

    L(theta) = sum_s CE(tau(x), softmax(w_s phi_s(x)))  -  gamma sum_s H(mean_x tau_s(x))

The inner classifiers are constants here (first order, as the authors' code does): the
gradient reaches theta through the labelling only. TURTLE uses gamma = 10.
"""

from __future__ import annotations

import torch

from deepclust.losses.common import entropy, soft_cross_entropy
from deepclust.losses.neighbours import global_mean


def task_encoder_loss(
    labels_per_space: list[torch.Tensor], inner_logits: list[torch.Tensor], gamma: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """labels_per_space: S tensors [B, K] (softmax of each space's task encoder); inner_logits:
    S tensors [B, K] of the inner classifiers (detached here).

    Returns (total, prediction error, sum of the spaces' mean-labelling entropies). The
    entropies use the global batch mean (all-reduced with gradient).
    """
    labels = torch.stack(labels_per_space).mean(dim=0)
    error = sum(soft_cross_entropy(labels, z.detach()) for z in inner_logits)
    spread = sum(entropy(global_mean(p)) for p in labels_per_space)
    return error - gamma * spread, error, spread  # type: ignore[return-value]
