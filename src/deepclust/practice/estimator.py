"""DeepClusterer: deepclust as a scikit-learn estimator, for notebooks.

    from deepclust.practice import DeepClusterer
    model = DeepClusterer(k=10).fit("photos/")          # or an array of images
    model.labels_, model.predict(more_images), model.transform(more_images)

It runs the default frozen recipe of `deepclust cluster` (configs/<method>/frozen.yaml):
parameters are only stored by __init__ (scikit-learn's rule, so get_params, set_params and
clone work); fit writes an ordinary run folder (`run_dir_`) that every CLI command reads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from deepclust.api.runs import LoadedRun, load_run
from deepclust.data.images import load_image_paths
from deepclust.data.store import ImageSet
from deepclust.errors import DataError


def check_image_array(x: Any) -> np.ndarray:
    """Images as uint8 [N, H, W, C] (C = 1 or 3), from [N, H, W] or [N, H, W, C], uint8
    (0..255) or float (0..1); a ValueError that says what to pass otherwise."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise ValueError(
            f"expected images as an array [N, H, W] or [N, H, W, C] with C = 1 or 3, or a folder; "
            f"got shape {x.shape}. Reshape flat rows to [N, H, W] first."
        )
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise ValueError("the image array must hold finite numbers (uint8, or floats in 0..1).")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(
            f"float images must lie in 0..1 (these span {x.min():g}..{x.max():g}): divide by "
            "their maximum, or pass uint8 0..255."
        )
    return np.round(x * 255).astype(np.uint8)


def write_images(images: np.ndarray, folder: Path) -> list[Path]:
    """uint8 [N, H, W, C] -> folder/000000.png ... (in order); returns the paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(images))))
    paths = [folder / f"{i:0{width}d}.png" for i in range(len(images))]
    for image, path in zip(images, paths, strict=True):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
    return paths


def is_folder_input(x: Any) -> bool:
    """A folder or one image file."""
    return isinstance(x, str | Path)


def is_path_list(x: Any) -> bool:
    """A non-empty list or tuple of image file paths."""
    return isinstance(x, list | tuple) and len(x) > 0 and all(map(is_folder_input, x))


def link_images(paths: list[str | Path], folder: Path) -> list[str]:
    """folder/000000<ext> ... as links to `paths` (in order), so that a list of files can be
    fitted as a folder; returns the absolute originals, row i = link i."""
    folder.mkdir(parents=True, exist_ok=True)
    originals = [os.path.abspath(p) for p in paths]
    width = max(6, len(str(len(paths))))
    for i, source in enumerate(originals):
        if not Path(source).is_file():
            raise DataError(f"'{source}' does not exist: give image files, a folder or an array.")
        os.symlink(source, folder / f"{i:0{width}d}{Path(source).suffix.lower()}")
    return originals


class DeepClusterer(ClusterMixin, TransformerMixin, BaseEstimator):
    """Cluster images (a folder, a list of files, or an array [N, H, W(, C)]) with a deep method's heads on
    a frozen encoder's features.

    method: a method with a frozen config (imc-swav, the default recipe); encoder: an
    encoder name, e.g. "dinov2-s" or "clip-b32" (`deepclust list encoders`; None: the
    config's, EfficientNet-Lite2); k: clusters, or "auto" (estimated
    without labels); image_size: the stored side (None: the photos' typical size);
    overrides: more config keys {dotted key: value}; out: the working folder (None: a new
    temporary one) holding run/ (the run folder) and, for an array, images/.

    Fitted attributes: labels_ [N], run_dir_, n_clusters_, paths_ (the files, in the
    order of labels_), summary_ (the run's summary.json).
    """

    def __init__(
        self,
        method: str = "imc-swav",
        encoder: str | None = None,
        k: int | str = "auto",
        image_size: int | None = None,
        seed: int = 0,
        device: str = "auto",
        overrides: dict[str, Any] | None = None,
        out: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        self.method = method
        self.encoder = encoder
        self.k = k
        self.image_size = image_size
        self.seed = seed
        self.device = device
        self.overrides = overrides
        self.out = out
        self.progress = progress

    def fit(self, X: Any, y: None = None) -> DeepClusterer:
        """Train on X (a folder of images, a list of image files, or an image array); y is
        ignored."""
        from deepclust.practice.folder import cluster_folder, read_predictions

        work = Path(self.out) if self.out is not None else Path(tempfile.mkdtemp(prefix="dc-"))
        folder, originals = (Path(X), None) if is_folder_input(X) else (work / "images", None)
        if is_path_list(X):
            originals = link_images(list(X), folder)
        elif not is_folder_input(X):
            write_images(check_image_array(X), folder)
        overrides = [("train.progress", self.progress), *(self.overrides or {}).items()]
        if self.encoder is not None:
            overrides.append(("encoder.name", self.encoder))
        result = cluster_folder(
            folder,
            self.k,
            work / "run",
            method=self.method,
            image_size=self.image_size,
            seed=self.seed,
            device=self.device,
            report=False,
            overrides=overrides,
        )
        paths, clusters = read_predictions(result.run_dir / "predictions.csv")
        order = np.argsort(paths, kind="stable") if not is_folder_input(X) else None
        self.labels_ = np.asarray(clusters)[order] if order is not None else np.asarray(clusters)
        self.paths_ = [paths[i] for i in order] if order is not None else paths
        if originals is not None:  # the links' numbers are the list's order
            self.paths_ = [originals[int(Path(p).stem)] for p in self.paths_]
        self.run_dir_ = result.run_dir
        self.summary_ = result.summary
        self.n_clusters_ = int(result.summary["num_clusters"])
        self.run_ = load_run(result.run_dir, self.device)
        return self

    def _images(self, X: Any, run: LoadedRun, tmp: str) -> ImageSet:
        """X at the run's image size, decoded as training decoded it (same resize and crop)."""
        if is_folder_input(X) or is_path_list(X):
            paths = [X] if is_folder_input(X) else list(X)
            for p in paths:
                if not Path(p).exists():
                    raise DataError(f"'{p}' does not exist: give a folder or files of images.")
        else:
            paths = write_images(check_image_array(X), Path(tmp))
        return load_image_paths(paths, image_size=run.meta["image_size"], bad_images="skip")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Cluster probabilities [N, K] of the images X."""
        check_is_fitted(self, "run_")
        with tempfile.TemporaryDirectory() as tmp:
            images = self._images(X, self.run_, tmp)
            return self.run_.predict_proba(images, progress=self.progress).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The cluster [N] of every image of X (the most probable)."""
        return self.predict_proba(X).argmax(1)

    def transform(self, X: Any) -> np.ndarray:
        """The encoder's features [N, D] of the images X (float32)."""
        check_is_fitted(self, "run_")
        with tempfile.TemporaryDirectory() as tmp:
            images = self._images(X, self.run_, tmp)
            return self.run_.features(images, progress=self.progress).numpy()

    def score(self, X: Any, y: Any = None) -> float:
        """With labels y: the clustering accuracy (Hungarian matching) of predict(X); without:
        the mean confidence of the assigned clusters (label-free; higher is better)."""
        probs = self.predict_proba(X)
        if y is None:
            return float(probs.max(1).mean())
        from deepclust.evaluation.metrics import score

        y = np.asarray(y)
        if y.shape != (len(probs),):
            raise ValueError(f"y must hold one label per image ({len(probs)}); got {y.shape}.")
        return float(score(y, probs.argmax(1), num_clusters=probs.shape[1]).acc)
