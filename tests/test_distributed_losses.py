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


def _mean_prediction_entropy(rank: int, logits: torch.Tensor, weight: torch.Tensor, world: int):
    """H(mean softmax) over the global batch; returns (loss, local gradient of weight)."""
    from deepclust.engine.distributed import all_reduce_sum_grad
    from deepclust.losses import entropy

    w = weight.clone().requires_grad_(True)
    half = logits.shape[0] // world
    local = logits[rank * half : (rank + 1) * half] @ w
    mean_p = all_reduce_sum_grad(torch.softmax(local, 1).sum(0)) / logits.shape[0]
    loss = entropy(mean_p)
    loss.backward()
    return loss.detach(), w.grad


def test_batch_statistic_gradients_match_after_ddp_averaging():
    torch.manual_seed(0)
    logits, weight = torch.randn(16, 5), torch.randn(5, 5)
    one_loss, one_grad = _mean_prediction_entropy(0, logits, weight, 1)
    parts = run_in_processes(_mean_prediction_entropy, 2, logits, weight, 2)
    for loss, _ in parts:
        assert torch.allclose(loss, one_loss, atol=1e-6)
    ddp_grad = (parts[0][1] + parts[1][1]) / 2  # what DDP's gradient averaging does
    assert torch.allclose(ddp_grad, one_grad, atol=1e-6)


def _gathered_loss(rank: int, x: torch.Tensor, world: int):
    from deepclust.engine.distributed import all_gather_cat_grad

    w = torch.ones(x.shape[1], requires_grad=True)
    half = x.shape[0] // world
    feats = all_gather_cat_grad(x[rank * half : (rank + 1) * half] * w)
    loss = (feats @ feats.T).pow(2).mean()  # couples every pair of samples in the global batch
    loss.backward()
    return loss.detach(), w.grad


def test_all_gather_gradient_matches_one_process():
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    one_loss, one_grad = _gathered_loss(0, x, 1)
    parts = run_in_processes(_gathered_loss, 2, x, 2)
    assert all(torch.allclose(loss, one_loss) for loss, _ in parts)
    assert torch.allclose((parts[0][1] + parts[1][1]) / 2, one_grad, atol=1e-5)


def _self_label_half(rank: int, p_weak: torch.Tensor, logits: torch.Tensor, world: int):
    """Self-labelling loss of this process's rows: (all-reduced loss, local gradient)."""
    from deepclust.engine.distributed import all_reduce_sum
    from deepclust.losses.self_label import self_label_loss

    half = p_weak.shape[0] // world
    rows = slice(rank * half, (rank + 1) * half)
    x = logits[rows].clone().requires_grad_(True)
    loss, confident = self_label_loss(p_weak[rows], x.log_softmax(1), threshold=0.5)
    loss.backward()
    return all_reduce_sum(loss.detach().clone()), confident, x.grad


def test_self_label_loss_split_over_two_processes_equals_one():
    torch.manual_seed(0)
    p_weak = torch.softmax(torch.randn(16, 4) * 3, 1)
    logits = torch.randn(16, 4)
    one_loss, one_count, one_grad = _self_label_half(0, p_weak, logits, 1)
    parts = run_in_processes(_self_label_half, 2, p_weak, logits, 2)
    for loss, count, _ in parts:
        assert torch.allclose(loss, one_loss, atol=1e-6) and count == one_count
    # the stage sums gradients over processes: each row's gradient is its one-process one
    assert torch.allclose(torch.cat([g for _, _, g in parts]), one_grad, atol=1e-6)
