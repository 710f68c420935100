"""Deterministic epoch batching that shards one global batch across processes.

Every process draws the same permutation from (seed, epoch); global batch j is
perm[j*B:(j+1)*B] and process r takes its r-th contiguous slice. Two processes with half
the batch each therefore see exactly the samples one process sees, which is what lets a
distributed run reproduce a single-process one, and lets --resume rebuild any epoch.
"""

from __future__ import annotations

import torch


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=gen)


def num_batches(num_samples: int, global_batch: int, drop_last: bool = True) -> int:
    full, rest = divmod(num_samples, global_batch)
    return full if (drop_last or rest == 0) else full + 1


def epoch_batches(
    num_samples: int,
    global_batch: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> list[torch.Tensor]:
    """This process's index tensors for one epoch; each is [global_batch / world_size]."""
    perm = epoch_permutation(num_samples, seed, epoch)
    count = num_batches(num_samples, global_batch, drop_last)
    return deal(perm, global_batch, count, rank, world_size)


def deal(
    order: torch.Tensor, global_batch: int, count: int, rank: int, world_size: int
) -> list[torch.Tensor]:
    """Global batches j = order[j*B:(j+1)*B] for j < count -> process `rank`'s contiguous slice of each."""
    if global_batch % world_size:
        raise ValueError(f"batch size {global_batch} is not divisible by {world_size} processes")
    local = global_batch // world_size
    starts = range(0, count * global_batch, global_batch)
    return [order[j + rank * local : j + (rank + 1) * local] for j in starts]


def stream_batches(
    rows: torch.Tensor,
    global_batch: int,
    steps: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """`steps` batches of an endless stream over `rows` [M] -> this process's slices [global_batch / world_size].

    A second batch stream beside the epoch's (e.g. a classifier's own batches of labelled
    images): the rows are shuffled, dealt out, and reshuffled whenever they run out, so a
    stream over few rows repeats them within an epoch. Sharded like `epoch_batches`.
    """
    if len(rows) < global_batch:
        raise ValueError(f"a batch of {global_batch} needs at least as many rows, got {len(rows)}")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 500_009)
    cycles = -(-steps * global_batch // len(rows))
    order = torch.cat([rows[torch.randperm(len(rows), generator=gen)] for _ in range(cycles)])
    return deal(order, global_batch, steps, rank, world_size)
