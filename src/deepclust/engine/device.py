"""Which device a run uses, in which precision, and how it is described in a summary."""

from __future__ import annotations

import torch

from deepclust.config import RunConfig
from deepclust.engine.machine import cpu_model
from deepclust.errors import DeepclustError


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DeepclustError(
            "--device cuda was asked for, but no CUDA GPU is usable here (torch.cuda.is_available() is False). "
            "Use --device cpu, or --device auto to take a GPU only when there is one."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    if cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
