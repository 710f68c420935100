"""Training on a frozen encoder: heads learn from cached features instead of images.

Views in feature space: each view of a sample is the feature of one of its copies
(the clean image, or one of `encoder.augmented_copies` augmented crops extracted once), drawn
per sample and view, plus Gaussian noise of `encoder.feature_noise` times the per-dimension
standard deviation of the features. Multi-crop sizes do not exist here: every view is a
full feature vector. Randomness is keyed by (seed, epoch, batch) and drawn for the global
batch, exactly like the image views, so resume and multi-process runs stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepclust.config import RunConfig
from deepclust.data.store import ImageSet
from deepclust.data.views import batch_generator
from deepclust.encoders.base import Encoder
from deepclust.encoders.cache import extract_features


@dataclass
class FrozenFeatures:
    """fit: [C, N, D] feature copies of the fit set (copy 0 = clean); eval: [M, D]; scale: [D] std."""

    fit: torch.Tensor
    eval: torch.Tensor
    scale: torch.Tensor

    @staticmethod
    def build(
        encoder: Encoder,
        fit_set: ImageSet,
        eval_set: ImageSet,
        cfg: RunConfig,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        progress: bool,
    ) -> FrozenFeatures:
        def extract(images: ImageSet, kind: str) -> torch.Tensor:
            return extract_features(
                encoder, images, kind, device, cfg.train.eval_batch_size, autocast_dtype, progress
            )

        def clean(images: ImageSet) -> torch.Tensor:
            feats = extract(images, "clean")
            if cfg.encoder.tta_flip:  # test-time view: average with the mirrored image
                feats = (feats + extract(images, "flip")) / 2
            return feats

        fit_clean = clean(fit_set)
        copies = [fit_clean] + [
            extract(fit_set, f"aug{j}-s{cfg.train.seed}")
            for j in range(cfg.encoder.augmented_copies)
        ]
        same = eval_set.images.data_ptr() == fit_set.images.data_ptr() and len(eval_set) <= len(
            fit_set
        )
        eval_feats = fit_clean[: len(eval_set)] if same else clean(eval_set)
        return FrozenFeatures(torch.stack(copies), eval_feats, fit_clean.std(dim=0).clamp_min(1e-6))


class EpochFeatureViews(torch.utils.data.Dataset):
    """Batch i of an epoch -> (views [b, D] x num_views, fit-set indices), like EpochViews for images."""

    def __init__(
        self,
        features: FrozenFeatures,
        batches: list[torch.Tensor],
        num_views: int,
        noise: float,
        seed: int,
        epoch: int,
        offset: int,
        global_batch: int,
    ) -> None:
        self.features, self.batches, self.num_views, self.noise = (
            features,
            batches,
            num_views,
            noise,
        )
        self.seed, self.epoch, self.offset, self.global_batch = seed, epoch, offset, global_batch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        idx = self.batches[i]
        copies, _, dim = self.features.fit.shape
        gen = batch_generator(self.seed, self.epoch, i)
        rows = slice(self.offset, self.offset + len(idx))
        which = torch.randint(copies, (self.num_views, self.global_batch), generator=gen)[:, rows]
        noise = torch.randn(self.num_views, self.global_batch, dim, generator=gen)[:, rows]
        views = []
        for v in range(self.num_views):
            feats = self.features.fit[
                which[v].to(self.features.fit.device), idx.to(self.features.fit.device)
            ]
            if self.noise:
                feats = feats + self.noise * self.features.scale * noise[v].to(feats.device)
            views.append(feats)
        return views, idx
