"""The predictions CSV: one format for a run folder's predictions.csv and `predict --out`.

Columns: index (row in the scored set), path (the image file, absolute when it came from a
folder; empty for array datasets), cluster, confidence, name (the cluster's words when the
method names clusters, e.g. SIC; else empty) and label (the true class id when known, else
empty; older files hold -1 there, which means the same). confidence is, for every method,
the probability the method gives the cluster it assigned (the largest of its K cluster
probabilities).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

COLUMNS = ["index", "path", "cluster", "confidence", "name", "label"]


def prediction_rows(
    probs: torch.Tensor,
    paths: Sequence[str] | None = None,
    labels: torch.Tensor | None = None,
    names: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """probs [N, K] (+ paths, labels [N], cluster names) -> N rows with COLUMNS as keys."""
    conf, cluster = probs.max(dim=1)
    names = names or {}
    return [
        {
            "index": i,
            "path": paths[i] if paths else "",
            "cluster": int(c),
            "confidence": round(float(q), 4),
            "name": names.get(int(c), ""),
            "label": int(labels[i]) if labels is not None and int(labels[i]) >= 0 else "",
        }
        for i, (c, q) in enumerate(zip(cluster.tolist(), conf.tolist(), strict=True))
    ]


def write_predictions_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_predictions_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a predictions CSV (a run folder's or `predict`'s), by column name."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
