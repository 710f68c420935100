"""Command-line interface: parses arguments and calls deepclust.api (nothing else lives here)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deepclust import api
from deepclust.config import parse_overrides
from deepclust.errors import DeepclustError


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a method on a dataset and write a run folder")
    p.add_argument("--method", help="clustering method (deepclust list methods)")
    p.add_argument("--dataset", help="dataset name (deepclust list datasets)")
    p.add_argument("--data-dir", help="folder holding the dataset")
    p.add_argument("--encoder", help="backbone (deepclust list encoders)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--clusters", type=int, help="number of clusters K (default: number of classes)")
    p.add_argument(
        "--protocol",
        choices=["train-test", "all"],
        help="train-test: fit on train, evaluate on test; all: fit and evaluate on train+test",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default runs/<method>-<dataset>-<time>)")
    p.add_argument("--config", help="YAML config file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.optimizer.lr=0.01 (repeatable)",
    )
    p.add_argument(
        "--download", action="store_true", help="download the dataset if missing (needs internet)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


FLAG_KEYS = {
    "data_dir": "data.data_dir",
    "encoder": "encoder.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "clusters": "clusters",
    "protocol": "data.protocol",
    "device": "train.device",
    "seed": "train.seed",
}


def _overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    items = [
        (key, getattr(args, flag))
        for flag, key in FLAG_KEYS.items()
        if getattr(args, flag) is not None
    ]
    if args.download:
        items.append(("data.download", True))
    if args.no_progress:
        items.append(("train.progress", False))
    return items + parse_overrides(args.set)


def cmd_train(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    if args.resume:
        if not args.out:
            raise DeepclustError("--resume needs --out RUN_DIR: the run folder to continue.")
        cfg = api.resume_config(args.out, args.method, args.dataset, overrides)
    else:
        cfg = api.make_config(args.method, args.dataset, args.config, overrides)
    result = api.train(cfg, out=args.out, resume=args.resume)
    _print_summary(result.summary)
    print(f"run folder: {result.run_dir}")
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    m = summary.get("metrics")
    where = f"{summary['dataset']} ({summary['protocol']}: fit {summary['fit_split']}, eval {summary['eval_split']})"
    if m:
        print(
            f"{summary['method']} on {where}: ACC {m['acc']:.4f}  NMI {m['nmi']:.4f}  ARI {m['ari']:.4f}  "
            f"(n={m['n']}, K={summary['num_clusters']}, encoder {summary['encoder']}, "
            f"{summary['epochs']} epochs, seed {summary['seed']}, {summary['device']})"
        )
    else:
        print(f"{summary['method']} on {where}: no labels to score; predictions written.")


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = api.evaluate(args.run_dir, split=args.split, device=args.device)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['method']} on {result['dataset']} [{result['split']}, {result['protocol']}]: "
            f"ACC {result['acc']:.4f}  NMI {result['nmi']:.4f}  ARI {result['ari']:.4f}  n={result['n']}"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    rows = api.predict(
        args.run_dir,
        args.paths,
        out=args.out,
        device=args.device,
        bad_images="fail" if args.fail_on_bad_images else "skip",
    )
    print(f"{len(rows)} images clustered -> {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from deepclust.data.datasets import DATASETS, dataset_info
    from deepclust.encoders import ENCODERS
    from deepclust.methods import METHODS

    if args.what == "methods":
        for name in METHODS.names():
            doc = ((METHODS.get(name).__doc__ or "").strip().splitlines() or [""])[0]
            print(f"{name:16s} {doc}")
    elif args.what == "datasets":
        for name in DATASETS.names():
            info = dataset_info(name)
            print(f"{name:16s} {info.description}")
    else:
        for name in ENCODERS.names():
            print(f"{name:16s} {ENCODERS.get(name).description}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deepclust.demo import run_demo

    run_demo(out=Path(args.out), progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepclust", description="Deep image clustering.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    p = sub.add_parser("evaluate", help="score a run folder against labels")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["test", "train", "all"], help="default: the run's protocol")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="cluster new images with a trained run")
    p.add_argument("run_dir")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--out", default="predictions.csv")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--fail-on-bad-images", action="store_true", help="stop at an unreadable image")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("list", help="list methods, datasets or encoders")
    p.add_argument("what", choices=["methods", "datasets", "encoders"])
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("demo", help="cluster scikit-learn's digits on the CPU (no download)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
    sub.choices["train"].set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DeepclustError as e:
        print(f"deepclust: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
