"""Cross-entropy with soft targets and entropy: the pieces every clustering loss is made of."""

from __future__ import annotations

import torch


def soft_cross_entropy(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """mean_b CE(q_b, softmax(logits_b)) = -mean_b sum_k q_bk log softmax(logits)_bk.

    targets [B, K] (rows are distributions, no gradient expected), logits [B, K] -> scalar.
    """
    return -(targets * torch.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def entropy(p: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """H(p) = -sum p log p along `dim` (natural log); p [..., K] -> [...]."""
    p = p.float()
    return -(p * (p + eps).log()).sum(dim=dim)
