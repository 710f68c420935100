"""Shared fixtures: an isolated cache, one torch thread, and a tiny image set whose classes
are easy to separate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-image and feature caches go to a temporary folder, never ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DEEPCLUST_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Tiny tensors: one intra-op thread avoids thread hand-offs, which make small ops many times
# slower on a busy shared 2-core machine (and matches each process of the 2-process tests).
@pytest.fixture
def one_thread() -> Iterator[None]:
    with _torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """one_thread for a whole module, so that its module-scoped fixtures run on it too."""
    with _torch_threads(1):
        yield


def make_separable_images(root: Path, per_class: int = 40, size: int = 16, seed: int = 0) -> Path:
    """An image folder of 4 classes that differ in colour and in pattern, with noise and shifts.

    Colour alone would not survive grayscale augmentation, pattern alone not a small crop:
    together the classes stay separable under every view a method asks for.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    patterns = {
        "red_hstripes": ((255, 40, 40), lambda dx, dy: ((yy + dy) // 2) % 2),
        "green_vstripes": ((40, 220, 40), lambda dx, dy: ((xx + dx) // 2) % 2),
        "blue_checker": ((40, 40, 255), lambda dx, dy: (((xx + dx) // 4) + ((yy + dy) // 4)) % 2),
        "yellow_disk": (
            (240, 220, 30),
            lambda dx, dy: (
                (xx - size / 2 - dx / 2) ** 2 + (yy - size / 2 - dy / 2) ** 2 < (size / 3) ** 2
            ),
        ),
    }
    for name, (colour, pattern) in patterns.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mask = pattern(*rng.integers(0, 4, 2)).astype(np.float32)[..., None]
            img = (
                mask * np.array(colour, np.float32)
                + (1 - mask) * 30
                + rng.normal(0, 12, (size, size, 3))
            )
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def separable_images(tmp_path_factory) -> Path:
    """Path of a 4-class image folder (160 images of 16 px); use with --protocol all."""
    return make_separable_images(tmp_path_factory.mktemp("separable"))


def write_stl10(folder: Path, images: dict[str, np.ndarray], labels: dict[str, list[int]]) -> Path:
    """STL-10's binary files in `folder`: uint8 images [n, 3, 96, 96] per split and labels
    1..10 per labelled split (the format stores each channel column-major)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, x in images.items():
        (folder / f"{split}_X.bin").write_bytes(
            np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()
        )
    for split, y in labels.items():
        (folder / f"{split}_y.bin").write_bytes(bytes(y))
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    return folder
