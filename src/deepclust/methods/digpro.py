"""DigPro: Dynamic Grouping and Prototype Aggregation (Zhang & Huang 2024, arXiv 2401.13581).

Built on ProPos: BYOL-style online and target networks, and EM over the whole dataset.

    views     2 crops: RandomResizedCrop (scale 0.08-1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1)
              p=0.8, grayscale p=0.2; the encoder's normalisation
    z_v       projector(encoder(view v))       online projection, 512 -> 4096 -> 256   [B, 256]
    p_v       predictor(z_v)                   256 -> 4096 -> 256 (lr x 10)            [B, 256]
    k_v       normalize(target_projector(target_encoder(view v))), no gradient         [B, 256]
    L_ins     -2 cos(predictor(z_a + eps), k_b), eps ~ N(0, 0.001^2) (0 during warm-up)
    L_group   G [K, 256] group centres: a_b = argmax_g cos(k_b, G); G moves by momentum 0.99
              toward the mean of normalize(z_a) of its members; CE(norm(p_a) norm(G)^T / 0.1, a_b).
              Every K iterations G is re-initialised by k-means over a memory of the last
              2560 online projections (both views).
    L_proto   prototype aggregation on the sphere (t = 0.5) of z_a and k_b under the
              pseudo-labels y of the E-step (losses/prototype.py); off during warm-up
    total     L_ins + 0.1 L_proto + 0.3 L_group, each averaged over (a, b) = (1, 2), (2, 1)
    target    EMA of encoder + projector after every optimiser step (m = 0.996)
    E-step    each epoch after warm-up: spherical k-means (k-means++, <= 300 iterations,
              tol 1e-4, best of 3 starts) over the target features of the whole fit set
              -> y [num_samples]
    predict   the same k-means, refreshed before every evaluation; confidence
              softmax(cos(k(x), centroids) / 0.1)

Everything batch-level is global under torch.distributed: the class and group sums are
all-reduced (the online class sums with gradients), the memory is all-gathered, the latent
noise is drawn for the global batch from a stream keyed by (seed, step, view), and the
E-step features are extracted in shards and all-gathered, so every process runs the same
k-means (rank 0's result is broadcast as a guard), and two processes with half the batch
each train like one.

k-means seeds are (seed, optimisation steps done), a function of the epoch at an E-step:
the E-step that starts an epoch and the evaluation that ended the previous one see the same
weights and share one clustering. The E-step is skipped during warm-up, where the
pseudo-labels are not used (the training is the same). The noisy predictor pass runs in
float32 under autocast (bfloat16 would round most of a 0.001 perturbation away). With a
frozen (pretrained) encoder, online and target share it and only the heads have a target.

Where deepclust differs from the authors' code (github.com/Regan-Zhang/DigPro):
- Group centre update: here the members of a group are the samples whose *target* feature
  it is assigned to (the assignment the loss uses), and their normalised online projections
  are averaged. The code (lightly's SMoG prototypes) assigns the online projections to
  groups by their own argmax and averages them unnormalised; `group_members: online` takes
  the code's membership (features still normalised).
- The code also pulls the target toward the online network by a second EMA (0.99) at every
  iteration that does not re-initialise the groups, besides the 0.996 one;
  `code_extra_ema: 0.99` reproduces it (0 = off, the paper).
- The code updates the target inside the forward pass (before the optimiser step); here it
  is updated after the step (BYOL). The code's group centres start uniform in [0, 1)^D,
  here Gaussian; its memory bank drops the rows that overflow at wrap-around, here a ring.
- The code fills absent classes' prototype logits with -10; here they are masked exactly.
- The code re-initialises the groups with scikit-learn's (Euclidean) k-means on the CPU;
  here the same spherical k-means as the E-step, on the training device. As in the code,
  each direction (a, b) moves G before its L_group, which uses the moved centres.
- The target's momentum is constant 0.996 (the DigPro configs set momentum_increase off);
  `momentum_increase: true` gives BYOL's schedule m_t = 1 - (1 - m) (cos(pi t / T) + 1) / 2.
- ProPos' shuffling BN is not used; under torchrun the engine's global BatchNorm plays its role.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

from deepclust.cluster import KMeansResult, spherical_kmeans, stream_seed
from deepclust.data.store import ImageSet
from deepclust.data.views import CropSpec, ViewSpec
from deepclust.encoders.base import Encoder
from deepclust.engine.distributed import all_gather_cat, is_distributed, rank, world_size
from deepclust.engine.transfer import to_device
from deepclust.errors import ConfigError
from deepclust.losses import (
    assign_groups,
    enqueue,
    float32_maths,
    group_contrast_loss,
    moved_group_centres,
    prototype_aggregation_loss,
    update_group_centres,
)
from deepclust.methods.base import METHODS, Method, StepInfo

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


@dataclass
class DigProParams:
    # views (crop_size = the stored image size: 32 for CIFAR / Tiny-ImageNet, 96 for ImageNet-10)
    crop_size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    # networks
    hidden_dim: int = 4096
    projection_dim: int = 256
    predictor_lr_scale: float = 10.0
    ema_momentum: float = 0.996
    momentum_increase: bool = False  # BYOL's cosine schedule of the momentum toward 1
    code_extra_ema: float = 0.0  # the authors' code: 0.99 (a second EMA each iteration)
    # objective
    warmup_epochs: int = 50  # no L_proto, no latent noise, no E-step before this epoch
    latent_std: float = 0.001
    proto_weight: float = 0.1
    proto_temperature: float = 0.5
    group_weight: float = 0.3
    group_temperature: float = 0.1
    group_momentum: float = 0.99
    group_reset_every: int | None = None  # iterations; None = K (the paper), 0 = never
    group_reset_offset: int = 0  # 1 = the code, which counts iterations from 1 (one step earlier)
    group_members: Literal["target", "online"] = "target"
    group_mean: Literal["unit", "raw"] = "unit"  # raw: unnormalised projections (the code)
    group_gradient: bool = False  # True: L_group's gradient also flows through the moved G
    absent_class_logit: float | None = None  # None: masked exactly; the code: -10
    target_update: Literal["after_step", "in_forward"] = "after_step"  # in_forward: the code
    memory_size: int = 2560
    # k-means (E-step, group re-initialisation, prediction)
    kmeans_iters: int = 300
    kmeans_tol: float = 1e-4
    kmeans_n_init: int = 3  # k-means++ starts of the E-step / prediction k-means (best kept)
    predict_temperature: float = 0.1


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear: [B, in_dim] -> [B, out_dim]."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


def _broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's values on every process (in place); identity on one process."""
    if is_distributed():
        torch_dist.broadcast(tensor, src=0)
    return tensor


@METHODS.register("digpro")
class DigPro(Method):
    """DigPro: BYOL + batch-wise dynamic grouping + prototype aggregation, k-means E-step"""

    name = "digpro"
    Params = DigProParams

    def __init__(
        self, params: DigProParams, encoder: Encoder, num_clusters: int, num_samples: int
    ) -> None:
        super().__init__(params, encoder, num_clusters, num_samples)
        p = params
        if p.memory_size < num_clusters:
            raise ConfigError(
                f"params.memory_size ({p.memory_size}) must hold at least K = {num_clusters} "
                "features for the k-means re-initialisation of the groups."
            )
        dim = p.projection_dim
        self.projector = mlp(encoder.feature_dim, p.hidden_dim, dim)
        self.predictor = mlp(dim, p.hidden_dim, dim)
        for m in self.predictor.modules():  # ProPos' predictor initialisation
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        # A frozen (pretrained) encoder is shared by both networks: only the heads have a target.
        self.target_encoder: Encoder | None = copy.deepcopy(encoder) if encoder.trainable else None
        self.target_projector = copy.deepcopy(self.projector)
        self._freeze_target()
        self.register_buffer("group_centres", F.normalize(torch.randn(num_clusters, dim), dim=1))
        self.register_buffer("memory", torch.zeros(p.memory_size, dim))
        self.register_buffer("memory_pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pseudo_labels", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(num_clusters, dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._seed = 0
        self._clustering: tuple[int, KMeansResult] | None = None

    # ------------------------------------------------------------------ networks
    def _online_parameters(self) -> list[nn.Parameter]:
        encoder = list(self.encoder.parameters()) if self.target_encoder is not None else []
        return [*encoder, *self.projector.parameters()]

    def _target_parameters(self) -> list[nn.Parameter]:
        encoder = list(self.target_encoder.parameters()) if self.target_encoder is not None else []
        return [*encoder, *self.target_projector.parameters()]

    def _target_modules(self) -> list[nn.Module]:
        return [m for m in (self.target_encoder, self.target_projector) if m is not None]

    def _freeze_target(self) -> None:
        """No gradients for the target (again after the engine may have swapped its BatchNorms)."""
        for param in self._target_parameters():
            param.requires_grad_(False)

    def online_projection(self, x: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] (or cached frozen features [B,D]) -> z [B, projection_dim]."""
        return self.projector(self.features(x))

    def target_embed(self, x: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] (or cached frozen features) -> unit target projections [B, P] (float32)."""
        if self.target_encoder is None or x.ndim == 2:
            h = self.features(x)
        else:
            h = self.target_encoder(x)
        return F.normalize(self.target_projector(h).float(), dim=1)

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online (encoder + projector weights)."""
        target, online = self._target_parameters(), self._online_parameters()
        if len(target) != len(online):
            raise RuntimeError("target and online networks differ in their parameters")
        torch._foreach_lerp_(target, [o.detach() for o in online], 1.0 - momentum)

    def momentum_at(self, info: StepInfo) -> float:
        """The EMA momentum at this step (constant, or BYOL's cosine increase to 1)."""
        m = self.params.ema_momentum
        if not self.params.momentum_increase:
            return m
        progress = info.step / max(info.total_steps, 1)
        return 1.0 - (1.0 - m) * (math.cos(math.pi * progress) + 1.0) / 2.0

    # ------------------------------------------------------------------ training
    def view_spec(self) -> ViewSpec:
        p = self.params
        crop = CropSpec(
            count=2,
            size=p.crop_size,
            scale=p.crop_scale,
            jitter=(0.4, 0.4, 0.4, 0.1),
            jitter_p=p.jitter_p,
            grayscale_p=p.grayscale_p,
            blur_p=p.blur_p,
        )
        return ViewSpec((crop,), mean=self.encoder.mean, std=self.encoder.std)

    def parameter_groups(self) -> list[dict[str, Any]]:
        # The engine calls this after replacing BatchNorm modules (GlobalBatchNorm under
        # torchrun on CPU), whose new parameters would otherwise require gradients.
        self._freeze_target()
        base = [q for q in self._online_parameters() if q.requires_grad]
        return [
            {"params": base},
            {
                "params": list(self.predictor.parameters()),
                "lr_scale": self.params.predictor_lr_scale,
            },
        ]

    def on_train_start(self, ctx: FitContext) -> None:
        self._seed = ctx.seed

    def group_reset_due(self, step: int) -> bool:
        """Whether the group centres are re-initialised by k-means at the start of `step`."""
        every = self.params.group_reset_every
        every = self.num_clusters if every is None else every
        return every > 0 and step > 0 and (step + self.params.group_reset_offset) % every == 0

    @torch.no_grad()
    def reset_groups(self, step: int) -> bool:
        """G <- spherical k-means of the memory (same on every process); False if too few rows."""
        filled = int(self.memory_filled)
        if filled < self.num_clusters:
            return False
        result = spherical_kmeans(
            self.memory[:filled],
            self.num_clusters,
            max_iter=self.params.kmeans_iters,
            tol=self.params.kmeans_tol,
            seed=stream_seed(self._seed, "groups", step),
        )
        self.group_centres.copy_(_broadcast_(result.centroids.contiguous()))
        return True

    def latent_noise(self, z: torch.Tensor, step: int, view: int) -> torch.Tensor:
        """eps ~ N(0, latent_std^2) [B, D] for this process's rows of the global batch."""
        b, w = z.shape[0], world_size()
        gen = torch.Generator().manual_seed(stream_seed(self._seed, "latent", step, view))
        noise = torch.randn(b * w, z.shape[1], generator=gen)[rank() * b : (rank() + 1) * b]
        return to_device(noise, z.device).to(z.dtype) * self.params.latent_std

    def noisy_prediction(self, z: torch.Tensor, step: int, view: int) -> torch.Tensor:
        """predictor(z + eps) [B, D], in float32 even under autocast.

        eps has std 0.001: bfloat16 (8 significant bits) would round most of it away.
        """
        with float32_maths(z.device.type):
            z32 = z.float()
            return self.predictor(z32 + self.latent_noise(z32, step, view))

    def group_step(self, z: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Assign targets k [B, D] to groups, move G toward the online z [B, D]; -> (a [B], G [K, D]).

        The moved G carries z's gradient only under group_gradient (the code's SMoG).
        """
        p = self.params
        with torch.no_grad():
            assignment = assign_groups(k, self.group_centres)
            members = assignment
            if p.group_members == "online":
                members = assign_groups(z, self.group_centres)
        move = moved_group_centres if p.group_gradient else update_group_centres
        z = z if p.group_gradient else z.detach()
        centres = move(
            self.group_centres, z.float(), members, p.group_momentum, p.group_mean == "unit"
        )
        with torch.no_grad():
            self.group_centres.copy_(centres)
        return assignment, centres

    @torch.no_grad()
    def remember(self, z: list[torch.Tensor]) -> None:
        """Push the normalised online projections of every view (global batch) into the memory."""
        rows = torch.cat([all_gather_cat(F.normalize(v.detach().float(), dim=1)) for v in z])
        enqueue(self.memory, self.memory_pointer, self.memory_filled, rows)

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        p = self.params
        if len(views) != 2:
            raise ValueError(f"digpro needs 2 views per image, got {len(views)}")
        warm = info.epoch < p.warmup_epochs
        if self.group_reset_due(info.step):
            self.reset_groups(info.step)
        elif p.code_extra_ema > 0:
            self.ema_update(p.code_extra_ema)
        labels = None
        if not warm:
            if info.indices is None:
                raise ValueError("digpro needs the batch's fit-set indices (info.indices)")
            labels = self.pseudo_labels[info.indices]

        z = [self.online_projection(v) for v in views]
        # per direction (a, b) as the code: target of view b, predictor of z_a, its noisy pass
        # (the order the BatchNorm running statistics see the batches)
        k: list[torch.Tensor] = list(views)
        pred, noisy = list(z), list(z)
        for a, b in ((0, 1), (1, 0)):
            with torch.no_grad():
                k[b] = self.target_embed(views[b])
            pred[a] = noisy[a] = self.predictor(z[a])
            if not warm and p.latent_std > 0:
                noisy[a] = self.noisy_prediction(z[a], info.step, a)

        zero = z[0].new_zeros((), dtype=torch.float32)
        ins, group, proto = zero, zero, zero
        with float32_maths(z[0].device.type):
            for a, b in ((0, 1), (1, 0)):
                za, pa = z[a].float(), pred[a].float()
                ins = ins - 2 * F.cosine_similarity(noisy[a].float(), k[b], dim=1).mean()
                assignment, centres = self.group_step(za, k[b])
                group = group + group_contrast_loss(pa, centres, assignment, p.group_temperature)
                if labels is not None:
                    proto = proto + prototype_aggregation_loss(
                        za, k[b], labels, self.num_clusters, p.proto_temperature,
                        p.absent_class_logit,
                    )  # fmt: skip
        self.remember(z)
        if p.target_update == "in_forward":  # the code: before the optimiser step
            self.ema_update(self.momentum_at(info))
        return {
            "instance": ins / 2,
            "group": p.group_weight * group / 2,
            "proto": p.proto_weight * proto / 2,
        }

    def after_optimizer_step(self, info: StepInfo) -> None:
        if self.params.target_update == "after_step":
            self.ema_update(self.momentum_at(info))
        self.steps_done += 1

    # ------------------------------------------------------------------ E-step, prediction
    @torch.no_grad()
    def fit_set_features(self, ctx: FitContext) -> torch.Tensor:
        """Target features of the whole fit set [N, projection_dim], on every process.

        Under torch.distributed each process extracts a contiguous shard; the shards are
        all-gathered. The target runs in eval mode (BatchNorm running statistics).
        """
        modules = [*self._target_modules(), self.encoder]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            n, w = len(ctx.fit_set), world_size()
            if w == 1 or ctx.fit_features is not None:  # cached frozen features: no sharding
                return ctx.extract(self.target_embed, desc="target features")
            per = -(-n // w)
            lo, hi = min(rank() * per, n), min((rank() + 1) * per, n)
            local = torch.zeros(per, self.params.projection_dim, device=ctx.device)
            if hi > lo:
                shard = ImageSet(ctx.fit_set.images[lo:hi], ctx.fit_set.labels[lo:hi])
                local[: hi - lo] = ctx.extract(self.target_embed, shard, desc="target features")
            return all_gather_cat(local)[:n]
        finally:
            for m, mode in zip(modules, modes, strict=True):
                m.train(mode)

    @torch.no_grad()
    def cluster_fit_set(self, ctx: FitContext) -> KMeansResult:
        """Spherical k-means of the fit set's target features at the current weights (cached)."""
        steps = int(self.steps_done)
        if self._clustering is not None and self._clustering[0] == steps:
            return self._clustering[1]
        feats = self.fit_set_features(ctx)
        p = self.params
        result = spherical_kmeans(
            feats,
            self.num_clusters,
            max_iter=p.kmeans_iters,
            tol=p.kmeans_tol,
            seed=stream_seed(ctx.seed, "kmeans", steps),
            n_init=p.kmeans_n_init,
        )
        _broadcast_(result.labels)
        _broadcast_(result.centroids)
        self._clustering = (steps, result)
        return result

    def learning_phases(self, total_steps: int, steps_per_epoch: int) -> dict[str, int]:
        warm = self.params.warmup_epochs * steps_per_epoch
        return {"DigPro's warm-up (no prototype loss, no E-step pseudo-labels)": warm}

    def on_epoch_start(self, ctx: FitContext) -> None:
        if ctx.epoch < self.params.warmup_epochs:
            return
        self.pseudo_labels.copy_(self.cluster_fit_set(ctx).labels)
        self._clustering = None  # training changes the weights from here on

    def before_evaluate(self, ctx: FitContext) -> None:
        self.centroids.copy_(self.cluster_fit_set(ctx).centroids)
        self.fitted.fill_(True)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._clustering = None
        return super().load_state_dict(*args, **kwargs)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("digpro has no k-means centroids yet (call before_evaluate first)")
        sims = self.target_embed(images) @ self.centroids.float().T
        return torch.softmax(sims / self.params.predict_temperature, dim=1)
