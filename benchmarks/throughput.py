"""Training throughput (every view counted) and peak memory per method and encoder.

    python benchmarks/throughput.py --methods imc-swav concurl digpro --encoders resnet18 \
        --batch-size 256 --warmup-steps 1 --steps 2 --name cpu_resnet18_after
    python benchmarks/throughput.py --name gpu   # all three methods x resnet18, small_cnn
    python benchmarks/throughput.py --time-to-accuracy --methods imc-swav --config cifar10 \
        --data-dir ../shared/datasets/cifar10-jpeg --name tta_gpu --set train.epochs=20

Each (method, encoder) runs in a fresh process on whichever device is present (CUDA if
available, else the CPU): the method is built from its CIFAR-10 config (the papers' views
and optimiser) with the given encoder and batch size, and its training steps run through
the training loop's own epoch (`training.trainer.Trainer._train_epoch`: views, forward,
backward, optimiser, hooks), first `--warmup-steps` untimed, then `--steps` timed. Images are random uint8
32x32 (50,000, CIFAR-10's train split size) unless `--data-dir` names an image folder.
DigPro runs its full post-warm-up step (`params.warmup_epochs=0`; its per-epoch E-step is
not part of the step and is timed by epoch_breakdown.py).

On CUDA each row also has the model FLOPs of one training step per source image
(forward + backward of every view, counted with torch.utils.flop_counter.FlopCounterMode
at the run's batch) and the fraction of the GPU's dense bf16 peak that the measured rate
represents (PEAK_BF16_TFLOPS; H100 SXM: 989.4 TFLOP/s dense, NVIDIA's datasheet figure).

`--time-to-accuracy` instead trains a whole (short) schedule of --methods[0] with --config
through benchmarks/train_benchmark.py, which writes ACC against wall time to
results/<name>_<method>.json. Run it twice to compare paths, e.g. the default fast path
against the CPU view pipeline with `--set data.augment_on=loader --set data.num_workers=8
--set train.precision=fp32 --set train.channels_last=false`.

Writes benchmarks/results/throughput_<name>.json with the device name (GPU name, or the
CPU model from /proc/cpuinfo and the thread count) and the load average around each row.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from deepclust.engine.machine import cpu_model

RESULTS = Path(__file__).parent / "results"
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's datasheets.
PEAK_BF16_TFLOPS = {
    "H100 80GB HBM3": 989.4,  # H100 SXM5
    "H100 SXM": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.4,
    "A100": 312.0,
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)"


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def random_images(n: int, size: int, seed: int = 0):
    from deepclust.data.store import ImageSet

    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return ImageSet(images, labels, [str(i) for i in range(10)], name=f"random-{n}x{size}px")


def count_step_flops(method, views: list[torch.Tensor], info) -> float:
    """Model FLOPs of one training step (forward + backward) on these views."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        losses = method(views, info)
        torch.stack([v.float() for v in losses.values()]).sum().backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """One (method, encoder) row, in its own process."""
    from deepclust import api
    from deepclust.config import parse_overrides
    from deepclust.data.datasets import load_protocol
    from deepclust.data.views import ViewGenerator, batch_generator
    from deepclust.engine.context import FitContext
    from deepclust.engine.device import autocast_dtype, resolve_device
    from deepclust.engine.distributed import DistInfo
    from deepclust.engine.sampler import epoch_batches
    from deepclust.methods import StepInfo
    from deepclust.training.build import (
        apply_speed_settings,
        build_method,
        build_optimizer,
        data_on_device,
    )
    from deepclust.training.steps import EpochViews, StepBatches
    from deepclust.training.trainer import Trainer

    method_name, encoder = job["method"], job["encoder"]
    device = resolve_device(job["device"])
    overrides = [
        ("encoder.name", encoder),
        ("train.batch_size", job["batch_size"]),
        ("train.device", device.type),
        ("train.progress", False),
        *parse_overrides(job["set"]),
    ]
    if method_name == "digpro":
        overrides.append(("params.warmup_epochs", 0))
    cfg = api.make_config(method_name, "cifar10", None, overrides)
    if cfg.train.cpu_threads:  # as Trainer.fit does
        torch.set_num_threads(cfg.train.cpu_threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if job["data_dir"]:
        fit_set, _ = load_protocol("imagefolder", "train-test", job["data_dir"])
    else:
        fit_set = random_images(job["num_images"], 32)
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg, 10, fit_set.image_size[0], len(fit_set)).to(device)
    amp = autocast_dtype(cfg, device)
    ctx = FitContext(fit_set, device, cfg.train.seed, 0, method.encoder.eval_transform(), 256, amp)
    method.on_train_start(ctx)
    method.train()
    spec = method.view_spec()
    views = ViewGenerator(spec)
    bs = cfg.train.batch_size
    batches = epoch_batches(len(fit_set), bs, cfg.train.seed, 0)
    warm, steps = job["warmup_steps"], job["steps"]
    if warm + steps > len(batches):
        raise SystemExit(f"{warm + steps} steps need more than {len(fit_set)} images")

    flops_per_image = None
    if device.type == "cuda":
        idx = batches[0]
        v = [x.to(device) for x in views(fit_set.images[idx], batch_generator(0, 0, 0))]
        info = StepInfo(0, 0, 0, len(batches), len(batches), idx.to(device))
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            flops_per_image = count_step_flops(method, v, info) / bs
        torch.cuda.reset_peak_memory_stats(device)

    channels_last = apply_speed_settings(method, cfg, device)
    optimizer = build_optimizer(method.parameter_groups(), cfg, device)
    on_device = data_on_device(cfg, device, fit_set.images)
    images = fit_set.images.to(device) if on_device else fit_set.images
    trainer = Trainer(cfg, "unused")
    dist = DistInfo()
    load = [os.getloadavg()[0]]
    rows = []
    for epoch, batch_list in ((0, batches[:warm]), (1, batches[warm : warm + steps])):
        data = StepBatches(EpochViews(images, batch_list, views, cfg.train.seed, epoch, 0, bs))
        stats = trainer._train_epoch(
            method,
            method,
            optimizer,
            data,
            on_device,
            device,
            amp,
            epoch,
            len(batches),
            len(batches) * 2,
            dist,
            channels_last,
        )
        rows.append(stats)
    load.append(os.getloadavg()[0])
    timed = rows[1]
    views_per_s = timed["images_per_s"]
    out: dict[str, Any] = {
        "method": method_name,
        "encoder": encoder,
        "batch_size": bs,
        "views_per_image": spec.num_views,
        "view_sizes": [c.size for c in spec.crops for _ in range(c.count)],
        "warmup_steps": warm,
        "timed_steps": steps,
        "timed_s": timed["seconds"],
        "views_per_s": views_per_s,
        "images_per_s": round(views_per_s / spec.num_views, 1),
        "loss_finite": bool(torch.isfinite(torch.tensor(timed["loss"]))),
        "precision": str(amp).replace("torch.", "") if amp else "fp32",
        "channels_last": channels_last,
        "compile": cfg.train.compile,
        "views_on_device": on_device,
        "threads": torch.get_num_threads(),
        "load_average_1min": {"before": load[0], "after": load[1]},
    }
    if device.type == "cuda":
        out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["flops_per_image"] = flops_per_image
        achieved = flops_per_image * out["images_per_s"] / 1e12
        out["achieved_tflops"] = round(achieved, 2)
        peak = peak_tflops(torch.cuda.get_device_name(device))
        out["fraction_of_bf16_peak"] = round(achieved / peak, 4) if peak else None
    else:
        # ru_maxrss is KiB on Linux: the whole process, the stored images included.
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """measure() in a fresh process, so peak memory and compiled code do not carry over."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(measure, job).result()


def time_to_accuracy(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import train_benchmark

    argv = ["--method", args.methods[0], "--name", args.name, "--config", args.config]
    argv += ["--set", f"train.device={args.device}"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    for item in args.set:
        argv += ["--set", item]
    train_benchmark.main(argv)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--methods", nargs="+", default=["imc-swav", "concurl", "digpro"])
    ap.add_argument("--encoders", nargs="+", default=["resnet18", "small_cnn"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="= --set train.cpu_threads=N")
    ap.add_argument("--data-dir", default=None, help="image folder (default: random images)")
    ap.add_argument("--num-images", type=int, default=50_000, help="random images to store")
    ap.add_argument("--name", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--time-to-accuracy",
        action="store_true",
        help="train --methods[0] with --config through train_benchmark.py (ACC vs wall time)",
    )
    ap.add_argument("--config", default="cpu", help="with --time-to-accuracy: the config")
    args = ap.parse_args()
    if args.time_to_accuracy:
        time_to_accuracy(args)
        return

    from deepclust.engine.device import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        args.set = [*args.set, f"train.cpu_threads={args.threads}"]
    rows = []
    for method in args.methods:
        for encoder in args.encoders:
            job = {
                "method": method,
                "encoder": encoder,
                **{k: getattr(args, k) for k in ("batch_size", "warmup_steps", "steps", "set")},
                "device": device.type,
                "data_dir": args.data_dir,
                "num_images": args.num_images,
            }
            row = run_job(job)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {
        "benchmark": "throughput",
        "device": device_name(device),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
        "data": args.data_dir or f"random uint8 {args.num_images}x3x32x32",
        "platform": platform.platform(),
        "torch": torch.__version__,
        "peak_bf16_tflops_used": peak_tflops(device_name(device))
        if device.type == "cuda"
        else None,
        "rows": rows,
        "command": shlex.join(["python", "benchmarks/throughput.py", *sys.argv[1:]]),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"throughput_{args.name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
