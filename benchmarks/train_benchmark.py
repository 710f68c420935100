"""Train a method on a dataset and record quality, speed and the accuracy-over-time curve as JSON.

    python benchmarks/train_benchmark.py --method imc-swav --config cpu \
        --data-dir ../shared/datasets/cifar10-jpeg --name cpu_cifar10

Writes benchmarks/results/<name>_<method>.json with the protocol, dataset copy, encoder,
epochs, seed, device, wall time, training images/s (every view counted), the final
ACC / NMI / ARI and every evaluation with its elapsed time (time-to-accuracy). The run
folder is kept (runs/bench-...), so a run cut short continues with --resume.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from deepclust import api
from deepclust.config import parse_overrides

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> None:
    """argv: the command-line arguments (default sys.argv[1:]; benchmarks/throughput.py passes its own)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--method", required=True)
    ap.add_argument("--dataset", default="imagefolder")
    ap.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg")
    ap.add_argument(
        "--dataset-copy", default="CIFAR-10 (JPEG copy)", help="how to name the data in the results"
    )
    ap.add_argument("--config", default="cpu", help="packaged config name or YAML path")
    ap.add_argument("--protocol", default="train-test", choices=["train-test", "all"])
    ap.add_argument("--name", default="cpu_cifar10", help="results file prefix")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    run_dir = Path("runs") / f"bench-{args.name}-{args.method}"
    overrides = [
        ("data.data_dir", args.data_dir),
        ("data.protocol", args.protocol),
        *parse_overrides(args.set),
    ]
    if args.resume:
        cfg = api.resume_config(run_dir, overrides=parse_overrides(args.set))
    else:
        cfg = api.make_config(args.method, args.dataset, args.config, overrides)
    t0 = time.time()
    result = api.train(cfg, out=run_dir, resume=args.resume)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    start = records[0]["time"]
    train = [r for r in records if r["event"] == "train"]
    curve = [
        {
            "epoch": r["epoch"],
            "elapsed_s": round(r["time"] - start, 1),
            "acc": r["acc"],
            "nmi": r["nmi"],
            "ari": r["ari"],
        }
        for r in records
        if r["event"] == "eval"
    ]
    s = result.summary
    out = {
        "method": args.method,
        "dataset": args.dataset_copy,
        "protocol": "train->test" if args.protocol == "train-test" else "train+test",
        "fit_split": s["fit_split"],
        "eval_split": s["eval_split"],
        "n_fit": s["n_fit"],
        "n_eval": s["n_eval"],
        "encoder": s["encoder"],
        "epochs": s["epochs"],
        "seeds": 1,
        "seed": s["seed"],
        "config": cfg.to_dict(),
        "device": s["device"],
        "cpu_count": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "wall_time_s": round(time.time() - t0, 1),
        "train_time_s": round(sum(r["seconds"] for r in train), 1),
        "train_images_per_s_all_views": round(
            sum(r["images_per_s"] * r["seconds"] for r in train)
            / max(sum(r["seconds"] for r in train), 1e-9),
            1,
        )
        if train
        else None,
        "final": s["metrics"],
        "time_to_accuracy": curve,
        "command": "python benchmarks/train_benchmark.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v and k not in ("set", "resume")
        ),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}_{args.method}.json"
    path.write_text(json.dumps(out, indent=2))
    print(
        json.dumps(
            {
                k: out[k]
                for k in (
                    "method",
                    "protocol",
                    "encoder",
                    "epochs",
                    "final",
                    "train_images_per_s_all_views",
                    "wall_time_s",
                )
            },
            indent=2,
        )
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
