"""What may happen to a run folder: who writes it, what a new run may replace, what a resume redoes.

A training holds the folder's lock (engine/runlock.py) from start to exit, sweeps the
temporary files a killed save left behind, refuses a non-empty folder that is not a
deepclust run, and, when its start fails, removes the folder it created. On resume the
lines metrics.jsonl gained after the checkpoint are dropped, since those epochs run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from deepclust.config import RunConfig, from_dict
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.files import sweep_temp_files, temp_file_of, write_atomic
from deepclust.engine.runlock import LOCK, RunLock
from deepclust.errors import CheckpointError, ConfigError, RunFileError, RunFolderError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
# Every file `deepclust train` writes into a run folder (other commands never overwrite these).
RUN_FILES = (
    CONFIG,
    METRICS,
    ckpt.LAST,
    ckpt.PREVIOUS,
    "predictions.csv",
    "summary.json",
    "cluster_names.json",
    "cluster_concepts.json",
    LOCK,
)
# Every file a deepclust command writes into a run folder: only their temporary files are swept.
WRITTEN = (*RUN_FILES, "report.html", "k_estimate.json", "shift.json", "seeds.json")


def read_run_json(path: Path) -> Any:
    """A JSON file of a run folder, parsed (None when absent); RunFileError when it is not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RunFileError(
            f"'{path}' is not valid JSON ({e}): the file was altered or damaged. "
            "Restore it, or train the run again."
        ) from None


def wrong_field(path: Path | str, field: str, value: Any, want: str) -> RunFileError:
    """The one line for a field of a run file that is not what deepclust writes there."""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return RunFileError(
        f"'{path}': {field} is {shown}, not {want}: the file was altered or damaged. "
        "Restore it, or train the run again."
    )


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / ckpt.LAST).exists() or (run_dir / ckpt.PREVIOUS).exists()


def is_main_process() -> bool:
    """Rank 0 under torchrun (read from its environment), or a single process."""
    return os.environ.get("RANK", "0") == "0"


class RunFolder:
    """`with RunFolder(run_dir, resume):` the whole of a training, on the main process.

    On entry: the folder exists (created if needed), is locked, holds no stale temporary
    file and, for a new run, nothing but an unstarted run's files. On exit the lock is
    released; after a failed start (no checkpoint yet) in a folder it created, the folder
    is removed again.
    """

    def __init__(self, run_dir: str | Path, resume: bool) -> None:
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.enabled = is_main_process()
        self.created = False
        self.lock = RunLock(self.run_dir, "train --resume" if resume else "train")

    def __enter__(self) -> RunFolder:
        if not self.enabled:
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunFolderError(f"--out '{self.run_dir}' is a file, not a folder: name a folder.")
        if not self.resume:
            check_new_run_dir(self.run_dir)
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except BaseException:
            self._remove_if_created()
            raise
        sweep_temp_files(self.run_dir, WRITTEN)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.enabled:
            return
        self.lock.release()
        if exc is not None:
            self._remove_if_created()

    def _remove_if_created(self) -> None:
        """Undo a failed start: the folder this run created, while it holds no checkpoint."""
        if not self.created or has_checkpoint(self.run_dir):
            return
        for name in (CONFIG, METRICS):
            with contextlib.suppress(OSError):
                (self.run_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.run_dir.rmdir()  # only if nothing else is in it


def _written_by_deepclust(path: Path) -> bool:
    """config.yaml or metrics.jsonl exactly as a run that had not yet checkpointed left them."""
    try:
        text = path.read_text()
        if path.name == METRICS:
            lines = [line for line in text.splitlines() if line.strip()]
            with contextlib.suppress(ValueError):  # a last line cut short by a kill
                if lines:
                    json.loads(lines[-1])
                else:
                    return True
                lines.append("{}")  # parsed: check it like the others
            records = [json.loads(line) for line in lines[:-1]]
            return all(isinstance(r, dict) and "event" in r for r in records)
        tree = yaml.safe_load(text)
        written = yaml.safe_dump(from_dict(RunConfig, tree).to_dict(), sort_keys=False)
        return text == written  # a user's file has comments, its own order or partial keys
    except (OSError, ValueError, yaml.YAMLError, ConfigError, TypeError):
        return False


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a non-empty folder for a new run unless it is a deepclust run folder.

    A folder with a checkpoint is left to the trainer (which asks for --resume); one with
    only config.yaml and metrics.jsonl as deepclust writes them is a run that never
    checkpointed and may be started again.
    """
    if not run_dir.is_dir() or has_checkpoint(run_dir):
        return
    foreign = sorted(
        p.name
        for p in run_dir.iterdir()
        if p.name != LOCK
        and temp_file_of(p.name) not in WRITTEN
        and not (p.name in (CONFIG, METRICS) and _written_by_deepclust(p))
    )
    if foreign:
        shown = ", ".join(foreign[:8]) + (
            f" and {len(foreign) - 8} more" if len(foreign) > 8 else ""
        )
        raise RunFolderError(
            f"--out '{run_dir}' is not empty and not a deepclust run (it holds {shown}); "
            "nothing was changed. Choose a new or empty folder for --out."
        )


def stored_config(run_dir: Path) -> dict[str, Any]:
    """The run's config tree: config.yaml, or the checkpoint's when that file is broken."""
    path = run_dir / CONFIG
    try:
        tree = yaml.safe_load(path.read_text())
        from_dict(RunConfig, tree)
        return tree
    except FileNotFoundError:
        if not has_checkpoint(run_dir):
            raise CheckpointError(
                f"--resume: '{run_dir}' is not a deepclust run folder (no config.yaml)."
            ) from None
        problem = "is missing"
    except (OSError, yaml.YAMLError, ConfigError, TypeError, AttributeError) as e:
        if not has_checkpoint(run_dir):
            raise CheckpointError(
                f"--resume: '{path}' is unreadable ({e}) and there is no checkpoint to continue from."
            ) from e
        problem = f"is unreadable ({type(e).__name__})"
    warnings.warn(f"'{path}' {problem}: resuming with the checkpoint's config.", stacklevel=3)
    return ckpt.load_latest(run_dir)["config"]


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    """config.yaml, written atomically (a kill never leaves half of it)."""
    write_atomic(run_dir / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def log_size(path: Path) -> int:
    """Bytes of metrics.jsonl now (stored in each checkpoint, to cut the log back on resume)."""
    return path.stat().st_size if path.exists() else 0


def truncate_log(path: Path, state: dict[str, Any]) -> None:
    """Drop what metrics.jsonl gained after the checkpoint `state` was saved (atomically).

    Checkpoints hold the log's size when saved; older ones hold only their epoch, and then
    every record of a later epoch is dropped.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    if "log_bytes" in state:
        kept = data[: state["log_bytes"]]
    else:
        lines = data.splitlines(keepends=True)
        kept = b"".join(line for line in lines if _epoch_of(line) <= state["epoch"])
    if kept == data:
        return
    write_atomic(path, kept)


def _epoch_of(line: bytes) -> float:
    try:
        return float(json.loads(line).get("epoch", 0))
    except (ValueError, AttributeError, TypeError):
        return float("inf")  # a line cut short by the kill
