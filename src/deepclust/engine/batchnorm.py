"""BatchNorm over the global batch on any device.

PyTorch's SyncBatchNorm runs only on CUDA; on CPU (gloo) each process would normalise
with its own half-batch statistics and drift from a one-process run. GlobalBatchNorm
computes the batch mean, then the variance about it, from sums all-reduced with gradient
(so the backward pass is that of one BatchNorm over the global batch), on any backend.
"""

from __future__ import annotations

import torch
from torch import nn

from deepclust.engine.distributed import all_reduce_sum_grad, is_distributed


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in for BatchNorm1d/2d whose training statistics span every process's batch."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        channels = x.shape[1]
        xf = x.float()
        count = torch.tensor([x.numel() / channels], device=x.device, dtype=torch.float32)
        # Two passes, not E[x^2] - E[x]^2: features with a large mean against their spread
        # (pooled ReLU outputs) lose most float32 digits in that difference, which made two
        # processes drift from one BatchNorm by ~1e-3 in gradients (issue #9).
        sums = all_reduce_sum_grad(torch.cat([xf.sum(dims), count]))
        n = sums[-1].detach()
        mean = sums[:channels] / n
        centred = xf - mean.view(shape)
        var = all_reduce_sum_grad(centred.pow(2).sum(dims)) / n
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
        ):
            with torch.no_grad():
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked + 1)
                )
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype), m)
                self.num_batches_tracked += 1  # type: ignore[operator]
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in `module` by a GlobalBatchNorm with the same state."""
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        # Share the Parameter and buffer objects: requires_grad (frozen targets) and device carry over.
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_to_global_batchnorm(child))
    return module
