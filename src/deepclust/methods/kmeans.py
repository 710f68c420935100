"""k-means on encoder features: the standard baseline, and the end-to-end proof of the engine.

No gradient training: after the (zero) epochs, features of the fit set are extracted once
and clustered with scikit-learn's KMeans (k-means++ init, `n_init` restarts); past
kmeans_at_scale.EXACT_MAX_WORK rows x clusters, with one faiss k-means run instead (see
deepclust.cluster.kmeans_at_scale). See baselines.FeatureClustering for prediction and confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans as SkKMeans

from deepclust.cluster.kmeans_at_scale import kmeans_rows, needs_scale
from deepclust.methods.base import METHODS
from deepclust.methods.baselines import FeatureClustering


@dataclass
class KMeansParams:
    n_init: int = 10
    max_iter: int = 300
    l2_normalize: bool = False  # cluster directions (cosine) instead of raw features


@METHODS.register("kmeans")
class KMeans(FeatureClustering):
    """k-means on encoder features (the standard baseline; no gradient training)"""

    name = "kmeans"
    Params = KMeansParams

    def fit_labels(self, features: np.ndarray, seed: int) -> np.ndarray:
        if needs_scale(len(features), self.num_clusters):
            return kmeans_rows(
                features, self.num_clusters, seed=seed, spherical=False
            ).labels.numpy()
        km = SkKMeans(
            n_clusters=self.num_clusters,
            n_init=self.params.n_init,
            max_iter=self.params.max_iter,
            random_state=seed,
        )
        return km.fit_predict(features)
