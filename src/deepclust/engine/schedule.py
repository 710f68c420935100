"""Learning-rate schedules as a pure function of the step: warm-up, then constant, multi-step or cosine."""

from __future__ import annotations

import math

from deepclust.config import ScheduleConfig

MIN_STEPS_PER_EPOCH = 8
MIN_PLANNED_BATCH = 32


def warmup_steps(cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> int:
    """W = warmup_iters + warmup_epochs * steps_per_epoch + round(warmup_fraction * total_steps)."""
    return (
        cfg.warmup_iters
        + cfg.warmup_epochs * steps_per_epoch
        + round(cfg.warmup_fraction * total_steps)
    )


def plan_steps(num_samples: int, batch_size: int, epochs: int, min_steps: int) -> tuple[int, int]:
    """(batch size, epochs) that give at least `min_steps` optimiser steps on `num_samples`.

    A set too small for MIN_STEPS_PER_EPOCH full batches gets smaller ones (a multiple of 8,
    so that it splits over 1, 2, 4 or 8 processes; never under MIN_PLANNED_BATCH images, nor
    over the set), then epochs rise until the steps are there.
    min_steps <= 0 or epochs == 0 (no gradient training) leaves both as they are.
    """
    if min_steps <= 0 or epochs <= 0:
        return batch_size, epochs
    if num_samples // batch_size < MIN_STEPS_PER_EPOCH:
        smaller = num_samples // MIN_STEPS_PER_EPOCH // 8 * 8
        batch_size = min(num_samples, max(MIN_PLANNED_BATCH, smaller))
    per_epoch = max(num_samples // batch_size, 1)
    return batch_size, max(epochs, math.ceil(min_steps / per_epoch))


def lr_factor(step: int, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base lr at global `step` (0-based).

    Warm-up rises linearly from 1/W to 1 over the W steps of warmup_steps. Multi-step
    multiplies by gamma at each milestone epoch passed; cosine decays from 1 to min_lr_ratio
    over the steps after warm-up.
    """
    warmup = warmup_steps(cfg, steps_per_epoch, total_steps)
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
        if cfg.cosine_progress == "total":
            progress = min((step + 1 - warmup) / max(total_steps, 1), 1.0)
        else:
            progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.name}")
