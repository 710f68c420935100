"""SCAN: Learning to Classify Images without Labels (Van Gansbeke et al., ECCV 2020).

Here on a frozen pretrained encoder's cached features (the pretext stage is the
pretrained encoder; its features' nearest neighbours are mined once, engine/frozen.py):

    views     the sample's own feature (the anchor) and the feature of one of its k
              nearest neighbours drawn at random (itself included, as SCAN's mining),
              both with a little Gaussian noise (encoder.feature_noise)
    heads     H linear heads D -> K (SCAN's cluster head), trained together
    L_h       -mean_b log <p_h(anchor_b), p_h(neighbour_b)> - w H(mean_b p_h(anchor_b)),
              w = 5 (losses/neighbours.py); total = sum over heads
    predict   the head with the lowest mean loss over the last epoch (methods/heads.py)

SCAN's third stage, self-labelling, is the training loop's `self_label` stage (training/self_label.py),
which any method's heads can end with; SCAN's paper pipeline is SCAN + self_label.
Departures (docs/methods/scan.md): the backbone is frozen (SCAN's update_cluster_head_only),
so augmentation of the views is feature noise instead of image augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepclust.encoders.base import Encoder
from deepclust.errors import ConfigError
from deepclust.losses.neighbours import scan_loss
from deepclust.methods.base import METHODS, StepInfo
from deepclust.methods.heads import HeadBank, PairHeadsMethod, require_frozen


@dataclass
class SCANParams:
    heads: int = 10
    entropy_weight: float = 5.0


@METHODS.register("scan")
class SCAN(PairHeadsMethod):
    """SCAN (Van Gansbeke et al. 2020): neighbour-consistency heads on frozen features"""

    name = "scan"
    Params = SCANParams

    def __init__(self, params: SCANParams, encoder: Encoder, num_clusters: int, num_samples: int):
        super().__init__(params, encoder, num_clusters, num_samples)
        require_frozen(self.name, encoder)
        if params.heads < 1 or params.entropy_weight < 0:
            raise ConfigError("params.heads must be at least 1 and entropy_weight not negative.")
        dim = encoder.feature_dim
        self.heads = HeadBank([nn.Linear(dim, num_clusters) for _ in range(params.heads)])

    @property
    def bank(self) -> HeadBank:
        return self.heads

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> dict[str, torch.Tensor]:
        feats = torch.stack([self.features(v) for v in views])  # [2, B, D]
        p = torch.softmax(self.heads.all_heads(feats).float(), dim=-1)  # [H, 2, B, K]
        total, consistency, spread = scan_loss(p[:, 0], p[:, 1], self.params.entropy_weight)
        self.heads.record(total)
        return {
            "consistency": consistency.sum(),
            "entropy": -self.params.entropy_weight * spread.sum(),
        }

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.heads(self.features(images)).float(), dim=1)
