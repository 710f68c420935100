"""Prototype aggregation on the sphere (ProPos / DigPro): contrast class prototypes of a batch.

For each pseudo-label c present in the (global) batch, the online prototype q_c and the
target prototype k_c are the normalised means of the normalised online and target features
with that label. Each present class is a positive pair (q_c, k_c) against the other present
online prototypes:

    l_c = -log( exp(q_c.k_c / t) / (exp(q_c.k_c / t) + sum_{j != c, j present} exp(q_c.q_j / t)) )

and the loss is the mean of l_c over present classes. Absent classes are masked out exactly
(the authors' code fills their logits with -10 instead, a difference of at most
(K - 1) e^-10 inside each sum). Under torch.distributed the class sums are all-reduced
(the online one with gradients), so every process gets the loss of the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepclust.engine.distributed import all_reduce_sum, all_reduce_sum_grad


def class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """features [B, D], labels [B] in 0..K-1 -> per-class sums [K, D] (a one-hot matmul)."""
    onehot = F.one_hot(labels.long(), num_classes).to(features.dtype)
    return onehot.T @ features


def prototype_aggregation_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    temperature: float = 0.5,
    absent_logit: float | None = None,
) -> torch.Tensor:
    """q [B, D] online features (gradients flow), k [B, D] target features, labels [B] -> scalar.

    absent_logit: None masks absent classes out exactly; a number (the authors' -10) is the
    logit their columns get instead.

    B is this process's part of the batch; prototypes are over the global batch. The
    features need not be normalised (they are, row-wise, before averaging).
    """
    qn = F.normalize(q.float(), dim=1)
    q_proto = F.normalize(all_reduce_sum_grad(class_sums(qn, labels, num_classes)), dim=1)
    with torch.no_grad():
        kn = F.normalize(k.float(), dim=1)
        counts = torch.bincount(labels.long(), minlength=num_classes).to(kn.dtype)
        k_sums = all_reduce_sum(
            torch.cat([class_sums(kn, labels, num_classes), counts[:, None]], 1)
        )
        k_proto = F.normalize(k_sums[:, :-1], dim=1)
        present = k_sums[:, -1] > 0
    pos = (q_proto * k_proto).sum(dim=1) / temperature  # [K]
    logits = q_proto @ q_proto.T / temperature  # [K, K]
    eye = torch.eye(num_classes, dtype=torch.bool, device=logits.device)
    logits = torch.where(eye, pos[:, None], logits)
    fill = float("-inf") if absent_logit is None else absent_logit
    logits = logits.masked_fill(~present[None, :] & ~eye, fill)
    per_class = torch.logsumexp(logits, dim=1) - pos  # finite for absent rows too (diagonal)
    weight = present.to(per_class.dtype)
    return (per_class * weight).sum() / weight.sum().clamp_min(1.0)  # no host sync
