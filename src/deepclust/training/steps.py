"""One training step and what feeds it: an epoch's views per batch (keyed randomness),
paired with the auxiliary stream, and the running loss means read without a device sync."""

from __future__ import annotations

import torch

from deepclust.data.views import ViewGenerator, batch_generator
from deepclust.engine.transfer import to_device
from deepclust.methods import Method, StepInfo


def optimisation_step(
    method: Method,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    views: list[torch.Tensor],
    info: StepInfo,
    amp: torch.dtype | None = None,
    grad_clip: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step: forward through `model` (the method, or its DDP wrapper), summed
    losses, backward, the method's hooks around the optimiser step -> (loss, named losses),
    still on the device."""
    device_type = views[0].device.type
    with torch.autocast(device_type, dtype=amp, enabled=amp is not None):
        losses = model(views, info)
    loss = torch.stack([v.float() for v in losses.values()]).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    method.before_optimizer_step(info)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    optimizer.step()
    method.after_optimizer_step(info)
    return loss, losses


class EpochViews(torch.utils.data.Dataset):
    """Batch i of an epoch -> (views, fit-set indices), randomness keyed by (seed, epoch, i).

    This process's samples are `offset`.. of a global batch of `global_batch`: the views of
    a sample are the same however the global batch is split over processes.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batches: list[torch.Tensor],
        views: ViewGenerator,
        seed: int,
        epoch: int,
        offset: int,
        global_batch: int,
        stream: str = "views",
    ) -> None:
        self.images, self.batches, self.views = images, batches, views
        self.seed, self.epoch, self.offset, self.global_batch = seed, epoch, offset, global_batch
        self.stream = stream

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        idx = to_device(self.batches[i], self.images.device)
        gen = batch_generator(self.seed, self.epoch, i, stream=self.stream)
        return self.views(self.images[idx], gen, self.offset, self.global_batch), idx


class StepBatches(torch.utils.data.Dataset):
    """Step i -> (views, fit-set indices, auxiliary views or None): the epoch's batches, each
    paired with the same step of the method's auxiliary stream when it has one."""

    def __init__(
        self,
        main: torch.utils.data.Dataset,
        auxiliary: torch.utils.data.Dataset | None = None,
    ) -> None:
        self.main, self.auxiliary = main, auxiliary

    def __len__(self) -> int:
        return len(self.main)  # type: ignore[arg-type]

    def __getitem__(
        self, i: int
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor] | None]:
        views, idx = self.main[i]
        return views, idx, self.auxiliary[i][0] if self.auxiliary is not None else None


class RunningMeans:
    """Per-step losses summed on the device; the host reads them without waiting for it.

    read() starts a copy of the current means to the host and returns the last copy that
    has arrived (on the CPU: the current means), so a progress bar never stalls the GPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self._pending: tuple[list[str], torch.Tensor, torch.cuda.Event] | None = None
        self._shown: dict[str, float] | None = None

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1

    def read(self) -> dict[str, float] | None:
        if not self.sums:
            return self._shown
        names = list(self.sums)
        means = torch.stack([self.sums[n] for n in names]) / self.steps
        if self.device.type != "cuda":
            return dict(zip(names, means.tolist(), strict=True))
        if self._pending is not None and self._pending[2].query():
            done_names, host, _ = self._pending
            self._shown = dict(zip(done_names, host.tolist(), strict=True))
            self._pending = None
        if self._pending is None:
            host = torch.empty(means.shape, dtype=means.dtype, pin_memory=True)
            host.copy_(means, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (names, host, event)
        return self._shown
