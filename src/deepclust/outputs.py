"""Output files of the commands: never overwrite a file the command did not create.

An `--out` that exists is replaced only when it is what the same command writes (a
predictions CSV, a deepclust HTML report, a selection JSON) or with `--force`. Refused even
with --force, with links resolved: an input, an image file (by its extension, the link's or
its target's), anything inside a run's export folder (RUN/clusters/, links to the photos)
and a run's own files (engine/runfolder.RUN_FILES, in the command's run folders or any
folder with a checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from deepclust.data.readers import IMAGE_EXTENSIONS
from deepclust.engine.runfolder import RUN_FILES, has_checkpoint
from deepclust.errors import OutputError

PREDICT_COLUMNS = {"path", "cluster", "confidence"}  # what every predictions CSV holds


def _head(path: Path, size: int = 4096) -> str:
    with open(path, "rb") as fh:
        return fh.read(size).decode("utf-8", errors="replace")


def _is_predictions(path: Path) -> bool:
    """A CSV whose header names the predictions columns (in any order, with others)."""
    header = _head(path).splitlines()[:1]
    return bool(header) and PREDICT_COLUMNS.issubset(c.strip() for c in header[0].split(","))


def _is_report(path: Path) -> bool:
    head = _head(path)
    return head.startswith("<!DOCTYPE html>") and "<title>deepclust report" in head


def _is_selection(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and {"criterion", "runs", "pick_run_dir"} <= data.keys()


# command -> (what it writes, how to recognise a file it wrote)
KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "predict": ("a predictions CSV", _is_predictions),
    "report": ("a deepclust HTML report", _is_report),
    "select": ("a selection JSON", _is_selection),
}


def check_output(
    out: str | Path,
    command: str,
    inputs: Iterable[str | Path] = (),
    run_dirs: Iterable[str | Path] = (),
    force: bool = False,
) -> None:
    """Raise OutputError unless `command` may write `out` (see the module docstring)."""
    target = Path(out)
    where = target.resolve()
    if any(Path(p).resolve() == where for p in inputs):
        raise OutputError(f"--out '{out}' is one of the inputs: choose another --out.")
    runs = {Path(d).resolve() for d in run_dirs}
    _refuse_photos(out, target, where, runs)
    if target.name in RUN_FILES and (where.parent in runs or has_checkpoint(where.parent)):
        raise OutputError(
            f"--out '{out}' is the run's own {target.name}, which only `deepclust train` "
            "writes: choose another --out."
        )
    if target.is_dir():
        raise OutputError(f"--out '{out}' is a folder: name a file.")
    what, written_by_command = KINDS[command]
    if target.exists() and not force and not written_by_command(target):
        raise OutputError(
            f"--out '{out}' exists and is not {what} written by deepclust {command}: "
            "choose another --out, or pass --force to replace it."
        )


def _export_folder(path: Path, runs: set[Path]) -> Path | None:
    """The run export folder (RUN/clusters) that holds `path`, if any."""
    for parent in path.absolute().parents:
        run = parent.parent.resolve()
        if parent.name == "clusters" and (run in runs or has_checkpoint(run)):
            return parent
    return None


def _refuse_photos(out: str | Path, target: Path, where: Path, runs: set[Path]) -> None:
    """An image file, or a file in a run's export folder, is never an --out (even with --force)."""
    via = f" (a link to '{where}')" if target.is_symlink() else ""
    if any(p.name.lower().endswith(IMAGE_EXTENSIONS) for p in (target, where)):
        raise OutputError(
            f"--out '{out}'{via} is an image file, and deepclust never writes over an image, "
            "even with --force: choose another --out."
        )
    export = _export_folder(target, runs) or _export_folder(where, runs)
    if export is not None:
        raise OutputError(
            f"--out '{out}'{via} is inside the export folder '{export}', which holds the photos "
            "(or links to them), and is refused even with --force: choose another --out."
        )


def check_predict_outputs(
    out: str | Path,
    features_file: Path | None,
    inputs: Iterable[str | Path],
    run_dir: str | Path,
    force: bool = False,
) -> None:
    """predict's CSV, and its features file, which is ours when the CSV next to it is."""
    check_output(out, "predict", inputs, [run_dir], force)
    if features_file is not None:
        ours = Path(out).is_file() and _is_predictions(Path(out))
        check_output(features_file, "predict", inputs, [run_dir], force or ours)
