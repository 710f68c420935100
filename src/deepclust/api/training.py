"""train one run, or one run per seed with their spread and a label-free pick."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepclust.api.runs import default_run_dir, protocol_label, read_summary
from deepclust.api.selection import select
from deepclust.config import RunConfig, from_dict
from deepclust.engine import checkpoint as ckpt
from deepclust.engine.files import write_atomic
from deepclust.errors import ConfigError
from deepclust.training.records import RunResult
from deepclust.training.trainer import Trainer


def train(cfg: RunConfig, out: str | Path | None = None, resume: bool = False) -> RunResult:
    """Train (or resume) a run; returns its folder and summary (metrics on the evaluation split)."""
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    return Trainer(cfg, run_dir, resume=resume).fit()


@dataclass
class SeedsResult:
    run_dir: Path
    runs: list[RunResult]
    summary: dict[str, Any]  # what seeds.json holds


def _with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    from deepclust.config import set_dotted

    data = cfg.to_dict()
    set_dotted(data, "train.seed", seed)
    return from_dict(RunConfig, data)


def train_seeds(
    cfg: RunConfig,
    seeds: int,
    out: str | Path | None = None,
    resume: bool = False,
    criterion: str | None = None,
) -> SeedsResult:
    """Train seeds cfg.train.seed .. +seeds-1 into out/seed-<s>/ and write out/seeds.json.

    seeds.json: per-run ACC/NMI/ARI, mean, sample std, best (by ACC) and per-metric max
    (deepclust.evaluation.seeds), and the run a label-free criterion picks with its gap to
    the best (deepclust.evaluation.selection; also written in full to out/selection.json).
    With resume, finished seeds are kept and unfinished ones continue from their checkpoint.
    """
    from deepclust.evaluation import seeds as seeds_mod

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds}.")
    root = Path(out) if out is not None else default_run_dir(cfg)
    first = cfg.train.seed
    results = []
    for seed in range(first, first + seeds):
        run_cfg = _with_seed(cfg, seed)
        run_dir = root / f"seed-{seed}"
        done = read_summary(run_dir) if resume else {}
        if done and done.get("epochs") == run_cfg.train.epochs:
            results.append(RunResult(run_dir, done))
            continue
        has_ckpt = (run_dir / ckpt.LAST).exists() or (run_dir / ckpt.PREVIOUS).exists()
        results.append(Trainer(run_cfg, run_dir, resume=resume and has_ckpt).fit())
    rows = [
        {
            "seed": r.summary["seed"],
            "run_dir": str(r.run_dir),
            **{k: (r.summary.get("metrics") or {}).get(k) for k in ("acc", "nmi", "ari")},
        }
        for r in results
    ]
    s0 = results[0].summary
    summary: dict[str, Any] = {
        "method": s0["method"],
        "dataset": s0["dataset"],
        "protocol": protocol_label(
            s0["protocol"],
            "test" if s0["protocol"] == "train-test" else "all",
            cfg.data.all_splits,
        ),
        "eval_split": s0["eval_split"],
        "encoder": s0["encoder"],
        "epochs": s0["epochs"],
        "device": s0["device"],
        "seeds": [r["seed"] for r in rows],
        "runs": rows,
        **seeds_mod.aggregate(rows),
        "std_note": "sample standard deviation (n - 1)",
    }
    if seeds >= 2:
        sel = select([r.run_dir for r in results], criterion=criterion, out=root / "selection.json")
        pick = next(r for r in rows if r["run_dir"] == sel["pick_run_dir"])
        summary["label_free_pick"] = {
            "criterion": sel["criterion"],
            "seed": pick["seed"],
            **{k: pick[k] for k in ("acc", "nmi", "ari")},
        }
        if "best" in summary and pick["acc"] is not None:
            summary["label_free_pick"]["gap_acc"] = summary["best"]["acc"] - pick["acc"]
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "seeds.json", json.dumps(summary, indent=2))
    return SeedsResult(root, results, summary)
