"""evaluate: a run's scores on a split, with how they were obtained (the protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepclust.api.runs import LoadedRun, load_run, protocol_label, read_cluster_names
from deepclust.data.store import ImageSet
from deepclust.errors import ConfigError, DeepclustError
from deepclust.evaluation.metrics import score


def evaluate(
    run_dir: str | Path | LoadedRun,
    split: str | None = None,
    device: str = "auto",
    data: ImageSet | None = None,
) -> dict[str, Any]:
    """Score a run on `split` ('test', 'train' or 'all' = train+test; default: the run's protocol).

    The result says how the number was obtained: 'protocol' is 'train->test' (fitted on
    train, scored on the held-out test split), 'train+test' (fitted and scored on both),
    or an in-sample variant; 'held_out' is True only for train->test.
    """
    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir, device)
    cfg = run.config
    split = split or run.default_split
    if split not in ("test", "train", "all"):
        raise ConfigError(f"--split must be test, train or all; got '{split}'.")
    data = data if data is not None else run.load_split(split)
    if not data.has_labels:
        raise DeepclustError(
            f"split '{split}' of '{cfg.dataset}' has no labels to evaluate against."
        )
    probs = run.predict_proba(data)
    scores = score(
        data.labels.numpy(), probs.argmax(1).numpy(), num_clusters=probs.shape[1]
    ).as_dict()
    protocol = protocol_label(cfg.data.protocol, split)
    result = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "split": split,
        "protocol": protocol,
        "held_out": protocol == "train->test",
        "encoder": cfg.encoder.name,
        **scores,
    }
    names = read_cluster_names(run.run_dir, probs.shape[1])
    if names:
        result["cluster_names"] = [names.get(c, "") for c in range(probs.shape[1])]
    return result


def evaluate_protocols(
    run_dir: str | Path | LoadedRun, device: str = "auto"
) -> list[dict[str, Any]]:
    """Both views of a run: its own protocol's split and the other side of the fit.

    train->test runs: the test split (held out) and the train split (in-sample, the fit
    distribution), so the train->test shift is visible. train+test runs: train+test and
    its test part (both in-sample; no held-out number exists for such a run).
    """
    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir, device)
    splits = ["test", "train"] if run.config.data.protocol == "train-test" else ["all", "test"]
    results = []
    for split in splits:
        try:
            data = run.load_split(split)
        except DeepclustError:
            if split == splits[0]:
                raise
            continue  # e.g. a single-split dataset: no separate test part
        results.append(evaluate(run, split, data=data))
    return results
