"""The predictions CSV: one format for a run folder's predictions.csv and `predict --out`.

Columns: index (row in the scored set), path (the image file, absolute when it came from a
folder; empty for array datasets), cluster, confidence, name (the cluster's words when the
method names clusters, e.g. SIC; else empty) and label (the true class id when known, else
empty; older files hold -1 there, which means the same). confidence is, for every method,
the probability the method gives the cluster it assigned (the largest of its K cluster
probabilities); agreement (frozen runs; empty otherwise) is the share of the image's 10
nearest neighbours in feature space that sit in its cluster (evaluation/quality.py): unlike
the confidence it drops for a photo in a mixed cluster. A text cell that a spreadsheet would take for a formula (starting with
= + - @, tab or CR) is written with a leading quote (OWASP), which read_predictions_csv
strips again, so paths round-trip.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from deepclust.engine.files import write_atomic
from deepclust.engine.runfolder import wrong_field

COLUMNS = ["index", "path", "cluster", "confidence", "agreement", "name", "label"]


def prediction_rows(
    probs: torch.Tensor,
    paths: Sequence[str] | None = None,
    labels: torch.Tensor | None = None,
    names: dict[int, str] | None = None,
    agreement: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """probs [N, K] (+ paths, labels [N], cluster names, neighbour agreement [N]) -> N rows
    with COLUMNS as keys (agreement empty where not given)."""
    conf, cluster = probs.max(dim=1)
    names = names or {}
    return [
        {
            "index": i,
            "path": paths[i] if paths else "",
            "cluster": int(c),
            "confidence": round(float(q), 4),
            "agreement": round(float(agreement[i]), 4) if agreement is not None else "",
            "name": names.get(int(c), ""),
            "label": int(labels[i]) if labels is not None and int(labels[i]) >= 0 else "",
        }
        for i, (c, q) in enumerate(zip(cluster.tolist(), conf.tolist(), strict=True))
    ]


# A cell that starts with one of these is a formula to a spreadsheet (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"


def _needs_guard(text: str) -> bool:
    """A formula, or a text that would read back as one once a guard is stripped."""
    return text.lstrip(GUARD).startswith(FORMULA_STARTS)


def guard_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run, prefixed with a quote (numbers stay numbers)."""
    return GUARD + value if isinstance(value, str) and _needs_guard(value) else value


def unguard_cell(text: str) -> str:
    """guard_cell undone: '-1.jpg' and '=x.jpg' read back as written, whatever they hold."""
    return text[1:] if text.startswith(GUARD) and _needs_guard(text[1:]) else text


def write_predictions_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """The CSV, formula cells guarded, written atomically (engine/files.py: never via a link)."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({k: guard_cell(v) for k, v in row.items()} for row in rows)
    write_atomic(Path(path), buf.getvalue())


def read_predictions_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a predictions CSV (a run folder's or `predict`'s), by column name."""
    with open(path, newline="") as fh:
        return [
            {k: unguard_cell(v) if isinstance(v, str) else v for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


def stored_assignments(
    path: str | Path, rows: list[dict[str, str]], num_clusters: int | None = None
) -> tuple[list[int], list[float]]:
    """(cluster, confidence) of every row, checked: RunFileError names the row and field.

    num_clusters: the run's K, when known (else any cluster id is accepted)."""
    clusters, confidence = [], []
    for line, row in enumerate(rows, start=2):
        c, q = row.get("cluster") or "", row.get("confidence") or ""
        if not re.fullmatch(r"[0-9]{1,9}", c.strip()) or int(c) >= (num_clusters or 10**9):
            want = f"a cluster id in 0..{num_clusters - 1}" if num_clusters else "a cluster id"
            _altered(path, line, "cluster", c, want)
        try:
            value = float(q)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            _altered(path, line, "confidence", q, "a probability in 0..1")
        clusters.append(int(c))
        confidence.append(value)
    return clusters, confidence


def stored_agreement(rows: list[dict[str, str]]) -> list[float] | None:
    """The neighbour agreement column of every row (frozen runs), or None when it is absent
    or not a number on some row."""
    try:
        values = [float(r.get("agreement") or "nan") for r in rows]
    except ValueError:
        return None
    return None if not values or any(math.isnan(v) for v in values) else values


def _altered(path: str | Path, line: int, field: str, value: str, want: str) -> None:
    raise wrong_field(path, f"line {line}, {field}", value, want)
