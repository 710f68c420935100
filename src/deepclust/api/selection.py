"""select: rank runs of one dataset without labels (and, with labels, say how far the pick is)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepclust.api.evaluation import evaluate
from deepclust.api.runs import LoadedRun, load_run, read_summary, seed_dirs
from deepclust.data.store import ImageSet
from deepclust.engine.device import autocast_dtype
from deepclust.engine.files import write_atomic
from deepclust.errors import CheckpointError, ConfigError


def expand_run_dirs(run_dirs: list[str | Path]) -> list[Path]:
    """Run folders as given; a folder without config.yaml stands for its run sub-folders."""
    out: list[Path] = []
    for d in map(Path, run_dirs):
        if (d / "config.yaml").is_file():
            out.append(d)
            continue
        subs = seed_dirs(d) or sorted(p.parent for p in d.glob("*/config.yaml"))
        if not subs:
            raise CheckpointError(
                f"'{d}' is not a deepclust run folder (no config.yaml) and holds none."
            )
        out += subs
    return out


def label_free_scores(
    runs: list[LoadedRun],
    images: ImageSet,
    fit_sample: Callable[[LoadedRun], tuple[ImageSet, torch.Tensor]] | None = None,
    max_loss_batches: int = 4,
) -> list[dict[str, Any]]:
    """Every label-free criterion for every run, on `images` (their labels are dropped first).

    The loss is computed on `images` as held-out images; where a method's per-sample state
    needs fit-set indices, on fit_sample(run) = (fit images, their fit-set indices).
    """
    from deepclust.evaluation import selection as sel

    images = sel.without_labels(images)
    view1, view2 = sel.augmented_pair(images)
    sel.remember_frozen_outputs([run.method for run in runs])  # one pass per shared frozen encoder
    from deepclust.progress import bar

    cands = []
    for i, run in enumerate(bar(runs, desc="scoring runs without labels", unit="run")):
        clusters = run.predict_proba(images).argmax(1).numpy()
        views = (
            run.predict_proba(view1).argmax(1).numpy(),
            run.predict_proba(view2).argmax(1).numpy(),
        )
        feats = run.features(images).numpy()
        loss, where = _selection_loss(run, images, fit_sample, max_loss_batches)
        cands.append(
            sel.Candidate(
                name=str(run.run_dir) if run.run_dir else f"run {i}",
                clusters=clusters,
                num_clusters=run.meta["num_clusters"],
                view_clusters=views,
                features=feats,
                loss=loss,
                loss_images=where,
            )
        )
    return sel.score_candidates(cands)


def _selection_loss(
    run: LoadedRun,
    images: ImageSet,
    fit_sample: Callable[[LoadedRun], tuple[ImageSet, torch.Tensor]] | None,
    max_batches: int,
) -> tuple[float | None, str]:
    """(the method's objective, which images it was computed on); (None, why) if it cannot be."""
    from deepclust.evaluation.selection import method_loss, without_labels

    if run.method.view_spec() is None:
        return None, "no gradient training"
    kw: dict[str, Any] = dict(
        device=run.device,
        batch_size=run.config.train.batch_size,
        max_batches=max_batches,
        epoch=run.config.train.epochs,
        autocast_dtype=autocast_dtype(run.config, run.device),
    )
    frozen = not run.method.encoder.trainable
    views = ", feature views (clean copies; neighbours among these images)" if frozen else ""

    def frozen_features(data: ImageSet) -> dict[str, Any]:
        """The heads of a frozen encoder trained on feature views: score them on those."""
        if not frozen:
            return {}
        from deepclust.engine.frozen import FrozenFeatures

        feats = run.features(data).to(run.device)
        return {
            "features": FrozenFeatures.of_copies(feats[None], feats, run.config.encoder),
            "feature_noise": run.config.encoder.feature_noise,
        }

    if run.config.data.protocol == "train-test":
        try:
            loss = method_loss(run.method, images, **kw, **frozen_features(images))
            return loss, f"held-out {images.name}{views}"
        except (ValueError, RuntimeError, IndexError, TypeError, KeyError):
            pass  # per-sample state (memory bank, pseudo-labels) needs fit-set indices
    if fit_sample is None:
        return None, "needs fit-set images"
    fit, index = fit_sample(run)
    where = "fit images with their indices" + (
        " (train+test protocol: nothing is held out)" if run.config.data.protocol == "all" else ""
    )
    loss = method_loss(run.method, without_labels(fit), indices=index, **kw, **frozen_features(fit))
    return loss, where + views


def _check_same_images(runs: list[LoadedRun]) -> None:
    keys = {
        (r.config.dataset, r.config.data.data_dir, r.meta["image_size"], r.default_split)
        for r in runs
    }
    if len(keys) > 1:
        raise ConfigError(
            "select compares runs on the same images: these runs differ in dataset, data folder, "
            f"image size or protocol ({sorted(map(str, keys))})."
        )


def _fit_sampler(
    images: ImageSet, index: torch.Tensor | None, n_full: int, max_images: int | None
) -> Callable[[LoadedRun], tuple[ImageSet, torch.Tensor]]:
    """run -> (fit images, their fit-set indices), loaded once for all runs (the train split
    leads the fit set; under protocol 'all' the evaluation set does)."""
    from deepclust.evaluation import selection as sel

    cache: dict[str, tuple[ImageSet, torch.Tensor]] = {}

    def fit_sample(run: LoadedRun) -> tuple[ImageSet, torch.Tensor]:
        if "fit" not in cache:
            if run.config.data.protocol == "all":
                cache["fit"] = (images, index if index is not None else torch.arange(n_full))
            else:
                train = run.load_split("train")
                idx = sel.subsample_index(len(train), max_images)
                idx = idx if idx is not None else torch.arange(len(train))
                cache["fit"] = (train.subset(idx), idx)
        return cache["fit"]

    return fit_sample


def _own_metrics(
    run_dir: Path, run: LoadedRun, split: str, full: ImageSet
) -> dict[str, Any] | None:
    """A run's scores by labels: its summary.json's, else evaluated on `full` when labelled."""
    metrics = read_summary(run_dir).get("metrics")
    if metrics is None and full.has_labels:
        metrics = evaluate(run, split, data=full)
    return metrics


def _ranked_entries(
    dirs: list[Path],
    runs: list[LoadedRun],
    rows: list[dict[str, Any]],
    order: list[int],
    metrics: list[dict[str, Any] | None],
) -> list[dict[str, Any]]:
    entries = []
    for rank_pos, i in enumerate(order, start=1):
        entry = {"rank": rank_pos, "run_dir": str(dirs[i]), "seed": runs[i].config.train.seed}
        entry.update({k: v for k, v in rows[i].items() if k != "name"})
        if metrics[i]:
            entry["labels"] = {k: metrics[i][k] for k in ("acc", "nmi", "ari") if k in metrics[i]}  # type: ignore[index]
        entries.append(entry)
    return entries


def _compare_with_labels(
    rows: list[dict[str, Any]], metrics: list[dict[str, Any] | None]
) -> dict[str, Any] | None:
    """evaluation.selection.compare_with_labels with its run names as strings (for JSON)."""
    from deepclust.evaluation import selection as sel

    cmp = sel.compare_with_labels(rows, metrics)
    if cmp is not None:
        for part in [cmp["best_by_labels"], cmp["worst_by_labels"], *cmp["criteria"].values()]:
            for key in ("name", "pick"):
                if key in part:
                    part[key] = str(part[key])
    return cmp


def select(
    run_dirs: list[str | Path],
    criterion: str | None = None,
    max_images: int | None = 2000,
    device: str = "auto",
    out: str | Path | None = None,
    with_labels: bool = True,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Rank runs of one dataset without labels; optionally compare with the best-by-labels.

    Every criterion is computed on the same (sub-sampled, label-stripped) evaluation
    images; `criterion` (default: consensus for >= 3 runs, else views) orders the runs.
    With labels, each run's own scores (summary.json, else evaluate) give the best run,
    and for every criterion the gap between its pick and that best (JSON written to `out`).
    """
    from deepclust.evaluation import selection as sel

    dirs = expand_run_dirs(run_dirs)
    criterion = criterion or sel.default_criterion(len(dirs))
    if criterion not in sel.CRITERIA:
        raise ConfigError(
            f"unknown criterion '{criterion}'; choose from {', '.join(sel.CRITERIA)}."
        )
    runs = [load_run(d, device, data_dir) for d in dirs]
    _check_same_images(runs)
    split = runs[0].default_split
    full = runs[0].load_split(split)
    index = sel.subsample_index(len(full), max_images)
    images = full if index is None else full.subset(index)
    rows = label_free_scores(runs, images, _fit_sampler(images, index, len(full), max_images))
    order = sel.rank(rows, criterion)
    result: dict[str, Any] = {
        "criterion": criterion,
        "higher_is_better": sel.CRITERIA[criterion],
        "images": {"split": full.name, "n": len(images), "of": len(full)},
        "runs": [],
        "pick": rows[order[0]]["name"],
        "pick_run_dir": str(dirs[order[0]]),
        "note": (
            "Runs are ranked without labels. Only finished runs are compared (the engine keeps "
            "last.pt/previous.pt, not one checkpoint per epoch), so selection is among runs: "
            "seeds or hyper-parameter variants."
        ),
    }
    metrics = [
        _own_metrics(d, run, split, full) if with_labels else None
        for d, run in zip(dirs, runs, strict=True)
    ]
    result["runs"] = _ranked_entries(dirs, runs, rows, order, metrics)
    if with_labels:
        cmp = _compare_with_labels(rows, metrics)
        if cmp is not None:
            result["label_free_vs_labels"] = cmp
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(out), json.dumps(result, indent=2))
        result["written_to"] = str(out)
    return result
