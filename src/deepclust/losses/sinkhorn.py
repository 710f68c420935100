"""Sinkhorn-Knopp equipartition (SwAV), in log space and across processes.

Given scores S [B, P] of B samples against P prototypes, finds the assignment
Q = diag(a) exp(S / eps) diag(b) whose rows sum to 1 (one unit of mass per sample) and whose
columns each hold B/P of the mass (prototypes used equally over the batch). The batch is
the *global* batch: under torch.distributed the column sums are all-reduced, so each
process gets its rows of the same Q a single process would compute on the whole batch.
Working with log-sum-exp keeps it finite for small eps, where exp(S / eps) under- or overflows.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from deepclust.engine.distributed import all_reduce_sum, is_distributed


def _global_logsumexp_over_batch(log_q: torch.Tensor) -> torch.Tensor:
    """log sum_b exp(log_q[b, p]) over the global batch -> [P]."""
    top = log_q.max(dim=0).values
    if is_distributed():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = all_reduce_sum((log_q - top).exp().sum(dim=0))
    return top + total.log()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """scores [B, P] (this process's rows) -> soft assignments Q [B, P], rows summing to 1.

    Each iteration first makes every prototype's total mass B_global / P, then every
    sample's mass 1 (SwAV's order), so rows are exact and columns approach uniform as
    `iterations` grows. Computed in float32 whatever the input dtype (bf16 autocast included).
    """
    log_q = scores.float() / eps
    num_prototypes = scores.shape[1]
    log_col_mass: float | torch.Tensor = math.log(scores.shape[0] / num_prototypes)
    if is_distributed():  # kept on the device: reading it on the host would wait for the GPU
        batch = torch.full((), float(scores.shape[0]), device=scores.device)
        log_col_mass = (all_reduce_sum(batch) / num_prototypes).log()
    for _ in range(iterations):
        log_q = log_q - _global_logsumexp_over_batch(log_q) + log_col_mass
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return log_q.exp()
