"""k-means on encoder features: the standard baseline, and the end-to-end proof of the engine.

No gradient training: after the (zero) epochs, features of the fit set are extracted once
and clustered with scikit-learn's KMeans (k-means++ init, `n_init` restarts). Predictions
are the nearest centroid; the confidence is softmax(-||x - c||^2 / T) with T the mean
squared distance of the fit set to its centroid, so it is scale-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans as SkKMeans

from deepclust.encoders.base import Encoder
from deepclust.methods.base import METHODS, Method

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


@dataclass
class KMeansParams:
    n_init: int = 10
    max_iter: int = 300
    l2_normalize: bool = False  # cluster directions (cosine) instead of raw features


@METHODS.register("kmeans")
class KMeans(Method):
    """k-means on encoder features (the standard baseline; no gradient training)"""

    name = "kmeans"
    Params = KMeansParams

    def __init__(
        self, params: KMeansParams, encoder: Encoder, num_clusters: int, num_samples: int
    ) -> None:
        super().__init__(params, encoder, num_clusters, num_samples)
        self.register_buffer("centroids", torch.zeros(num_clusters, encoder.feature_dim))
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _prepared(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.features(images).float()
        return F.normalize(feats, dim=1) if self.params.l2_normalize else feats

    def on_train_end(self, ctx: FitContext) -> None:
        feats = ctx.extract(self._prepared, desc="features for k-means").cpu().numpy()
        km = SkKMeans(
            n_clusters=self.num_clusters,
            n_init=self.params.n_init,
            max_iter=self.params.max_iter,
            random_state=ctx.seed,
        ).fit(feats)
        self.centroids.copy_(torch.as_tensor(km.cluster_centers_, dtype=torch.float32))
        self.temperature.fill_(max(float(km.inertia_) / len(feats), 1e-12))
        self.fitted.fill_(True)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("k-means has not been fitted yet")
        d2 = torch.cdist(self._prepared(images), self.centroids.float()).pow(2)
        return torch.softmax(-d2 / self.temperature, dim=1)
