"""estimate_k: every estimator finds the K of well-separated blobs; bad input is a ConfigError."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from deepclust.cluster.k_estimation import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    KEstimate,
    default_k_max,
    estimate_k,
    parse_k_range,
    prepare,
)
from deepclust.errors import ConfigError

K_MAX = 15


def blobs(k: int, seed: int = 0) -> np.ndarray:
    """30 points per blob in 8 dimensions, centres far apart relative to the spread, plus a
    shared offset (as pooled post-ReLU features have) that preparation must remove."""
    x, _ = make_blobs(
        n_samples=30 * k,
        centers=k,
        n_features=8,
        cluster_std=1.0,
        center_box=(-20, 20),
        random_state=100 + k + seed,
    )
    return x + 50.0


@pytest.mark.parametrize("k", [3, 7, 12])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_finds_the_number_of_blobs(name: str, k: int) -> None:
    est = estimate_k(blobs(k), k_min=2, k_max=K_MAX, estimator=name, seed=0)
    assert isinstance(est, KEstimate)
    assert est.k == k, f"{name} chose {est.k} for {k} blobs: {est.curve}"
    assert est.estimator == name
    assert list(est.curve) == list(range(2, K_MAX + 1))
    values = np.array(list(est.curve.values()))
    best = values.max() if est.higher_is_better else values.min()
    assert est.curve[est.k] == best
    assert est.seconds > 0 and est.criterion


def test_same_seed_same_result_and_json_ready() -> None:
    x = blobs(5, seed=1)
    a = estimate_k(x, 2, 8, "modularity", seed=3)
    b = estimate_k(x, 2, 8, "modularity", seed=3)
    assert a.k == b.k == 5
    assert a.curve == b.curve
    d = a.as_dict()
    assert d["k"] == 5 and set(d["curve"]) == {str(k) for k in range(2, 9)}


def test_prepare_subsamples_centres_and_reduces() -> None:
    """Above max_samples rows the estimators see a seeded subsample, centred, unit rows, PCA."""
    x = blobs(12)  # 360 rows, 8 dims, offset by +50
    z = prepare(x, seed=1, max_samples=100, dims=4)
    assert z.shape == (100, 4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_array_equal(z, prepare(x, seed=1, max_samples=100, dims=4))
    assert not np.allclose(np.abs(z), np.abs(prepare(x, seed=2, max_samples=100, dims=4)))
    # centred before the rows are normalised: a shared offset changes nothing
    np.testing.assert_allclose(
        np.abs(prepare(x + 1e3, seed=0)), np.abs(prepare(x, seed=0)), atol=1e-6
    )


def test_default_k_max() -> None:
    """k_max defaults to min(50, N // 10)."""
    x = np.repeat(blobs(4), 3, axis=0)[:250]
    assert default_k_max(250) == 25 and default_k_max(100_000) == 50
    est = estimate_k(x, 2, None, DEFAULT_ESTIMATOR, seed=0)
    assert max(est.curve) == 25 and est.details["rows"] == 250


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"k_min": 1}, "k_min >= 2"),
        ({"k_min": 6, "k_max": 4}, "k_min (6) is larger than k_max (4)"),
        ({"k_max": 500}, "larger than the number of images (90)"),
        ({"k_max": 40}, "lower k_max to 18"),
        ({"estimator": "eigen_gap"}, "Did you mean 'eigengap'"),
    ],
)
def test_bad_input_is_a_config_error(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        estimate_k(blobs(3), **kwargs)
    assert "\n" not in str(info.value)


def test_too_few_images() -> None:
    with pytest.raises(ConfigError, match=r"only 6 images.*add images"):
        estimate_k(blobs(3)[:6])
    with pytest.raises(ConfigError, match="2-d array"):
        estimate_k(np.zeros(30))


def test_parse_k_range() -> None:
    assert parse_k_range("2:30") == (2, 30)
    assert parse_k_range(" 3:3 ") == (3, 3)
    for text, words in [
        ("2-30", "not MIN:MAX"),
        ("a:b", "not MIN:MAX"),
        ("1:10", "k_min >= 2"),
        ("9:4", "k_min \\(9\\) is larger than k_max \\(4\\)"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_k_range(text)
