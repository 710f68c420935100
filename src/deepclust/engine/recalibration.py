"""Label-free BatchNorm recalibration at the evaluation resolution.

A network trained on small crops (IMC-SwAV: 28 and 18 px) keeps BatchNorm running
statistics of those crops, but is scored on whole 32 px images. The authors re-estimate
the statistics on test batches before testing (which uses the test images); here they are
re-estimated on clean training images at the evaluation resolution instead: every
BatchNorm's statistics are reset, then set to the average over a fixed sample of training
batches passed through the prediction path in train mode. No label is read.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deepclust.cluster import stream_seed
from deepclust.encoders.base import Encoder
from deepclust.engine.context import FitContext, run_batched


def trainable_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers with running statistics, outside frozen (pretrained) encoders."""
    frozen = {
        id(m)
        for enc in model.modules()
        if isinstance(enc, Encoder) and not enc.trainable
        for m in enc.modules()
    }
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and id(m) not in frozen
    ]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    ctx: FitContext,
    num_images: int,
) -> int:
    """Re-estimate the running statistics of `model`'s BatchNorms from `forward` over up to
    num_images fit-set images (a sample fixed by the run's seed), evaluation preprocessing.

    Only the BatchNorms run in train mode (cumulative average over the batches, momentum
    None); everything else in eval mode. Returns the number of images used.
    """
    layers = trainable_batchnorms(model)
    if not layers or num_images <= 0:
        return 0
    n = len(ctx.fit_set)
    gen = torch.Generator().manual_seed(stream_seed(ctx.seed, "bn-recalibration"))
    index = torch.randperm(n, generator=gen)[: min(num_images, n)].sort().values
    data = ctx.fit_features[index] if ctx.fit_features is not None else ctx.fit_set.subset(index)
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        run_batched(
            forward, data, ctx.eval_transform, ctx.device, ctx.batch_size, ctx.autocast_dtype
        )
    finally:
        for layer, momentum in momenta:
            layer.momentum = momentum
        for module, mode in modes:
            module.training = mode
    return len(index)
