"""Instance discrimination: a memory bank with NCE (Wu et al. 2018) and in-batch InfoNCE.

Memory-bank instance discrimination treats every image as its own class. The bank holds
one L2-normalised vector v_i per image of the fit set (N x d, a buffer, no gradient); the
score of a feature f against entry i is s = v_i . f. The positive of image i is its own
entry v_i, the negatives k entries drawn uniformly from the other images.

Two losses over the scores [B, 1 + k] (column 0 the positive):

- `nce_loss`, Wu et al.'s noise-contrastive estimation (their Eq. 5-6): P(i | f) =
  exp(s / T) / Z with a constant normaliser Z (estimated once, on the first batch, as
  N * mean exp(s / T): `nce_normaliser`), noise distribution P_n = 1 / N, and the binary
  classifier h = P / (P + k P_n):
      L = -mean_b [ log h(pos) + sum_j log(1 - h(neg_j)) ].
- `softmax_nce_loss`: cross-entropy of the positive in a softmax over positive +
  negatives, the form of CPC / MoCo (and of lemniscate's later releases).

`update_memory_bank` applies v_i <- normalise(m v_i + (1 - m) f_i) for the batch,
gathered over processes so every process keeps the same bank. `info_nce_loss` is
SimCLR's NT-Xent over the 2B views of the (global) batch, for the `infonce` switch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepclust.engine.distributed import (
    all_gather_cat,
    all_gather_cat_grad,
    all_reduce_sum,
    rank,
    world_size,
)
from deepclust.engine.transfer import to_device


def sample_negatives(
    positives: torch.Tensor,
    num_samples: int,
    k: int,
    generator: torch.Generator,
    offset: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """k indices per row drawn uniformly from 0..N-1 without the row's positive -> int64 [B, k].

    positives [B] (fit-set indices) are rows offset..offset+B-1 of a global batch of `total`
    rows (default B): the draws are made for the whole global batch from `generator` (CPU)
    and this slice is kept, so a sample's negatives do not depend on how the batch is split
    over processes. Returned on positives' device.
    """
    if num_samples < 2:
        raise ValueError(f"need at least 2 samples to draw negatives, got {num_samples}")
    batch = positives.shape[0]
    total = batch if total is None else total
    draws = torch.randint(num_samples - 1, (total, k), generator=generator)
    draws = to_device(draws[offset : offset + batch], positives.device)
    return draws + (draws >= positives[:, None]).long()  # skip the positive itself


def memory_bank_scores(
    features: torch.Tensor,
    bank: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    dense_ratio: float = 16.0,
) -> torch.Tensor:
    """features [B, d], bank [N, d], positives [B], negatives [B, k] -> scores [B, 1 + k] (float32).

    scores[b, 0] = bank[positives[b]] . features[b], scores[b, 1 + j] = bank[negatives[b, j]] .
    features[b]. Gradients flow into features only (the bank is a buffer). Two equal ways:
    gather the B (1 + k) bank rows and multiply (memory-bound), or score against the whole
    bank and pick the columns (one dense matmul, B x N scores); the second is used while
    N <= dense_ratio * (1 + k), where it is several times faster (CIFAR-10: N = 50,000, k = 4096).
    """
    idx = torch.cat([positives[:, None], negatives], dim=1)  # [B, 1 + k]
    entries = bank.detach().float()
    if bank.shape[0] <= dense_ratio * idx.shape[1]:
        return (features.float() @ entries.T).gather(1, idx)
    return torch.bmm(entries[idx], features.float().unsqueeze(2)).squeeze(2)


@torch.no_grad()
def nce_normaliser(scores: torch.Tensor, temperature: float, num_samples: int) -> torch.Tensor:
    """Wu et al.'s constant Z = N * mean exp(scores / T) over the global batch -> scalar float32."""
    e = (scores.detach().float() / temperature).exp()
    total = all_reduce_sum(e.sum().reshape(1))
    count = all_reduce_sum(torch.tensor([float(e.numel())], device=e.device))
    return (total / count).squeeze(0) * num_samples


def nce_loss(
    scores: torch.Tensor,
    temperature: float,
    num_samples: int,
    normaliser: torch.Tensor | float,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Wu et al.'s NCE loss: scores [B, 1 + k] (column 0 the positive) -> scalar.

    P = exp(s / T) / Z, noise P_n = 1 / N for each of the k negatives:
    L = -mean_b [ log(P_pos / (P_pos + k P_n)) + sum_j log(k P_n / (P_neg_j + k P_n)) ].
    eps keeps the logs finite as lemniscate does.
    """
    k = scores.shape[1] - 1
    p = (scores.float() / temperature).exp() / normaliser
    noise = k / num_samples
    log_pos = torch.log(p[:, 0] / (p[:, 0] + noise + eps))
    log_neg = torch.log(noise / (p[:, 1:] + noise + eps)).sum(dim=1)
    return -(log_pos + log_neg).mean()


def softmax_nce_loss(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """-mean_b log softmax(scores_b / T)[0]: scores [B, 1 + k] (column 0 the positive) -> scalar."""
    return -torch.log_softmax(scores.float() / temperature, dim=1)[:, 0].mean()


@torch.no_grad()
def update_memory_bank(
    bank: torch.Tensor, indices: torch.Tensor, features: torch.Tensor, momentum: float
) -> None:
    """In place: bank[i] <- normalise(momentum * bank[i] + (1 - momentum) * f) for the batch.

    bank [N, d]; indices [B] (distinct); features [B, d]. Under torch.distributed the
    indices and features of every process are gathered first, so all processes apply the
    same update to their copy of the bank (batches must have the same size on every process).
    """
    indices = all_gather_cat(indices)
    features = all_gather_cat(features.detach().to(bank.dtype))
    mixed = momentum * bank[indices] + (1.0 - momentum) * features
    bank.index_copy_(0, indices, F.normalize(mixed, dim=1))


def info_nce_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: a, b [B, d] (two views, L2-normalised) -> scalar.

    Each of the 2B' views of the global batch (B' = B x processes) is classified against the
    other 2B' - 1: its positive is the other view of its image. Under torch.distributed the
    other processes' views are gathered with gradient (all_gather_cat_grad), so after DDP
    averages gradients the result is the one-process gradient on the global batch.
    """
    batch = a.shape[0]
    a_all, b_all = all_gather_cat_grad(a.float()), all_gather_cat_grad(b.float())
    keys = torch.cat([a_all, b_all])  # [2B', d]
    total = a_all.shape[0]
    start = rank() * batch if world_size() > 1 else 0
    local = torch.arange(start, start + batch, device=a.device)
    queries = torch.cat([a.float(), b.float()])  # [2B, d]: this process's rows
    rows = torch.cat([local, local + total])  # their places in keys
    positives = torch.cat([local + total, local])
    logits = queries @ keys.T / temperature  # [2B, 2B']
    itself = torch.zeros_like(logits, dtype=torch.bool)
    itself[torch.arange(2 * batch, device=a.device), rows] = True
    return F.cross_entropy(logits.masked_fill(itself, float("-inf")), positives)
