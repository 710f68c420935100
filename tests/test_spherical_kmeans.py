"""Spherical k-means in PyTorch: scikit-learn's partition, determinism, empty clusters, stopping."""

import sys

import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from deepclust.cluster import assign, kmeans_plus_plus, spherical_kmeans, stream_seed

skm = sys.modules["deepclust.cluster.spherical_kmeans"]


def blobs_on_sphere(k=6, per=150, dim=24, noise=0.03, seed=0):
    """k well-separated directions with small noise -> (x [k*per, dim], truth [k*per])."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=g), dim=1)
    truth = torch.arange(k).repeat_interleave(per)
    x = centres[truth] + noise * torch.randn(k * per, dim, generator=g)
    return x, truth


def test_same_partition_as_sklearn_on_normalised_data():
    x, truth = blobs_on_sphere()
    xn = F.normalize(x, dim=1).numpy()
    sk = KMeans(n_clusters=6, n_init=10, random_state=0).fit(xn)
    for seed in range(3):
        ours = spherical_kmeans(x, 6, seed=seed)
        assert ours.converged
        assert adjusted_rand_score(sk.labels_, ours.labels.numpy()) == 1.0
        assert adjusted_rand_score(truth.numpy(), ours.labels.numpy()) == 1.0
        assert torch.allclose(ours.centroids.norm(dim=1), torch.ones(6), atol=1e-5)


def test_result_is_a_fixed_point_and_inertia_is_cosine_distortion():
    x, _ = blobs_on_sphere(k=4, noise=0.3, seed=1)
    res = spherical_kmeans(x, 4, seed=3, tol=0.0)
    xn = F.normalize(x, dim=1)
    labels, sims = assign(xn, res.centroids)
    assert torch.equal(labels, res.labels)
    means = torch.stack([xn[labels == c].sum(0) for c in range(4)])
    assert torch.allclose(res.centroids, F.normalize(means, dim=1), atol=1e-5)
    assert res.inertia == pytest.approx(float((1 - sims).sum()), rel=1e-5)


def test_kmeans_plus_plus_is_deterministic_for_a_seed():
    x, _ = blobs_on_sphere(noise=0.2)
    xn = F.normalize(x, dim=1)

    def init(seed):
        return kmeans_plus_plus(xn, 6, torch.Generator().manual_seed(seed))

    assert torch.equal(init(5), init(5))
    assert not torch.equal(init(5), init(6))
    assert len(set(init(5).tolist())) == 6
    a, b = spherical_kmeans(x, 6, seed=11), spherical_kmeans(x, 6, seed=11)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    assert stream_seed(0, "estep", 3) == stream_seed(0, "estep", 3) != stream_seed(0, "estep", 4)


def test_empty_cluster_is_reseeded_with_the_farthest_point():
    x, truth = blobs_on_sphere(k=3, noise=0.02)
    xn = F.normalize(x, dim=1)
    far = -xn.mean(0, keepdim=True)  # a centroid that no point is closest to at first
    init = torch.cat([xn[truth == 0][:1], xn[truth == 1][:1], far])
    res = spherical_kmeans(x, 3, init=init)
    counts = torch.bincount(res.labels, minlength=3)
    assert (counts > 0).all()
    assert torch.isfinite(res.centroids).all()
    assert adjusted_rand_score(truth.numpy(), res.labels.numpy()) == 1.0


def test_iterations_and_tolerance_are_respected():
    x, _ = blobs_on_sphere(k=5, noise=0.5, seed=2)
    one = spherical_kmeans(x, 5, seed=0, max_iter=1, tol=0.0)
    assert one.n_iter == 1 and not one.converged
    loose = spherical_kmeans(x, 5, seed=0, tol=1e9)
    assert loose.n_iter == 1 and loose.converged  # the first shift is under the tolerance
    strict = spherical_kmeans(x, 5, seed=0, tol=0.0)
    assert strict.converged and 1 < strict.n_iter <= 300
    assert strict.inertia <= one.inertia + 1e-6
    capped = spherical_kmeans(x, 5, seed=0, tol=0.0, max_iter=strict.n_iter - 1)
    assert capped.n_iter == strict.n_iter - 1


def test_chunked_and_matmul_paths_agree(monkeypatch):
    x, _ = blobs_on_sphere(noise=0.3)
    xn = F.normalize(x, dim=1)
    centroids = xn[:6]
    labels, sims = assign(xn, centroids)
    monkeypatch.setattr(skm, "_CHUNK_ELEMENTS", 64)
    labels2, sims2 = assign(xn, centroids)
    assert torch.equal(labels, labels2) and torch.allclose(sims, sims2)
    by_index = skm._cluster_sums(xn, labels, 6, matmul=False)
    by_matmul = skm._cluster_sums(xn, labels, 6, matmul=True)
    assert torch.allclose(by_index, by_matmul, atol=1e-5)


def test_invalid_input_is_rejected():
    x, _ = blobs_on_sphere(k=2, per=3)
    with pytest.raises(ValueError, match="between 1 and"):
        spherical_kmeans(x, 7)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        spherical_kmeans(bad, 2)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        spherical_kmeans(x[0], 2)
