"""`deepclust recut` against a fresh `cluster --k N`, and the calibration of what a photo shows.

    python benchmarks/recut.py --photos /work/shared/datasets/cifar10-jpeg/test --ks 8,9,11,12

1. `deepclust cluster PHOTOS --k K0` (the default recipe; skipped when --run names a
   finished one), then for every N in --ks: `deepclust recut RUN --k N`, timed as a whole
   process (start-up, loading the run, the cut, predictions, summary), without and with
   its report, and a fresh
   `deepclust cluster PHOTOS --k N` on the same cached features (timed likewise).
2. ACC / NMI of each against the photos' parent folder names (labels only score; the runs
   are made without --labels-from-folders).
3. Expected calibration error (15 bins) of the two per-photo numbers in predictions.csv, the
   heads' confidence and the neighbour agreement, against "the photo's class is its cluster's
   majority class", for the K0 run and every recut / fresh run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def deepclust(*args: str) -> float:
    """Run the CLI as a user would; seconds of wall time."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "deepclust", "--no-progress", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


def scores(run: Path) -> dict:
    from deepclust.evaluation.metrics import expected_calibration_error, majority_correct, score

    with open(run / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = sorted({Path(r["path"]).parent.name for r in rows})
    labels = np.array([names.index(Path(r["path"]).parent.name) for r in rows])
    clusters = np.array([int(r["cluster"]) for r in rows])
    s = score(labels, clusters)
    right = majority_correct(labels, clusters)
    out = {"acc": round(s.acc, 4), "nmi": round(s.nmi, 4), "k": int(clusters.max()) + 1}
    for column in ("confidence", "agreement"):
        values = np.array([float(r[column]) for r in rows])
        out[f"ece_{column}"] = round(expected_calibration_error(values, right), 4)
        out[f"mean_{column}"] = round(float(values.mean()), 4)
    out["share_right"] = round(float(right.mean()), 4)
    quality = json.loads((run / "summary.json").read_text()).get("quality", {})
    out["quality"] = quality.get("score")
    return out


def main() -> None:
    from deepclust.engine.machine import cpu_model, load_average

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default="/work/shared/datasets/cifar10-jpeg/test")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ks", default="8,9,11,12")
    ap.add_argument("--run", help="a finished cluster run of PHOTOS at --k (else made)")
    ap.add_argument("--work", default="/tmp/deepclust-recut-bench")
    ap.add_argument("--fresh", action="store_true", help="also run a fresh cluster per N")
    ap.add_argument("--name", default="recut_cifar10_test")
    args = ap.parse_args()
    work = Path(args.work)
    base = Path(args.run) if args.run else work / f"k{args.k}"
    if not args.run:
        deepclust("cluster", args.photos, "--k", str(args.k), "--out", str(base), "--no-report")
    out = {
        "command": "python benchmarks/recut.py " + " ".join(sys.argv[1:]),
        "photos": args.photos,
        "recipe": "deepclust cluster defaults (IMC-SwAV heads + self-labelling on frozen "
        "EfficientNet-Lite2 @ 224 px features), seed 0; train+test, labels only to score",
        "device": f"cpu ({cpu_model()}, {os.cpu_count()} cores)",
        "base": {"k": args.k, **scores(base)},
        "recut": [],
    }
    for n in map(int, args.ks.split(",")):
        load = load_average()
        bare = deepclust(
            "recut", str(base), "--k", str(n), "--out", str(work / f"bare{n}"), "--no-report"
        )
        seconds = deepclust("recut", str(base), "--k", str(n), "--out", str(work / f"recut{n}"))
        row = {"k": n, "recut_s": round(seconds, 1), "recut_no_report_s": round(bare, 1),
               "loadavg_before": load, "recut": scores(work / f"recut{n}")}  # fmt: skip
        if args.fresh:
            fresh = work / f"fresh{n}"
            row["fresh_s"] = round(
                deepclust(
                    "cluster", args.photos, "--k", str(n), "--out", str(fresh), "--no-report"
                ),
                1,
            )
            row["fresh"] = scores(fresh)
        out["recut"].append(row)
        print(json.dumps(row), flush=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
