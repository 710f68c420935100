"""A tiny trainable method for engine tests: a linear head on pixels, IIC-style objective.

It exists only to exercise the training loop (views, optimiser, schedule, checkpoints,
resume) in seconds; it is registered under the name 'toy' when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepclust.data.views import CropSpec, ViewSpec
from deepclust.engine.distributed import all_reduce_sum_grad, world_size
from deepclust.methods import METHODS, Method


@dataclass
class ToyParams:
    crop_scale: float = 0.6


class Toy(Method):
    """test-only: linear head on pixels trained to agree across two views"""

    name = "toy"
    Params = ToyParams

    def __init__(self, params, encoder, num_clusters, num_samples):
        super().__init__(params, encoder, num_clusters, num_samples)
        self.head = nn.Linear(encoder.feature_dim, num_clusters)

    def view_spec(self):
        crop = CropSpec(count=2, size=8, scale=(self.params.crop_scale, 1.0), grayscale_p=0.0)
        return ViewSpec((crop,), mean=self.encoder.mean, std=self.encoder.std)

    def training_step(self, views, info):
        p1, p2 = (torch.softmax(self.head(self.features(v)), 1) for v in views)
        # The joint is a statistic of the global batch: summed over processes, with gradient.
        joint = all_reduce_sum_grad(p1.T @ p2) / (p1.shape[0] * world_size())
        joint = ((joint + joint.T) / 2).clamp_min(1e-8)
        mi = (
            joint
            * (joint.log() - joint.sum(1, keepdim=True).log() - joint.sum(0, keepdim=True).log())
        ).sum()
        return {"mi": -mi}

    def predict_proba(self, images):
        return torch.softmax(self.head(self.features(images)), 1)


if "toy" not in METHODS:
    METHODS.register("toy")(Toy)
