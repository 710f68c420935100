"""Training on a frozen encoder: heads learn from cached features instead of images.

Views in feature space. Each view of sample i is the feature of one of its *copies*: the
clean image or one of `encoder.augmented_copies` augmented crops, extracted once; or, with
`encoder.neighbours = k`, the clean feature of one of i's k nearest neighbours (itself
included) in the cached feature space, the view that makes frozen-feature clustering work
in TEMI and SCAN (cosine after subtracting the mean feature, `encoder.centre_neighbours`);
plus Gaussian noise of `encoder.feature_noise` times each dimension's
standard deviation. Multi-crop sizes do not exist here: every view is a full feature
vector. Randomness is keyed by (seed, epoch, batch) and drawn for the global batch, like
the image views, so resume and multi-process runs stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from deepclust.cluster.neighbours import announced_graph
from deepclust.config import EncoderConfig, RunConfig
from deepclust.data.store import ImageSet
from deepclust.data.views import batch_generator
from deepclust.encoders.base import Encoder
from deepclust.encoders.cache import extract_features


def shared_extract(
    encoder: Encoder,
    images: ImageSet,
    kind: str,
    cfg: RunConfig,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    progress: bool,
) -> torch.Tensor:
    """extract_features through the cache: under torch.distributed each process extracts its
    share of the chunks and every process reads the joined file back (memory-mapped).
    A joined encoder (encoders/joined.py) extracts and caches part by part."""
    parts = getattr(encoder, "parts", None)
    if parts is not None:
        feats = [
            shared_extract(p, images, kind, cfg, device, autocast_dtype, progress) for p in parts
        ]
        return torch.cat(feats, dim=1)
    return extract_features(
        encoder, images, kind, device, cfg.train.eval_batch_size, autocast_dtype, progress
    )


def clean_features(
    encoder: Encoder,
    images: ImageSet,
    cfg: RunConfig,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    progress: bool,
) -> torch.Tensor:
    """The features [N, D] a frozen run trains and predicts on: the clean image's, averaged
    with the mirrored image's when `encoder.tta_flip`; from the cache when present."""
    feats = shared_extract(encoder, images, "clean", cfg, device, autocast_dtype, progress)
    if cfg.encoder.tta_flip:
        flip = shared_extract(encoder, images, "flip", cfg, device, autocast_dtype, progress)
        feats = (feats + flip) / 2
    return feats


@dataclass
class FrozenFeatures:
    """fit: [C, N, D] copies of the fit set (copy 0 = clean); eval: [M, D]; scale: [D] per-dim std;
    neighbours: [N, k] nearest-neighbour indices, or None; graph: how they were found (exact,
    or the approximation's measured recall: NeighbourGraph.record), for the run's summary."""

    fit: torch.Tensor
    eval: torch.Tensor
    scale: torch.Tensor
    neighbours: torch.Tensor | None = None
    graph: dict[str, object] | None = None

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
            return shared_extract(encoder, images, kind, cfg, device, autocast_dtype, progress)

        def clean(images: ImageSet) -> torch.Tensor:
            return clean_features(encoder, images, cfg, device, autocast_dtype, progress)

        fit_clean = clean(fit_set)
        copies = [fit_clean] + [
            extract(fit_set, f"aug{j}-s{cfg.train.seed}")
            for j in range(cfg.encoder.augmented_copies)
        ]
        same = eval_set.images.data_ptr() == fit_set.images.data_ptr() and len(eval_set) <= len(
            fit_set
        )
        eval_feats = fit_clean[: len(eval_set)] if same else clean(eval_set)
        # one copy: a view of the (memory-mapped) cache, not a copy of it
        fit = copies[0].unsqueeze(0) if len(copies) == 1 else torch.stack(copies)
        return FrozenFeatures.of_copies(fit, eval_feats, cfg.encoder)

    @staticmethod
    def of_copies(fit: torch.Tensor, eval: torch.Tensor, encoder: EncoderConfig) -> FrozenFeatures:
        """fit copies [C, N, D] (copy 0 clean) -> with the per-dim scale and the neighbours that
        `encoder` (its config) asks for, both from the clean copy."""
        clean = fit[0]
        scale = clean.std(dim=0).clamp_min(1e-6)
        if encoder.neighbours <= 0:
            return FrozenFeatures(fit, eval, scale)
        graph = announced_graph(clean, encoder.neighbours, centre=encoder.centre_neighbours)
        return FrozenFeatures(fit, eval, scale, graph.indices, graph.record())

    def to(self, device: torch.device) -> FrozenFeatures:
        knn = self.neighbours.to(device) if self.neighbours is not None else None
        return replace(self, fit=self.fit.to(device), scale=self.scale.to(device), neighbours=knn)


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
        stream: str = "views",
        anchors: int = 0,
    ) -> None:
        """anchors: the first `anchors` views are the sample's own feature, not a neighbour's."""
        self.stream, self.anchors = stream, anchors
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
        f = self.features
        idx = self.batches[i].to(f.fit.device)
        copies, _, dim = f.fit.shape
        gen = batch_generator(self.seed, self.epoch, i, stream=self.stream)
        rows = slice(self.offset, self.offset + len(idx))
        which = torch.randint(copies, (self.num_views, self.global_batch), generator=gen)[:, rows]
        k = f.neighbours.shape[1] if f.neighbours is not None else 1
        pick = torch.randint(k, (self.num_views, self.global_batch), generator=gen)[:, rows]
        noise = torch.randn(self.num_views, self.global_batch, dim, generator=gen)[:, rows]
        views = []
        for v in range(self.num_views):
            own = f.neighbours is None or v < self.anchors
            source = idx if own else f.neighbours[idx, pick[v].to(idx.device)]
            feats = f.fit[which[v].to(idx.device), source]
            if self.noise:
                feats = feats + self.noise * f.scale * noise[v].to(feats.device)
            views.append(feats)
        return views, idx
