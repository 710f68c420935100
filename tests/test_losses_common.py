import math

import pytest
import torch

from deepclust.losses import entropy, sinkhorn, soft_cross_entropy


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(
        torch.randn(64, 16), dim=1
    ) @ torch.nn.functional.normalize(torch.randn(16, 16), dim=0)
    q = sinkhorn(scores, eps=0.05, iterations=200)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)  # each sample: one unit of mass
    assert torch.allclose(
        q.sum(0), torch.full((16,), 64 / 16), atol=1e-3
    )  # prototypes used equally
    q3 = sinkhorn(scores, eps=0.05, iterations=3)
    assert torch.allclose(q3.sum(1), torch.ones(64), atol=1e-5)


def test_sinkhorn_matches_the_textbook_exp_form():
    torch.manual_seed(1)
    scores = torch.randn(10, 4) * 0.3
    q = torch.exp(scores / 0.5).T  # SwAV's formulation, [P, B]
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(dim=1, keepdim=True)
        q /= 4
        q /= q.sum(dim=0, keepdim=True)
        q /= 10
    assert torch.allclose(sinkhorn(scores, eps=0.5, iterations=3), (q * 10).T, atol=1e-6)


def test_sinkhorn_is_finite_for_tiny_eps_and_bf16():
    scores = torch.tensor([[1.0, -1.0], [0.9, -1.0], [-1.0, 1.0], [-1.0, 0.95]])
    q = sinkhorn(scores.bfloat16(), eps=1e-4, iterations=3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    assert q.argmax(1).tolist() == [0, 0, 1, 1]


def test_sinkhorn_spreads_a_collapsed_batch():
    scores = torch.zeros(8, 4)
    scores[:, 0] = 1.0  # every sample prefers prototype 0
    q = sinkhorn(scores, eps=0.05, iterations=50)
    assert torch.allclose(q.sum(0), torch.full((4,), 2.0), atol=1e-3)


def test_soft_cross_entropy_and_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
    q = torch.tensor([[0.5, 0.5]])
    assert soft_cross_entropy(q, logits).item() == pytest.approx(
        -0.5 * math.log(0.25) - 0.5 * math.log(0.75)
    )
    onehot = torch.tensor([[0.0, 1.0]])
    assert soft_cross_entropy(onehot, logits).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([1])).item()
    )
    assert entropy(torch.full((4,), 0.25)).item() == pytest.approx(math.log(4))
    assert entropy(torch.tensor([1.0, 0.0])).item() == pytest.approx(0.0, abs=1e-9)
