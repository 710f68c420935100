"""Consensus between clusterings of variations of a representation (ConCURL).

A clustering here is a set of prototypes and cosine scores against them. ConCURL's main
variation is a fixed Gaussian random projection R_m (p x d) applied to both the embedding
z and the prototypes C: s_m = norm(z R_m^T) . norm(C R_m^T)^T. The consensus loss asks each
variation's prediction for one view to agree with the (Sinkhorn) assignment of the other
view computed in the unprojected space:

    L = (1/M) sum_m 1/2 [CE(q^2, softmax(s_m^1 / T)) + CE(q^1, softmax(s_m^2 / T))].

With M = 1 and R = I this is SwAV's swapped prediction. `align_partition` relabels one
partition to agree with another (Hungarian matching on the contingency table), the first
step of voting-based consensus clustering, used to compare clusterings of different
algorithms whose cluster indices are arbitrary.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_projections(
    num: int, dim_out: int, dim_in: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """num Gaussian random projections -> float32 [num, dim_out, dim_in], entries N(0, 1/dim_out).

    The scale is that of a Johnson-Lindenstrauss projection; it does not matter to the
    consensus loss, which normalises after projecting.
    """
    return torch.randn(num, dim_out, dim_in, generator=generator) / dim_out**0.5


def cosine_scores(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """norm(z) . norm(prototypes)^T: z [..., B, d], prototypes [..., K, d] -> [..., B, K]."""
    return F.normalize(z, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(-2, -1)


def projected_scores(
    z: torch.Tensor, prototypes: torch.Tensor, projections: torch.Tensor
) -> torch.Tensor:
    """s_m = norm(z R_m^T) . norm(C R_m^T)^T: z [B, d], C [K, d], R [M, p, d] -> [M, B, K].

    Detach `prototypes` beforehand to keep the consensus loss from moving them (the
    authors' released code does this).
    """
    m, p, d = projections.shape
    flat = projections.reshape(m * p, d).T  # [d, M p]: one matmul for all M (fast backward)
    zr = (z @ flat).reshape(-1, m, p).transpose(0, 1).contiguous()  # [M, B, p]
    cr = (prototypes @ flat).reshape(-1, m, p).transpose(0, 1).contiguous()  # [M, K, p]
    return cosine_scores(zr, cr)


def consensus_loss(
    scores_1: torch.Tensor,
    scores_2: torch.Tensor,
    codes_1: torch.Tensor,
    codes_2: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """(1/M) sum_m 1/2 [CE(codes_2, softmax(scores_1[m] / T)) + CE(codes_1, softmax(scores_2[m] / T))].

    scores_v [M, B, K]: view v's scores in each of the M variations (with gradient);
    codes_v [B, K]: view v's targets (rows are distributions; no gradient). CE is averaged
    over this process's rows: DDP's gradient average then gives the global-batch gradient.
    """
    log_p1 = torch.log_softmax(scores_1.float() / temperature, dim=-1)
    log_p2 = torch.log_softmax(scores_2.float() / temperature, dim=-1)
    ce_1 = -(codes_2.float() * log_p1).sum(dim=-1).mean()  # mean over M and B
    ce_2 = -(codes_1.float() * log_p2).sum(dim=-1).mean()
    return (ce_1 + ce_2) / 2


def align_partition(labels: np.ndarray, reference: np.ndarray, num_clusters: int) -> np.ndarray:
    """Relabel `labels` so that they agree best with `reference` (one-to-one, Hungarian).

    labels, reference: int [N] in 0..num_clusters-1 -> int64 [N]. No ground truth is used:
    both partitions are the model's own.
    """
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((num_clusters, num_clusters), dtype=np.int64)
    np.add.at(counts, (labels, reference), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = np.empty(num_clusters, dtype=np.int64)
    mapping[rows] = cols
    return mapping[labels]
