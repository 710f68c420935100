"""Would keeping the best of N seeds by the label-free quality score gain anything?

A `--restarts N` for `cluster` was built on this idea and taken out again: it gained on
CIFAR-10 train and nothing on the test splits (docs/results.md). This script keeps the
measurement.

    python benchmarks/frozen_features.py --encoder efficientnet_lite2 --input-size 224 \\
        --self-label-epochs 20 --methods imc-swav --seeds 0,1,2,3,4,5,6,7 --name restarts_cifar10_test
    python benchmarks/restarts.py --name restarts_cifar10_test --runs 'runs/bench-restarts_cifar10_test-*-seed*'

Reads the finished run folders of one recipe on one dataset (many seeds; each holds its
ACC, scored with the labels, and its quality score, computed without them), and for every
N reports the expected ACC of the seed a best-of-N would keep: the mean, over every set
of N seeds among those run, of the ACC of the set's highest-quality seed (and the worst
such pick), beside one seed's mean and the best seed by ACC (an oracle no user has).
Labels only score. JSON in benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def read_runs(pattern: str) -> list[dict]:
    """(seed, acc, quality, seconds) of each finished run folder matching pattern."""
    runs = []
    for folder in sorted(glob.glob(pattern)):
        s = json.loads((Path(folder) / "summary.json").read_text())
        runs.append(
            {
                "seed": s["seed"],
                "acc": s["metrics"]["acc"],
                "quality": s["quality"]["score"],
                "seconds": s["wall_time_s"],
            }
        )
    return runs


def best_of(runs: list[dict], n: int) -> dict[str, float]:
    """Expected and worst ACC of the highest-quality seed among n, over every n-subset."""
    acc = np.array([r["acc"] for r in runs])
    quality = np.array([r["quality"] for r in runs])
    picks = [
        acc[list(c)][np.argmax(quality[list(c)])]
        for c in itertools.combinations(range(len(runs)), n)
    ]
    return {
        "n": n,
        "mean_acc": round(float(np.mean(picks)), 4),
        "worst_acc": round(float(np.min(picks)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--name", required=True)
    ap.add_argument(
        "--runs", required=True, help="glob of the run folders (one recipe, many seeds)"
    )
    ap.add_argument("--dataset", default="", help="what the runs clustered (for the JSON)")
    args = ap.parse_args()
    runs = read_runs(args.runs)
    acc = np.array([r["acc"] for r in runs])
    out = {
        "dataset": args.dataset,
        "runs": runs,
        "seeds": len(runs),
        "single_seed_acc": {
            "mean": round(float(acc.mean()), 4),
            "std": round(float(acc.std(ddof=1)), 4),
        },
        "oracle_best_acc": round(float(acc.max()), 4),
        "corr_quality_acc": round(float(np.corrcoef(acc, [r["quality"] for r in runs])[0, 1]), 3),
        "best_of": [best_of(runs, n) for n in (2, 3, 4)],
        "mean_seconds_per_seed": round(float(np.mean([r["seconds"] for r in runs])), 1),
    }
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
