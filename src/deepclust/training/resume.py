"""What a resumed run must share with its checkpoint, and the check of the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepclust.config import RunConfig
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.distributed import DistInfo, barrier
from deepclust.engine.fingerprint import check_resume_epochs
from deepclust.errors import CheckpointError

# Keys that may change when a run is resumed; anything else must match the checkpoint.
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.device",
    "train.progress",
    "train.eval_batch_size",
    "data.num_workers",
    "data.augment_on",
    "data.data_dir",
    "train.channels_last",
    "train.compile",
    "train.cpu_threads",
)


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config trees."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "params":
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}")
    return diffs


def prepare_run_dir(
    run_dir: Path, cfg: RunConfig, resume: bool, dist: DistInfo
) -> dict[str, Any] | None:
    """Check the run folder; on resume return the checkpoint to continue from."""
    has_ckpt = (run_dir / ckpt.LAST).exists() or (run_dir / ckpt.PREVIOUS).exists()
    if not resume:
        if has_ckpt:
            raise CheckpointError(
                f"'{run_dir}' already holds a run. Pass --resume to continue it, or choose another --out."
            )
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        barrier()
        return None
    if not has_ckpt:
        raise CheckpointError(f"--resume: no checkpoint in '{run_dir}' to continue from.")
    state = ckpt.load_latest(run_dir)
    if state["method"] != cfg.method:
        raise CheckpointError(
            f"--resume: '{run_dir}' was trained with method '{state['method']}', not '{cfg.method}'. "
            "Resume it with its own method, or start a new run with another --out."
        )
    diffs = [
        d for d in config_differences(state["config"], cfg.to_dict()) if d not in RESUMABLE_CHANGES
    ]
    if diffs:
        raise CheckpointError(
            f"--resume: the config differs from the run's in {', '.join(diffs)}. Only "
            f"{', '.join(RESUMABLE_CHANGES)} may change on resume; start a new run for the rest."
        )
    check_resume_epochs(state, cfg)
    return state
