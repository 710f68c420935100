"""ConCURL: Consensus Clustering using Unsupervised Representation Learning.

Regatti, Deshmukh, Manavoglu, Dogan (journal version, Machine Learning 2022, arXiv
2105.01289). Three consistencies trained together: exemplar (instance discrimination),
population (swapped Sinkhorn assignments) and consensus (the assignment must not change
under variations of the representation space).

    views     2 per image: RandomResizedCrop(scale 0.2-1), flip, grayscale p=0.2, ColorJitter
              always on with every strength (brightness, contrast, saturation, hue) 0.4 for
              view 1 and 0.38 for view 2; 32 px CIFAR, 160 px ImageNet subsets (crop_size)
    h_v       encoder(view v)                                           [B, D]
    f_v       normalize(Linear(D, 128)(h_v))   instance feature         [B, 128]
    z_v       Linear(2048, 256)(ReLU(BN(Linear(D, 2048)(h_v))))        [B, 256]
    s_v       norm(z_v) . norm(C)^T, C the K prototypes (K x 256)     [B, K]
    q_v       sinkhorn(s_v, eps 0.05, 3 iterations), no gradient     [B, K]
    s_m^v     norm(z_v R_m^T) . norm(C R_m^T)^T, R_m fixed Gaussian (p x 256), m = 1..M
    L_nce     memory-bank NCE of f_1 (Wu et al. 2018): N x 128 bank, 4096 negatives,
              bank momentum 0.5, temperature per dataset
    L_soft    1/2 [CE(q_2, softmax(s_1 / 0.1)) + CE(q_1, softmax(s_2 / 0.1))]
    L_cons    (1/M) sum_m 1/2 [CE(q_2, softmax(s_m^1 / 0.1)) + CE(q_1, softmax(s_m^2 / 0.1))]
    total     beta L_nce + alpha L_soft + gamma L_cons   (released runs: 1, 0, 1)
    predict   argmax s (prototypes), or k-means (n_init 20) on f or on norm(z): predict_with

Decisions (see README "ConCURL" for the full list):
- NCE form: Wu et al.'s NCE with a constant normaliser Z (fixed from the first batch as
  N * mean exp(s / T)), noise 1/N, as the authors' code (built on lemniscate) does; it is
  what produced the reported numbers. `nce_form: softmax` gives the softmax over positive +
  negatives (CPC / MoCo form). Negatives never include the positive itself (Wu et al. allow
  it; with N >= 10,000 it is rare, but small data sets would see it often).
- As in the authors' code, only view 1 feeds L_nce and the bank update (`nce_views: 2`
  uses both views, averaging the losses and updating the bank with norm(f_1 + f_2)).
- The bank starts as random unit vectors drawn from the run's seed (lemniscate: uniform
  noise of about unit norm); Z is a buffer, so a resumed run keeps it.
- `instance_loss: infonce` replaces the bank by SimCLR's NT-Xent over the 2B views of the
  global batch (temperature `infonce_temperature`).
- Random projections are drawn once from the run's seed (torch.initial_seed(), which the
  engine sets to train.seed before building the method) and kept as a buffer: they are in
  every checkpoint, identical after resume and on every process.

Where the authors' code differs from the paper (the paper configs run the code; the
dataclass defaults keep the paper's intent, docs/fidelity.md):
- In the released code the prototypes enter the projected scores detached (.data), so with
  alpha = 0 they never learn and stay at their random initialisation, and the released
  evaluation clusters the 128-d NCE feature with k-means (n_init 20). The paper configs
  set `detach_prototypes: true` and `predict_with: kmeans_instance`; the defaults train
  the prototypes and predict by their argmax.
- The code applies grayscale before colour jitter; deepclust's view pipeline jitters
  first (torchvision's usual order), so a grey view here still gets brightness/contrast.
- The authors pick the "best" checkpoint by train-set accuracy (labels). deepclust never
  does: the last checkpoint is the result, and the label-free signal to select by is the
  method's own loss (logged every epoch in metrics.jsonl).

Variations of the representation space (`variation`); the paper names three kinds but
gives a formula only for random projections, so the other two are deepclust's
constructions, documented here and in the README:
- `random_projection` (the paper's): as above; `identity_projection: true` sets M = 1,
  R = I, which makes L_cons SwAV's plain swapped loss.
- `initialisation`: M prototype sets (the main C and M - 1 others), independently
  initialised; s_m^v = norm(z_v) . norm(C_m)^T against the targets q of the main set, so
  every set must reproduce the main set's assignment (cluster indices are aligned by the
  loss itself). M = 1 is again the plain swapped loss.
- `kmeans` (a different clustering algorithm): at the start of every epoch, k-means over
  norm(z) of the whole fit set, its clusters relabelled to agree best with the prototype
  argmax (Hungarian matching of the two partitions, as in voting-based consensus
  clustering); L_cons = 1/2 [swapped Sinkhorn loss + 1/2 sum_v CE(kmeans label, softmax(s_v / 0.1))].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from deepclust.data.views import CropSpec, ViewSpec
from deepclust.encoders.base import Encoder
from deepclust.engine.distributed import is_distributed, rank, world_size
from deepclust.errors import ConfigError
from deepclust.losses import float32_maths, sinkhorn, swapped_prediction
from deepclust.losses.consensus import (
    align_partition,
    consensus_loss,
    cosine_scores,
    gaussian_projections,
    projected_scores,
)
from deepclust.losses.nce import (
    info_nce_loss,
    memory_bank_scores,
    nce_loss,
    nce_normaliser,
    sample_negatives,
    softmax_nce_loss,
    update_memory_bank,
)
from deepclust.methods.base import METHODS, Method, StepInfo

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


@dataclass
class ConCURLParams:
    # views
    crop_size: int = 32  # 32 for CIFAR, 160 for the ImageNet subsets (set data.image_size too)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: tuple[float, float] = (0.4, 0.38)  # colour-jitter strength of view 1 and view 2
    grayscale_p: float = 0.2
    # heads
    instance_dim: int = 128
    head_hidden: int = 2048
    embedding_dim: int = 256
    # objective: beta L_nce + alpha L_soft + gamma L_consensus
    alpha: float = 0.0
    beta: float = 1.0
    gamma: float = 1.0
    instance_loss: Literal["memory_bank", "infonce"] = "memory_bank"
    nce_form: Literal["nce", "softmax"] = "nce"
    nce_negatives: int = 4096
    nce_temperature: float = 0.85  # CIFAR-10 0.85, CIFAR-100/20 0.35, ImageNet-10 1.0, Dogs 0.5
    bank_momentum: float = 0.5
    nce_views: Literal[1, 2] = 1
    infonce_temperature: float = 0.5
    temperature: float = 0.1
    sinkhorn_eps: float = 0.05
    sinkhorn_iters: int = 3
    variation: Literal["random_projection", "initialisation", "kmeans"] = "random_projection"
    num_variations: int = 64  # M: projections or prototype sets
    random_projection_dim: int = 152  # p
    identity_projection: bool = False  # M = 1, R = I: the plain swapped loss
    detach_prototypes: bool = False  # True = the released code (prototypes out of L_consensus)
    variation_kmeans_n_init: int = 3
    # prediction
    predict_with: Literal["prototypes", "kmeans_instance", "kmeans_projection"] = "prototypes"
    kmeans_n_init: int = 20


def _keyed_generator(tag: str, *keys: int) -> torch.Generator:
    """A CPU generator seeded from a stable hash of (tag, keys)."""
    text = ":".join([f"deepclust.concurl.{tag}", *(str(int(k)) for k in keys)]).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def _broadcast_(tensor: torch.Tensor) -> None:
    """Make every process hold rank 0's values (no-op on one process)."""
    if is_distributed():
        dist.broadcast(tensor, src=0)


@METHODS.register("concurl")
class ConCURL(Method):
    """ConCURL: memory-bank NCE + consensus over random projections of the cluster space"""

    name = "concurl"
    Params = ConCURLParams

    def __init__(
        self, params: ConCURLParams, encoder: Encoder, num_clusters: int, num_samples: int
    ) -> None:
        super().__init__(params, encoder, num_clusters, num_samples)
        p = params
        _check(p, num_samples)
        d, k, e = encoder.feature_dim, num_clusters, p.embedding_dim
        self.instance_head = nn.Linear(d, p.instance_dim)
        self.projection_head = nn.Sequential(
            nn.Linear(d, p.head_hidden),
            nn.BatchNorm1d(p.head_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(p.head_hidden, e),
        )
        # Everything random that is not a network weight comes from the run's seed.
        gen = _keyed_generator("init", torch.initial_seed())
        self.prototypes = nn.Parameter(F.normalize(torch.randn(k, e, generator=gen), dim=1))

        m = 1 if p.identity_projection else p.num_variations
        if p.variation == "random_projection":
            proj = (
                torch.eye(e)[None]
                if p.identity_projection
                else gaussian_projections(m, p.random_projection_dim, e, gen)
            )
        else:
            proj = torch.zeros(0, 0, e)
        self.register_buffer("projections", proj)  # [M, p, 256], fixed for the run
        extra = m - 1 if p.variation == "initialisation" else 0
        self.prototype_sets = nn.Parameter(
            F.normalize(torch.randn(extra, k, e, generator=gen), dim=-1)
        )  # the M - 1 other prototype sets of variation 'initialisation'
        self.prototype_sets.requires_grad_(extra > 0)
        self.register_buffer(
            "kmeans_targets",
            torch.full((num_samples if p.variation == "kmeans" else 0,), -1, dtype=torch.long),
        )

        rows = num_samples if p.instance_loss == "memory_bank" else 0
        bank = F.normalize(torch.randn(rows, p.instance_dim, generator=gen), dim=1)
        self.register_buffer("memory_bank", bank)  # [N, 128]
        self.register_buffer("nce_z", torch.tensor(-1.0))  # Wu et al.'s Z; < 0 = not yet set

        dim = {"kmeans_instance": p.instance_dim, "kmeans_projection": e}.get(p.predict_with, 0)
        self.register_buffer("centroids", torch.zeros(k if dim else 0, dim))
        self.register_buffer("kmeans_temperature", torch.ones(()))
        self.register_buffer("kmeans_fitted", torch.zeros((), dtype=torch.bool))

        # Parameters no loss reaches would stall DistributedDataParallel: freeze them.
        if p.beta == 0:
            self.instance_head.requires_grad_(False)
        if p.alpha == 0 and p.gamma == 0:
            self.projection_head.requires_grad_(False)
        if p.alpha == 0 and (
            p.gamma == 0 or (p.variation == "random_projection" and p.detach_prototypes)
        ):
            self.prototypes.requires_grad_(False)

        self._seed = 0
        self._z_known = False
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ views and heads
    def view_spec(self) -> ViewSpec:
        p = self.params

        def crop(strength: float) -> CropSpec:
            return CropSpec(
                count=1,
                size=p.crop_size,
                scale=p.crop_scale,
                flip_p=0.5,
                jitter=(strength,) * 4,
                jitter_p=1.0,
                grayscale_p=p.grayscale_p,
                blur_p=0.0,
            )

        return ViewSpec(
            (crop(p.jitter[0]), crop(p.jitter[1])), mean=self.encoder.mean, std=self.encoder.std
        )

    def embed(
        self, images: torch.Tensor, instance: bool = True, embedding: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """images [B,3,H,W] -> (instance feature f [B,128] unit norm, embedding z [B,256]), float32.

        A head not asked for is not run (and its output is None).
        """
        h = self.features(images)
        f = F.normalize(self.instance_head(h).float(), dim=1) if instance else None
        return f, self.projection_head(h).float() if embedding else None

    # ------------------------------------------------------------------ training
    def on_train_start(self, ctx: FitContext) -> None:
        self._seed = ctx.seed

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        p = self.params
        if len(views) != 2:
            raise ValueError(f"ConCURL needs 2 views per image, got {len(views)}")
        # heads no loss uses are not run (their parameters are frozen in __init__)
        instance, clusters = p.beta > 0, p.alpha > 0 or p.gamma > 0
        (f1, z1), (f2, z2) = (self.embed(v, instance, clusters) for v in views)
        losses: dict[str, torch.Tensor] = {}
        with float32_maths(views[0].device.type):
            if instance:
                assert f1 is not None and f2 is not None
                losses["nce"] = p.beta * self._instance_loss(f1, f2, info)
            if not clusters:
                return losses
            assert z1 is not None and z2 is not None
            s1, s2 = cosine_scores(z1, self.prototypes), cosine_scores(z2, self.prototypes)
            q1 = sinkhorn(s1, p.sinkhorn_eps, p.sinkhorn_iters)
            q2 = sinkhorn(s2, p.sinkhorn_eps, p.sinkhorn_iters)
            if p.alpha > 0:
                scores, codes = torch.stack([s1, s2]), torch.stack([q1, q2])
                losses["soft"] = p.alpha * swapped_prediction(scores, codes, p.temperature)
            if p.gamma > 0:
                losses["consensus"] = p.gamma * self._consensus(z1, z2, s1, s2, q1, q2, info)
        return losses

    def _instance_loss(self, f1: torch.Tensor, f2: torch.Tensor, info: StepInfo) -> torch.Tensor:
        p = self.params
        if p.instance_loss == "infonce":
            return info_nce_loss(f1, f2, p.infonce_temperature)
        if info.indices is None:
            raise ValueError("the memory bank needs the batch's fit-set indices (info.indices)")
        idx = info.indices.to(self.memory_bank.device)
        batch = idx.shape[0]
        gen = _keyed_generator("negatives", self._seed, info.step)
        negatives = sample_negatives(
            idx, self.num_samples, p.nce_negatives, gen, rank() * batch, world_size() * batch
        )
        feats = [f1] if p.nce_views == 1 else [f1, f2]
        scores = [memory_bank_scores(f, self.memory_bank, idx, negatives) for f in feats]
        if p.nce_form == "nce":
            if not self._z_known:
                if float(self.nce_z) < 0:
                    z = nce_normaliser(scores[0], p.nce_temperature, self.num_samples)
                    self.nce_z.fill_(float(z))
                self._z_known = True
            loss = torch.stack(
                [nce_loss(s, p.nce_temperature, self.num_samples, self.nce_z) for s in scores]
            ).mean()
        else:
            loss = torch.stack([softmax_nce_loss(s, p.nce_temperature) for s in scores]).mean()
        update = f1 if p.nce_views == 1 else F.normalize(f1 + f2, dim=1)
        self._pending = (idx, update.detach())
        return loss

    def _consensus(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        s1: torch.Tensor,
        s2: torch.Tensor,
        q1: torch.Tensor,
        q2: torch.Tensor,
        info: StepInfo,
    ) -> torch.Tensor:
        p = self.params
        if p.variation == "random_projection":
            protos = self.prototypes.detach() if p.detach_prototypes else self.prototypes
            sp1 = projected_scores(z1, protos, self.projections)
            sp2 = projected_scores(z2, protos, self.projections)
            return consensus_loss(sp1, sp2, q1, q2, p.temperature)
        if p.variation == "initialisation":
            sets = torch.cat([self.prototypes[None], self.prototype_sets])  # [M, K, 256]
            sp1, sp2 = cosine_scores(z1[None], sets), cosine_scores(z2[None], sets)
            return consensus_loss(sp1, sp2, q1, q2, p.temperature)
        # kmeans: the prototype clustering (Sinkhorn, swapped) and the k-means clustering
        if info.indices is None:
            raise ValueError("variation 'kmeans' needs the batch's fit-set indices")
        labels = self.kmeans_targets[info.indices.to(self.kmeans_targets.device)]
        if bool((labels < 0).any()):
            raise RuntimeError("variation 'kmeans': no k-means targets yet (on_epoch_start)")
        y = F.one_hot(labels.to(s1.device), self.num_clusters).float()
        swapped = consensus_loss(s1[None], s2[None], q1, q2, p.temperature)
        kmeans = consensus_loss(s1[None], s2[None], y, y, p.temperature)
        return (swapped + kmeans) / 2

    @torch.no_grad()
    def after_optimizer_step(self, info: StepInfo) -> None:
        self.prototypes.copy_(F.normalize(self.prototypes, dim=-1))
        if self.prototype_sets.numel():
            self.prototype_sets.copy_(F.normalize(self.prototype_sets, dim=-1))
        if self._pending is not None:
            idx, feats = self._pending
            update_memory_bank(self.memory_bank, idx, feats, self.params.bank_momentum)
            self._pending = None

    def on_epoch_start(self, ctx: FitContext) -> None:
        if self.params.variation != "kmeans":
            return
        feats = self._extract(ctx, "kmeans_projection", with_scores=True)
        z, scores = feats[:, : self.params.embedding_dim], feats[:, self.params.embedding_dim :]
        from sklearn.cluster import KMeans

        km = KMeans(
            n_clusters=self.num_clusters,
            n_init=self.params.variation_kmeans_n_init,
            random_state=(ctx.seed * 1_000_003 + ctx.epoch) % 2**31,
        ).fit(z.cpu().numpy())
        labels = align_partition(
            km.labels_.astype(np.int64), scores.argmax(1).cpu().numpy(), self.num_clusters
        )
        self.kmeans_targets.copy_(torch.from_numpy(labels))
        _broadcast_(self.kmeans_targets)

    # ------------------------------------------------------------------ prediction
    def _extract(self, ctx: FitContext, space: str, with_scores: bool = False) -> torch.Tensor:
        """Features of the whole fit set in eval mode: f, or norm(z) (+ prototype scores)."""

        def fn(images: torch.Tensor) -> torch.Tensor:
            f, z = self.embed(images, space == "kmeans_instance", space != "kmeans_instance")
            if f is not None:
                return f
            assert z is not None
            out = F.normalize(z, dim=1)
            return torch.cat([out, cosine_scores(z, self.prototypes)], 1) if with_scores else out

        was_training = self.training
        self.eval()
        try:
            return ctx.extract(fn, desc=f"concurl: {space}")
        finally:
            self.train(was_training)

    def before_evaluate(self, ctx: FitContext) -> None:
        p = self.params
        if p.predict_with == "prototypes":
            return
        from sklearn.cluster import KMeans

        feats = self._extract(ctx, p.predict_with).cpu().numpy()
        km = KMeans(
            n_clusters=self.num_clusters, n_init=p.kmeans_n_init, random_state=ctx.seed
        ).fit(feats)
        self.centroids.copy_(torch.as_tensor(km.cluster_centers_, dtype=torch.float32))
        self.kmeans_temperature.fill_(max(float(km.inertia_) / len(feats), 1e-12))
        self.kmeans_fitted.fill_(True)
        _broadcast_(self.centroids)
        _broadcast_(self.kmeans_temperature)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        p = self.params
        on_instance = p.predict_with == "kmeans_instance"
        f, z = self.embed(images, on_instance, not on_instance)
        if p.predict_with == "prototypes":
            assert z is not None
            return torch.softmax(cosine_scores(z, self.prototypes) / p.temperature, dim=1)
        if not bool(self.kmeans_fitted):
            raise RuntimeError(
                f"predict_with '{p.predict_with}': k-means has not been fitted yet (before_evaluate)"
            )
        x = f if f is not None else F.normalize(z, dim=1)  # type: ignore[arg-type]
        d2 = torch.cdist(x, self.centroids.float()).pow(2)
        return torch.softmax(-d2 / self.kmeans_temperature, dim=1)


def _check(p: ConCURLParams, num_samples: int) -> None:
    """Raise ConfigError for settings that cannot work, naming the key."""
    if p.num_variations < 1:
        raise ConfigError(f"params.num_variations must be at least 1; got {p.num_variations}.")
    if p.identity_projection and p.variation != "random_projection":
        raise ConfigError(
            "params.identity_projection applies to variation 'random_projection' only; "
            f"got variation '{p.variation}'."
        )
    if p.instance_loss == "memory_bank" and p.beta > 0 and num_samples < 2:
        raise ConfigError("the memory bank needs at least 2 training images.")
    if p.nce_negatives < 1:
        raise ConfigError(f"params.nce_negatives must be at least 1; got {p.nce_negatives}.")
    if min(p.alpha, p.beta, p.gamma) < 0:
        raise ConfigError("params.alpha, params.beta and params.gamma must be >= 0.")
