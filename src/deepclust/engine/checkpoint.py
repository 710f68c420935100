"""Atomic checkpoints that load with weights_only=True (a run folder must not execute code).

`last.pt` is written to a temporary file, flushed to disk and renamed over the old one;
the one it replaces is kept as `previous.pt`, so a file truncated by a crash or a full
disk never costs more than one checkpoint interval.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepclust.engine.files import atomic_file
from deepclust.errors import CheckpointError

LAST = "last.pt"
PREVIOUS = "previous.pt"
FORMAT_VERSION = 1
# What load_run and resume read from a checkpoint, besides "format".
REQUIRED = {"method": str, "config": dict, "meta": dict, "epoch": int, "model": dict, "rng": dict}
META = ("num_clusters", "image_size", "num_samples")


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _save_error(e: BaseException, path: Path, state: dict[str, Any]) -> CheckpointError | None:
    """A one-line error for a full or read-only disk; None for anything else."""
    need = _tensor_bytes(state) * 1.05 + 1e5
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    code = getattr(e, "errno", None)
    if code == errno.EROFS:
        return CheckpointError(
            f"cannot write checkpoint '{path}': the file system is read-only. "
            "Use an --out on a writable disk."
        )
    # torch's zip writer reports a full disk as RuntimeError "... unexpected pos ..."
    full = code in (errno.ENOSPC, errno.EDQUOT) or (
        isinstance(e, RuntimeError) and free is not None and free < need
    )
    if not full:
        return None
    have = f"{free / 1e6:.1f} MB free" if free is not None else "free space unknown"
    return CheckpointError(
        f"cannot write checkpoint '{path}': no space left on the device ({have}; a checkpoint "
        f"of this run needs about {need / 1e6:.1f} MB). Free space, then continue with --resume."
    )


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` so that readers see the old file or the new one, never half.

    The temporary file is removed when the write fails; a full or read-only disk raises a
    one-line CheckpointError that says how much space a checkpoint needs. A link at `path`
    is replaced, never written through (engine/files.py).
    """
    path = Path(path)

    def keep_previous() -> None:
        if path.exists() or path.is_symlink():
            os.replace(path, path.with_name(PREVIOUS))

    try:
        with atomic_file(path, keep_previous) as fh:
            torch.save(state, fh)
    except (OSError, RuntimeError) as e:
        error = _save_error(e, path, state)
        if error is not None:
            raise error from e
        raise


def _refused(path: Path, e: pickle.UnpicklingError) -> CheckpointError:
    """One line for a pickle that weights_only loading refused (never torch's advice)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    what = f" (it names {found[1]})" if found else ""
    return CheckpointError(
        f"checkpoint '{path}' holds objects other than tensors and plain values{what} and was "
        "refused (deepclust loads checkpoints with weights_only=True): it was not written by deepclust or was tampered with, and a run folder must "
        "not run code. Use a run folder you trust, or train again."
    )


def _wrong_fields(state: dict[str, Any]) -> list[str]:
    """The REQUIRED and META fields of a loaded checkpoint that are missing or invalid."""
    wrong = [k for k, kind in REQUIRED.items() if not isinstance(state.get(k), kind)]
    meta = state.get("meta")
    if not isinstance(meta, dict):
        return wrong
    wrong += [f"meta.{k}" for k in META if not isinstance(meta.get(k), int) or meta[k] < 1]
    model = state.get("model")
    if "meta.num_clusters" not in wrong and isinstance(model, dict):
        # K sizes a head or the centroids: a K larger than every saved dimension would be
        # allocated for nothing (a tampered 10^9 asked for terabytes)
        shapes = [v.shape for v in model.values() if isinstance(v, torch.Tensor)]
        largest = max((d for shape in shapes for d in shape), default=0)
        if meta["num_clusters"] > largest:
            wrong.append("meta.num_clusters")
    return wrong


def _load(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"checkpoint '{path}' is truncated or corrupt ({e}).") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"'{path}' is not a deepclust checkpoint (format {FORMAT_VERSION}).")
    wrong = _wrong_fields(state)
    if wrong:
        raise CheckpointError(
            f"checkpoint '{path}' lacks a valid {', '.join(wrong)}: it was not written by "
            "deepclust or was altered. Use the run's own checkpoint, or train again."
        )
    return state


def load_latest(run_dir: Path) -> dict[str, Any]:
    """Load last.pt, falling back to previous.pt (with a warning) if last.pt is damaged."""
    run_dir = Path(run_dir)
    last, prev = run_dir / LAST, run_dir / PREVIOUS
    if not last.exists() and not prev.exists():
        raise CheckpointError(
            f"no checkpoint in '{run_dir}' (looked for {LAST} and {PREVIOUS}). "
            "Is this a deepclust run folder? Train first with `deepclust train --out DIR`."
        )
    try:
        return _load(last)
    except CheckpointError as first:
        if not prev.exists():
            raise
        import warnings

        warnings.warn(f"{first} Falling back to the previous checkpoint '{prev}'.", stacklevel=2)
        return _load(prev)


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and plain values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(obj: Any) -> Any:
    return [_to_lists(v) for v in obj] if isinstance(obj, tuple | list) else obj


def _to_tuples(obj: Any) -> Any:
    return tuple(_to_tuples(v) for v in obj) if isinstance(obj, list) else obj
