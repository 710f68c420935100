"""Learning-rate schedules as a pure function of the step: warm-up, then constant, multi-step or cosine."""

from __future__ import annotations

import math

from deepclust.config import ScheduleConfig


def lr_factor(step: int, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base lr at global `step` (0-based).

    Warm-up rises linearly from 1/W to 1 over W = warmup_iters + warmup_epochs * steps_per_epoch
    steps. Multi-step multiplies by gamma at each milestone epoch passed; cosine decays from 1
    to min_lr_ratio over the steps after warm-up.
    """
    warmup = cfg.warmup_iters + cfg.warmup_epochs * steps_per_epoch
    warm = (step + 1) / warmup if step < warmup else 1.0
    if cfg.name == "constant":
        return warm
    if cfg.name == "multistep":
        epoch = step // max(steps_per_epoch, 1)
        passed = sum(1 for m in cfg.milestones if epoch >= m)
        return warm * cfg.gamma**passed
    if cfg.name == "cosine":
        if step < warmup:
            return warm
        span = max(total_steps - warmup, 1)
        progress = min((step - warmup) / span, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.name}")
