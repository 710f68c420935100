"""SCAN, TEMI and TURTLE on cached features, the self-labelling stage and joined encoders.

The methods train here on well-separated Gaussian blobs (what a good frozen encoder's
features of distinct classes look like), through the same feature views as the engine.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepclust.config import EncoderConfig, RunConfig, SelfLabelConfig
from deepclust.encoders import build_encoder
from deepclust.encoders.base import Encoder
from deepclust.encoders.joined import JoinedEncoder
from deepclust.engine.frozen import EpochFeatureViews, FrozenFeatures
from deepclust.engine.sampler import epoch_batches
from deepclust.errors import ConfigError
from deepclust.evaluation.metrics import score
from deepclust.methods import METHODS, Method, StepInfo
from deepclust.methods.scan import SCAN, SCANParams
from deepclust.methods.temi import TEMI, TEMIParams
from deepclust.methods.turtle import TURTLE, TURTLEParams, init_linear
from deepclust.training.self_label import self_label, strong_feature_view

pytestmark = pytest.mark.usefixtures("one_thread")


def feature_encoder(dim: int) -> Encoder:
    """A frozen 'encoder' whose features are its inputs (cached features)."""
    return Encoder(nn.Identity(), dim, trainable=False, identity=f"features{dim}")


def blobs(k: int = 3, per: int = 40, dim: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=gen) * 4
    labels = torch.arange(k).repeat_interleave(per)
    return centres[labels] + torch.randn(k * per, dim, generator=gen) * 0.5, labels


def frozen(x: torch.Tensor, neighbours: int = 5) -> FrozenFeatures:
    return FrozenFeatures.of_copies(x[None], x, EncoderConfig(neighbours=neighbours))


def train(method: Method, feats: FrozenFeatures, epochs: int, batch: int, lr: float) -> None:
    """The engine's loop in miniature: feature views, steps, hooks."""
    spec = method.view_spec()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    n = len(feats.fit[0])
    per_epoch = n // batch
    for epoch in range(epochs):
        method.train()
        method.on_epoch_start(None)  # type: ignore[arg-type]
        batches = epoch_batches(n, batch, 0, epoch)
        views = EpochFeatureViews(
            feats, batches, spec.num_views, 0.0, 0, epoch, 0, batch, anchors=spec.anchors
        )
        for i in range(len(views)):
            v, idx = views[i]
            info = StepInfo(epoch, epoch * per_epoch + i, i, per_epoch, epochs * per_epoch, idx)
            loss = sum(method.training_step(v, info).values())
            opt.zero_grad()
            loss.backward()
            method.before_optimizer_step(info)
            opt.step()
            method.after_optimizer_step(info)
    method.on_train_end(None)  # type: ignore[arg-type]


def accuracy(method: Method, x: torch.Tensor, labels: torch.Tensor) -> float:
    method.eval()
    with torch.no_grad():
        pred = method.predict_proba(x).argmax(1)
    return score(labels.numpy(), pred.numpy(), num_clusters=int(labels.max()) + 1).acc


def test_scan_separates_blobs_and_keeps_the_lowest_loss_head():
    x, y = blobs()
    torch.manual_seed(0)
    scan = SCAN(SCANParams(heads=3, entropy_weight=5.0), feature_encoder(8), 3, len(x))
    train(scan, frozen(x), epochs=15, batch=40, lr=1e-2)
    assert accuracy(scan, x, y) >= 0.95
    means = scan.heads.loss_sum / scan.heads.loss_steps
    assert int(scan.heads.best) == int(means.argmin())


def test_temi_separates_blobs_with_an_ema_teacher():
    x, y = blobs(seed=1)
    torch.manual_seed(0)
    p = TEMIParams(heads=4, hidden_dim=32, bottleneck_dim=16, teacher_momentum=0.9)
    p.teacher_momentum_end = 0.9
    temi = TEMI(p, feature_encoder(8), 3, len(x))
    before = [t.clone() for t in temi.teacher.parameters()]
    train(temi, frozen(x), epochs=20, batch=40, lr=1e-2)
    # here two of the four heads merge two blobs; the lowest-loss head is one that does not
    assert accuracy(temi, x, y) >= 0.95
    assert all(
        not torch.equal(a, b) for a, b in zip(before, temi.teacher.parameters(), strict=True)
    )
    assert torch.allclose(temi.prior.sum(1), torch.ones(4), atol=1e-5)


def test_turtle_finds_the_labelling_in_two_spaces():
    x, y = blobs(seed=2)
    gen = torch.Generator().manual_seed(3)
    spaces = [x @ torch.randn(8, 6, generator=gen), x @ torch.randn(8, 5, generator=gen)]
    joined = JoinedEncoder([feature_encoder(6), feature_encoder(5)])
    assert joined.spaces == [6, 5] and joined.feature_dim == 11
    torch.manual_seed(0)
    turtle = TURTLE(TURTLEParams(inner_lr=1e-2), joined, 3, len(x))
    assert len(turtle.task) == 2
    both = torch.cat(spaces, dim=1)
    train(turtle, FrozenFeatures.of_copies(both[None], both, EncoderConfig()), 30, 120, 1e-2)
    assert accuracy(turtle, both, y) >= 0.9


def test_turtle_cold_start_classifiers_depend_on_the_step_only():
    def draw(step: int) -> list[torch.Tensor]:
        from deepclust.data.views import batch_generator

        return init_linear(4, 3, batch_generator(7, 0, step, stream="turtle-inner"))

    assert all(torch.equal(a, b) for a, b in zip(draw(1), draw(1), strict=True))
    assert not torch.equal(draw(1)[0], draw(2)[0])


def test_anchor_view_is_the_sample_itself():
    x, _ = blobs()
    feats = frozen(x, neighbours=10)
    views, idx = EpochFeatureViews(
        feats, epoch_batches(len(x), 20, 0, 0), 2, 0.0, 0, 0, 0, 20, anchors=1
    )[0]
    assert torch.equal(views[0], x[idx])
    assert not torch.equal(views[1], x[idx])  # neighbours, itself among them


def test_frozen_methods_refuse_a_trained_encoder():
    cnn = build_encoder("small_cnn", 8)
    for method in ("scan", "temi", "turtle"):
        with pytest.raises(ConfigError, match="frozen pretrained encoder"):
            METHODS.get(method)(METHODS.get(method).Params(), cnn, 3, 10)


def test_joined_encoders_concatenate_and_refuse_trained_parts():
    enc = build_encoder("pixels+pixels", 4)
    assert enc.feature_dim == 96 and enc.spaces == [48, 48]
    images = torch.randn(2, 3, 4, 4)
    assert torch.equal(enc(images), torch.cat([images.flatten(1)] * 2, 1))
    with pytest.raises(ConfigError, match="only frozen pretrained encoders"):
        build_encoder("pixels+small_cnn", 8)


# ----------------------------------------------------------------------------- self-labelling
def test_strong_view_of_a_slice_is_the_slice_of_the_global_view():
    from deepclust.data.views import batch_generator

    x = torch.randn(8, 5)
    cfg = SelfLabelConfig(noise=0.5, dropout=0.3, mix=0.3)
    scale = torch.ones(5)
    whole = strong_feature_view(x, x.flip(0), scale, cfg, batch_generator(0, 0, 0), 8, slice(0, 8))
    half = strong_feature_view(
        x[4:], x.flip(0)[4:], scale, cfg, batch_generator(0, 0, 0), 8, slice(4, 8)
    )
    assert torch.allclose(whole[4:], half)
    assert ((whole == 0).float().mean() - 0.3).abs() < 0.25  # dropped dimensions


def test_self_label_stage_sharpens_a_trained_head():
    x, y = blobs(seed=4)
    torch.manual_seed(0)
    scan = SCAN(SCANParams(heads=1), feature_encoder(8), 3, len(x))
    feats = frozen(x)
    train(scan, feats, epochs=3, batch=40, lr=1e-2)
    before = accuracy(scan, x, y)
    cfg = RunConfig(method="scan")
    cfg.self_label = SelfLabelConfig(epochs=10, batch_size=60, threshold=0.9, lr=1e-2)
    stats = self_label(scan, feats, cfg, rank=0, world=1)
    assert stats["confident_share"] > 0.5 and stats["loss"] >= 0
    assert accuracy(scan, x, y) >= before


class _NoHead(Method):
    name = "no-head"
    Params = SCANParams

    def __init__(self) -> None:
        super().__init__(SCANParams(), feature_encoder(8), 3, 10)
        self.centres = nn.Parameter(torch.randn(3, 8))

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(images @ self.centres.T, 1)


def test_self_label_needs_a_prediction_it_can_train():
    x, _ = blobs()
    cfg = RunConfig(method="no-head")
    cfg.self_label = SelfLabelConfig(epochs=1)
    with pytest.raises(ConfigError, match="predicts with nothing self_label can train"):
        self_label(_NoHead(), frozen(x), cfg, 0, 1)
    method = _NoHead().requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable heads"):
        self_label(method, frozen(x), cfg, 0, 1)


def test_a_stage_that_empties_clusters_is_undone(monkeypatch):
    import deepclust.training.self_label as stage

    x, _ = blobs(seed=5)
    scan = SCAN(SCANParams(heads=1), feature_encoder(8), 3, len(x))
    train(scan, frozen(x), epochs=3, batch=40, lr=1e-2)
    kept = {k: v.clone() for k, v in scan.state_dict().items()}

    def collapse(method, *args):
        with torch.no_grad():
            method.heads.heads[0].weight.zero_()
            method.heads.heads[0].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        return {"loss": 0.0}

    monkeypatch.setattr(stage, "run_stage", collapse)
    cfg = RunConfig(method="scan")
    cfg.self_label = SelfLabelConfig(epochs=1)
    stats = self_label(scan, frozen(x), cfg, 0, 1)
    assert stats["undone"] and stats["clusters_after"] == 1 and stats["clusters_before"] == 3
    assert all(torch.equal(v, kept[k]) for k, v in scan.state_dict().items())


def test_a_batch_without_confident_samples_moves_nothing():
    x, _ = blobs(seed=6)
    scan = SCAN(SCANParams(heads=1), feature_encoder(8), 3, len(x))
    kept = {k: v.clone() for k, v in scan.state_dict().items()}
    cfg = RunConfig(method="scan")
    cfg.self_label = SelfLabelConfig(epochs=2, batch_size=60, threshold=0.999, weight_decay=0.1)
    stats = self_label(scan, frozen(x), cfg, 0, 1)  # an untrained head is never that sure
    assert stats["confident_share"] == 0
    assert all(torch.equal(v, kept[k]) for k, v in scan.state_dict().items())
