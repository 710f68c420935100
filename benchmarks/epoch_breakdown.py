"""Time one training epoch of DigPro split into M-step, E-step and group updates, beside
the M-step of the other registered deep methods (IMC-SwAV, ConCURL) at the same batch size
and encoder.

    python benchmarks/epoch_breakdown.py --data-dir ../shared/datasets/cifar10-jpeg \
        --subset 2000 --batch-size 256 --encoder small_cnn --name cpu_2k

DigPro's claim is efficiency (batch-wise group updates instead of whole-dataset ones); this
measures it rather than assuming it. For every method the script builds the method from its
packaged config (`--config`, else its dataset default) with the common encoder and batch
size, and runs the pieces of one epoch itself, without touching the engine's hot path:

- M-step: for each batch, training_step -> backward -> optimizer step -> after_optimizer_step
  (views are generated first and timed apart as `views_s`, as they come from DataLoader
  workers or the GPU in real runs);
- DigPro's group updates: its `group_step`, `reset_groups` and `remember` are wrapped with
  timers in this script only (the time is part of the M-step too);
- E-step: DigPro's feature extraction of the fit set and its spherical k-means, called
  directly; the other methods' `on_epoch_start` (their own epoch hooks) is timed whole.

Each measured epoch is preceded by `--warmup-steps` untimed steps. On CUDA every timer
synchronises the device. Writes benchmarks/results/epoch_breakdown_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepclust import api
from deepclust.cluster import spherical_kmeans, stream_seed
from deepclust.config import parse_overrides
from deepclust.data.datasets import load_protocol
from deepclust.data.views import EvalTransform, ViewGenerator, batch_generator
from deepclust.engine.context import FitContext
from deepclust.engine.device import autocast_dtype, device_description, resolve_device
from deepclust.engine.sampler import epoch_batches
from deepclust.methods import METHODS, StepInfo
from deepclust.training.build import build_method, build_optimizer
from deepclust.training.steps import optimisation_step

RESULTS = Path(__file__).parent / "results"
COMPARED = ("imc-swav", "concurl")


class Timer:
    """Accumulates wall time of code blocks, synchronising CUDA around each."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.add(name, time.perf_counter() - t0)

        return timed

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1


def build(name: str, args: argparse.Namespace, fit_set, num_clusters: int, device):
    """The method from its config with the common encoder / batch size, and its optimiser."""
    overrides = [
        ("encoder.name", args.encoder),
        ("train.batch_size", args.batch_size),
        ("data.protocol", args.protocol),
        *parse_overrides(args.set),
    ]
    if name == "digpro":
        overrides.append(("params.warmup_epochs", 0))  # time the full step (L_proto on)
    config = args.config if args.config and _has_config(name, args.config) else None
    cfg = api.make_config(name, args.dataset, config, overrides)
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg, num_clusters, fit_set.image_size[0], len(fit_set)).to(device)
    optimizer = build_optimizer(method.parameter_groups(), cfg)
    return cfg, method, optimizer


def _has_config(method: str, name: str) -> bool:
    from deepclust.config import CONFIG_ROOT

    return Path(name).is_file() or (CONFIG_ROOT / method / f"{name}.yaml").is_file()


def time_epoch(
    name: str, args: argparse.Namespace, fit_set, num_clusters: int, device
) -> dict[str, Any]:
    cfg, method, optimizer = build(name, args, fit_set, num_clusters, device)
    amp = autocast_dtype(cfg, device)
    timer = Timer(device)
    ctx = FitContext(
        fit_set,
        device,
        cfg.train.seed,
        0,
        EvalTransform(mean=method.encoder.mean, std=method.encoder.std),
        cfg.train.eval_batch_size,
        amp,
    )
    if name == "digpro":  # instrument the group updates of this instance only
        for piece in ("group_step", "reset_groups", "remember"):
            setattr(method, piece, timer.wrap(f"group.{piece}", getattr(method, piece)))
    method.on_train_start(ctx)
    method.train()

    # ---- E-step / epoch hooks
    estep: dict[str, Any] = {}
    if name == "digpro":
        feats = timer.wrap("estep.extract", method.fit_set_features)(ctx)
        result = timer.wrap("estep.kmeans", spherical_kmeans)(
            feats,
            num_clusters,
            max_iter=method.params.kmeans_iters,
            tol=method.params.kmeans_tol,
            seed=stream_seed(cfg.train.seed, "kmeans", 0),
            n_init=method.params.kmeans_n_init,
        )
        method.pseudo_labels.copy_(result.labels)
        estep = {"kmeans_iterations": result.n_iter, "kmeans_converged": result.converged}
    else:
        timer.wrap("epoch_hooks", method.on_epoch_start)(ctx)

    # ---- M-step
    views_gen = ViewGenerator(method.view_spec())
    batches = epoch_batches(len(fit_set), cfg.train.batch_size, cfg.train.seed, 0)
    steps = len(batches) if args.steps is None else min(args.steps, len(batches))
    total = args.warmup_steps + steps
    mstep = 0.0
    for i in range(total):
        idx = batches[i % len(batches)]
        t0 = time.perf_counter()
        views = views_gen(fit_set.images[idx], batch_generator(cfg.train.seed, 0, i))
        views = [v.to(device) for v in views]
        timer.sync()
        t1 = time.perf_counter()
        info = StepInfo(0, i, i, len(batches), total, idx.to(device))
        loss, _ = optimisation_step(method, method, optimizer, views, info, amp)
        timer.sync()
        t2 = time.perf_counter()
        if i == args.warmup_steps - 1:
            timer.totals = {k: v for k, v in timer.totals.items() if not k.startswith("group.")}
            timer.calls = {k: v for k, v in timer.calls.items() if not k.startswith("group.")}
        if i >= args.warmup_steps:
            mstep += t2 - t1
            timer.add("views", t1 - t0)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{name}: the loss is not finite ({loss.item()})")

    t = timer.totals
    group = sum(v for k, v in t.items() if k.startswith("group."))
    out: dict[str, Any] = {
        "method": name,
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "encoder": cfg.encoder.name,
        "views_per_image": method.view_spec().num_views,
        "mstep_s": round(mstep, 3),
        "mstep_ms_per_step": round(1000 * mstep / max(steps, 1), 2),
        "mstep_images_per_s": round(steps * cfg.train.batch_size / max(mstep, 1e-9), 1),
        "views_s": round(t.get("views", 0.0), 3),
    }
    if name == "digpro":
        out.update(
            {
                "group_updates_s": round(group, 4),
                "group_updates_share_of_mstep": round(group / max(mstep, 1e-9), 4),
                "group_pieces_s": {
                    k.split(".", 1)[1]: round(v, 4) for k, v in t.items() if k.startswith("group.")
                },
                "group_resets": timer.calls.get("group.reset_groups", 0),
                "estep_extract_s": round(t["estep.extract"], 3),
                "estep_kmeans_s": round(t["estep.kmeans"], 3),
                "estep_s": round(t["estep.extract"] + t["estep.kmeans"], 3),
                **estep,
            }
        )
        out["epoch_s"] = round(mstep + out["estep_s"], 3)
    else:
        out["epoch_hooks_s"] = round(t.get("epoch_hooks", 0.0), 3)
        out["epoch_s"] = round(mstep + out["epoch_hooks_s"], 3)
    return out


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (shell-quoted)."""
    parts = ["python", "benchmarks/epoch_breakdown.py"]
    for key, value in vars(args).items():
        if value in (None, [], 0):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "set":
            parts += [x for item in value for x in (flag, item)]
        elif isinstance(value, list):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="imagefolder")
    ap.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg")
    ap.add_argument("--dataset-copy", default="CIFAR-10 (JPEG copy)")
    ap.add_argument("--protocol", default="train-test", choices=["train-test", "all"])
    ap.add_argument("--subset", type=int, default=0, help="first N images of a seeded shuffle")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--encoder", default="small_cnn")
    ap.add_argument("--config", default="cpu", help="packaged config name, where a method has it")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=None, help="M-steps to time (default: an epoch)")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=None, help="default: digpro + compared")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--name", default="cpu_cifar10")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    command = command_line(args)
    args.set = [*args.set, f"train.device={device.type}"]
    fit_set, _ = load_protocol(args.dataset, args.protocol, args.data_dir)
    if args.subset and args.subset < len(fit_set):
        keep = torch.randperm(len(fit_set), generator=torch.Generator().manual_seed(0))
        fit_set = fit_set.subset(keep[: args.subset].sort().values)
    num_clusters = fit_set.num_classes
    names = args.methods or ["digpro", *[m for m in COMPARED if m in METHODS]]
    missing = [m for m in names if m not in METHODS]
    if missing:
        raise SystemExit(f"not registered: {', '.join(missing)} (registered: {', '.join(METHODS)})")

    rows = []
    for name in names:
        row = time_epoch(name, args, fit_set, num_clusters, device)
        rows.append(row)
        print(json.dumps(row))
    out = {
        "benchmark": "epoch_breakdown",
        "dataset": args.dataset_copy,
        "protocol": "train->test" if args.protocol == "train-test" else "train+test",
        "n_fit": len(fit_set),
        "num_clusters": num_clusters,
        "image_size": fit_set.image_size[0],
        "device": device_description(device),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "methods": rows,
        "not_registered": [m for m in COMPARED if m not in METHODS],
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "command": command,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"epoch_breakdown_{args.name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
