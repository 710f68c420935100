"""Run-health checks: what a finished run's schedule and predictions say about it, without labels.

A run can end looking normal and still be useless: it stopped inside its warm-up, its
confidences never left uniform, or it put most images in one cluster. Each check here turns
one such sign into a sentence that names what was seen and what to do; the trainer stores
them in summary.json (`warnings`), the CLI prints them and the report shows them first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FEW_STEPS = 100  # gradient runs shorter than this rarely move heads off their start
TINY_SHARE = 0.1  # a cluster under this fraction of an even share N/K is "tiny"
DOMINANT_SHARE = 0.5  # one cluster holding more than this fraction of the images
NEAR_UNIFORM = 1.5  # mean confidence under NEAR_UNIFORM / K counts as near uniform


@dataclass
class Schedule:
    """What the run's optimiser did: steps taken, lr warm-up length, and any method phases
    (name -> steps) during which a part of the model does not learn yet."""

    steps: int
    warmup_steps: int = 0
    phases: dict[str, int] = field(default_factory=dict)


def schedule_warnings(s: Schedule) -> list[str]:
    """Warnings about a gradient run's length (none for runs without gradient training)."""
    if s.steps <= 0:
        return []
    out = []
    if s.warmup_steps >= s.steps:
        out.append(
            f"training ended inside its learning-rate warm-up ({s.steps} optimiser steps, warm-up "
            f"{s.warmup_steps}): the lr never reached its base value. Raise train.epochs or "
            "train.min_steps, or shorten train.schedule.warmup_iters."
        )
    for name, steps in s.phases.items():
        if steps >= s.steps:
            out.append(
                f"{name} lasted the whole run ({steps} of {s.steps} steps). Raise train.epochs "
                "or train.min_steps, or shorten that phase in the method's params."
            )
    if s.steps < FEW_STEPS:
        out.append(
            f"only {s.steps} optimiser steps: too few for the heads to learn. Raise train.epochs, "
            "or set train.min_steps (the frozen configs ask for 150)."
        )
    return out


def prediction_warnings(probs: np.ndarray, trained: bool) -> list[str]:
    """Warnings about the predictions [N, K] (probabilities) on the evaluation images.

    trained: the run had gradient training (the near-uniform check applies only then: a
    baseline's softmax over centroid distances is flat by construction on many features).
    """
    n, k = probs.shape
    sizes = np.bincount(probs.argmax(1), minlength=k)
    out = []
    empty = np.flatnonzero(sizes == 0)
    if len(empty):
        out.append(
            f"{len(empty)} of {k} clusters are empty ({_ids(empty)}): fewer groups were found "
            "than asked for. Try a smaller K, or a longer run."
        )
    even = n / k
    tiny = np.flatnonzero((sizes > 0) & (sizes < TINY_SHARE * even))
    if len(tiny):
        out.append(
            f"{len(tiny)} tiny cluster(s) ({_ids(tiny)}) hold under {TINY_SHARE:.0%} of an even "
            f"share ({even:.0f} images): they may be outliers, or K is too large."
        )
    big = int(sizes.argmax())
    if k >= 3 and sizes[big] > DOMINANT_SHARE * n:
        out.append(
            f"cluster {big} holds {sizes[big] / n:.0%} of the images: the run may have collapsed. "
            "Check the report; try a longer run, another seed or another method."
        )
    mean_conf = float(probs.max(1).mean()) if n else 0.0
    if trained and mean_conf < NEAR_UNIFORM / k:
        out.append(
            f"confidences are near uniform (mean {mean_conf:.2f}; uniform is {1 / k:.2f}): the "
            "heads barely learned. Raise train.epochs or train.min_steps."
        )
    return out


def _ids(clusters: np.ndarray, shown: int = 8) -> str:
    head = ", ".join(map(str, clusters[:shown].tolist()))
    return "clusters " + head + (", ..." if len(clusters) > shown else "")
