"""Batch-level computations give the same numbers on 2 gloo processes as on 1."""

import torch

from deepclust.losses import sinkhorn
from dist_harness import run_in_processes


def _sinkhorn_half(rank: int, scores: torch.Tensor) -> torch.Tensor:
    half = scores.shape[0] // 2
    return sinkhorn(scores[rank * half : (rank + 1) * half], eps=0.05, iterations=3)


def test_sinkhorn_split_over_two_processes_equals_one():
    torch.manual_seed(0)
    scores = torch.randn(32, 10) * 0.5
    parts = run_in_processes(_sinkhorn_half, 2, scores)
    assert torch.allclose(torch.cat(parts), sinkhorn(scores, eps=0.05, iterations=3), atol=1e-6)
