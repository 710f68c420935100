"""Aggregating runs of one configuration over seeds: mean, standard deviation and best.

The papers report mean (and sometimes standard deviation) over N runs plus the best run;
deepclust reports all three, and beside them the run a label-free criterion would pick.
The standard deviation is the sample one (n - 1 in the denominator; 0 for a single run).
"best" is the run with the highest ACC (its NMI and ARI are that run's); "max" holds each
metric's own maximum over runs, which may come from different runs.
"""

from __future__ import annotations

import math
from typing import Any

METRICS: tuple[str, ...] = ("acc", "nmi", "ari")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0.0 for fewer than two values)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to aggregate")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """runs: [{"seed": s, "acc": .., "nmi": .., "ari": .., ...}] -> mean / std / best / max.

    Runs without scores (unlabelled data) are counted but not aggregated.
    """
    scored = [r for r in runs if all(r.get(m) is not None for m in METRICS)]
    out: dict[str, Any] = {"n_runs": len(runs), "n_scored": len(scored)}
    if not scored:
        return out
    out["mean"], out["std"], out["max"] = {}, {}, {}
    for m in METRICS:
        mean, std = mean_std([float(r[m]) for r in scored])
        out["mean"][m], out["std"][m] = mean, std
        out["max"][m] = max(float(r[m]) for r in scored)
    best = max(scored, key=lambda r: float(r["acc"]))
    out["best"] = {"seed": best.get("seed"), **{m: float(best[m]) for m in METRICS}}
    return out


def format_line(agg: dict[str, Any]) -> str:
    """'ACC 0.7922 +- 0.0004  NMI ...  ARI ...; best run (by ACC, seed 1): 0.7924 / ...'."""
    if "mean" not in agg:
        return f"{agg['n_runs']} runs, no labels to score"
    parts = [f"{m.upper()} {agg['mean'][m]:.4f} +- {agg['std'][m]:.4f}" for m in METRICS]
    best = agg["best"]
    return (
        "  ".join(parts)
        + f"; best run (by ACC, seed {best['seed']}): ACC/NMI/ARI "
        + " / ".join(f"{best[m]:.4f}" for m in METRICS)
    )
