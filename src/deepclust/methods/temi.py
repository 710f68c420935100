"""TEMI: Exploring the Limits of Deep Image Clustering using Pretrained Models
(Adaloglou, Michels, Kalisch, Kollmann, BMVC 2023).

Clustering heads trained by self-distillation on nearest-neighbour pairs of a frozen
pretrained encoder's cached features:

    views     the sample's own feature x and one of its k nearest neighbours x' drawn at
              random (TEMI: k = 50), plus a little feature noise
    heads     H student heads, each D -> 512 (GELU) -> 256, L2-normalised, then a
              weight-normalised linear layer 256 -> K (DINO's head, TEMI's defaults);
              teacher heads are an EMA of the students (momentum 0.996)
    p         student softmax(logits / 0.1), teacher softmax(logits / 0.1)
    prior     per head, EMA (momentum 0.9) of the teacher's batch-mean assignment
    L_h       -mean_b w_b pmi_beta over both directions of the pair, beta = 0.6, w_b the
              teachers' agreement on the pair (losses/pmi.py); total = sum over heads
    predict   the student head with the lowest mean loss over the last epoch

The last layer of every head stays fixed for `freeze_last_layer_epochs` (TEMI: 1).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from deepclust.encoders.base import Encoder
from deepclust.errors import ConfigError
from deepclust.losses.pmi import temi_loss, update_prior
from deepclust.methods.base import METHODS, StepInfo
from deepclust.methods.heads import HeadBank, PairHeadsMethod, require_frozen


@dataclass
class TEMIParams:
    heads: int = 50
    hidden_dim: int = 512
    bottleneck_dim: int = 256
    beta: float = 0.6
    student_temperature: float = 0.1
    teacher_temperature: float = 0.1
    teacher_momentum: float = 0.996  # EMA of the teacher, rising by a cosine to ...
    teacher_momentum_end: float = 1.0  # ... this at the end of the run (DINO's schedule)
    prior_momentum: float = 0.9
    freeze_last_layer_epochs: int = 1


class ProjectionHead(nn.Module):
    """DINO's head: D -> hidden (GELU) -> bottleneck, L2-normalised, weight-normed linear -> K."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, num_clusters: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last = weight_norm(nn.Linear(bottleneck, num_clusters, bias=False))
        with torch.no_grad():
            self.last.parametrizations.weight.original0.fill_(1.0)  # the norm g starts at 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


@METHODS.register("temi")
class TEMI(PairHeadsMethod):
    """TEMI (Adaloglou et al. 2023): teacher-student PMI heads on nearest-neighbour pairs"""

    name = "temi"
    Params = TEMIParams

    def __init__(self, params: TEMIParams, encoder: Encoder, num_clusters: int, num_samples: int):
        super().__init__(params, encoder, num_clusters, num_samples)
        require_frozen(self.name, encoder)
        check_params(params)
        p = params
        self.student = HeadBank(
            [
                ProjectionHead(encoder.feature_dim, p.hidden_dim, p.bottleneck_dim, num_clusters)
                for _ in range(p.heads)
            ]
        )
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("prior", torch.full((p.heads, num_clusters), 1.0 / num_clusters))

    @property
    def bank(self) -> HeadBank:
        return self.student

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        p = self.params
        feats = torch.stack([self.features(v) for v in views])  # [2, B, D]
        p_student = torch.softmax(self.student.all_heads(feats).float() / p.student_temperature, -1)
        with torch.no_grad():
            t_logits = self.teacher.all_heads(feats).float()
            p_teacher = torch.softmax(t_logits / p.teacher_temperature, dim=-1)  # [H, 2, B, K]
            self.prior.copy_(update_prior(self.prior, p_teacher, p.prior_momentum))
        losses = temi_loss(p_student, p_teacher, self.prior, p.beta)  # [H]
        self.student.record(losses)
        return {"pmi": losses.sum()}

    def teacher_momentum(self, info: StepInfo) -> float:
        """DINO's cosine schedule from teacher_momentum to teacher_momentum_end."""
        p = self.params
        progress = info.step / max(info.total_steps, 1)
        return (
            p.teacher_momentum_end
            - (p.teacher_momentum_end - p.teacher_momentum) * (math.cos(math.pi * progress) + 1) / 2
        )

    def before_optimizer_step(self, info: StepInfo) -> None:
        if info.epoch < self.params.freeze_last_layer_epochs:
            for head in self.student.heads:
                for w in head.last.parameters():  # type: ignore[union-attr]
                    w.grad = None

    @torch.no_grad()
    def after_optimizer_step(self, info: StepInfo) -> None:
        m = self.teacher_momentum(info)
        for t, s in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            t.mul_(m).add_(s.detach(), alpha=1 - m)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.student(self.features(images)).float()
        return torch.softmax(logits / self.params.student_temperature, dim=1)


def check_params(p: TEMIParams) -> None:
    """Raise ConfigError for settings TEMI cannot run with."""
    problems = []
    if min(p.heads, p.hidden_dim, p.bottleneck_dim) < 1:
        problems.append("params.heads, hidden_dim and bottleneck_dim must be at least 1")
    if min(p.beta, p.student_temperature, p.teacher_temperature) <= 0:
        problems.append("params.beta and the temperatures must be positive")
    momenta = (p.teacher_momentum, p.teacher_momentum_end, p.prior_momentum)
    if not all(0 <= m <= 1 for m in momenta):
        problems.append("params.teacher_momentum(_end) and prior_momentum must be in [0, 1]")
    if p.freeze_last_layer_epochs < 0:
        problems.append("params.freeze_last_layer_epochs must not be negative")
    if problems:
        raise ConfigError("; ".join(problems) + ".")
