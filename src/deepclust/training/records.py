"""What a run leaves behind: metrics.jsonl lines, the summary with its health warnings,
predictions.csv and the run's result."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deepclust.data.store import ImageSet
from deepclust.engine.files import open_no_follow
from deepclust.evaluation.health import Schedule, prediction_warnings, schedule_warnings
from deepclust.evaluation.predictions import prediction_rows, write_predictions_csv
from deepclust.evaluation.quality import Quality
from deepclust.methods import Method


@dataclass
class RunLog:
    """metrics.jsonl in the run folder: one JSON object a line, flushed as written."""

    path: Path
    enabled: bool = True
    records: list[dict[str, Any]] = field(default_factory=list)

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.records.append(record)
        if self.enabled:
            fd = open_no_follow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "a") as fh:
                fh.write(json.dumps(record) + "\n")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


def health_warnings(
    method: Method, schedule: dict[str, int], steps_per_epoch: int, probs: torch.Tensor
) -> list[str]:
    """The run-health warnings of a finished run (evaluation/health.py)."""
    total = schedule["steps"]
    phases = method.learning_phases(total, steps_per_epoch) if total else {}
    plan = Schedule(total, schedule["warmup_steps"], phases)
    return schedule_warnings(plan) + prediction_warnings(probs.numpy(), trained=total > 0)


SHOWN_SKIPPED = 20  # files named in summary.json's skipped_images (all are counted)


def skipped_images(*sets: ImageSet) -> dict[str, Any]:
    """summary.json's skipped_images: the files left out as unreadable, with their reasons."""
    bad = list(dict.fromkeys(tuple(b) for s in sets for b in s.skipped))  # once, in order
    files = [{"path": p, "reason": r} for p, r in bad[:SHOWN_SKIPPED]]
    return {"count": len(bad), "files": files}


def write_predictions(
    path: Path,
    data: ImageSet,
    probs: torch.Tensor,
    names: list[list[str]] | list[str] | None,
    quality: Quality | None = None,
) -> None:
    """The run's predictions.csv (evaluation/predictions.py has the columns); names: per
    cluster a name or its words (SIC's nouns, best first)."""
    named = (
        {c: name if isinstance(name, str) else ", ".join(name) for c, name in enumerate(names)}
        if names
        else None
    )
    agreement = quality.agreement if quality is not None else None
    rows = prediction_rows(probs, data.paths, data.labels, named, agreement)
    write_predictions_csv(path, rows)


def concept_names(concepts: dict[str, Any] | None) -> list[str] | None:
    """The K names of cluster_concepts.json's content (cluster/naming.py), or None."""
    return [c["name"] for c in concepts["clusters"]] if concepts else None


def write_names(
    run_dir: Path, names: list[list[str]] | None, concepts: dict[str, Any] | None
) -> None:
    """cluster_names.json (the method's words, else the concepts' names) and, when the
    classifier named the clusters, cluster_concepts.json with each one's concepts and shares."""
    from deepclust.engine.files import write_atomic

    if concepts is not None:
        write_atomic(run_dir / "cluster_concepts.json", json.dumps(concepts, indent=1))
    shown = names if names is not None else concept_names(concepts)
    if shown is not None:
        write_atomic(run_dir / "cluster_names.json", json.dumps(shown, indent=1))
