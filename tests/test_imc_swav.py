"""IMC-SwAV: the mathematics of its losses, where gradients go, prototypes, and a tiny run."""

import math
from types import SimpleNamespace

import pytest
import torch

from deepclust import api
from deepclust.config import CONFIG_ROOT, build_config, params_from_dict
from deepclust.encoders import build_encoder
from deepclust.errors import DataError
from deepclust.losses import (
    information_objective,
    joint_distribution,
    logit_penalty,
    mutual_information_loss,
    soft_cross_entropy,
    swapped_prediction,
)
from deepclust.methods import METHODS, StepInfo
from deepclust.methods.imc_swav import IMCSwAV, IMCSwAVParams
from dist_harness import run_in_processes

TINY = {
    "high_res_size": 12,
    "low_res_size": 8,
    "num_prototypes": 16,
    "classifier_hidden": 32,
    "projection_hidden": 32,
}


def tiny_method(num_samples: int = 8, **params) -> IMCSwAV:
    torch.manual_seed(0)
    p = IMCSwAVParams(**{**TINY, **params})
    return IMCSwAV(p, build_encoder("small_cnn", 16), num_clusters=3, num_samples=num_samples)


def random_views(method: IMCSwAV, batch: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [
        torch.randn(batch, 3, crop.size, crop.size, generator=gen)
        for crop in method.view_spec().crops
        for _ in range(crop.count)
    ]


def info(step: int = 0, batch: int = 8) -> StepInfo:
    return StepInfo(0, step, step, 10, 10, torch.arange(batch))


def H(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


# --------------------------------------------------------------------- MI loss


def test_mi_loss_equals_a_hand_computation():
    p_y = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    p_u = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    # joint = (1/2) [[0.4, 0.4], [0.1, 0.1]] + (1/2) [[0, 0.4], [0, 0.6]]
    expected_joint = torch.tensor([[0.2, 0.4], [0.05, 0.35]])
    assert torch.allclose(joint_distribution(p_y, p_u), expected_joint)
    # p(u) = (0.25, 0.75); p(y | u=0) = (0.8, 0.2), p(y | u=1) = (0.4/0.75, 0.35/0.75)
    h_y_given_u = 0.25 * H(0.8, 0.2) + 0.75 * H(0.4 / 0.75, 0.35 / 0.75)
    h_y = H(0.6, 0.4)
    expected = h_y_given_u - 4 * h_y
    assert mutual_information_loss(p_y, p_u, beta=4.0).item() == pytest.approx(expected, abs=1e-6)
    # = -[I(Y;U) + 3 H(Y)] with I = H(Y) - H(Y|U)
    mi = h_y - h_y_given_u
    assert expected == pytest.approx(-(mi + 3 * h_y))
    # the objective on a joint directly, a second hand case
    joint = torch.tensor([[0.4, 0.1], [0.2, 0.3]])
    by_hand = 0.6 * H(2 / 3, 1 / 3) + 0.4 * H(0.25, 0.75) - 4 * math.log(2)
    assert information_objective(joint).item() == pytest.approx(by_hand, abs=1e-6)


def test_mi_loss_is_minimal_for_confident_balanced_consistent_assignments():
    # 8 samples, 4 prototypes (2 samples each), prototypes {0,1} -> cluster 0, {2,3} -> 1
    proto = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    p_u = torch.eye(4)[proto]
    best_y = torch.eye(2)[proto // 2]
    best = mutual_information_loss(best_y, p_u).item()
    assert best == pytest.approx(-4 * math.log(2), abs=1e-6)  # H(Y|U) = 0, H(Y) = log K
    unconfident = 0.7 * best_y + 0.3 * 0.5
    unbalanced = torch.eye(2)[torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])]
    inconsistent = torch.eye(2)[torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])]
    for worse in (unconfident, unbalanced, inconsistent):
        assert mutual_information_loss(worse, p_u).item() > best + 0.05
    torch.manual_seed(0)
    for _ in range(20):  # random perturbations of the logits of the best assignment
        p_y = torch.softmax(10 * best_y + torch.randn(8, 2) * 3, dim=1)
        assert mutual_information_loss(p_y, p_u).item() >= best - 1e-6
    # and over all view pairs at once, broadcast over leading dimensions
    pairs = mutual_information_loss(torch.stack([best_y, unbalanced])[:, None], p_u[None, None])
    assert pairs.shape == (2, 1) and pairs[0, 0].item() == pytest.approx(best, abs=1e-6)


def test_mi_loss_of_no_samples_is_zero_not_nan():
    loss = mutual_information_loss(torch.zeros(0, 3), torch.zeros(0, 5))
    assert loss.item() == 0.0
    assert logit_penalty(torch.zeros(0, 3)).item() == 0.0


def test_logit_penalty():
    y = torch.tensor([[6.0, -7.0, 1.0], [0.0, 5.0, -5.5]])
    assert logit_penalty(y, bound=5.0).item() == pytest.approx((1 + 2 + 0.5) / 2)


# --------------------------------------------------------------------- swapped prediction


def test_swapped_prediction_matches_a_direct_loop():
    torch.manual_seed(0)
    scores = torch.randn(6, 5, 7)
    codes = torch.softmax(torch.randn(2, 5, 7), dim=-1)
    terms = []
    for i in range(2):
        for v in range(6):
            if v == i:
                continue
            for b in range(5):
                log_p = torch.log_softmax(scores[v, b] / 0.1, dim=0)
                terms.append(-(codes[i, b] * log_p).sum() / 5)
    by_loop = torch.stack(terms).sum() / (2 * 5)  # per pair: batch mean; then mean of 10 pairs
    got = swapped_prediction(scores, codes, temperature=0.1)
    assert torch.allclose(got, by_loop, atol=1e-5)
    pair_mean = sum(
        soft_cross_entropy(codes[i], scores[v] / 0.1) for i in range(2) for v in range(6) if v != i
    ) / (2 * 5)
    assert torch.allclose(got, pair_mean, atol=1e-5)


# --------------------------------------------------------------------- the method


def test_registered_with_the_papers_views():
    assert METHODS.get("imc-swav") is IMCSwAV
    spec = IMCSwAV(IMCSwAVParams(), build_encoder("small_cnn", 32), 10, 4).view_spec()
    high, low = spec.crops
    assert (high.count, high.size, high.scale) == (2, 28, (0.2, 1.0))
    assert (low.count, low.size, low.scale) == (4, 18, (0.08, 0.4))
    for crop in spec.crops:
        assert crop.flip_p == 0.5 and crop.jitter == (0.4, 0.4, 0.4, 0.1)
        assert (crop.jitter_p, crop.grayscale_p, crop.blur_p) == (0.8, 0.25, 0.0)


def _grads(module: torch.nn.Module) -> list[float]:
    return [0.0 if p.grad is None else p.grad.abs().sum().item() for p in module.parameters()]


def test_swav_loss_trains_the_encoder_and_mi_loss_only_the_head():
    m = tiny_method()
    views = random_views(m)
    losses = m.training_step(views, info())
    assert set(losses) == {"swav", "mi", "logit"}
    losses["swav"].backward()
    assert sum(_grads(m.encoder)) > 0 and sum(_grads(m.prototypes)) > 0
    assert sum(_grads(m.classifier)) == 0
    m.zero_grad(set_to_none=True)

    losses = m.training_step(views, info())
    losses["mi"].backward()
    assert sum(_grads(m.encoder)) == 0
    assert sum(_grads(m.projection)) == 0 and sum(_grads(m.prototypes)) == 0
    assert all(g > 0 for g in _grads(m.classifier))  # every head parameter learns


def test_prototypes_frozen_during_warmup_then_updated_and_unit_norm():
    m = tiny_method(freeze_prototypes_iters=2)
    assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(16))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-5)
    views = random_views(m)

    def step(i: int) -> None:
        loss = sum(m.training_step(views, info(i)).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        m.before_optimizer_step(info(i))
        opt.step()
        m.after_optimizer_step(info(i))

    before = m.prototypes.weight.detach().clone()
    encoder_before = next(m.encoder.parameters()).detach().clone()
    for i in range(2):
        step(i)
    # frozen, weight decay included (re-normalising a unit vector may move the last bit)
    assert torch.allclose(m.prototypes.weight, before, rtol=0, atol=1e-6)
    assert not torch.equal(next(m.encoder.parameters()), encoder_before)
    step(2)
    assert (m.prototypes.weight - before).abs().max() > 1e-3
    assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(16), atol=1e-6)


def test_classifier_on_labelled_only_has_its_own_batches():
    """The stream holds the labelled rows; the MI loss reads only the auxiliary views and the
    SwAV loss only the main ones; the auxiliary batch trains the classifier alone."""
    m = tiny_method(
        num_samples=16,
        classifier_on_labelled_only=True,
        labelled_stream="auxiliary",
        classifier_batch_size=4,
    )
    labels = torch.tensor([-1] * 8 + [0, 1, 2, 0, 1, 2, 0, 1])
    stream = m.auxiliary_stream(SimpleNamespace(fit_set=SimpleNamespace(labels=labels)))
    assert torch.equal(stream.rows, torch.arange(8, 16)) and stream.batch_size == 4
    with pytest.raises(DataError, match="no training image comes from a labelled split"):
        m.auxiliary_stream(SimpleNamespace(fit_set=SimpleNamespace(labels=-torch.ones(4))))
    assert tiny_method().auxiliary_stream(None) is None

    m.eval()  # BatchNorm in eval mode: the expected values below use the same statistics
    views, labelled = random_views(m), [v[:4] + 1.0 for v in random_views(m)]
    info = StepInfo(0, 0, 0, 1, 1, torch.arange(8), auxiliary=labelled)
    losses = m.training_step(views, info)
    with torch.no_grad():
        h = m.encode_views(labelled)
        p_y = torch.softmax(m.classifier(h.flatten(0, 1)).unflatten(0, h.shape[:2]), -1)
        p_u = torch.softmax(m.prototype_scores(h) / 0.1, -1)
        expected = mutual_information_loss(p_y[:, None], p_u[None]).mean()
    assert torch.allclose(losses["mi"], expected, atol=1e-5)
    shared = m.training_step(views, StepInfo(0, 0, 0, 1, 1, torch.arange(8)))
    assert torch.equal(losses["swav"], shared["swav"])
    assert losses["mi"].item() != shared["mi"].item()

    (losses["mi"] + losses["logit"]).backward()
    assert all(p.grad is None for p in m.encoder.parameters())
    assert all(p.grad is None for p in m.projection.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.classifier.parameters())


def test_predict_proba_is_the_classifier_softmax():
    m = tiny_method().eval()
    x = torch.randn(5, 3, 16, 16)
    probs = m.predict_proba(x)
    assert probs.shape == (5, 3)
    assert torch.allclose(probs, torch.softmax(m.classifier(m.encoder(x)), 1))


def test_bad_params_are_config_errors():
    from deepclust.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 2 views"):
        tiny_method(high_res_count=1, low_res_count=0)
    for bad in ({"prototypes_per_sample": -1.0}, {"freeze_prototypes_fraction": 1.5}):
        with pytest.raises(ConfigError, match="freeze_prototypes_fraction must be between"):
            tiny_method(**bad)


@pytest.mark.parametrize("path", sorted((CONFIG_ROOT / "imc-swav").glob("*.yaml")), ids=str)
def test_packaged_configs_validate(path):
    cfg = build_config("imc-swav", None, path)
    assert cfg.method == "imc-swav"
    params = params_from_dict(IMCSwAVParams, cfg.params)
    assert params.num_prototypes >= 1


# --------------------------------------------------------------------- two processes


def _mi_on_processes(rank: int, world: int, logits, p_u, head, row_masks):
    """For each row mask: MI loss of softmax(logits @ head) with p_u over this process's rows.

    logits [V, B, D], p_u [V, B, P], head [D, K]; returns [(loss, gradient of head)].
    """
    out = []
    for rows in row_masks:
        w = head.clone().requires_grad_(True)
        n = logits.shape[1] // world
        local = slice(rank * n, (rank + 1) * n)
        keep = rows[local]
        p_y = torch.softmax(logits[:, local][:, keep] @ w, dim=-1)  # [V, b, K]
        loss = mutual_information_loss(p_y[:, None], p_u[:, local][:, keep][None]).mean()
        loss.backward()
        out.append((loss.detach(), w.grad))
    return out


def test_mi_loss_split_over_two_processes_equals_one():
    torch.manual_seed(0)
    logits, head = torch.randn(3, 12, 4), torch.randn(4, 5)
    p_u = torch.softmax(torch.randn(3, 12, 7) * 3, dim=-1)
    masks = [torch.ones(12, dtype=torch.bool), torch.arange(12) < 5]  # 2nd: rank 1 has no rows
    one = _mi_on_processes(0, 1, logits, p_u, head, masks)
    two = run_in_processes(_mi_on_processes, 2, 2, logits, p_u, head, masks)
    for case, (one_loss, one_grad) in enumerate(one):
        (loss0, grad0), (loss1, grad1) = two[0][case], two[1][case]
        assert torch.allclose(loss0, one_loss, atol=1e-6) and torch.allclose(
            loss1, one_loss, atol=1e-6
        )
        assert torch.allclose((grad0 + grad1) / 2, one_grad, atol=1e-6)  # DDP averages gradients


# --------------------------------------------------------------------- end to end


def test_tiny_model_learns_separable_clusters(separable_images, tmp_path):
    cfg = api.make_config(
        "imc-swav",
        "imagefolder",
        "cpu",
        overrides={
            "data.data_dir": str(separable_images),
            "data.protocol": "all",
            "train.epochs": 5,
            "train.batch_size": 32,
            "train.max_steps_per_epoch": None,
            "train.eval_every": 0,
            "train.progress": False,
            "train.optimizer.lr": 1e-3,
            "train.schedule.warmup_iters": 5,
            "params.high_res_size": 16,
            "params.low_res_size": 10,
            "params.num_prototypes": 32,
            "params.freeze_prototypes_iters": 5,
            "params.classifier_hidden": 128,
        },
    )
    result = api.train(cfg, out=tmp_path / "run")
    assert result.summary["metrics"]["acc"] > 0.6, result.summary["metrics"]  # chance: 0.25
    assert api.evaluate(tmp_path / "run")["acc"] == pytest.approx(result.summary["metrics"]["acc"])
