"""Clustering algorithms that run on the training device (PyTorch, no CPU round trip)."""

from deepclust.cluster.spherical_kmeans import (
    KMeansResult,
    assign,
    kmeans_plus_plus,
    spherical_kmeans,
    stream_seed,
)

__all__ = ["KMeansResult", "assign", "kmeans_plus_plus", "spherical_kmeans", "stream_seed"]
