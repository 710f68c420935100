"""One call for a folder of photos: the best frozen recipe, a run folder, a report, an export.

`cluster_folder` is what `deepclust cluster PHOTOS --k N` runs: every image under the
folder (recursively, any size or mode: see the `photos` dataset), fitted and scored on
the same images (protocol `all`), with IMC-SwAV heads on frozen EfficientNet-Lite2
features ending with the self-labelling stage (the best recipe measured on frozen
features, benchmarks/frozen_features.py).
Labels are never used to fit; when the images sit in class folders they are scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepclust.config import RunConfig
from deepclust.errors import ConfigError, DataError, counted
from deepclust.evaluation.predictions import (
    read_predictions_csv,
    stored_agreement,
    stored_assignments,
)

DEFAULT_METHOD = "imc-swav"
RECIPE = "frozen"  # configs/<method>/frozen.yaml: heads on cached features of a frozen encoder


@dataclass
class ClusterResult:
    run_dir: Path
    summary: dict[str, Any]
    sizes: list[int]  # images per cluster, cluster id order
    examples: list[list[str]]  # a few file names per cluster
    report: Path | None = None
    export: Path | None = None
    warnings: list[str] = field(default_factory=list)
    k_estimate: Any = None  # cluster.k_estimation.KEstimate when K was chosen (k="auto")
    names: list[str] = field(default_factory=list)  # per cluster its name ('' when unnamed)


def photos_folder(photos: str | Path) -> Path:
    """The absolute folder of photos, or a one-line error that says what to give instead."""
    folder = Path(photos).expanduser()
    if not folder.exists():
        raise DataError(f"'{photos}' does not exist: give the folder that holds your photos.")
    if not folder.is_dir():
        raise DataError(
            f"'{photos}' is a file: give the folder that holds the photos (searched recursively)."
        )
    return folder.resolve()


def recipe_config(
    folder: Path,
    k: int | None,
    method: str = DEFAULT_METHOD,
    image_size: int | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    labels_from_folders: bool = False,
) -> RunConfig:
    """The run config of the default recipe on `folder`, with K clusters; its sub-folders are
    classes (dataset photo_classes, scored only) with labels_from_folders, else albums."""
    from deepclust.api import make_config

    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
        raise ConfigError(f"--k must be a whole number of clusters, at least 2; got {k!r}.")
    items: list[tuple[str, Any]] = [
        ("data.data_dir", str(folder)),
        ("data.protocol", "all"),
        ("clusters", k),
    ]
    if image_size is not None:
        items.append(("data.image_size", image_size))
    dataset = "photo_classes" if labels_from_folders else "photos"
    return make_config(method, dataset, RECIPE, items + list(overrides or []))


def default_out(folder: Path) -> Path:
    """runs/<name>-clusters-<time>; next to the photos (<parent>/runs) when the current folder
    is inside them, so a run never lands among the photos."""
    base = Path("runs")
    if Path.cwd().resolve().is_relative_to(folder.resolve()):
        base = folder.resolve().parent / "runs"
    return base / f"{folder.name or 'photos'}-clusters-{time.strftime('%Y%m%d-%H%M%S')}"


def cluster_folder(
    photos: str | Path,
    k: int | str = "auto",
    out: str | Path | None = None,
    *,
    k_range: tuple[int, int] | None = None,
    k_estimator: str | None = None,
    method: str = DEFAULT_METHOD,
    image_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    export: bool = False,
    copy: bool = False,
    report: bool = True,
    overrides: list[tuple[str, Any]] | None = None,
    resume: bool = False,
    labels_from_folders: bool = False,
    tell: Callable[[str], None] | None = None,
) -> ClusterResult:
    """Cluster every image under `photos` into k groups; write the run folder `out`.

    k="auto": K is estimated from the cached features without labels (choose_k; k_range
    (MIN, MAX) and k_estimator pick the range and the criterion), and k_estimate.json holds
    the criterion's curve.

    Returns the run folder, its summary (metrics when the photos sit in class folders),
    cluster sizes with example files, the report (report=True) and the export folder
    (export=True: RUN/clusters/<id>/ holds links to the photos, or copies with copy=True).

    resume=True continues the killed run in `out` (its config: K, method, seed) on the same
    photos, then writes the report and the export as an uninterrupted run does.
    labels_from_folders: score the clusters against the first-level sub-folders (never fit).
    tell(line): what is happening, as it happens (features extracted, K chosen, training).
    """
    from deepclust import api
    from deepclust.choose_k import describe, estimate_into, fit_features, write_estimate
    from deepclust.data.readers import cache_root
    from deepclust.encoders.pretrained import check_weights_available

    folder = photos_folder(photos)
    if resume:
        resumed = resume_cluster(folder, k, out, device, overrides)
        return finish_result(resumed, device, export, copy, report)
    tell = tell or (lambda _line: None)
    extra = [("train.seed", seed), ("train.device", device), *(overrides or [])]
    auto = k == "auto"
    cfg = recipe_config(
        folder,
        None if auto else k,
        method,
        image_size,
        extra,
        labels_from_folders,  # type: ignore[arg-type]
    )
    if cfg.encoder.weights is None:
        check_weights_available(cfg.encoder.name)
    t0 = time.time()
    # extracted ahead (the training reads them back from the cache) when K needs them, or
    # when a cache keeps them: without one, a given K leaves extraction to the training
    ahead = auto or cache_root("features") is not None
    found = fit_features(cfg, device) if ahead else None
    features = found[0] if found is not None else None
    if found is not None:
        tell(
            f"features: {counted(found[1], 'image')}, {cfg.encoder.name}, {time.time() - t0:.0f} s"
        )
    estimate = estimate_into(cfg, k_range, k_estimator, device, features) if auto else None
    if estimate is not None:
        tell(describe(estimate))
    run_dir = Path(out) if out is not None else default_out(folder)
    tell(f"training {cfg.method} heads for K = {cfg.clusters} into {run_dir} ...")
    result = api.train(cfg, out=run_dir)
    if estimate is not None:
        write_estimate(result.run_dir, estimate)
    return finish_result(result, device, export, copy, report, estimate)


def resume_cluster(
    folder: Path,
    k: int | str,
    out: str | Path | None,
    device: str = "auto",
    overrides: list[tuple[str, Any]] | None = None,
) -> Any:
    """Continue the killed `cluster` run in `out` on the photos of `folder` (RunResult)."""
    from deepclust import api

    if out is None:
        raise ConfigError("--resume needs --out RUN_DIR: the run folder to continue.")
    items = [("data.data_dir", str(folder)), ("train.device", device), *(overrides or [])]
    if k != "auto":  # the trainer refuses a K other than the run's
        items.append(("clusters", k))
    cfg = api.resume_config(out, overrides=items)
    return api.train(cfg, out=out, resume=True)


def finish_result(
    result: Any, device: str, export: bool, copy: bool, report: bool, estimate: Any = None
) -> ClusterResult:
    """The report, the export and the cluster sizes of a finished run folder (a `cluster`
    training's, or a recut's): result has its run_dir and summary."""
    from deepclust import api
    from deepclust.practice.exporting import export_clusters

    k = result.summary["num_clusters"]
    sizes, examples = cluster_sizes(result.run_dir, k)
    named = api.read_cluster_names(result.run_dir, k)
    page = api.report(result.run_dir, device=device) if report else None
    exported = export_clusters(result.run_dir, copy=copy) if export else None
    warnings = list(result.summary.get("warnings", []))
    return ClusterResult(
        result.run_dir,
        result.summary,
        sizes,
        examples,
        page,
        exported,
        warnings,
        estimate,
        [named.get(c, "") for c in range(k)],
    )


def cluster_sizes(run_dir: Path, k: int, shown: int = 3) -> tuple[list[int], list[list[str]]]:
    """(images per cluster, the file names of its `shown` most typical photos) from the run's
    predictions: highest neighbour agreement first (where measured), then confidence."""
    path = run_dir / "predictions.csv"
    rows = read_predictions_csv(path)
    clusters, confidence = stored_assignments(path, rows)
    agreement = stored_agreement(rows) or [0.0] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: (-agreement[i], -confidence[i], i))
    examples: list[list[str]] = [[] for _ in range(k)]
    for i in order:
        if len(examples[clusters[i]]) < shown:
            examples[clusters[i]].append(Path(rows[i]["path"]).name)
    return [clusters.count(c) for c in range(k)], examples


def read_predictions(path: Path) -> tuple[list[str], list[int]]:
    """(paths, clusters) of a predictions CSV (run folder or `predict`)."""
    rows = read_predictions_csv(path)
    return [r["path"] for r in rows], stored_assignments(path, rows)[0]
