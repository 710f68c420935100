"""IMC-SwAV's BatchNorm statistics at evaluation: as trained (28/18 px crops) vs recalibrated.

    flock /work/bench/cpu.lock python benchmarks/bn_recalibration.py \
        --data-dir ../shared/datasets/cifar10-jpeg

Trains one short IMC-SwAV run (configs/imc-swav/cpu.yaml, shortened by --epochs and
--steps), then scores the test split four ways from the same weights: the running
statistics from training; recalibrated on N clean training images at 32 px for each
--images N (engine/recalibration.py, what params.bn_recalibration_images does); and, for
reference only, re-estimated on the test images themselves (the authors' quirk, which
deepclust does not offer). Writes benchmarks/results/bn_recalibration_<name>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from deepclust import api
from deepclust.config import parse_overrides
from deepclust.engine.context import FitContext
from deepclust.engine.machine import load_average
from deepclust.engine.recalibration import recalibrate_batchnorm

RESULTS = Path(__file__).parent / "results"


def scores(run: api.LoadedRun, test) -> dict[str, float]:
    r = api.evaluate(run, "test", data=test)
    return {k: round(float(r[k]), 4) for k in ("acc", "nmi", "ari")}


def recalibrated(run: api.LoadedRun, state: dict, images, n: int, seed: int) -> None:
    """Load the trained weights, then re-estimate BatchNorm on n of `images`."""
    run.method.load_state_dict(state)
    ctx = FitContext(images, run.device, seed, 0, run.eval_transform, 512)
    recalibrate_batchnorm(run.method, run.method.predict_proba, ctx, n)
    run.method.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=25, help="steps per epoch (batch 256)")
    ap.add_argument("--images", type=int, nargs="+", default=[2560, 10240])
    ap.add_argument("--name", default="cpu_cifar10")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    overrides = [
        ("data.data_dir", args.data_dir),
        ("train.epochs", args.epochs),
        ("train.max_steps_per_epoch", args.steps),
        ("train.eval_every", 0),
        ("train.progress", False),
        *parse_overrides(args.set),
    ]
    cfg = api.make_config("imc-swav", "imagefolder", "cpu", overrides)
    run_dir = Path("runs") / f"bench-bn-recalibration-{args.name}"
    load_start = load_average()
    t0 = time.time()
    api.train(cfg, out=run_dir)
    train_s = time.time() - t0
    run = api.load_run(run_dir)
    test, train = run.load_split("test"), run.load_split("train")
    trained = copy.deepcopy(run.method.state_dict())
    rows = [
        {"statistics": "as trained (running averages over training crops)", **scores(run, test)}
    ]
    for n in args.images:
        recalibrated(run, trained, train, n, cfg.train.seed)
        rows.append(
            {"statistics": f"recalibrated on {n} training images at 32 px", **scores(run, test)}
        )
    recalibrated(run, trained, test, len(test), cfg.train.seed)
    rows.append(
        {
            "statistics": "re-estimated on the test images (authors' quirk; reference only)",
            **scores(run, test),
        }
    )
    result = {
        "what": "IMC-SwAV test-split scores from one set of weights, BatchNorm statistics four ways",
        "dataset": "CIFAR-10 (JPEG copy)",
        "protocol": "train->test",
        "encoder": cfg.encoder.name,
        "config": "imc-swav/cpu.yaml with " + ", ".join(f"{k}={v}" for k, v in overrides[1:]),
        "steps": args.epochs * args.steps,
        "batch_size": cfg.train.batch_size,
        "grouped_passes": run.method.params.grouped_passes,
        "seeds": 1,
        "seed": cfg.train.seed,
        "device": f"cpu, {torch.get_num_threads()} threads",
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "train_time_s": round(train_s, 1),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bn_recalibration_{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
