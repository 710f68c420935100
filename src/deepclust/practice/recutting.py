"""`deepclust recut RUN --k N`: the same run at another K in seconds, in a new run folder.

Nothing is extracted or trained again. The run's trained model stays as it is; its clusters
are merged (the pair whose neighbour links cross most, first) or split (the cluster whose
2-means halves gain most modularity on the k-NN graph) until N remain (cluster/cut.py).
The new folder holds the model's checkpoint and config, the cut (cut.json) that every later
prediction applies, and the files a run writes: predictions.csv, summary.json with the
label-free quality, metrics.jsonl, k_estimate.json, the new clusters' names (from the
encoder's ImageNet classifier on the same features, cluster/naming.py), the report and, on
request, the export.
The old folder is never changed.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from deepclust.errors import ConfigError, RunFolderError

COPIED = ("config.yaml", "metrics.jsonl", "k_estimate.json")  # names belong to the old clusters


def default_recut_out(run_dir: Path, k: int) -> Path:
    return run_dir.parent / f"{run_dir.name}-k{k}"


def recut_run(
    run_dir: str | Path,
    k: int,
    out: str | Path | None = None,
    *,
    device: str = "auto",
    report: bool = True,
    export: bool = False,
    copy: bool = False,
) -> Any:
    """Write the run folder `out` (default RUN-k<N>): RUN's photos in k clusters.
    Returns a practice.folder.ClusterResult."""
    import torch

    from deepclust.api.runs import load_run
    from deepclust.cluster.cut import recut
    from deepclust.cluster.naming import concepts_of
    from deepclust.evaluation.quality import quality_of
    from deepclust.practice.finish import finish_run

    run_dir = Path(run_dir)
    t0 = time.time()
    run = load_run(run_dir, device)
    if not run.frozen:
        raise ConfigError(
            f"'{run_dir}' trained its encoder: recut needs a run on a frozen encoder (as "
            "`deepclust cluster` makes). Train again with --k instead."
        )
    _check_k(k, run.meta["num_clusters"])
    target = Path(out) if out is not None else default_recut_out(run_dir, k)
    _check_target(target)
    data = run.load_split()
    probs = run.predict_proba(data, progress=False).numpy()
    feats = run.features(data, progress=False).numpy()
    quality_before, neighbours = quality_of(feats, probs.argmax(1), probs.shape[1])
    cut, new_probs = recut(probs, feats, neighbours, k, seed=run.config.train.seed)
    clusters = torch.from_numpy(new_probs.argmax(1))
    concepts = concepts_of(run.method.encoder, torch.from_numpy(feats), clusters, k)
    steps = _composed(run, cut)
    _write_folder(run_dir, target, steps)
    info = {
        "from_run": str(run_dir.resolve()),
        "from_k": int(probs.shape[1]),
        "to_k": k,
        "steps": len(cut.steps),
        "quality_before": round(quality_before.score, 4),
        "seconds": round(time.time() - t0, 2),
    }
    return finish_run(
        target, data, new_probs, neighbours, info, concepts, device, report, export, copy
    )


def _check_k(k: int, current: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"--k must be a whole number of clusters, at least 2; got {k!r}.")
    if k == current:
        raise ConfigError(f"the run already has {k} clusters: give another --k.")


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RunFolderError(
            f"--out '{target}' exists and is not empty: recut writes a new run folder; "
            "name another --out."
        )


def _composed(run: Any, cut: Any) -> Any:
    """The cut from the trained model's clusters: a recut of a recut adds its steps to the old."""
    from deepclust.cluster.cut import Cut

    if run.cut is None:
        return cut
    return Cut(run.cut.from_k, [*run.cut.steps, *cut.steps])


def _write_folder(run_dir: Path, target: Path, cut: Any) -> None:
    """The new folder: the model (checkpoint and config), the run's records, cut.json."""
    from deepclust.api.runs import CUT_FILE
    from deepclust.engine import checkpoint as ckpt
    from deepclust.engine.files import write_atomic

    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run_dir / ckpt.LAST, target / ckpt.LAST)
    for name in COPIED:
        if (run_dir / name).is_file() and not (run_dir / name).is_symlink():
            shutil.copy2(run_dir / name, target / name)
    write_atomic(target / CUT_FILE, json.dumps(cut.as_dict(), indent=1))
