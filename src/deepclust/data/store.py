"""In-memory uint8 image store: datasets are decoded once, not per epoch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    """One split of a dataset, decoded once and held in memory.

    images: uint8 [N, 3, H, W] (grayscale sources are repeated to 3 channels)
    labels: int64 [N], -1 where the image has no label (labels are used only for evaluation)
    class_names: names of the label ids 0..C-1 (empty for unlabelled data)
    paths: source file of each image where there is one (reports, predictions), else None
    skipped: (path, reason) of the files that could not be read and were left out
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    paths: list[str] | None = None
    name: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be [N={self.images.shape[0]}], got {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()
        if self.paths is not None and len(self.paths) != len(self):
            raise ValueError("paths must have one entry per image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.labels.max().item()) + 1

    def subset(self, index: torch.Tensor) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        paths = [self.paths[i] for i in index.tolist()] if self.paths is not None else None
        return ImageSet(
            self.images[index],
            self.labels[index],
            list(self.class_names),
            paths,
            self.name,
            list(self.skipped),
        )

    @staticmethod
    def concat(sets: list[ImageSet], name: str | None = None) -> ImageSet:
        """Join splits (e.g. train+test). They must share image size and class names."""
        if not sets:
            raise ValueError("nothing to concatenate")
        first = sets[0]
        for s in sets[1:]:
            if s.image_size != first.image_size:
                raise ValueError(
                    f"cannot join splits of sizes {first.image_size} and {s.image_size}"
                )
        class_names = next((s.class_names for s in sets if s.class_names), [])
        paths = None
        if all(s.paths is not None for s in sets):
            paths = [p for s in sets for p in s.paths]  # type: ignore[union-attr]
        return ImageSet(
            torch.cat([s.images for s in sets]),
            torch.cat([s.labels for s in sets]),
            list(class_names),
            paths,
            name if name is not None else "+".join(s.name for s in sets),
            [bad for s in sets for bad in s.skipped],
        )
