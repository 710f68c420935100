"""DeepClusterer follows scikit-learn's estimator conventions, on 8x8 digits in seconds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

from deepclust.practice import DeepClusterer

PIXELS = {"encoder.input_size": None, "train.epochs": 2}

pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest: one torch thread


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.images[:300] / 16.0, d.target[:300]


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    model = DeepClusterer(
        encoder="pixels", k=10, device="cpu", overrides=PIXELS, out=tmp_path_factory.mktemp("dc")
    )
    return model.fit(digits[0])


def test_fit_sets_attributes_ending_in_underscore(fitted, digits):
    images, labels = digits
    assert fitted.labels_.shape == (300,) and fitted.n_clusters_ == 10
    assert (fitted.run_dir_ / "summary.json").is_file() and len(fitted.paths_) == 300
    assert np.array_equal(fitted.predict(images), fitted.labels_)  # same images, same clusters
    assert fitted.transform(images[:7]).shape == (7, 3 * 8 * 8)  # pixel features, grey -> RGB
    probs = fitted.predict_proba(images[:5])
    assert probs.shape == (5, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    acc = fitted.score(images, labels)
    assert 0.3 < acc <= 1  # well above chance (0.1) on digits pixels
    assert 0.1 <= fitted.score(images) <= 1  # label-free: the mean confidence


def test_parameters_are_only_stored_and_clone_gives_an_unfitted_copy(fitted):
    params = fitted.get_params()
    assert params["k"] == 10 and params["encoder"] == "pixels" and params["method"] == "imc-swav"
    copy = clone(fitted)
    assert copy.get_params()["overrides"] == PIXELS and not hasattr(copy, "labels_")
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((2, 8, 8)))
    assert copy.set_params(k=5).k == 5


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (np.zeros((4, 64)), "expected images as an array"),
        (np.full((4, 8, 8), 3.0), "must lie in 0..1"),
        (np.full((4, 8, 8), np.nan), "finite numbers"),
    ],
)
def test_bad_input_says_what_to_pass(images, words):
    with pytest.raises(ValueError, match=words):
        DeepClusterer(k=3).fit(images)


def test_a_bad_k_or_a_missing_folder_is_one_clear_error(tmp_path):
    from deepclust.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="--k must be a whole number"):
        DeepClusterer(k=1, encoder="pixels").fit(np.zeros((20, 8, 8)))
    with pytest.raises(DataError, match="does not exist"):
        DeepClusterer(k=3).fit(tmp_path / "nowhere")
