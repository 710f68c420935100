"""Classic clustering on encoder features: the reference rows of every table.

Each baseline extracts the fit set's features once (cached features when the encoder is
frozen), partitions them with scikit-learn, and keeps one centroid per cluster (the mean
of its members) so that new images are assigned to the nearest centroid. The confidence
is softmax(-||x - c||^2 / T), T the mean squared distance of the fit set to its centroid.
Spectral and agglomerative clustering scale quadratically: above `max_samples` they run on
a random subsample and the remaining images go to the nearest centroid (say so in results).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from deepclust.encoders.base import Encoder
from deepclust.methods.base import METHODS, Method

if TYPE_CHECKING:
    from deepclust.engine.context import FitContext


class FeatureClustering(Method):
    """Shared machinery: features -> labels (subclass) -> centroids -> nearest-centroid prediction."""

    def __init__(self, params, encoder: Encoder, num_clusters: int, num_samples: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, encoder, num_clusters, num_samples)
        self.register_buffer("centroids", torch.zeros(num_clusters, encoder.feature_dim))
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit_labels(self, features: np.ndarray, seed: int) -> np.ndarray:
        """features [N, D] -> cluster ids [N] in 0..K-1."""
        raise NotImplementedError

    def _prepared(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x).float()
        return F.normalize(feats, dim=1) if self.params.l2_normalize else feats

    def on_train_end(self, ctx: FitContext) -> None:
        # Eval mode, as in predict_proba: BatchNorm's running statistics, not the batch's
        # (which would also overwrite the running statistics the predictions then use).
        was_training = self.training
        self.eval()
        try:
            feats = ctx.extract(self._prepared, desc=f"features for {self.name}").cpu()
        finally:
            self.train(was_training)
        labels = torch.as_tensor(self.fit_labels(feats.numpy(), ctx.seed), dtype=torch.long)
        counts = torch.bincount(labels, minlength=self.num_clusters).clamp_min(1)
        centroids = (
            torch.zeros(self.num_clusters, feats.shape[1]).index_add_(0, labels, feats)
            / counts[:, None]
        )
        self.centroids.copy_(centroids)
        within = (feats - centroids[labels]).pow(2).sum(1).mean()
        self.temperature.fill_(max(float(within), 1e-12))
        self.fitted.fill_(True)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError(f"{self.name} has not been fitted yet")
        d2 = torch.cdist(self._prepared(images), self.centroids.float()).pow(2)
        return torch.softmax(-d2 / self.temperature, dim=1)


def _subsample(features: np.ndarray, max_samples: int, seed: int) -> np.ndarray | None:
    if len(features) <= max_samples:
        return None
    return np.sort(np.random.default_rng(seed).choice(len(features), max_samples, replace=False))


def _fit_on_subsample(features: np.ndarray, max_samples: int, seed: int, fit) -> np.ndarray:  # type: ignore[no-untyped-def]
    """fit(features) -> labels, on at most max_samples points; the rest join the nearest centroid."""
    index = _subsample(features, max_samples, seed)
    if index is None:
        return fit(features)
    sub_labels = fit(features[index])
    centroids = np.stack([features[index][sub_labels == k].mean(0) for k in np.unique(sub_labels)])
    ids = np.unique(sub_labels)
    labels = ids[
        torch.cdist(torch.from_numpy(features), torch.from_numpy(centroids)).argmin(1).numpy()
    ]
    labels[index] = sub_labels
    return labels


@dataclass
class SpectralParams:
    n_neighbors: int = 20  # k-NN affinity graph
    l2_normalize: bool = True
    max_samples: int = 20000


@METHODS.register("spectral")
class Spectral(FeatureClustering):
    """spectral clustering on a k-NN graph of encoder features (baseline)"""

    name = "spectral"
    Params = SpectralParams

    def fit_labels(self, features: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.cluster import SpectralClustering

        def fit(x: np.ndarray) -> np.ndarray:
            return SpectralClustering(
                n_clusters=self.num_clusters,
                affinity="nearest_neighbors",
                n_neighbors=min(self.params.n_neighbors, len(x) - 1),
                assign_labels="cluster_qr",
                random_state=seed,
            ).fit_predict(x)

        return _fit_on_subsample(features, self.params.max_samples, seed, fit)


@dataclass
class AgglomerativeParams:
    linkage: str = "ward"  # ward | average | complete | single
    l2_normalize: bool = True
    max_samples: int = 15000


@METHODS.register("agglomerative")
class Agglomerative(FeatureClustering):
    """agglomerative (Ward) clustering of encoder features (baseline)"""

    name = "agglomerative"
    Params = AgglomerativeParams

    def fit_labels(self, features: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering

        def fit(x: np.ndarray) -> np.ndarray:
            return AgglomerativeClustering(
                n_clusters=self.num_clusters, linkage=self.params.linkage
            ).fit_predict(x)

        return _fit_on_subsample(features, self.params.max_samples, seed, fit)
