"""The files a recut run folder gets from its new clusters: predictions, summary, report, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepclust.data.store import ImageSet


def finish_run(
    target: Path,
    data: ImageSet,
    probs: np.ndarray,
    neighbours: np.ndarray,
    info: dict[str, Any],
    concepts: dict[str, Any] | None,
    device: str,
    report: bool,
    export: bool,
    copy: bool,
) -> Any:
    """predictions.csv, the names (concepts: cluster/naming.py's, or None), summary.json (the
    old run's, with the new K, scores, quality and `recut` facts), then the report and
    export; returns a practice.folder.ClusterResult."""
    from deepclust.api.runs import read_summary
    from deepclust.engine.files import write_atomic
    from deepclust.evaluation.quality import assess
    from deepclust.practice.folder import finish_result
    from deepclust.training.records import (
        RunResult,
        concept_names,
        write_names,
        write_predictions,
    )

    k = probs.shape[1]
    clusters = probs.argmax(1)
    quality = assess(neighbours, clusters, k)
    names = concept_names(concepts)
    write_predictions(target / "predictions.csv", data, torch.from_numpy(probs), names, quality)
    write_names(target, None, concepts)
    summary = _summary(read_summary(Path(info["from_run"])), data, probs, quality, info)
    write_atomic(target / "summary.json", json.dumps(summary, indent=2))
    return finish_result(RunResult(target, summary), device, export, copy, report)


def _summary(
    old: dict[str, Any], data: ImageSet, probs: np.ndarray, quality: Any, info: dict[str, Any]
) -> dict[str, Any]:
    from deepclust.evaluation.health import prediction_warnings
    from deepclust.evaluation.metrics import score

    clusters = probs.argmax(1)
    summary = {**old, "num_clusters": probs.shape[1], "recut": info, "quality": quality.as_dict()}
    summary.pop("metrics", None)
    if data.has_labels:
        labels = data.labels.numpy()
        summary["metrics"] = score(labels, clusters, num_clusters=probs.shape[1]).as_dict()
    summary["warnings"] = prediction_warnings(probs, trained=False) + quality.warnings
    return summary
