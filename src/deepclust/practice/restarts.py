"""Several seeds of one recipe, the best kept by a label-free score.

Frozen-feature heads land in clusterings of rather different accuracy from seed to seed (on
CIFAR-10 train, 5,000 photos: ACC 0.62 to 0.71 over 8 seeds of the default recipe). The run
whose clusters agree best with the features' own neighbourhoods (the highest quality score:
the mean share of a photo's 10 nearest neighbours in its cluster, evaluation/quality.py)
is the better one more often than not (correlation 0.66 with ACC there), so `cluster
--restarts N` trains N seeds and keeps that run. The score compares seeds of one recipe at
one K; it is not a way to compare recipes or K (a merged cluster raises it).

Each seed trains in a hidden sibling folder `.<run>.seed<s>`; the kept one is renamed to
the run folder (a run folder holds no path of its own) and the others are removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepclust.config import RunConfig
from deepclust.engine.files import write_atomic
from deepclust.errors import ConfigError


def quality_score(summary: dict[str, Any]) -> float:
    """A finished run's label-free quality score (-1 when the run has none)."""
    return float((summary.get("quality") or {}).get("score", -1.0))


def train_best_of(cfg: RunConfig, run_dir: Path, restarts: int, tell: Callable[[str], None]) -> Any:
    """Train `restarts` seeds of cfg (cfg.train.seed, +1, ...); the best by quality_score
    becomes run_dir, whose summary.json records every seed's score under "restarts"."""
    import json

    from deepclust import api

    if run_dir.exists():
        raise ConfigError(
            f"'{run_dir}' exists: --restarts writes a new run folder; give another --out."
        )
    first = cfg.train.seed
    results = []
    for seed in range(first, first + restarts):
        trial = replace(cfg, train=replace(cfg.train, seed=seed))
        folder = run_dir.parent / f".{run_dir.name}.seed{seed}"
        if folder.exists():  # a killed earlier try of this very command: our own folder
            shutil.rmtree(folder)
        results.append(api.train(trial, out=folder))
        tell(f"seed {seed}: quality {quality_score(results[-1].summary):.3f}")
    best = max(results, key=lambda r: quality_score(r.summary))
    for r in results:
        if r is not best:
            shutil.rmtree(r.run_dir)
    Path(best.run_dir).rename(run_dir)
    summary = dict(best.summary)
    summary["restarts"] = {
        "criterion": "quality score (no labels)",
        "seeds": [r.summary.get("seed", first + i) for i, r in enumerate(results)],
        "quality": [round(quality_score(r.summary), 4) for r in results],
        "kept_seed": best.summary.get("seed"),
    }
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    tell(f"kept seed {summary['restarts']['kept_seed']} (the highest quality of {restarts})")
    return replace(best, run_dir=run_dir, summary=summary)
