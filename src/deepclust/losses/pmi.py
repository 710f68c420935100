"""TEMI's pointwise-mutual-information objective (Adaloglou et al., BMVC 2023, Eq. 6-8).

A student head sees one view of a pair (a sample and one of its nearest neighbours), an
EMA teacher the other. With p_k the teacher's cluster distribution (an EMA of its
batch-mean assignment), the beta-weighted PMI of the pair is

    pmi_beta(x, x') = log sum_k (q_s(k|x) q_t(k|x'))^beta / p_k

and the loss is -w(x, x') pmi_beta, symmetrised over which view the student sees, where
w = sum_k q_t(k|x) q_t(k|x') (the teacher's agreement on the pair, averaged over heads)
weighs down pairs the teacher thinks are false neighbours. beta < 1 (TEMI: 0.6) flattens
the joint so the objective does not collapse into a few over-confident clusters.
"""

from __future__ import annotations

import torch

from deepclust.losses.neighbours import global_mean


def beta_pmi(
    p_student: torch.Tensor, p_teacher: torch.Tensor, prior: torch.Tensor, beta: float = 0.6
) -> torch.Tensor:
    """log sum_k (p_s p_t)^beta / prior_k: p_student, p_teacher [..., B, K], prior [..., K] -> [..., B]."""
    joint = (p_student.float() * p_teacher.float()).clamp_min(1e-30).pow(beta)
    return (joint / prior.float().unsqueeze(-2)).sum(dim=-1).log()


def pair_weight(p_teacher_a: torch.Tensor, p_teacher_b: torch.Tensor) -> torch.Tensor:
    """TEMI's instance weight: sum_k q_t(k|a) q_t(k|b), averaged over heads.

    p_teacher_a, p_teacher_b [H, B, K] -> [B] (no gradient: it weighs, it is not learnt).
    """
    return (p_teacher_a.float() * p_teacher_b.float()).sum(dim=-1).mean(dim=0).detach()


@torch.no_grad()
def update_prior(prior: torch.Tensor, p_teacher: torch.Tensor, momentum: float) -> torch.Tensor:
    """EMA of the teacher's cluster distribution: prior [..., K], p_teacher [..., V, B, K].

    -> momentum * prior + (1 - momentum) * mean over views and the global batch.
    """
    batch_mean = global_mean(p_teacher.flatten(-3, -2))
    return momentum * prior + (1 - momentum) * batch_mean


def temi_loss(
    p_student: torch.Tensor, p_teacher: torch.Tensor, prior: torch.Tensor, beta: float = 0.6
) -> torch.Tensor:
    """The weighted PMI loss of a pair, symmetrised, per head.

    p_student, p_teacher [H, 2, B, K] (views 0 and 1 of the pair), prior [H, K] -> [H].
    The student's view v is scored against the teacher's other view 1 - v.
    """
    weight = pair_weight(p_teacher[:, 0], p_teacher[:, 1])  # [B]
    swapped = p_teacher.flip(1)
    pmi = beta_pmi(p_student, swapped, prior.unsqueeze(1), beta)  # [H, 2, B]
    return -(weight * pmi).mean(dim=-1).mean(dim=-1)
