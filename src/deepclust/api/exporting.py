"""export: a run's clusters as folders of links to (or copies of) its photos."""

from __future__ import annotations

from pathlib import Path


def export(run_dir: str | Path, copy: bool = False, redo: bool = False) -> Path:
    """Write (or complete) RUN_DIR/clusters/<id>/ from the run's predictions.csv; returns it.

    An interrupted export is completed (entries already right are kept); redo=True removes
    the export first, e.g. to switch between links and copies cleanly.
    """
    from deepclust.photo_folder import export_clusters

    return export_clusters(run_dir, copy=copy, redo=redo)
