"""What a method may ask of the engine during hooks: whole-dataset passes and run facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from deepclust.data.store import ImageSet
from deepclust.data.views import EvalTransform, eval_images


@dataclass
class FitContext:
    fit_set: ImageSet
    device: torch.device
    seed: int
    epoch: int
    eval_transform: EvalTransform
    batch_size: int
    autocast_dtype: torch.dtype | None = None
    progress: bool = False
    fit_features: torch.Tensor | None = None  # [N, D] when the encoder is frozen (cached features)

    @torch.no_grad()
    def extract(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        images: ImageSet | None = None,
        desc: str = "",
    ) -> torch.Tensor:
        """Apply fn over the whole fit set (or `images`); returns [N,...] float32 on device.

        fn receives normalised images [b,3,H,W], or cached features [b,D] when the encoder is
        frozen (Method.features passes those through). Runs without gradients; callers put
        modules in eval mode as they need.
        """
        data: ImageSet | torch.Tensor = self.fit_set if images is None else images
        if images is None and self.fit_features is not None:
            data = self.fit_features
        return run_batched(
            fn,
            data,
            self.eval_transform,
            self.device,
            self.batch_size,
            self.autocast_dtype,
            desc if self.progress else None,
        )


@torch.no_grad()
def run_batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    data: ImageSet | torch.Tensor,
    transform: EvalTransform,
    device: torch.device,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    desc: str | None = None,
) -> torch.Tensor:
    """fn over `data` in batches, outputs concatenated as float32.

    data: an ImageSet (batches are preprocessed with `transform`) or features [N, D] (used as they are).
    """
    from tqdm.auto import tqdm

    starts = range(0, len(data), batch_size)
    outputs = []
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        if isinstance(data, torch.Tensor):
            x = data[start : start + batch_size].to(device, non_blocking=True)
        else:
            x = eval_images(
                data.images[start : start + batch_size].to(device, non_blocking=True), transform
            )
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs.append(fn(x).float())
    return torch.cat(outputs)
