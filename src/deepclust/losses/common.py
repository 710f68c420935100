"""Cross-entropy with soft targets and entropy: the pieces every clustering loss is made of."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def float32_maths(device_type: str) -> Iterator[None]:
    """Autocast off for the enclosed loss maths, so matrix products run in float32.

    Every method computes its losses inside this (network layers stay under autocast);
    tensors coming from bf16 layers are cast with .float() on the way in. Under bf16 the
    loss products shift IMC-SwAV's MI gradient by 2-3 % and flip SIC pseudo-labels
    (docs/fidelity.md, item 10).
    """
    with torch.autocast(device_type, enabled=False):
        yield


def soft_cross_entropy(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """mean_b CE(q_b, softmax(logits_b)) = -mean_b sum_k q_bk log softmax(logits)_bk.

    targets [B, K] (rows are distributions, no gradient expected), logits [B, K] -> scalar.
    """
    return -(targets * torch.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def entropy(p: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """H(p) = -sum p log p along `dim` (natural log); p [..., K] -> [...] (at least float32)."""
    p = p.to(torch.promote_types(p.dtype, torch.float32))
    return -(p * (p + eps).log()).sum(dim=dim)
