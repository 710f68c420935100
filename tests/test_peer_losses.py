"""The mathematics of SCAN's, TEMI's, TURTLE's and self-labelling's losses: known values,
invariances and gradients."""

import math

import pytest
import torch

from deepclust.losses.neighbours import global_mean, neighbour_consistency, scan_loss
from deepclust.losses.pmi import beta_pmi, pair_weight, temi_loss, update_prior
from deepclust.losses.self_label import class_weights, self_label_loss
from deepclust.losses.transfer import task_encoder_loss


def _probs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), -1)


# ----------------------------------------------------------------------------- SCAN
def test_scan_uniform_predictions_known_values():
    k = 5
    p = torch.full((8, k), 1 / k)
    total, consistency, spread = scan_loss(p, p, entropy_weight=5.0)
    assert consistency.item() == pytest.approx(math.log(k))  # <u, u> = 1/K
    assert spread.item() == pytest.approx(math.log(k))
    assert total.item() == pytest.approx(math.log(k) - 5 * math.log(k))


def test_scan_confident_agreeing_balanced_batch_is_the_optimum():
    eye = torch.eye(4).repeat(2, 1)  # 8 samples, each cluster twice, one-hot
    total, consistency, spread = scan_loss(eye, eye, entropy_weight=2.0)
    assert consistency.item() == pytest.approx(0.0, abs=1e-6)
    assert spread.item() == pytest.approx(math.log(4))
    other = _probs(8, 4)
    assert total.item() < scan_loss(other, other, 2.0)[0].item()


def test_scan_invariant_to_renaming_clusters_and_per_head():
    a, n = _probs(3, 16, 6, seed=1), _probs(3, 16, 6, seed=2)  # 3 heads
    perm = torch.randperm(6)
    total = scan_loss(a, n)[0]
    assert total.shape == (3,)
    assert torch.allclose(scan_loss(a[..., perm], n[..., perm])[0], total, atol=1e-6)
    assert torch.allclose(scan_loss(a[1], n[1])[0], total[1])


def test_scan_gradient_matches_finite_differences():
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    neighbours = _probs(6, 3, seed=3).double()

    def f(x):
        return scan_loss(torch.softmax(x, 1), neighbours, 5.0)[0].double()

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-3, atol=1e-3, rtol=1e-3)  # float32 inside


def test_consistency_is_minus_log_of_the_dot_product():
    a = torch.tensor([[0.5, 0.5]])
    n = torch.tensor([[1.0, 0.0]])
    assert neighbour_consistency(a, n).item() == pytest.approx(-math.log(0.5))
    assert global_mean(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist() == [0.5, 0.5]


# ----------------------------------------------------------------------------- TEMI
def test_beta_pmi_known_value():
    k = 4
    one_hot = torch.eye(k)[:1]
    prior = torch.full((k,), 1 / k)
    # identical one-hot student and teacher: sum_k (p p)^beta / p_k = 1 / (1/K) -> log K
    assert beta_pmi(one_hot, one_hot, prior, beta=0.6).item() == pytest.approx(math.log(k))
    u = torch.full((1, k), 1 / k)
    # uniform both: K * (1/K^2)^beta * K -> log(K^2 * K^(-2 beta))
    assert beta_pmi(u, u, prior, 0.6).item() == pytest.approx((2 - 1.2) * math.log(k), rel=1e-5)


def test_temi_loss_is_symmetric_in_the_pair_and_weighted_by_teacher_agreement():
    ps, pt = _probs(2, 2, 10, 5, seed=4), _probs(2, 2, 10, 5, seed=5)  # [H, views, B, K]
    prior = _probs(2, 5, seed=6)
    loss = temi_loss(ps, pt, prior, beta=0.6)
    swapped = temi_loss(ps.flip(1), pt.flip(1), prior, beta=0.6)
    assert loss.shape == (2,) and torch.allclose(loss, swapped, atol=1e-6)
    w = pair_weight(pt[:, 0], pt[:, 1])
    expected = -(w * beta_pmi(ps[:, 0], pt[:, 1], prior, 0.6)).mean(-1)
    expected = (expected - (w * beta_pmi(ps[:, 1], pt[:, 0], prior, 0.6)).mean(-1)) / 2
    assert torch.allclose(loss, expected, atol=1e-6)


def test_temi_gradient_reaches_the_student_only():
    s = torch.randn(1, 2, 6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 6, 3, dtype=torch.float64, requires_grad=True)
    prior = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    temi_loss(torch.softmax(s, -1), torch.softmax(t, -1).detach(), prior).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None

    def f(x):
        return temi_loss(torch.softmax(x, -1), torch.softmax(t.detach(), -1), prior).double()

    s = s.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (s,), eps=1e-3, atol=1e-3, rtol=1e-3)  # float32 inside


def test_prior_update_is_an_ema_of_the_teacher_batch_mean():
    prior = torch.full((1, 2), 0.5)
    teacher = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]])  # [1, 2, 2, 2]
    assert update_prior(prior, teacher, 0.9)[0].tolist() == pytest.approx([0.525, 0.475])


# ----------------------------------------------------------------------------- self-labelling
def test_class_weights_are_inverse_shares_of_confident_targets():
    targets = torch.tensor([0, 0, 0, 1, 2])
    mask = torch.tensor([True, True, True, True, False])
    assert class_weights(targets, mask, 3).tolist() == pytest.approx([4 / 3, 4.0, 1.0])


def test_self_label_loss_known_value_and_threshold():
    p_weak = torch.tensor([[0.995, 0.005], [0.995, 0.005], [0.002, 0.998], [0.6, 0.4]])
    log_strong = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.5, 0.5]]))
    loss, confident = self_label_loss(p_weak, log_strong, threshold=0.99, balance=True)
    assert confident.item() == 3  # the 0.6 row is not confident
    w0, w1 = 3 / 2, 3 / 1  # class 0 has 2 of the 3 confident samples, class 1 one
    nll = [-math.log(0.9), -math.log(0.5), -math.log(0.8)]
    expected = (w0 * nll[0] + w0 * nll[1] + w1 * nll[2]) / (2 * w0 + w1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    plain, _ = self_label_loss(p_weak, log_strong, threshold=0.99, balance=False)
    assert plain.item() == pytest.approx(sum(nll) / 3, rel=1e-6)


def test_self_label_loss_without_confident_samples_is_zero_with_a_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    loss, confident = self_label_loss(torch.full((4, 3), 1 / 3), logits.log_softmax(1), 0.99)
    loss.backward()
    assert loss.item() == 0 and confident.item() == 0 and torch.all(logits.grad == 0)


# ----------------------------------------------------------------------------- TURTLE
def test_task_encoder_loss_known_values():
    k = 4
    labels = torch.full((6, k), 1 / k)
    total, error, spread = task_encoder_loss([labels], [torch.zeros(6, k)], gamma=10.0)
    assert error.item() == pytest.approx(math.log(k))  # uniform inner predictions
    assert spread.item() == pytest.approx(math.log(k))
    assert total.item() == pytest.approx(math.log(k) - 10 * math.log(k))


def test_task_encoder_gradient_flows_through_the_labelling_only():
    theta = torch.randn(5, 3, requires_grad=True)
    inner = torch.randn(8, 3, requires_grad=True)
    x = torch.randn(8, 5)
    labels = torch.softmax(x @ theta, 1)
    task_encoder_loss([labels, labels], [inner, inner], gamma=1.0)[0].backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0 and inner.grad is None


def test_task_encoder_entropy_pushes_towards_balanced_labellings():
    balanced = torch.eye(2).repeat(3, 1)
    collapsed = torch.tensor([[1.0, 0.0]]).repeat(6, 1)
    logits = torch.zeros(6, 2)
    assert (
        task_encoder_loss([balanced], [logits], 10.0)[0]
        < task_encoder_loss([collapsed], [logits], 10.0)[0]
    )
