"""ConCURL: its losses against direct computations, its state through save / resume / processes,
and a tiny run that learns."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deepclust import api
from deepclust.config import CONFIG_ROOT, params_from_dict
from deepclust.encoders import build_encoder
from deepclust.losses import (
    consensus_loss,
    cosine_scores,
    info_nce_loss,
    memory_bank_scores,
    nce_loss,
    nce_normaliser,
    projected_scores,
    sample_negatives,
    sinkhorn,
    softmax_nce_loss,
    swapped_prediction,
    update_memory_bank,
)
from deepclust.methods.base import StepInfo
from deepclust.methods.concurl import ConCURL, ConCURLParams
from dist_harness import run_in_processes

# ---------------------------------------------------------------------- NCE


def _hand_case():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.2]]), dim=1)
    feats = F.normalize(torch.tensor([[0.9, 0.3], [0.1, 1.0]]), dim=1)
    positives = torch.tensor([0, 2])
    negatives = torch.tensor([[1, 3, 2], [0, 1, 3]])
    return bank, feats, positives, negatives


def test_memory_bank_scores_and_nce_loss_match_a_direct_computation():
    bank, feats, positives, negatives = _hand_case()
    n, temp, z = bank.shape[0], 0.5, 3.7
    scores = memory_bank_scores(feats, bank, positives, negatives)
    gathered = memory_bank_scores(feats, bank, positives, negatives, dense_ratio=0.0)
    assert torch.allclose(scores, gathered, atol=1e-6)  # the dense and the gather paths
    for b in range(2):
        assert scores[b, 0] == pytest.approx(float(bank[positives[b]] @ feats[b]), abs=1e-6)
        for j in range(3):
            expected = float(bank[negatives[b, j]] @ feats[b])
            assert scores[b, 1 + j] == pytest.approx(expected, abs=1e-6)

    # Wu et al.: P = exp(s/T)/Z, noise k/N; h = P / (P + k/N)
    k = 3
    total = 0.0
    for b in range(2):
        p = [math.exp(float(s) / temp) / z for s in scores[b]]
        total += math.log(p[0] / (p[0] + k / n + 1e-7))
        total += sum(math.log((k / n) / (pj + k / n + 1e-7)) for pj in p[1:])
    assert float(nce_loss(scores, temp, n, z)) == pytest.approx(-total / 2, rel=1e-5)

    # softmax form: -log exp(s_pos/T) / sum exp(s/T)
    expected = -sum(
        float(scores[b, 0]) / temp - math.log(sum(math.exp(float(s) / temp) for s in scores[b]))
        for b in range(2)
    )
    assert float(softmax_nce_loss(scores, temp)) == pytest.approx(expected / 2, rel=1e-5)

    # Z = N * mean exp(s / T) over the batch's scores
    assert float(nce_normaliser(scores, temp, n)) == pytest.approx(
        n * float((scores / temp).exp().mean()), rel=1e-6
    )


def test_nce_gradient_reaches_features_not_bank():
    bank, feats, positives, negatives = _hand_case()
    feats = feats.clone().requires_grad_(True)
    bank = bank.clone().requires_grad_(True)
    nce_loss(memory_bank_scores(feats, bank, positives, negatives), 0.5, 4, 3.0).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert bank.grad is None


def test_negatives_skip_the_positive_and_do_not_depend_on_the_split():
    positives = torch.tensor([0, 5, 9, 3])
    full = sample_negatives(positives, 10, 500, torch.Generator().manual_seed(1))
    assert full.shape == (4, 500) and full.min() >= 0 and full.max() <= 9
    assert not (full == positives[:, None]).any()
    assert all(len(set(row.tolist())) == 9 for row in full)  # every other index drawn
    halves = [
        sample_negatives(
            positives[r * 2 : r * 2 + 2], 10, 500, torch.Generator().manual_seed(1), 2 * r, 4
        )
        for r in range(2)
    ]
    assert torch.equal(torch.cat(halves), full)


def test_memory_bank_update_matches_a_hand_computation():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    feats = torch.tensor([[0.0, 1.0], [0.8, -0.6]])
    update_memory_bank(bank, torch.tensor([2, 0]), feats, momentum=0.5)
    # row 2: 0.5 (0.6, 0.8) + 0.5 (0, 1) = (0.3, 0.9) -> / sqrt(0.9)
    assert torch.allclose(bank[2], torch.tensor([0.3, 0.9]) / math.sqrt(0.9))
    # row 0: 0.5 (1, 0) + 0.5 (0.8, -0.6) = (0.9, -0.3) -> / sqrt(0.9)
    assert torch.allclose(bank[0], torch.tensor([0.9, -0.3]) / math.sqrt(0.9))
    assert torch.equal(bank[1], torch.tensor([0.0, 1.0]))  # untouched


def _method_step(method: ConCURL, views, indices) -> dict:
    """One training step (BatchNorm in eval mode: its statistics are the engine's business)."""
    method.eval()
    info = StepInfo(0, 0, 0, 1, 1, indices)
    losses = method.training_step(views, info)
    torch.stack(list(losses.values())).sum().backward()
    grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    method.after_optimizer_step(info)  # the memory-bank update
    return {
        "losses": {k: v.detach() for k, v in losses.items()},
        "grads": grads,
        "bank": method.memory_bank,
        "z": method.nce_z,
    }


def _two_process_parts(rank: int, bank, indices, feats, a, b, views):
    """Rank `rank`'s half of each batch-level computation (one spawn for all of them)."""
    half = indices.shape[0] // 2
    rows = slice(rank * half, (rank + 1) * half)
    bank = bank.clone()  # arguments arrive in memory shared by the processes: each needs its own
    update_memory_bank(bank, indices[rows], feats[rows], momentum=0.5)

    a_part = a[rows].clone().requires_grad_(True)
    b_part = b[rows].clone().requires_grad_(True)
    loss = info_nce_loss(a_part, b_part, 0.5)
    loss.backward()

    torch.manual_seed(7)  # as the engine does on every process before building the method
    method = _method(num_variations=4, random_projection_dim=5, alpha=1.0)
    state = {"projections": method.projections.clone(), "memory_bank": method.memory_bank.clone()}
    step = _method_step(method, [v[rows] for v in views], indices[rows])
    return {
        "bank": bank,
        "loss": loss.detach(),
        "grad_a": a_part.grad,
        "grad_b": b_part.grad,
        "step": step,
        **state,
    }


def test_two_processes_equal_one():
    """Memory-bank update, in-batch InfoNCE, the method's random state and a whole training step
    (negatives, NCE normaliser Z, Sinkhorn, consensus, bank update), split over 2 processes."""
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(20, 8), dim=1)
    indices = torch.randperm(20)[:8]
    feats = F.normalize(torch.randn(8, 8), dim=1)
    a = F.normalize(torch.randn(8, 8), dim=1).requires_grad_(True)
    b = F.normalize(torch.randn(8, 8), dim=1).requires_grad_(True)
    views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    parts = run_in_processes(
        _two_process_parts, 2, bank, indices, feats, a.detach(), b.detach(), views
    )

    expected = bank.clone()
    update_memory_bank(expected, indices, feats, momentum=0.5)
    for part in parts:  # every process holds the bank one process would
        assert torch.allclose(part["bank"], expected, atol=1e-6)

    loss = info_nce_loss(a, b, 0.5)
    loss.backward()
    total = float(sum(p["loss"] for p in parts) / 2)
    assert total == pytest.approx(float(loss.detach()), rel=1e-5)
    # DDP averages the two processes' gradients: that must be the one-process gradient
    assert torch.allclose(torch.cat([p["grad_a"] for p in parts]) / 2, a.grad, atol=1e-6)
    assert torch.allclose(torch.cat([p["grad_b"] for p in parts]) / 2, b.grad, atol=1e-6)

    torch.manual_seed(7)
    one = _method(num_variations=4, random_projection_dim=5, alpha=1.0)
    for part in parts:  # projections and bank drawn from the seed: the same everywhere
        assert torch.equal(part["projections"], one.projections)
        assert torch.equal(part["memory_bank"], one.memory_bank)

    ref = _method_step(one, views, indices)
    steps = [p["step"] for p in parts]
    assert set(ref["losses"]) == {"nce", "soft", "consensus"}
    for name, value in ref["losses"].items():
        assert float(sum(s["losses"][name] for s in steps) / 2) == pytest.approx(
            float(value), rel=1e-5
        )
    for name, grad in ref["grads"].items():
        averaged = sum(s["grads"][name] for s in steps) / 2
        assert torch.allclose(averaged, grad, atol=1e-6), name
    for s in steps:
        assert torch.allclose(s["bank"], ref["bank"], atol=1e-6)
        assert float(s["z"]) == pytest.approx(float(ref["z"]), rel=1e-6)


def test_info_nce_matches_a_direct_computation():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    x = torch.cat([a, b])
    total = 0.0
    for i in range(6):
        pos = (i + 3) % 6
        logits = [float(x[i] @ x[j]) / 0.5 for j in range(6) if j != i]
        total += -float(x[i] @ x[pos]) / 0.5 + math.log(sum(math.exp(v) for v in logits))
    assert float(info_nce_loss(a, b, 0.5)) == pytest.approx(total / 6, rel=1e-5)


# ---------------------------------------------------------------------- consensus


def test_projected_scores_match_a_direct_computation():
    torch.manual_seed(0)
    z, protos, proj = torch.randn(5, 6), torch.randn(3, 6), torch.randn(2, 4, 6)
    got = projected_scores(z, protos, proj)
    for m in range(2):
        zr = F.normalize(z @ proj[m].T, dim=1)
        cr = F.normalize(protos @ proj[m].T, dim=1)
        assert torch.allclose(got[m], zr @ cr.T, atol=1e-6)


def test_consensus_with_identity_projection_is_the_plain_swapped_loss():
    torch.manual_seed(0)
    z1, z2, protos = torch.randn(16, 8), torch.randn(16, 8), torch.randn(4, 8)
    s1, s2 = cosine_scores(z1, protos), cosine_scores(z2, protos)
    q1, q2 = sinkhorn(s1), sinkhorn(s2)
    eye = torch.eye(8)[None]
    got = consensus_loss(
        projected_scores(z1, protos, eye), projected_scores(z2, protos, eye), q1, q2
    )
    swapped = swapped_prediction(torch.stack([s1, s2]), torch.stack([q1, q2]), 0.1)
    assert float(got) == pytest.approx(float(swapped), rel=1e-6)
    direct = -0.5 * (
        (q2 * torch.log_softmax(s1 / 0.1, 1)).sum(1).mean()
        + (q1 * torch.log_softmax(s2 / 0.1, 1)).sum(1).mean()
    )
    assert float(got) == pytest.approx(float(direct), rel=1e-6)


def _method(**params) -> ConCURL:
    p = ConCURLParams(crop_size=16, nce_negatives=8, **params)
    return ConCURL(p, build_encoder("small_cnn", 16), num_clusters=4, num_samples=40)


def test_method_identity_projection_equals_its_soft_loss():
    torch.manual_seed(0)
    method = _method(identity_projection=True, alpha=1.0)
    assert method.projections.shape == (1, 256, 256)
    views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    info = StepInfo(0, 0, 0, 1, 1, torch.arange(8))
    losses = method.training_step(views, info)
    assert set(losses) == {"nce", "soft", "consensus"}
    assert float(losses["consensus"].detach()) == pytest.approx(
        float(losses["soft"].detach()), rel=1e-6
    )


@pytest.mark.parametrize("variation", ["initialisation", "kmeans"])
def test_variations_reduce_to_their_definition(variation):
    torch.manual_seed(0)
    method = _method(variation=variation, num_variations=3, alpha=1.0)
    if variation == "kmeans":
        method.kmeans_targets.copy_(torch.arange(40) % 4)
    views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    losses = method.training_step(views, StepInfo(0, 0, 0, 1, 1, torch.arange(8)))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["consensus"].backward()
    if variation == "initialisation":
        assert method.prototype_sets.shape == (2, 4, 256)
        assert method.prototype_sets.grad.abs().sum() > 0
    assert method.prototypes.grad.abs().sum() > 0


def test_detached_prototypes_are_frozen_as_in_the_released_code():
    method = _method(detach_prototypes=True)
    assert not method.prototypes.requires_grad
    assert not any(p is method.prototypes for g in method.parameter_groups() for p in g["params"])


# ---------------------------------------------------------------------- state


def test_projections_and_bank_survive_a_state_dict_round_trip():
    torch.manual_seed(3)
    a = _method(num_variations=4, random_projection_dim=5)
    torch.manual_seed(4)
    b = _method(num_variations=4, random_projection_dim=5)
    assert not torch.equal(a.projections, b.projections)  # drawn from the seed
    b.load_state_dict(a.state_dict())
    for key in ("projections", "memory_bank", "nce_z", "prototypes"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    torch.manual_seed(3)
    assert torch.equal(
        _method(num_variations=4, random_projection_dim=5).projections, a.projections
    )


TINY = {
    "data.protocol": "all",
    "encoder.name": "small_cnn",
    "train.batch_size": 32,
    "train.progress": False,
    "train.optimizer.name": "sgd",
    "train.optimizer.lr": 0.05,
    "train.optimizer.weight_decay": 5.0e-4,
    "train.schedule.name": "constant",
    "train.schedule.milestones": [],
    "params.crop_size": 16,
    "params.nce_negatives": 64,  # 160 images
    "params.num_variations": 8,
    "params.random_projection_dim": 64,
}


def tiny_config(data_dir: Path, **extra):
    return api.make_config(
        "concurl", "imagefolder", overrides={**TINY, "data.data_dir": str(data_dir), **extra}
    )


def test_resume_after_kill_keeps_projections_and_ends_where_an_uninterrupted_run_does(
    separable_images, tmp_path, monkeypatch, one_thread
):
    cfg = tiny_config(separable_images, **{"train.epochs": 3, "train.max_steps_per_epoch": 2})
    full = api.train(cfg, out=tmp_path / "full")
    ref = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]

    original = ConCURL.training_step

    def dies_in_epoch_3(self, views, info):
        if info.epoch == 2 and info.epoch_step == 1:
            raise KeyboardInterrupt  # killed mid-epoch
        return original(self, views, info)

    monkeypatch.setattr(ConCURL, "training_step", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, out=tmp_path / "killed")
    monkeypatch.setattr(ConCURL, "training_step", original)
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert saved["epoch"] == 2
    assert torch.equal(saved["model"]["projections"], ref["projections"])
    assert float(saved["model"]["nce_z"]) > 0

    resumed = api.train(
        api.resume_config(tmp_path / "killed"), out=tmp_path / "killed", resume=True
    )
    got = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    for key in ref:
        assert torch.allclose(ref[key].float(), got[key].float(), atol=1e-6), key
    assert resumed.summary["metrics"] == full.summary["metrics"]
    run = api.load_run(tmp_path / "killed")
    assert torch.equal(run.method.projections, ref["projections"])


def test_tiny_run_learns_clusters(separable_images, tmp_path, one_thread):
    """Memory-bank NCE + consensus over 8 random projections, 20 epochs of 160 images."""
    cfg = tiny_config(separable_images, **{"train.epochs": 20, "train.eval_every": 0})
    result = api.train(cfg, out=tmp_path / "run")
    assert result.summary["metrics"]["acc"] > 0.6, result.summary["metrics"]  # chance 0.25


@pytest.mark.parametrize(
    "options",
    [
        {"variation": "kmeans", "predict_with": "kmeans_instance", "instance_loss": "infonce"},
        {
            "variation": "initialisation",
            "num_variations": 3,
            "predict_with": "kmeans_projection",
            "nce_form": "softmax",
            "nce_views": 2,
        },
    ],
    ids=["kmeans", "initialisation"],
)
def test_variations_and_kmeans_prediction_run_and_reload(
    options, separable_images, tmp_path, one_thread
):
    extra = {f"params.{k}": v for k, v in options.items()}
    cfg = tiny_config(
        separable_images,
        **{"train.epochs": 2, "train.max_steps_per_epoch": 2, "params.kmeans_n_init": 2, **extra},
    )
    result = api.train(cfg, out=tmp_path / "run")
    run = api.load_run(tmp_path / "run")
    assert bool(run.method.kmeans_fitted)
    if options["variation"] == "kmeans":
        assert (run.method.kmeans_targets >= 0).all()
    again = api.evaluate(tmp_path / "run", split="all")
    assert again["acc"] == pytest.approx(result.summary["metrics"]["acc"])


@pytest.mark.parametrize(
    "path", sorted((CONFIG_ROOT / "concurl").glob("*.yaml")), ids=lambda p: p.stem
)
def test_packaged_configs_validate(path):
    cfg = api.make_config("concurl", config_file=path)
    params = params_from_dict(ConCURLParams, cfg.params)
    assert cfg.method == "concurl"
    if path.stem == "cifar10":
        assert (params.num_variations, params.random_projection_dim) == (64, 152)
        assert params.nce_temperature == 0.85 and cfg.train.optimizer.lr == 0.015
        assert cfg.train.schedule.milestones == (600, 950, 1300, 1650, 2000)
    if path.stem.startswith("imagenet"):
        assert cfg.encoder.name == "resnet50" and params.crop_size == 160
        assert (cfg.data.image_size, cfg.data.eval_center_crop) == (256, 160)  # as the authors
