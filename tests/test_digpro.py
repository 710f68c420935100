"""DigPro: its losses against direct computations, the EMA, configs, 2 processes, a tiny run."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepclust import api
from deepclust.config import CONFIG_ROOT, build_config, params_from_dict
from deepclust.encoders.base import Encoder
from deepclust.losses import (
    assign_groups,
    enqueue,
    group_contrast_loss,
    prototype_aggregation_loss,
    update_group_centres,
)
from deepclust.methods import METHODS, StepInfo
from deepclust.methods.digpro import DigPro, DigProParams
from deepclust.training.trainer import Trainer
from dist_harness import run_in_processes

# ----------------------------------------------------------------------------- helpers


def tiny_encoder() -> Encoder:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU())
    return Encoder(body, feature_dim=16)


def tiny_digpro(k: int = 3, n: int = 40, **params) -> DigPro:
    p = DigProParams(crop_size=8, hidden_dim=32, projection_dim=8, memory_size=24, **params)
    return DigPro(p, tiny_encoder(), num_clusters=k, num_samples=n)


def proto_loss_by_loop(q, k, labels, num_classes, t):
    """The prototype aggregation loss written class by class, as in the paper."""
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    present = [c for c in range(num_classes) if (labels == c).any()]
    qc = {c: F.normalize(qn[labels == c].mean(0), dim=0) for c in present}
    kc = {c: F.normalize(kn[labels == c].mean(0), dim=0) for c in present}
    losses = []
    for c in present:
        pos = torch.exp(qc[c] @ kc[c] / t)
        neg = sum(torch.exp(qc[c] @ qc[j] / t) for j in present if j != c)
        losses.append(-torch.log(pos / (pos + neg)))
    return torch.stack(losses).mean()


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4, 0, 1, 2], [0, 3, 3, 0, 4, 4, 0, 3]])
def test_prototype_aggregation_matches_the_class_by_class_loop(labels):
    torch.manual_seed(0)
    labels = torch.tensor(labels)  # the second case leaves classes 1 and 2 absent
    q = torch.randn(8, 6, dtype=torch.float64).float().requires_grad_(True)
    k = torch.randn(8, 6)
    loss = prototype_aggregation_loss(q, k, labels, num_classes=5, temperature=0.5)
    (grad,) = torch.autograd.grad(loss, q)
    q2 = q.detach().clone().requires_grad_(True)
    ref = proto_loss_by_loop(q2, k, labels, 5, 0.5)
    (ref_grad,) = torch.autograd.grad(ref, q2)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(grad, ref_grad, atol=1e-5)
    assert torch.isfinite(grad).all()


def test_prototype_aggregation_with_one_class_is_zero():
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    loss = prototype_aggregation_loss(q, k, torch.full((4,), 2), num_classes=3)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_group_update_and_assignment_by_hand():
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -0.1], [1.0, 0.5]])
    assert assign_groups(feats, centres).tolist() == [0, 1, 2, 0]
    members = torch.tensor([0, 1, 1, 0])  # group 2 gets no member this batch
    new = update_group_centres(
        centres, torch.tensor([[2.0, 0], [0, 3], [0, -1], [1, 1]]), members, 0.9
    )
    s = 1 / math.sqrt(2)
    mean0 = torch.tensor([(1 + s) / 2, s / 2])  # mean of the normalised [1, 0] and [1, 1]
    assert torch.allclose(new[0], 0.9 * centres[0] + 0.1 * mean0, atol=1e-6)
    assert torch.allclose(new[1], torch.tensor([0.0, 0.9]), atol=1e-6)  # [0, 1] and [0, -1] cancel
    assert torch.equal(new[2], centres[2])


def test_group_loss_is_cross_entropy_of_cosines():
    torch.manual_seed(0)
    pred, centres = torch.randn(5, 4), torch.randn(3, 4)
    a = torch.tensor([0, 2, 1, 1, 0])
    cos = F.normalize(pred, dim=1) @ F.normalize(centres, dim=1).T
    expected = -torch.log_softmax(cos / 0.1, dim=1)[torch.arange(5), a].mean()
    assert group_contrast_loss(pred, centres, a, 0.1).item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_memory_is_a_ring_buffer():
    memory, ptr, filled = (
        torch.zeros(5, 1),
        torch.zeros((), dtype=torch.long),
        torch.zeros((), dtype=torch.long),
    )
    enqueue(memory, ptr, filled, torch.tensor([[1.0], [2.0], [3.0]]))
    assert memory.flatten().tolist() == [1, 2, 3, 0, 0] and int(ptr) == 3 and int(filled) == 3
    enqueue(memory, ptr, filled, torch.tensor([[4.0], [5.0], [6.0]]))
    assert memory.flatten().tolist() == [6, 2, 3, 4, 5] and int(ptr) == 1 and int(filled) == 5
    enqueue(memory, ptr, filled, torch.arange(10.0, 17.0)[:, None])  # more rows than fit
    assert sorted(memory.flatten().tolist()) == [12, 13, 14, 15, 16] and int(filled) == 5


# ----------------------------------------------------------------------------- method


def test_ema_update_follows_the_formula():
    method = tiny_digpro()
    online = method._online_parameters()
    with torch.no_grad():
        for p in online:
            p.add_(torch.randn_like(p))
    before = [t.detach().clone() for t in method._target_parameters()]
    method.ema_update(0.9)
    for t, t0, o in zip(method._target_parameters(), before, online, strict=True):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * o.detach(), atol=1e-6)
    info = StepInfo(epoch=0, step=50, epoch_step=0, steps_per_epoch=10, total_steps=100)
    assert method.momentum_at(info) == 0.996
    method.params.momentum_increase = True
    assert method.momentum_at(info) == pytest.approx(1 - 0.004 * 0.5)
    assert method.momentum_at(StepInfo(0, 0, 0, 10, 100)) == pytest.approx(0.996)


def test_target_is_in_the_state_dict_and_gets_no_gradients():
    method = tiny_digpro()
    state = method.state_dict()
    assert any(k.startswith("target_encoder.") for k in state)
    assert any(k.startswith("target_projector.") for k in state)
    assert {"group_centres", "memory", "pseudo_labels", "centroids", "steps_done"} <= state.keys()
    assert not any(p.requires_grad for p in method._target_parameters())
    groups = method.parameter_groups()
    assert groups[1]["lr_scale"] == 10.0 and len(groups[1]["params"]) == len(
        list(method.predictor.parameters())
    )
    trainable = {id(p) for g in groups for p in g["params"]}
    assert trainable.isdisjoint(id(p) for p in method._target_parameters())


def test_training_step_losses_warm_up_and_group_reset():
    method = tiny_digpro(k=3, n=40, warmup_epochs=1)
    torch.manual_seed(1)
    views = [torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)]
    idx = torch.arange(8)
    warm = method.training_step(views, StepInfo(0, 0, 0, 5, 10, idx))
    assert set(warm) == {"instance", "group", "proto"} and warm["proto"].item() == 0.0
    assert int(method.memory_filled) == 16
    sum(warm.values()).backward()
    assert all(p.grad is not None for p in method.predictor.parameters())
    method.pseudo_labels.copy_(torch.arange(40) % 3)
    centres = method.group_centres.clone()
    after = method.training_step(views, StepInfo(1, 3, 0, 5, 10, idx))  # step 3 = K: reset
    assert after["proto"].item() > 0.0
    assert not torch.allclose(centres, method.group_centres)
    assert -2.0 <= after["instance"].item() <= 2.0


def test_frozen_encoder_is_shared_and_only_the_heads_have_a_target():
    encoder = Encoder(nn.Flatten(), feature_dim=3 * 8 * 8, trainable=False)
    p = DigProParams(crop_size=8, hidden_dim=32, projection_dim=8, memory_size=24, warmup_epochs=0)
    method = DigPro(p, encoder, num_clusters=3, num_samples=40)
    assert method.target_encoder is None
    assert not any(k.startswith("target_encoder") for k in method.state_dict())
    feats = [torch.randn(8, 192), torch.randn(8, 192)]  # cached features pass through
    method.pseudo_labels.copy_(torch.arange(40) % 3)
    losses = method.training_step(feats, StepInfo(0, 0, 0, 5, 10, torch.arange(8)))
    sum(losses.values()).backward()
    assert all(q.grad is not None for q in method.projector.parameters())
    assert method.target_embed(feats[0]).shape == (8, 8)


def test_packaged_configs_validate():
    files = sorted((CONFIG_ROOT / "digpro").glob("*.yaml"))
    assert {f.stem for f in files} >= {
        "default",
        "cpu",
        "cifar10",
        "cifar20",
        "imagenet10",
        "imagenet_dogs",
        "tiny_imagenet",
    }
    for f in files:
        cfg = build_config("digpro", None, f)
        params = params_from_dict(DigProParams, cfg.params)
        assert cfg.method == "digpro"
        if f.stem not in ("cpu", "frozen"):  # short budgets; the others are the paper's
            assert cfg.data.protocol == "all"
            assert cfg.train.optimizer.lr == pytest.approx(0.05 * cfg.train.batch_size / 256)
            assert cfg.train.schedule.warmup_epochs == params.warmup_epochs == 50
    assert "digpro" in METHODS


# ----------------------------------------------------------------------------- 2 processes


def _batch_pieces(rank, world, q, k, labels, centres, members):
    """Prototype loss (value, local grad), group update and memory on this process's rows."""
    b = q.shape[0] // world
    rows = slice(rank * b, (rank + 1) * b)
    ql = q[rows].clone().requires_grad_(True)
    loss = prototype_aggregation_loss(ql, k[rows], labels[rows], num_classes=6, temperature=0.5)
    loss.backward()
    new_centres = update_group_centres(centres, q[rows], members[rows], 0.99)
    method = tiny_digpro(k=4)
    method.remember([q[rows, :8], k[rows, :8]])
    noise = method.latent_noise(q[rows, :8], step=7, view=1)
    return {
        "loss": loss.detach(),
        "grad": ql.grad,
        "centres": new_centres,
        "memory": method.memory.clone(),
        "noise": noise,
    }


def test_batch_level_updates_on_two_processes_equal_one():
    torch.manual_seed(0)
    q, k = torch.randn(12, 10), torch.randn(12, 10)
    labels = torch.tensor([0, 1, 1, 3, 0, 3, 1, 0, 3, 3, 1, 0])  # classes 2, 4, 5 absent
    centres = torch.randn(4, 10)
    members = torch.tensor([0, 0, 1, 1, 3, 3, 0, 1, 1, 0, 3, 3])
    one = _batch_pieces(0, 1, q, k, labels, centres, members)
    two = run_in_processes(_batch_pieces, 2, 2, q, k, labels, centres, members)
    for part in two:
        assert torch.allclose(part["loss"], one["loss"], atol=1e-6)
        assert torch.allclose(part["centres"], one["centres"], atol=1e-6)
        assert torch.allclose(part["memory"], one["memory"], atol=1e-6)
    # DDP averages gradients over the 2 processes: (local grad) / 2 = one-process grad
    grad = torch.cat([two[0]["grad"], two[1]["grad"]]) / 2
    assert torch.allclose(grad, one["grad"], atol=1e-6)
    assert torch.allclose(torch.cat([two[0]["noise"], two[1]["noise"]]), one["noise"])


# ----------------------------------------------------------------------------- training

TINY = {
    "data.protocol": "all",
    "encoder.name": "small_cnn",
    "train.epochs": 4,
    "train.batch_size": 32,
    "train.progress": False,
    "train.device": "cpu",
    "train.optimizer.lr": 0.1,
    "train.schedule.warmup_epochs": 1,
    "params.crop_size": 16,
    "params.hidden_dim": 512,
    "params.warmup_epochs": 1,
    "params.ema_momentum": 0.9,  # a target that follows within the ~20 steps of this run
}


def tiny_config(data_dir: Path, **extra):
    return api.make_config(
        "digpro", "imagefolder", overrides={**TINY, "data.data_dir": str(data_dir), **extra}
    )


def test_tiny_run_learns_clusters(separable_images, tmp_path):
    result = api.train(tiny_config(separable_images), out=tmp_path / "run")
    assert result.summary["metrics"]["acc"] > 0.6, result.summary["metrics"]  # chance: 0.25


def test_resume_equals_uninterrupted(separable_images, tmp_path, monkeypatch):
    # epoch 2 starts with an E-step: in the full run it reuses the evaluation's k-means,
    # in the resumed run it is recomputed from the checkpoint, and must be the same
    short = {"train.epochs": 2, "train.eval_every": 1, "train.max_steps_per_epoch": 3}
    cfg = tiny_config(separable_images, **short, **{"params.hidden_dim": 128})
    api.train(cfg, out=tmp_path / "full")
    original = DigPro.training_step

    def dies_in_epoch_2(self, views, info):
        if info.epoch == 1 and info.epoch_step == 1:
            raise KeyboardInterrupt
        return original(self, views, info)

    monkeypatch.setattr(DigPro, "training_step", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, out=tmp_path / "killed")
    monkeypatch.setattr(DigPro, "training_step", original)
    Trainer(api.resume_config(tmp_path / "killed"), tmp_path / "killed", resume=True).fit()
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    for key, value in full.items():
        assert torch.equal(value, resumed[key]), key
