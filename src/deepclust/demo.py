"""`deepclust demo`: cluster scikit-learn's digits on the CPU, with nothing to download.

Runs the k-means baseline and IMC-SwAV (its heads on frozen pixel features with
nearest-neighbour views: configs/imc-swav/digits.yaml) and prints ACC / NMI / ARI for both
(protocol train+test: digits has a single split). Timed by benchmarks/demo.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from deepclust import api
from deepclust.engine.runlock import RunLock

# (label, method, overrides). The first row is the baseline every table is read against.
DEMO_RUNS: list[tuple[str, str, dict[str, object]]] = [
    ("k-means on pixels (baseline)", "kmeans", {}),
    ("IMC-SwAV heads, 20-NN pixel views", "imc-swav", {}),
]


def run_demo(out: Path = Path("runs/demo"), progress: bool = True) -> list[dict[str, object]]:
    rows = []
    for label, method, overrides in DEMO_RUNS:
        run_dir = out / method
        if (run_dir / "config.yaml").exists():  # a previous demo's run: start it afresh
            with RunLock(run_dir, "demo"):  # never under a run that is still going
                shutil.rmtree(run_dir)
        cfg = api.make_config(method, "digits", overrides={**overrides, "train.progress": progress})
        t0 = time.time()
        result = api.train(cfg, out=run_dir)
        m = result.summary["metrics"]
        rows.append(
            {"label": label, "run_dir": str(run_dir), "seconds": round(time.time() - t0, 1), **m}
        )
    print(
        "\ndeepclust demo: scikit-learn digits (1,797 images, 10 classes), protocol train+test, CPU"
    )
    print(f"{'method':34s} {'ACC':>7s} {'NMI':>7s} {'ARI':>7s} {'time':>7s}")
    for r in rows:
        print(
            f"{r['label']:34s} {r['acc']:7.4f} {r['nmi']:7.4f} {r['ari']:7.4f} {r['seconds']:6.1f}s"
        )
    print(f"run folders under {out}/ (metrics.jsonl, predictions.csv, summary.json, last.pt)")
    return rows
