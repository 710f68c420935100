"""Loose image files for prediction: files and folders -> an ImageSet at a run's resolution."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from deepclust.data.readers import (
    decode_files,
    extensions_text,
    images_in,
    is_image_file,
    warn_skipped,
)
from deepclust.data.store import ImageSet
from deepclust.errors import DataError


def expand_paths(paths: Sequence[str | Path]) -> list[str]:
    """Image files named directly (any name with an image extension), plus every image under
    named folders (recursively, sorted; hidden names below the folder are left out)."""
    files: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += [str(p / rel) for rel in images_in(p, recursive=True)]
        elif p.is_file():
            if is_image_file(p.name.lstrip(".")):  # a name the user typed is never hidden
                files.append(str(p))
        else:
            raise DataError(f"'{p}' does not exist: give image files or folders of images.")
    if not files:
        raise DataError(
            f"no images found in {', '.join(map(str, paths))} (looked for {extensions_text()})."
        )
    return files


def load_image_paths(
    paths: Sequence[str | Path], image_size: int, bad_images: str = "skip"
) -> ImageSet:
    """Decode, resize (shorter side) and centre-crop to image_size; unlabelled ImageSet with paths."""
    files = expand_paths(paths)
    dec = decode_files(files, image_size, bad_images)
    warn_skipped(dec.skipped, ", ".join(map(str, paths)))
    if len(dec.kept) == 0:
        raise DataError(f"none of the {len(files)} image files could be read.")
    kept = [files[i] for i in dec.kept.tolist()]
    images = torch.from_numpy(dec.images)
    labels = torch.full((len(kept),), -1, dtype=torch.long)
    return ImageSet(images, labels, [], kept, "predict", list(dec.skipped))
