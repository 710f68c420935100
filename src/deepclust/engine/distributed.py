"""torch.distributed helpers that are no-ops in a single process.

Methods call these for anything computed over the batch (Sinkhorn marginals, entropies,
memory banks), so the same code is correct on one process and under torchrun.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (in place, returned for chaining); identity on one process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate [b, ...] tensors from all processes along dim 0 (no gradient)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first, then the other processes together (e.g. rank 0 fills a
    cache that the others then read instead of racing to write it)."""
    if rank() > 0:
        barrier()
    try:
        yield
    finally:
        if rank() == 0:
            barrier()


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class _AllGatherCat(torch.autograd.Function):
    """Concatenate over processes; each input's gradient is its slice summed over processes."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_reduce_sum_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Global sum over processes that gradients flow through (identity on one process).

    Use it for losses that depend on batch-level statistics (the joint distribution of
    IMC-SwAV's MI loss, entropies of mean predictions, class prototypes): its backward
    all-reduces the gradient, so after DDP averages gradients over the W processes every
    parameter gets exactly the gradient of the one-process loss on the global batch.
    (A plain all-reduce with `local + (total - local).detach()` would be W times too small.)
    Per-sample mean losses need nothing: DDP's average of local means is the global mean.
    """
    return _AllReduceSum.apply(tensor) if is_distributed() else tensor


def all_gather_cat_grad(tensor: torch.Tensor) -> torch.Tensor:
    """all_gather_cat that gradients flow through (same scaling as all_reduce_sum_grad).

    Every process must pass the same number of rows.
    """
    return _AllGatherCat.apply(tensor) if is_distributed() else tensor
