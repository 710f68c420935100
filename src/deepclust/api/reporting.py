"""report: the run's self-contained HTML page (evaluation/report.py draws it)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepclust.api.evaluation import evaluate
from deepclust.api.runs import (
    LoadedRun,
    load_run,
    protocol_label,
    read_cluster_names,
    read_jsonl,
    read_summary,
)
from deepclust.data.store import ImageSet
from deepclust.engine.files import write_atomic
from deepclust.engine.runfolder import read_run_json
from deepclust.errors import ConfigError, DeepclustError, RunFolderError, counted
from deepclust.evaluation.predictions import (
    read_predictions_csv,
    stored_agreement,
    stored_assignments,
)


def _stored_predictions(
    run_dir: Path, data: ImageSet, k: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None] | None, str | None]:
    """((clusters, confidence, agreement or None) of predictions.csv in `data`'s order, or None when they do not
    cover its images; a line saying what no longer matches, or None).

    Rows pair by path where both have paths (renamed or added files never borrow another
    photo's cluster); otherwise by position when the counts agree. The stored values are
    checked first (evaluation/predictions.stored_assignments).
    """
    path = run_dir / "predictions.csv"
    if not path.is_file():
        return None, None
    rows = read_predictions_csv(path)
    clusters, confidence = (np.asarray(v) for v in stored_assignments(path, rows, k))
    stored = stored_agreement(rows)
    agreement = None if stored is None else np.array(stored)
    if data.paths and rows and rows[0].get("path"):
        position = {r["path"]: i for i, r in enumerate(rows)}
        gone = len(set(position) - set(data.paths))
        new = sum(p not in position for p in data.paths)
        if gone or new:
            return None, (
                f"{counted(gone, 'photo')} in the run's predictions are missing from the folder, "
                f"{new:,} new {'one is' if new == 1 else 'ones are'} not in the run: "
                "the report predicts the folder's photos again."
            )
        order = np.array([position[p] for p in data.paths], dtype=np.int64)
    elif len(rows) == len(data):
        order = np.arange(len(rows))
    else:
        return None, None
    shared = None if agreement is None else agreement[order]
    return (clusters[order].astype(np.int64), confidence[order], shared), None


def _predictions(
    run: LoadedRun, data: ImageSet, tell: Callable[[str], None]
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None], str | None]:
    """(clusters, confidence, agreement or None) of `data`: the stored ones where they still match, else
    predicted again; and the line saying what no longer matched (also told), or None."""
    stored, mismatch = _stored_predictions(run.run_dir, data, run.meta["num_clusters"])
    if mismatch is not None:
        tell(f"warning: {mismatch}")
    if stored is None:
        conf, cl = run.predict_proba(data).max(1)
        stored = (cl.numpy(), conf.numpy(), None)
    return stored, mismatch


def _photo_folder(run: LoadedRun, summary: dict[str, Any], data_dir: str | None) -> str:
    """The folder `report` reads the run's images from (embedded in the page); a run made on
    another host must name it with --data-dir (its config could name any folder)."""
    host = summary.get("host")
    if data_dir is None and host is not None and host != socket.gethostname():
        raise RunFolderError(
            f"'{run.run_dir}' was made on another machine ({host}) and its config names "
            f"{run.config.data.data_dir or 'the dataset default'} for the images that the "
            "report embeds: pass --data-dir with the folder that holds the run's images here."
        )
    return run.config.data.data_dir or f"the default folder of '{run.config.dataset}'"


def _metric_rows(
    run: LoadedRun, data: ImageSet, summary: dict[str, Any], protocols: str
) -> list[dict[str, Any]]:
    """The report's score rows: the run's own evaluation, and with 'both' the other split."""
    if not data.has_labels:
        return []
    own = summary.get("metrics") or evaluate(run, data=data)
    rows = [
        {
            "label": "the run's evaluation",
            **own,
            "protocol": protocol_label(
                run.config.data.protocol, run.default_split, run.config.data.all_splits
            ),
            "split": run.default_split,
        }
    ]
    if protocols == "both":
        other = "train" if run.config.data.protocol == "train-test" else "test"
        with contextlib.suppress(DeepclustError):  # a single-split dataset: nothing more
            rows.append({"label": "the other split", **evaluate(run, other)})
    return rows


def _embedding(
    run: LoadedRun, data: ImageSet, method: str, max_points: int
) -> tuple[np.ndarray, torch.Tensor]:
    """(2-D points [M, 2], their image indices [M]) of at most max_points images."""
    from deepclust.evaluation import selection as sel

    index = sel.subsample_index(len(data), max_points)
    index = torch.arange(len(data)) if index is None else index
    # a frozen run's cache holds the whole split's features (keyed by its images): index them;
    # a trained encoder runs on the sampled images only
    feats = run.features(data)[index] if run.frozen else run.features(data.subset(index))
    return _embed(feats.numpy().astype(np.float64), method), index


def _self_label_fact(run: LoadedRun, records: list[dict[str, Any]]) -> str | None:
    """The self-labelling stage as the run's metrics.jsonl `records` hold it, or None."""
    stages = [e for e in records if e.get("event") == "self_label"]
    if not stages:
        return None
    stage, epochs = stages[-1], run.config.self_label.epochs
    if stage.get("undone"):
        return f"{epochs} epochs, undone (it left {stage['clusters_after']} clusters in use)"
    return f"{epochs} epochs, {stage['confident_share']:.0%} of images confident at the end"


def _run_info(
    run: LoadedRun, data: ImageSet, summary: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """The report's header table (records: the run's metrics.jsonl)."""
    n_fit = summary.get("n_fit")
    return {
        "run_dir": str(run.run_dir),
        "method": run.config.method,
        "dataset": run.config.dataset,
        "data_dir": run.config.data.data_dir,
        "protocol": protocol_label(
            run.config.data.protocol, run.default_split, run.config.data.all_splits
        ),
        "fit_split": summary.get("fit_split"),
        "eval_split": summary.get("eval_split", data.name),
        "encoder": run.config.encoder.name,
        "epochs": summary.get("epochs", run.config.train.epochs),
        "seed": run.config.train.seed,
        "num_clusters": run.meta["num_clusters"],
        "n_images": f"{n_fit:,} / {len(data):,}"
        if isinstance(n_fit, int)
        else f"? / {len(data):,}",
        "device": summary.get("device", run.meta.get("device")),
        "self_label": _self_label_fact(run, records),
        "wall_time": f"{summary['wall_time_s']:.1f} s" if "wall_time_s" in summary else None,
        "torch": summary.get("torch"),
    }


def report(
    run_dir: str | Path,
    out: str | Path | None = None,
    device: str = "auto",
    embedding: str = "pca",
    per_cluster: int = 12,
    max_points: int = 2000,
    protocols: str = "run",
    data_dir: str | None = None,
    tell: Callable[[str], None] | None = None,
) -> Path:
    """Write the run's self-contained HTML report (default RUN_DIR/report.html); returns its path.

    embedding: 'pca' or 'tsne' (scikit-learn, on at most max_points images). per_cluster: the
    most typical photos shown open per cluster (every other photo is in a fold below them).
    protocols: 'run' (the run's own evaluation) or 'both' (also the other split, see
    evaluate_protocols). tell: given the folder the images are read from, and what no longer
    matches the stored predictions.
    """
    from deepclust.choose_k import read_estimate
    from deepclust.evaluation import report as rep

    if embedding not in ("pca", "tsne"):
        raise ConfigError(f"--embedding must be pca or tsne; got '{embedding}'.")
    if per_cluster < 0:
        raise ConfigError(f"--per-cluster must be 0 or more; got {per_cluster}.")
    run_dir = Path(run_dir)
    tell = tell or (lambda _line: None)
    run = load_run(run_dir, device, data_dir)
    summary = read_summary(run_dir)
    tell(f"reading the run's images from {_photo_folder(run, summary, data_dir)}")
    data = run.load_split()
    k = run.meta["num_clusters"]
    stored, mismatch = _predictions(run, data, tell)
    rows = _metric_rows(run, data, summary, protocols)
    points, index = _embedding(run, data, embedding, max_points)
    records = read_jsonl(run_dir / "metrics.jsonl")
    page = rep.render_html(
        rep.ReportData(
            info=_run_info(run, data, summary, records),
            metric_rows=rows,
            images=data.images,
            clusters=stored[0],
            confidence=stored[1],
            num_clusters=k,
            labels=data.labels.numpy() if data.has_labels else None,
            class_names=list(data.class_names or run.meta.get("class_names", [])),
            cluster_names=read_cluster_names(run_dir, k),
            cluster_concepts=concept_lines(read_run_json(run_dir / "cluster_concepts.json"), k),
            embedding=points,
            embedding_index=index.numpy(),
            embedding_method="t-SNE" if embedding == "tsne" else "PCA",
            train_records=[r for r in records if r.get("event") == "train"],
            eval_records=[r for r in records if r.get("event") == "eval"],
            shift=read_run_json(run_dir / "shift.json"),
            per_cluster=per_cluster,
            warnings=list(summary.get("warnings", [])) + ([mismatch] if mismatch else []),
            skipped=summary.get("skipped_images"),
            k_estimate=read_estimate(run_dir),
            agreement=stored[2],
            quality=summary.get("quality") if stored[2] is not None else None,
            paths=list(data.paths) if data.paths else None,
        )
    )
    target = Path(out) if out is not None else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, page)  # a kill never leaves half a page
    return target


def _embed(features: np.ndarray, method: str) -> np.ndarray:
    """[M, D] -> [M, 2]: PCA, or t-SNE on the first 50 principal components."""
    from sklearn.decomposition import PCA

    if len(features) < 3:
        return np.zeros((len(features), 2))
    dims = min(50 if method == "tsne" else 2, features.shape[1], len(features))
    reduced = PCA(n_components=dims, random_state=0).fit_transform(features)
    if method == "pca":
        return reduced if reduced.shape[1] == 2 else np.pad(reduced, ((0, 0), (0, 1)))
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(reduced)


def concept_lines(concepts: Any, k: int) -> dict[int, str]:
    """{cluster: "mammal 88% · sorrel 28%, fox squirrel 12%"} from cluster_concepts.json (the
    naming concept's share, then the top ImageNet classes'); {} when absent or not for K clusters."""
    rows = concepts.get("clusters") if isinstance(concepts, dict) else None
    if not isinstance(rows, list) or len(rows) != k:
        return {}
    out = {}
    for c, row in enumerate(rows):
        if not isinstance(row, dict):
            return {}
        concept = row.get("concept") or {}
        classes = ", ".join(
            f"{x.get('name')} {x.get('share', 0):.0%}"
            for x in row.get("classes") or []
            if isinstance(x, dict)
        )
        head = f"{concept.get('name')} {concept.get('share', 0):.0%} · " if concept else ""
        out[c] = head + classes
    return out
