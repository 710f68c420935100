"""TURTLE: Let Go of Your Labels with Unsupervised Transfer (Gadetsky, Jiang, Brbic, ICML 2024).

The labelling of the data is searched for directly: a task encoder, one weight-normalised
linear layer per representation space (a frozen encoder, or each part of a joined one,
`efficientnet_lite0+efficientnet_lite2`), labels x by the mean over spaces of
softmax(theta_s phi_s(x)). Each step:

    inner     in every space a fresh linear classifier w_s (cold start; or the previous
              step's with `warm_start`) is trained for M = 10 Adam steps (lr 1e-3) to
              predict that labelling on the batch
    outer     L = sum_s CE(labelling, softmax(w_s phi_s(x))) - gamma sum_s H(mean labelling_s),
              gamma = 10 (losses/transfer.py); Adam, lr 1e-3, on the task encoder
    predict   the task encoder's labelling (argmax of its mean softmax)

TURTLE's setting is the whole dataset as one batch (10,000 per step) for T = 6000 steps;
the frozen config trades steps for time (configs/turtle/frozen.yaml). The inner classifiers
learn on the global batch: their gradients are averaged over processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from deepclust.data.views import ViewSpec, batch_generator
from deepclust.encoders.base import Encoder
from deepclust.engine.distributed import all_reduce_sum, world_size
from deepclust.errors import ConfigError
from deepclust.losses.common import soft_cross_entropy
from deepclust.losses.transfer import task_encoder_loss
from deepclust.methods.base import METHODS, Method, StepInfo
from deepclust.methods.heads import feature_views, require_frozen

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


@dataclass
class TURTLEParams:
    gamma: float = 10.0
    inner_steps: int = 10
    inner_lr: float = 1e-3
    warm_start: bool = False


def init_linear(dim: int, num_clusters: int, gen: torch.Generator) -> list[torch.Tensor]:
    """[weight [K, D], bias [K]] drawn like nn.Linear's default, from `gen` (same on every process)."""
    bound = 1 / dim**0.5
    weight = (torch.rand(num_clusters, dim, generator=gen) * 2 - 1) * bound
    bias = (torch.rand(num_clusters, generator=gen) * 2 - 1) * bound
    return [weight, bias]


def fit_inner(
    spaces: list[torch.Tensor],
    labels: torch.Tensor,
    start: list[list[torch.Tensor]],
    steps: int,
    lr: float,
) -> list[list[torch.Tensor]]:
    """Train one linear classifier per space on soft `labels` [B, K] (no gradient to them).

    spaces: S features [B, D_s]; start: S [weight, bias] pairs. Adam for `steps` steps on
    the sum of the spaces' cross-entropies; gradients averaged over processes (the batch
    is global). Returns the trained pairs (detached).
    """
    params = [[t.clone().requires_grad_(True) for t in pair] for pair in start]
    flat = [t for pair in params for t in pair]
    optimizer = torch.optim.Adam(flat, lr=lr)
    world = world_size()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = sum(
                soft_cross_entropy(labels, F.linear(z, w, b))
                for z, (w, b) in zip(spaces, params, strict=True)
            )
            grads = torch.autograd.grad(loss, flat)  # type: ignore[arg-type]
        for t, g in zip(flat, grads, strict=True):
            t.grad = all_reduce_sum(g.clone()) / world
        optimizer.step()
    return [[t.detach() for t in pair] for pair in params]


@METHODS.register("turtle")
class TURTLE(Method):
    """TURTLE (Gadetsky et al. 2024): the labelling a linear classifier generalises on"""

    name = "turtle"
    Params = TURTLEParams

    def __init__(self, params: TURTLEParams, encoder: Encoder, num_clusters: int, num_samples: int):
        super().__init__(params, encoder, num_clusters, num_samples)
        require_frozen(self.name, encoder)
        if params.inner_steps < 1 or params.inner_lr <= 0 or params.gamma < 0:
            raise ConfigError(
                "params.inner_steps must be at least 1, inner_lr positive and gamma not negative."
            )
        self.spaces: list[int] = list(getattr(encoder, "spaces", [encoder.feature_dim]))
        self.task = nn.ModuleList([weight_norm(nn.Linear(d, num_clusters)) for d in self.spaces])
        self.inner: list[list[torch.Tensor]] | None = None  # warm start: the last classifiers
        self.seed = 0

    def on_train_start(self, ctx: FitContext) -> None:
        self.seed = ctx.seed  # cold-start classifiers are drawn from (seed, epoch, step)

    def view_spec(self) -> ViewSpec:
        return feature_views(self.encoder, 1)

    def split(self, features: torch.Tensor) -> list[torch.Tensor]:
        """features [B, sum D_s] -> S tensors [B, D_s]."""
        return list(self.features(features).float().split(self.spaces, dim=1))

    def labellings(self, spaces: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.softmax(task(z), dim=1) for task, z in zip(self.task, spaces, strict=True)]

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        p = self.params
        spaces = self.split(views[0])
        per_space = self.labellings(spaces)
        labels = torch.stack(per_space).mean(dim=0).detach()
        start = self.inner if p.warm_start and self.inner is not None else None
        if start is None:
            gen = batch_generator(self.seed, info.epoch, info.epoch_step, stream="turtle-inner")
            start = [init_linear(z.shape[1], self.num_clusters, gen) for z in spaces]
            start = [[t.to(labels.device) for t in pair] for pair in start]
        inner = fit_inner(spaces, labels, start, p.inner_steps, p.inner_lr)
        self.inner = inner
        logits = [F.linear(z, w, b) for z, (w, b) in zip(spaces, inner, strict=True)]
        _, error, spread = task_encoder_loss(per_space, logits, p.gamma)
        return {"prediction": error, "entropy": -p.gamma * spread}

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.labellings(self.split(images))).mean(dim=0)
