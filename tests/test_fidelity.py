"""Issue #17: configs named after a paper's number run the pipeline that produced it.

One test (or a few) per review item of docs/fidelity.md; `pytest -k fidelity` runs them.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepclust.api import protocol_label
from deepclust.config import build_config
from deepclust.data.datasets import load_protocol
from deepclust.data.store import ImageSet
from deepclust.data.views import EvalTransform, eval_images, with_eval_resize
from deepclust.encoders.base import Encoder, set_normalisation
from deepclust.engine.context import FitContext
from deepclust.engine.recalibration import recalibrate_batchnorm
from deepclust.errors import ConfigError
from deepclust.losses import logit_penalty, mutual_information_loss, sinkhorn, swapped_prediction
from deepclust.methods import StepInfo
from deepclust.methods.concurl import ConCURL, ConCURLParams
from deepclust.methods.digpro import DigPro, DigProParams
from deepclust.methods.imc_swav import IMCSwAV, IMCSwAVParams
from deepclust.methods.sic import SIC, SICParams
from deepclust.training.build import build_method, evaluation_transform
from test_imc_swav import random_views, tiny_method

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)


def cfg(method: str, dataset: str):
    return build_config(method, dataset)


def frozen_identity(dim: int) -> Encoder:
    """A frozen encoder that passes cached features [B, dim] through."""
    return Encoder(nn.Identity(), feature_dim=dim, trainable=False)


def step_info(step: int = 0, batch: int = 8, indices: torch.Tensor | None = None) -> StepInfo:
    idx = torch.arange(batch) if indices is None else indices
    return StepInfo(0, step, step, 10, 10, idx)


# ------------------------------------------------------------------ 1. DigPro's image sets


@pytest.mark.parametrize("dataset", ["imagenet10", "imagenet_dogs", "tiny_imagenet"])
def test_fidelity_digpro_paper_configs_use_the_train_folder_only(dataset):
    c = cfg("digpro", dataset)
    assert c.data.protocol == "all" and c.data.all_splits == ("train",)


def test_fidelity_all_splits_train_fits_and_scores_the_train_split_alone(separable_images):
    root = separable_images.parent / "split_copy"
    for split, per in (("train", 3), ("test", 2)):
        for cls in sorted(p.name for p in separable_images.iterdir()):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for f in sorted((separable_images / cls).iterdir())[:per]:
                (root / split / cls / f.name).write_bytes(f.read_bytes())
    both = load_protocol("imagefolder", "all", root)
    train = load_protocol("imagefolder", "all", root, all_splits=("train",))
    assert len(both[0]) == 20 and len(train[0]) == len(train[1]) == 12
    with pytest.raises(ConfigError, match="all_splits"):
        load_protocol("imagefolder", "all", root, all_splits=("val",))
    # results say what was fitted: the train split alone, so a test score is held out
    assert protocol_label("all", "all", ("train",)) == "train"
    assert protocol_label("all", "test", ("train",)) == "train->test"
    assert protocol_label("all", "all", ("train", "test")) == "train+test"


# ------------------------------------------------------------------ 2. IMC-SwAV CIFAR-100/20 batch


def test_fidelity_imc_swav_cifar20_batch_is_the_authors_256():
    assert cfg("imc-swav", "cifar20").train.batch_size == 256
    assert cfg("imc-swav", "cifar100").train.batch_size == 512  # 512 is CIFAR-100's


# ------------------------------------------------------------------ 3. ConCURL's released pipeline


@pytest.mark.parametrize("dataset", ["cifar10", "cifar20", "stl10", "imagenet10", "imagenet_dogs"])
def test_fidelity_concurl_paper_configs_fix_the_prototypes_and_predict_by_kmeans(dataset):
    p = cfg("concurl", dataset).params
    assert p["detach_prototypes"] is True and p["alpha"] == 0
    assert p["predict_with"] == "kmeans_instance" and p["kmeans_n_init"] == 20
    method = ConCURL(
        ConCURLParams(**{**p, "num_variations": 2, "random_projection_dim": 8, "head_hidden": 16}),
        frozen_identity(32),
        num_clusters=4,
        num_samples=64,
    )
    assert not method.prototypes.requires_grad  # they stay at their random start


# ------------------------------------------------------------------ 5. DigPro's extra EMA, 12. n_init


@pytest.mark.parametrize("dataset", ["imagenet10", "imagenet_dogs", "tiny_imagenet", "cifar10"])
def test_fidelity_digpro_paper_configs_extra_ema_and_ten_kmeans_starts(dataset):
    p = cfg("digpro", dataset).params
    assert p["code_extra_ema"] == 0.99 and p["kmeans_n_init"] == 10


# ------------------------------------------------------------------ 6. and 12. SIC


def tiny_sic(**params) -> SIC:
    torch.manual_seed(0)
    return SIC(SICParams(**params), frozen_identity(8), num_clusters=3, num_samples=24)


def sic_context(features: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(
        fit_features=features, seed=0, device=torch.device("cpu"), progress=False
    )


@pytest.mark.parametrize("dataset", ["cifar10", "cifar20", "stl10", "imagenet10", "tiny_imagenet"])
def test_fidelity_sic_paper_configs_raw_features_and_self_in_the_neighbours(dataset):
    p = cfg("sic", dataset).params
    assert p["head_features"] == "raw" and p["neighbours_include_self"] is True


@pytest.mark.parametrize(
    "dataset", ["cifar10", "cifar20", "stl10", "imagenet10", "imagenet_dogs", "tiny_imagenet"]
)
def test_fidelity_sic_paper_configs_rank_centres_by_logits_over_raw_features(dataset):
    p = cfg("sic", dataset).params
    assert p["centre_ranking"] == "logits" and p["centre_features"] == "raw"
    assert p["text_mean"] == "raw"


def test_fidelity_sic_semantic_centres_and_uniqueness_average_raw_text_when_asked():
    from deepclust.losses.semantic import semantic_centres, uniqueness_filter

    raw = torch.randn(40, 8) * (1 + 9 * torch.rand(40, 1))  # text norms that vary
    unit = F.normalize(raw, dim=1)
    centres = F.normalize(torch.randn(3, 8), dim=1)
    near = (centres @ unit.T).topk(5, dim=1).indices
    expected = F.normalize(raw[near].mean(dim=1), dim=1)  # the authors' search_sim_texts
    assert torch.allclose(semantic_centres(centres, unit, 5, raw), expected, atol=1e-6)
    mean = F.normalize(raw.mean(dim=0), dim=0)  # the authors' uniqueness_filter
    assert torch.equal(uniqueness_filter(unit, 0.05, raw), unit @ mean < 0.95)


def test_fidelity_sic_image_centres_rank_by_logits_and_average_raw_features():
    # the authors' ComputeCenter: per cluster, the floor(xi_c N / K) samples of highest
    # head *logit* (not probability), their *raw* features averaged, then normalised
    feats = torch.randn(24, 8) * (5 + 5 * torch.rand(24, 1))
    for ranking in ("logits", "probabilities"):
        for space in ("raw", "unit"):
            method = tiny_sic(
                semantic_space="image", image_anchors=6, kmeans_n_init=1, head_features="raw",
                centre_ranking=ranking, centre_features=space, xi_c=0.5,
            )  # fmt: skip
            method.on_train_start(sic_context(feats))
            method.refresh_centres()
            logits = method.head(feats)
            scores = logits if ranking == "logits" else torch.softmax(logits, dim=1)
            top = scores.topk(4, dim=0).indices  # floor(0.5 * 24 / 3) = 4
            x = feats if space == "raw" else F.normalize(feats, dim=1)
            expected = F.normalize(x[top].mean(dim=0), dim=1)
            assert torch.allclose(method.image_centres, expected, atol=1e-6), (ranking, space)


def test_fidelity_sic_head_sees_raw_or_unit_features():
    x = 7.0 * torch.randn(5, 8)  # CLIP-like norms
    for mode, seen in (("raw", x), ("normalised", F.normalize(x, dim=1))):
        method = tiny_sic(head_features=mode)
        expected = torch.softmax(method.head(seen), dim=1)
        assert torch.allclose(method.predict_proba(x), expected, atol=1e-6)


def test_fidelity_sic_neighbour_lists_hold_the_sample_itself():
    feats = torch.randn(24, 8)
    params = dict(semantic_space="image", image_anchors=6, neighbours=4, kmeans_n_init=1)
    with_self = tiny_sic(neighbours_include_self=True, **params)
    with_self.on_train_start(sic_context(feats))
    without = tiny_sic(**params)
    without.on_train_start(sic_context(feats))
    assert with_self.knn.shape == (24, 5) and torch.equal(with_self.knn[:, 0], torch.arange(24))
    assert without.knn.shape == (24, 4) and torch.equal(with_self.knn[:, 1:], without.knn)


# ------------------------------------------------------------------ 8. SIC per-dataset settings


@pytest.mark.parametrize(
    ("dataset", "neighbours", "weight_decay"),
    [("cifar10", 20, 1e-4), ("cifar20", 20, 1e-4), ("stl10", 20, 1e-4),
     ("imagenet_dogs", 20, 0.009), ("tiny_imagenet", 50, 1e-4)],
)  # fmt: skip
def test_fidelity_sic_configs_match_the_released_per_dataset_files(
    dataset, neighbours, weight_decay
):
    c = cfg("sic", dataset)
    p = c.params
    assert (p["neighbours"], c.train.optimizer.weight_decay) == (neighbours, weight_decay)
    assert (p["entropy_weight"], p["pseudo_weight"], c.train.optimizer.lr) == (5.0, 0.1, 1e-4)
    assert c.train.batch_size == 128 and c.train.epochs == 100


# ------------------------------------------------------------------ 12. CIFAR normalisation


def test_fidelity_imc_swav_cifar_configs_normalise_with_cifar_statistics():
    assert cfg("imc-swav", "cifar10").encoder.mean == CIFAR10_MEAN
    assert cfg("imc-swav", "cifar20").encoder.mean == CIFAR100_MEAN
    c = cfg("imc-swav", "cifar10")
    method = build_method(c, 10, 32, 100)
    assert method.encoder.eval_transform().mean == CIFAR10_MEAN
    assert method.view_spec().mean == CIFAR10_MEAN
    with pytest.raises(ConfigError, match="pretrained"):
        set_normalisation(frozen_identity(4), CIFAR10_MEAN, None)


# ------------------------------------------------------------------ 11. per-view BatchNorm batches


def per_view_reference_loss(m: IMCSwAV, views: list[torch.Tensor]) -> torch.Tensor:
    """The authors' step written out: every view through encoder, heads and classifier alone."""
    p = m.params
    h = [m.encoder(v) for v in views]
    u = torch.stack([F.normalize(m.projection(x), dim=1) @ m.prototypes.weight.T for x in h])
    codes = torch.stack([sinkhorn(u[i], p.sinkhorn_eps, p.sinkhorn_iters) for i in range(2)])
    y = torch.stack([m.classifier(x.detach()) for x in h])
    p_y, p_u = torch.softmax(y, -1), torch.softmax(u.detach() / p.temperature, -1)
    mi = mutual_information_loss(p_y[:, None], p_u[None], p.mi_beta).mean()
    swav = swapped_prediction(u, codes, p.temperature)
    return swav + mi + p.logit_weight * logit_penalty(y, p.logit_bound)


def gradients(module: nn.Module) -> torch.Tensor:
    return torch.cat([q.grad.flatten() for q in module.parameters() if q.grad is not None])


@pytest.mark.parametrize("dataset", ["cifar10", "cifar20", "cifar100", "stl10", "tiny_imagenet"])
def test_fidelity_imc_swav_paper_configs_pass_views_one_by_one(dataset):
    c = cfg("imc-swav", dataset)
    # the authors' step, in the layout measured fastest for it on the CPU (docs/fidelity.md)
    assert c.params["grouped_passes"] is False and c.train.channels_last is True


def test_fidelity_imc_swav_per_view_step_matches_an_independent_reference(one_thread):
    method = tiny_method()
    reference = copy.deepcopy(method)
    views = random_views(method)
    sum(method.training_step(views, step_info()).values()).backward()
    per_view_reference_loss(reference, views).backward()
    for part in ("encoder", "classifier"):
        got, want = gradients(getattr(method, part)), gradients(getattr(reference, part))
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6), part
    grouped = tiny_method(grouped_passes=True)  # the speed switch is a different step
    sum(grouped.training_step(views, step_info()).values()).backward()
    assert not torch.allclose(gradients(grouped.classifier), gradients(reference.classifier))


# ------------------------------------------------------------------ 9. STL-10 classifier cadence


def test_fidelity_imc_swav_classifier_steps_once_labelled_rows_fill_a_batch(one_thread):
    method = tiny_method(classifier_on_labelled_only=True)
    labels = torch.tensor([0, 1, 2, 0] + [-1] * 28)  # 4 labelled rows among 32
    method.on_train_start(SimpleNamespace(fit_set=SimpleNamespace(labels=labels)))
    views = random_views(method)
    kept = []
    for step in range(4):  # batches of 8 with 2 labelled rows each: a classifier batch at step 4
        indices = torch.tensor([step % 2, 2 + step % 2, *range(4 + 6 * step, 10 + 6 * step)])
        method.zero_grad(set_to_none=True)
        losses = method.training_step(views, step_info(step, indices=indices))
        sum(losses.values()).backward()
        with torch.no_grad():
            kept.append(method.encode_views(views)[:, :2])
        fed = any(q.grad is not None for q in method.classifier.parameters())
        assert fed == (step == 3) and (float(losses["mi"].detach()) != 0) == (step == 3)
    h = torch.cat(kept, dim=1)  # [V, 8, D]: the labelled rows of the four batches
    with torch.no_grad():
        y = torch.stack([method.classifier(x) for x in h])
        p_u = torch.softmax(method.prototype_scores(h) / method.params.temperature, -1)
        mi = mutual_information_loss(torch.softmax(y, -1)[:, None], p_u[None], 4.0).mean()
    assert torch.allclose(losses["mi"], mi, atol=1e-5)


# ------------------------------------------------------------------ 10. losses in float32


def bf16_and_fp32(method: nn.Module, views: list[torch.Tensor], info: StepInfo):
    """Losses and view gradients of one step under CPU bf16 autocast and without autocast."""
    out = []
    for amp in (True, False):
        m = copy.deepcopy(method)
        vs = [v.clone().requires_grad_(True) for v in views]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = m.training_step(vs, info)
        sum(losses.values()).backward()
        out.append(([float(v.detach()) for v in losses.values()], torch.cat([v.grad for v in vs])))
    return out


def identity_heads(method: nn.Module, *names: str) -> nn.Module:
    """Heads replaced by identities: what remains of the step is the loss maths."""
    for name in names:
        setattr(method, name, nn.Identity())
    return method


def float32_cases():
    torch.manual_seed(0)
    d, b = 8, 16
    imc = IMCSwAV(
        IMCSwAVParams(projection_dim=d, num_prototypes=12, projection_hidden=0),
        frozen_identity(d), num_clusters=d, num_samples=b,
    )  # fmt: skip
    digpro = DigPro(
        DigProParams(projection_dim=d, hidden_dim=8, memory_size=16, warmup_epochs=0),
        frozen_identity(d), num_clusters=3, num_samples=b,
    )  # fmt: skip
    digpro.pseudo_labels.copy_(torch.arange(b) % 3)
    concurl = ConCURL(
        ConCURLParams(instance_dim=d, embedding_dim=d, nce_negatives=4, num_variations=2,
                      random_projection_dim=4, alpha=1.0),
        frozen_identity(d), num_clusters=3, num_samples=b,
    )  # fmt: skip
    sic = tiny_sic()
    feats = torch.randn(b, d)
    sic.fit_features, sic.head_inputs = F.normalize(feats, dim=1), F.normalize(feats, dim=1)
    sic.knn = torch.stack([torch.roll(torch.arange(b), -i) for i in range(1, 4)], dim=1)
    sic.semantic_centres.copy_(F.normalize(torch.randn(3, d), dim=1))
    return {
        "imc-swav": (identity_heads(imc, "projection", "classifier"), 6),
        "digpro": (identity_heads(digpro, "projector", "predictor", "target_projector"), 2),
        "concurl": (identity_heads(concurl, "instance_head", "projection_head"), 2),
        "sic": (sic, 1),
    }


@pytest.mark.parametrize("name", ["imc-swav", "digpro", "concurl", "sic"])
def test_fidelity_losses_run_in_float32_under_bf16_autocast(name, one_thread):
    method, num_views = float32_cases()[name]
    gen = torch.Generator().manual_seed(2)
    views = [torch.randn(16, 8, generator=gen) * 3 for _ in range(num_views)]
    (bf16_losses, bf16_grads), (fp32_losses, fp32_grads) = bf16_and_fp32(
        method, views, step_info(batch=16)
    )
    assert bf16_losses == pytest.approx(fp32_losses, rel=1e-6, abs=1e-7)
    assert torch.allclose(bf16_grads, fp32_grads, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ 4. BatchNorm recalibration


def test_fidelity_batchnorm_recalibration_sets_the_statistics_of_clean_training_images():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 6, 6), dtype=torch.uint8)
    fit = ImageSet(images, torch.full((20,), -1))  # no labels needed
    frozen = Encoder(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), 3, trainable=False)
    bn = nn.BatchNorm2d(3)
    model = nn.Sequential(bn, frozen)
    frozen_state = copy.deepcopy(frozen.state_dict())
    tf = EvalTransform(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    ctx = FitContext(fit, torch.device("cpu"), 0, 0, tf, batch_size=64)
    model.train()
    used = recalibrate_batchnorm(model, model, ctx, 100)
    x = eval_images(images, tf)
    assert used == 20 and model.training and bn.momentum == 0.1
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in frozen_state.items())


def test_fidelity_imc_swav_recalibrates_before_evaluating_when_asked():
    method = tiny_method(bn_recalibration_images=16)
    fit = ImageSet(torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8), torch.zeros(16))
    ctx = FitContext(fit, torch.device("cpu"), 0, 0, method.encoder.eval_transform(), 8)
    first_bn = next(m for m in method.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    method.before_evaluate(ctx)
    assert int(first_bn.num_batches_tracked) == 2  # two batches of 8, cumulative average


# ------------------------------------------------------------------ 7. DigPro crops from larger images


@pytest.mark.parametrize(
    ("dataset", "stored", "crop"),
    [("imagenet10", 256, 96), ("imagenet_dogs", 256, 96), ("tiny_imagenet", 64, 32)],
)
def test_fidelity_digpro_crops_come_from_larger_stored_images(dataset, stored, crop):
    c = cfg("digpro", dataset)
    assert (c.data.image_size, c.data.eval_resize, c.params["crop_size"]) == (stored, crop, crop)
    method = build_method(c, 10, stored, 100)
    tf = evaluation_transform(c, method, stored)
    images = torch.randint(0, 256, (2, 3, stored, stored), dtype=torch.uint8)
    assert eval_images(images, tf).shape[-2:] == (crop, crop)
    with pytest.raises(ConfigError, match="eval_resize"):
        with_eval_resize(tf, crop, trainable=False)


def test_fidelity_accumulated_labelled_rows_refuse_several_processes(monkeypatch):
    import deepclust.methods.imc_swav as imc

    monkeypatch.setattr(imc, "world_size", lambda: 2)
    method = tiny_method(classifier_on_labelled_only=True)
    ctx = SimpleNamespace(fit_set=SimpleNamespace(labels=torch.zeros(8)))
    with pytest.raises(ConfigError, match="labelled_stream=auxiliary"):
        method.on_train_start(ctx)


# ------------------------------------------------------------------ #32: DigPro's step as the code


@pytest.mark.parametrize(
    "dataset", ["imagenet10", "imagenet_dogs", "tiny_imagenet", "cifar10", "cifar20"]
)
def test_fidelity_digpro_paper_configs_take_the_codes_step(dataset):
    c = cfg("digpro", dataset)
    p = c.params
    assert p["group_members"] == "online" and p["group_mean"] == "raw"
    assert p["group_gradient"] is True and p["target_update"] == "in_forward"
    assert p["absent_class_logit"] == -10.0
    assert c.train.schedule.cosine_progress == "total"


def test_fidelity_digpro_group_gradient_reaches_the_online_projection_through_the_centres():
    # lightly's SMoG prototypes (the authors' code): G_c <- 0.99 G_c + 0.01 mean(q) with q
    # the raw online projections, not detached: L_group's gradient also flows through G
    from deepclust.losses.grouping import moved_group_centres

    centres = F.normalize(torch.randn(3, 4), dim=1)
    q = torch.randn(6, 4, requires_grad=True)
    members = torch.tensor([0, 0, 1, 2, 2, 2])
    moved = moved_group_centres(centres, q, members, 0.99, unit=False)
    expected = torch.stack(
        [0.99 * centres[c] + 0.01 * q[members == c].mean(dim=0) for c in range(3)]
    )
    assert torch.allclose(moved, expected, atol=1e-6)
    moved.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_fidelity_digpro_absent_classes_get_the_codes_logit():
    from deepclust.losses.prototype import prototype_aggregation_loss

    q, k = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])  # class 3 absent
    exact = prototype_aggregation_loss(q, k, labels, 4, 0.5)
    filled = prototype_aggregation_loss(q, k, labels, 4, 0.5, absent_logit=-10.0)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    qc = F.normalize(torch.stack([qn[labels == c].mean(0) for c in range(3)]), dim=1)
    kc = F.normalize(torch.stack([kn[labels == c].mean(0) for c in range(3)]), dim=1)
    pos = (qc * kc).sum(1) / 0.5
    neg = qc @ qc.T / 0.5
    rows = [
        torch.logsumexp(
            torch.cat([pos[c : c + 1], neg[c][torch.arange(3) != c], torch.tensor([-10.0])]), 0
        )
        - pos[c]
        for c in range(3)
    ]
    assert torch.allclose(filled, torch.stack(rows).mean(), atol=1e-6)
    assert abs(float(filled - exact)) > 1e-7  # about e^-10 inside each sum


def test_fidelity_digpro_target_moves_inside_the_step_when_asked():
    # the authors update the target (0.996) at the end of the forward pass, from the online
    # weights before the optimiser step; deepclust's default updates it after the step
    method = DigPro(
        DigProParams(target_update="in_forward", warmup_epochs=0, latent_std=0.0),
        frozen_identity(8), num_clusters=3, num_samples=12,
    )  # fmt: skip
    online = [q.detach().clone() for q in method.projector.parameters()]
    target = [q.detach().clone() for q in method.target_projector.parameters()]
    method.pseudo_labels.copy_(torch.arange(12) % 3)
    x = torch.randn(6, 8)
    info = StepInfo(0, 1, 1, 2, 4, indices=torch.arange(6))
    method.training_step([x, x + 0.1], info)
    for t, t0, o in zip(method.target_projector.parameters(), target, online, strict=True):
        assert torch.allclose(t, 0.996 * t0 + 0.004 * o, atol=1e-7)
    before = [q.detach().clone() for q in method.target_projector.parameters()]
    method.after_optimizer_step(info)
    after = method.target_projector.parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_fidelity_cosine_progress_over_all_epochs_as_the_code():
    from deepclust.config import ScheduleConfig
    from deepclust.engine.schedule import lr_factor

    sched = ScheduleConfig(name="cosine", warmup_epochs=50, cosine_progress="total")
    ipe, total = 195, 1000 * 195
    for step in (50 * 195, 60 * 195 + 2, total - 1):
        epoch = (step + 1) / ipe  # the code: n_iter / iter_per_epoch, n_iter = step + 1
        expected = 0.5 * (1 + math.cos((epoch - 50) * math.pi / 1000))
        assert lr_factor(step, sched, ipe, total) == pytest.approx(expected, rel=1e-12)


def test_fidelity_imc_swav_mi_eps_zero_is_the_codes_formula():
    # the authors' costs.mi: logs without an epsilon; deepclust guards them with 1e-12
    # (about 1e-9 relative on the loss); params.mi_eps: 0 gives their formula exactly
    torch.manual_seed(0)
    y, u = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 7, dtype=torch.float64)
    py, pu = torch.softmax(y, -1), torch.softmax(u / 0.1, -1)
    p_yu = py.T @ pu
    p_yu = p_yu / p_yu.sum()
    p_u, p_y = p_yu.sum(0).view(1, -1), p_yu.sum(1).view(-1, 1)
    expected = (p_yu * (p_u.log() - p_yu.log())).sum() + 4 * (p_yu * p_y.log()).sum()
    got = mutual_information_loss(py, pu, 4.0, eps=0.0)
    assert abs(float(got - expected)) <= 1e-14 * abs(float(expected))
    method = IMCSwAV(IMCSwAVParams(mi_eps=0.0), frozen_identity(8), num_clusters=3, num_samples=8)
    assert method.params.mi_eps == 0.0


def test_fidelity_digpro_groups_reset_on_the_codes_iterations():
    # the code: `n_iter > 1 and n_iter % K == 0` with n_iter = step + 1 (counted from 1)
    code = DigPro(
        DigProParams(group_reset_offset=1), frozen_identity(8), num_clusters=4, num_samples=8
    )
    due = [s for s in range(13) if code.group_reset_due(s)]
    assert due == [s for s in range(13) if s + 1 > 1 and (s + 1) % 4 == 0] == [3, 7, 11]
    default = DigPro(DigProParams(), frozen_identity(8), num_clusters=4, num_samples=8)
    assert [s for s in range(13) if default.group_reset_due(s)] == [4, 8, 12]
    for dataset in ("imagenet10", "imagenet_dogs", "tiny_imagenet", "cifar10", "cifar20"):
        assert cfg("digpro", dataset).params["group_reset_offset"] == 1
