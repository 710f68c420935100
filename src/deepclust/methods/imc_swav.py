"""IMC-SwAV: Information Maximization Clustering via Multi-View Self-Labelling.

Ntelemis, Jin, Thomas (2021, arXiv 2103.07368; Knowledge-Based Systems 2022). One phase:
the encoder learns SwAV-style from swapped prototype assignments, and a classifier head on
the (detached) encoder feature learns clusters by maximising the mutual information between
its prediction and the prototype assignment, over every pair of views.

    views     2 high-res crops (scale 0.2-1) + 4 low-res crops (scale 0.08-0.4), flip,
              ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.25, no blur
    h_v       encoder(view v)                                   [B, 512]
    z_v       normalize(projection(h_v))                        [B, 128]
    u_v       z_v C^T, C = P unit-norm prototypes                [B, P]
    y_v       classifier(h_v.detach())                          [B, K]
    L_swav    mean over (i high-res, v != i) of CE(sinkhorn(u_i), softmax(u_v / 0.1))
    L_mi      mean over all 6 x 6 view pairs (a, b) of H(Y|U) - 4 H(Y), joint of
              softmax(y_a) and softmax(u_b / 0.1) over the batch (u_b detached)
    L_logit   0.01 * mean_b sum_k relu(|y_bk| - 5)
    total     L_swav + L_mi + L_logit; prediction = argmax softmax(y)

Prototypes are re-normalised after every step and get no update during the first 500
iterations. Where the authors' code and paper differ:
- The projection 512 -> 512 -> 128 is two stacked linear layers in the code (so linear
  overall); `projection_bn_relu: true` puts BN + ReLU between them (SwAV's usual head), and
  `projection_hidden: 0` makes it a single linear layer.
- The authors encode each view alone and apply the classifier per view, so every
  BatchNorm batch is one view of B images. That is the default; `grouped_passes: true`
  concatenates views of one size into one encoder pass and all views into one classifier
  pass (fewer, larger passes; different BatchNorm batches, hence a different step).
- Before testing, the authors re-estimate BatchNorm statistics on test batches in train
  mode. deepclust does not use test images: `bn_recalibration_images: N` re-estimates them
  on N clean training images at the evaluation resolution before every evaluation
  (engine/recalibration.py); 0 (default) keeps the running statistics from training.
- STL-10: the encoder trains on train+unlabeled and the classifier on labelled images only
  (`classifier_on_labelled_only`; only *whether* an image comes from a labelled split is
  used, never its label). `labelled_stream: accumulate` (the authors' code) keeps the
  detached features and scores of the labelled rows of the main batches and takes one
  classifier step whenever they reach a batch (about 1 per 21 encoder steps on STL-10);
  `auxiliary` draws a fresh labelled batch of `classifier_batch_size` every step, whose
  views go through the encoder and prototypes without gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepclust.data.views import CropSpec, ViewSpec
from deepclust.encoders.base import Encoder
from deepclust.engine.distributed import world_size
from deepclust.engine.recalibration import recalibrate_batchnorm
from deepclust.errors import ConfigError, DataError
from deepclust.losses import (
    float32_maths,
    logit_penalty,
    mutual_information_loss,
    sinkhorn,
    swapped_prediction,
)
from deepclust.methods.base import METHODS, AuxiliaryStream, Method, StepInfo

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


@dataclass
class IMCSwAVParams:
    # views (CIFAR sizes; STL-10 76/52, Tiny-ImageNet 56/36)
    high_res_size: int = 28
    low_res_size: int = 18
    high_res_count: int = 2
    low_res_count: int = 4
    high_res_scale: tuple[float, float] = (0.2, 1.0)
    low_res_scale: tuple[float, float] = (0.08, 0.4)
    jitter_p: float = 0.8
    grayscale_p: float = 0.25
    # heads
    projection_hidden: int = 512  # 0: a single linear layer
    projection_bn_relu: bool = False  # False = the authors' code (linear overall)
    projection_dim: int = 128
    num_prototypes: int = 1000
    # > 0: at most this many prototypes per training sample (never under 10 K): a small
    # collection is not spread over more prototypes than it has images
    prototypes_per_sample: float = 0.0
    classifier_hidden: int = 1024
    # objective
    temperature: float = 0.1
    sinkhorn_eps: float = 0.05
    sinkhorn_iters: int = 3
    mi_beta: float = 4.0
    mi_eps: float = 1e-12  # guards the MI's logs; 0 = the authors' costs.mi exactly
    logit_bound: float = 5.0
    logit_weight: float = 0.01
    freeze_prototypes_iters: int = 500
    freeze_prototypes_fraction: float = 0.0  # + this fraction of the run's steps (frozen recipes)
    classifier_on_labelled_only: bool = False  # STL-10: the classifier sees labelled images only
    labelled_stream: Literal["accumulate", "auxiliary"] = "accumulate"  # accumulate = the authors'
    classifier_batch_size: int = 256  # global size of the auxiliary stream's batches
    # passes: False = each view its own encoder and classifier pass (the authors' BatchNorm
    # batches); True = views of one size share an encoder pass, all views a classifier pass
    grouped_passes: bool = False
    bn_recalibration_images: int = 0  # > 0: re-estimate BatchNorm on this many training images


def prototype_count(params: IMCSwAVParams, num_clusters: int, num_samples: int) -> int:
    """num_prototypes, or with prototypes_per_sample > 0 at most that many per sample
    (never under 10 per cluster)."""
    if params.prototypes_per_sample <= 0:
        return params.num_prototypes
    scaled = max(10 * num_clusters, round(params.prototypes_per_sample * num_samples))
    return min(params.num_prototypes, scaled)


def projection_head(in_dim: int, hidden: int, out_dim: int, bn_relu: bool) -> nn.Module:
    """in_dim -> [hidden (-> BN, ReLU)] -> out_dim."""
    if hidden <= 0:
        return nn.Linear(in_dim, out_dim)
    middle: list[nn.Module] = [nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)] if bn_relu else []
    return nn.Sequential(nn.Linear(in_dim, hidden), *middle, nn.Linear(hidden, out_dim))


def classifier_head(in_dim: int, hidden: int, num_clusters: int) -> nn.Module:
    """in_dim -> hidden (BN, ReLU) -> hidden (BN, ReLU) -> num_clusters."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_clusters),
    )


@METHODS.register("imc-swav")
class IMCSwAV(Method):
    """IMC-SwAV (Ntelemis et al. 2021): SwAV multi-crop + MI-maximising classifier head"""

    name = "imc-swav"
    Params = IMCSwAVParams

    def __init__(
        self, params: IMCSwAVParams, encoder: Encoder, num_clusters: int, num_samples: int
    ) -> None:
        super().__init__(params, encoder, num_clusters, num_samples)
        check_params(params)
        dim = encoder.feature_dim
        self.projection = projection_head(
            dim, params.projection_hidden, params.projection_dim, params.projection_bn_relu
        )
        count = prototype_count(params, num_clusters, num_samples)
        self.prototypes = nn.Linear(params.projection_dim, count, bias=False)
        self.normalize_prototypes()
        self.classifier = classifier_head(dim, params.classifier_hidden, num_clusters)
        self._bank = LabelledBank()
        self._labelled = torch.zeros(0, dtype=torch.bool)

    # --- views and hooks ------------------------------------------------------------
    def view_spec(self) -> ViewSpec:
        p = self.params

        def crops(count: int, size: int, scale: tuple[float, float]) -> CropSpec:
            return CropSpec(
                count=count,
                size=size,
                scale=scale,
                flip_p=0.5,
                jitter=(0.4, 0.4, 0.4, 0.1),
                jitter_p=p.jitter_p,
                grayscale_p=p.grayscale_p,
                blur_p=0.0,
            )

        groups = [crops(p.high_res_count, p.high_res_size, p.high_res_scale)]
        if p.low_res_count:
            groups.append(crops(p.low_res_count, p.low_res_size, p.low_res_scale))
        return ViewSpec(tuple(groups), mean=self.encoder.mean, std=self.encoder.std)

    def labelled_rows(self, ctx: FitContext) -> torch.Tensor:
        """[N] bool: which fit-set images come from a labelled split (labels never read)."""
        labelled = ctx.fit_set.labels >= 0
        if not bool(labelled.any()):
            raise DataError(
                "params.classifier_on_labelled_only is set, but no training image comes from a "
                "labelled split. Set it to false."
            )
        return labelled

    def auxiliary_stream(self, ctx: FitContext) -> AuxiliaryStream | None:
        p = self.params
        if not p.classifier_on_labelled_only or p.labelled_stream != "auxiliary":
            return None
        rows = torch.nonzero(self.labelled_rows(ctx)).flatten()
        return AuxiliaryStream(rows, p.classifier_batch_size)

    def on_train_start(self, ctx: FitContext) -> None:
        p = self.params
        self._bank = LabelledBank()
        if p.classifier_on_labelled_only and p.labelled_stream == "accumulate":
            if world_size() > 1:
                raise ConfigError(
                    "params.labelled_stream 'accumulate' runs on one process (each process "
                    "would reach a classifier batch at a different step); under torchrun use "
                    "params.labelled_stream=auxiliary."
                )
            self._labelled = self.labelled_rows(ctx)

    def on_epoch_start(self, ctx: FitContext) -> None:
        self._bank = LabelledBank()  # as the authors: the bank starts empty every epoch

    def before_evaluate(self, ctx: FitContext) -> None:
        n = self.params.bn_recalibration_images
        if n > 0:
            recalibrate_batchnorm(self, self.predict_proba, ctx, n)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def frozen_prototype_steps(self, total_steps: int) -> int:
        """Steps at the start of a run of `total_steps` during which the prototypes stay put."""
        p = self.params
        return p.freeze_prototypes_iters + round(p.freeze_prototypes_fraction * total_steps)

    def learning_phases(self, total_steps: int, steps_per_epoch: int) -> dict[str, int]:
        return {"the prototype freeze": self.frozen_prototype_steps(total_steps)}

    def before_optimizer_step(self, info: StepInfo) -> None:
        if info.step < self.frozen_prototype_steps(info.total_steps):
            # None, not zero: with a zero gradient Adam's weight decay would still move them.
            self.prototypes.weight.grad = None

    def after_optimizer_step(self, info: StepInfo) -> None:
        self.normalize_prototypes()

    # --- training -------------------------------------------------------------------
    def encode_views(self, views: list[torch.Tensor]) -> torch.Tensor:
        """V views [B,3,s_v,s_v] -> features [V, B, D]: one encoder pass per view, or with
        grouped_passes one per run of same-size views."""
        if not self.params.grouped_passes:
            return torch.stack([self.features(v) for v in views])
        feats: list[torch.Tensor] = []
        start = 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            feats.extend(self.features(torch.cat(views[start:end])).chunk(end - start))
            start = end
        return torch.stack(feats)

    def per_view(self, head: nn.Module, feats: torch.Tensor) -> torch.Tensor:
        """head over features [V, B, D] -> [V, B, out]: per view (its own BatchNorm batch),
        or with grouped_passes all V*B rows at once."""
        if not self.params.grouped_passes:
            return torch.stack([head(f) for f in feats])
        return head(feats.flatten(0, 1)).unflatten(0, feats.shape[:2])

    def prototype_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """features [V, B, D] -> cosine scores against the prototypes [V, B, P] (float32)."""
        z = self.per_view(self.projection, feats)
        with float32_maths(z.device.type):  # Sinkhorn divides these by 0.05
            return self.prototypes(F.normalize(z.float(), dim=-1))

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        p = self.params
        h = self.encode_views(views)  # [V, B, D]
        u = self.prototype_scores(h)  # [V, B, P]
        with float32_maths(u.device.type):
            high_res = range(p.high_res_count)  # targets: Sinkhorn codes of the high-res views
            codes = torch.stack(
                [sinkhorn(u[i], p.sinkhorn_eps, p.sinkhorn_iters) for i in high_res]
            )
            losses = {"swav": swapped_prediction(u, codes, p.temperature)}
        # The classifier sees detached features: the MI loss trains the head only.
        batch = self.classifier_batch(h.detach(), u.detach(), info)
        if batch is None:  # accumulating labelled rows: no classifier step this time
            zero = u.new_zeros(())
            return {**losses, "mi": zero, "logit": zero}
        h_cls, u_cls = batch
        y = self.per_view(self.classifier, h_cls)  # [V, b, K]
        with float32_maths(y.device.type):
            y = y.float()
            p_y = torch.softmax(y, dim=-1)
            p_u = torch.softmax(u_cls.float() / p.temperature, dim=-1)
            # p_y of view a against p_u of view b, for all V x V pairs (same view included)
            losses["mi"] = mutual_information_loss(
                p_y[:, None], p_u[None], p.mi_beta, p.mi_eps
            ).mean()
            losses["logit"] = p.logit_weight * logit_penalty(y, p.logit_bound)
        return losses

    def classifier_batch(
        self, h: torch.Tensor, u: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The classifier's features [V, b, D] and prototype scores [V, b, P] this step, or None.

        The main batch; the auxiliary batch (labelled_stream auxiliary); or the labelled rows
        of the main batches, gathered until they fill a batch (accumulate).
        """
        p = self.params
        if info.auxiliary is not None:
            with torch.no_grad():
                h_aux = self.encode_views(info.auxiliary)
                return h_aux, self.prototype_scores(h_aux)
        if not p.classifier_on_labelled_only or p.labelled_stream != "accumulate":
            return h, u
        if info.indices is None:
            raise ValueError("labelled_stream 'accumulate' needs the batch's fit-set indices")
        rows = self._labelled[info.indices.cpu()].to(h.device)
        self._bank.add(h[:, rows], u[:, rows])
        return self._bank.take(h.shape[1])

    # --- inference ------------------------------------------------------------------
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(self.features(images)).float(), dim=1)


class LabelledBank:
    """Detached features and scores of labelled rows, kept until they fill a batch."""

    def __init__(self) -> None:
        self.feats: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []
        self.count = 0

    def clear(self) -> None:
        self.feats, self.scores, self.count = [], [], 0

    def add(self, feats: torch.Tensor, scores: torch.Tensor) -> None:
        """feats [V, r, D], scores [V, r, P]: this step's labelled rows."""
        self.feats.append(feats)
        self.scores.append(scores)
        self.count += feats.shape[1]

    def take(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All rows kept ([V, n, D], [V, n, P]) once n >= batch_size (then empty), else None."""
        if self.count < batch_size:
            return None
        out = torch.cat(self.feats, dim=1), torch.cat(self.scores, dim=1)
        self.clear()
        return out


def check_params(p: IMCSwAVParams) -> None:
    """Raise ConfigError for settings the method cannot run with."""
    problems = []
    if p.high_res_count < 1:
        problems.append(
            "params.high_res_count must be at least 1 (the swapped targets come from them)"
        )
    if p.high_res_count + p.low_res_count < 2:
        problems.append("IMC-SwAV needs at least 2 views (high_res_count + low_res_count)")
    if min(p.high_res_size, p.low_res_size) < 1:
        problems.append("params.high_res_size and low_res_size must be positive")
    if p.low_res_count < 0:
        problems.append("params.low_res_count must not be negative")
    if p.num_prototypes < 1 or p.projection_dim < 1 or p.classifier_hidden < 1:
        problems.append(
            "params.num_prototypes, projection_dim and classifier_hidden must be positive"
        )
    if p.classifier_batch_size < 1 or p.bn_recalibration_images < 0:
        problems.append(
            "params.classifier_batch_size must be positive and bn_recalibration_images not negative"
        )
    if p.prototypes_per_sample < 0 or not 0 <= p.freeze_prototypes_fraction <= 1:
        problems.append(
            "params.prototypes_per_sample must not be negative and freeze_prototypes_fraction "
            "must be between 0 and 1"
        )
    if p.temperature <= 0 or p.sinkhorn_eps <= 0:
        problems.append("params.temperature and sinkhorn_eps must be positive")
    if problems:
        raise ConfigError("; ".join(problems) + ".")
