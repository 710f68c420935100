"""Host -> device copies that do not make the host wait for the GPU."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU tensor on `device` without a host sync: CUDA copies go through pinned memory.

    A plain .to("cuda") from pageable memory waits until the stream has finished all the
    work queued so far; a non-blocking copy from pinned memory is queued behind it instead,
    so the host can go on launching the rest of the step. Identity elsewhere.
    """
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
