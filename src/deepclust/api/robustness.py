"""shift: a run's scores on corrupted copies of its evaluation split and across its splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deepclust.api.evaluation import evaluate
from deepclust.api.runs import LoadedRun, load_run
from deepclust.data.store import ImageSet
from deepclust.engine.files import write_atomic
from deepclust.errors import ConfigError, DeepclustError
from deepclust.evaluation.metrics import score


def _checked_corruptions(
    corruptions: list[str] | tuple[str, ...] | None, severities: tuple[int, ...] | None
) -> tuple[list[str], tuple[int, ...]]:
    """(corruption names, severities), or a ConfigError naming the bad one."""
    from deepclust.evaluation import shift as sh

    try:
        names = sh.parse_corruptions(list(corruptions) if corruptions else None)
        levels = tuple(severities) if severities else sh.SEVERITIES
        for level in levels:
            sh.check_corruption(names[0], level)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return names, levels


def _split_scores(
    run: LoadedRun, split: str, data: ImageSet, clean: dict[str, Any], max_images: int | None
) -> list[dict[str, Any]]:
    """The train->test shift: scores on the train and the test split ([] for one split)."""
    from deepclust.evaluation import selection as sel

    parts: dict[str, ImageSet] = {}
    for other in ("train", "test"):
        try:
            parts[other] = data if other == split else run.load_split(other)
        except DeepclustError:
            return []  # a single-split dataset: no train/test breakdown
    splits = []
    for other, part in parts.items():
        if other == split:
            splits.append(clean)
            continue
        idx = sel.subsample_index(len(part), max_images)
        splits.append(evaluate(run, other, data=part if idx is None else part.subset(idx)))
    return splits


def _corruption_table(
    run: LoadedRun, data: ImageSet, names: list[str], levels: tuple[int, ...], seed: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """{corruption: {severity: ACC/NMI/ARI}} on corrupted copies of `data`."""
    from deepclust.evaluation import shift as sh

    k = run.meta["num_clusters"]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name in names:
        table[name] = {}
        for level in levels:
            shifted = ImageSet(sh.corrupt(data.images, name, level, seed), data.labels)
            probs = run.predict_proba(shifted)
            table[name][str(level)] = score(
                data.labels.numpy(), probs.argmax(1).numpy(), num_clusters=k
            ).as_dict()
    return table


def shift(
    run_dir: str | Path,
    corruptions: list[str] | tuple[str, ...] | None = None,
    severities: tuple[int, ...] | None = None,
    seed: int = 0,
    device: str = "auto",
    max_images: int | None = None,
    write: bool = True,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Score a run on corrupted copies of its evaluation split (CIFAR-10-C recipe).

    Returns (and writes to RUN_DIR/shift.json) the clean scores, the scores on the train
    and test splits (the train->test shift), and ACC/NMI/ARI per corruption and severity.
    """
    from deepclust.evaluation import selection as sel

    names, levels = _checked_corruptions(corruptions, severities)
    run = load_run(run_dir, device, data_dir)
    split = run.default_split
    full = run.load_split(split)
    if not full.has_labels:
        raise DeepclustError(f"split '{split}' of '{run.config.dataset}' has no labels to score.")
    index = sel.subsample_index(len(full), max_images)
    data = full if index is None else full.subset(index)
    clean = evaluate(run, split, data=data)
    splits = _split_scores(run, split, data, clean, max_images)
    table = _corruption_table(run, data, names, levels, seed)
    mean_acc = {n: float(np.mean([v["acc"] for v in per.values()])) for n, per in table.items()}
    result: dict[str, Any] = {
        "method": run.config.method,
        "dataset": run.config.dataset,
        "encoder": run.config.encoder.name,
        "protocol": clean["protocol"],
        "eval_split": data.name,
        "n": len(data),
        "of": len(full),
        "seed": seed,
        "recipe": "corruption parameters of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019)",
        "severities": list(levels),
        "clean": clean,
        "splits": splits,
        "corruptions": table,
        "mean_acc": mean_acc,
        "mean_corrupted_acc": float(np.mean(list(mean_acc.values()))),
    }
    result["relative_acc"] = (
        result["mean_corrupted_acc"] / clean["acc"] if clean["acc"] > 0 else None
    )
    fit = next((s for s in splits if s["split"] == "train"), None)
    test = next((s for s in splits if s["split"] == "test"), None)
    if fit is not None and test is not None:
        result["train_minus_test_acc"] = fit["acc"] - test["acc"]
    if write:
        write_atomic(Path(run_dir) / "shift.json", json.dumps(result, indent=2))
    return result
