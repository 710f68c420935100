"""Per-step training time of every deep method on 1 and on 2 CPU processes (torchrun, gloo).

    python benchmarks/ddp_step_time.py --encoders small_cnn resnet18 --batch-size 64 --name cpu

For each method x encoder x process count the script launches
`torchrun --standalone --nproc_per_node=N` on itself. Every process runs one intra-op
thread, so 2 processes use 2 cores against 1; the global batch is the same (each process
takes batch / N), and as in the engine BatchNorm becomes GlobalBatchNorm and the method is
wrapped in DistributedDataParallel when N > 1. A step = the method's forward, backward
(DDP's gradient all-reduce and the methods' own collectives included), optimiser step and
hooks; view generation for the process's rows is timed apart (`views_s`). The processes
meet at a barrier before every step, and a step's time is the slowest process's.

Images are random uint8 32 px (timing does not depend on content); the method is built
from its dataset config (`--dataset`, CIFAR-10 settings by default) with the fit set
declared to hold `--num-samples` images (ConCURL's memory bank size). DigPro runs its
warm-up steps (no E-step pseudo-labels yet). Writes benchmarks/results/ddp_step_time_<name>.json
with the CPU model, core count, the load average before and after every measurement (other
jobs share the cores: compare figures taken under similar load) and the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from deepclust.engine.machine import cpu_model, load_average

RESULTS = Path(__file__).parent / "results"
METHODS = ("imc-swav", "concurl", "digpro")


def worker(args: argparse.Namespace) -> None:
    """One process of a measurement (started by torchrun); rank 0 writes the result."""
    torch.set_num_threads(1)
    from deepclust import api
    from deepclust.data.views import ViewGenerator, batch_generator
    from deepclust.engine.batchnorm import convert_to_global_batchnorm
    from deepclust.engine.distributed import all_gather_cat, barrier, init_from_env
    from deepclust.methods import StepInfo
    from deepclust.training.build import build_method, build_optimizer
    from deepclust.training.steps import optimisation_step
    from deepclust.training.trainer import NO_BUFFER_SYNC

    dist = init_from_env("cpu")
    cfg = api.make_config(
        args.method,
        args.dataset,
        overrides=[("encoder.name", args.encoder), ("train.batch_size", args.batch_size)],
    )
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg, 10, 32, args.num_samples)
    # ConCURL's hook reads the seed only; nothing here needs a whole-fit-set pass.
    method.on_train_start(SimpleNamespace(seed=cfg.train.seed))  # type: ignore[arg-type]
    model: torch.nn.Module = method
    if dist.world_size > 1:
        method = convert_to_global_batchnorm(method)  # type: ignore[assignment]
        model = torch.nn.parallel.DistributedDataParallel(method, **NO_BUFFER_SYNC)
    optimizer = build_optimizer(method.parameter_groups(), cfg)
    views_of = ViewGenerator(method.view_spec())  # type: ignore[arg-type]
    local = args.batch_size // dist.world_size
    offset = dist.rank * local
    images = torch.randint(0, 256, (4 * args.batch_size, 3, 32, 32), dtype=torch.uint8)
    method.train()
    step_s, views_s = [], []
    for step in range(args.warmup + args.steps):
        order = torch.randperm(args.num_samples, generator=torch.Generator().manual_seed(step))
        idx = order[offset : offset + local]
        t0 = time.perf_counter()
        views = views_of(
            images[idx % len(images)], batch_generator(0, 0, step), offset, args.batch_size
        )
        t1 = time.perf_counter()
        barrier()
        t2 = time.perf_counter()
        info = StepInfo(0, step, step, args.warmup + args.steps, args.warmup + args.steps, idx)
        optimisation_step(method, model, optimizer, views, info)
        t3 = time.perf_counter()
        times = all_gather_cat(torch.tensor([[t1 - t0, t3 - t2]], dtype=torch.float64))
        if step >= args.warmup:
            views_s.append(float(times[:, 0].max()))
            step_s.append(float(times[:, 1].max()))
    if dist.is_main:
        Path(args.out).write_text(json.dumps({"step_s": step_s, "views_s": views_s}))


def measure(args: argparse.Namespace, method: str, encoder: str, procs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",  # = torchrun
            "--standalone",
            f"--nproc_per_node={procs}",
            __file__,
            "--worker",
            f"--method={method}",
            f"--encoder={encoder}",
            f"--dataset={args.dataset}",
            f"--batch-size={args.batch_size}",
            f"--num-samples={args.num_samples}",
            f"--steps={args.steps}",
            f"--warmup={args.warmup}",
            f"--out={out}",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        load_before = load_average()
        t0 = time.time()
        subprocess.run(cmd, check=True, env=env)
        wall = time.time() - t0
        load_after = load_average()
        times = json.loads(out.read_text())
    steps = times["step_s"]
    return {
        "method": method,
        "encoder": encoder,
        "processes": procs,
        "global_batch": args.batch_size,
        "step_s_median": round(statistics.median(steps), 4),
        "step_s_min": round(min(steps), 4),
        "step_s_all": [round(s, 4) for s in steps],
        "views_s_median": round(statistics.median(times["views_s"]), 4),
        "process_wall_s": round(wall, 1),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--encoders", nargs="+", default=["small_cnn", "resnet18"])
    ap.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--dataset", default="cifar10", help="whose config the methods are built from")
    ap.add_argument("--batch-size", type=int, default=64, help="global batch")
    ap.add_argument("--num-samples", type=int, default=50_000, help="fit-set size (memory banks)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=1, help="measure every setting this often")
    ap.add_argument("--name", default="cpu")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--encoder", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ddp_step_time_{args.name}.json"
    report = {
        "what": "per-step training time, 1 vs N CPU processes (torchrun, gloo), 1 thread each",
        "command": shlex.join(["python", *sys.argv]),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "images": "random uint8, 32 px",
        "note": "other jobs share the cores: read each figure with its load average",
        "runs": [],
    }
    for _ in range(args.repeats):
        for encoder in args.encoders:
            for method in args.methods:
                for procs in args.processes:
                    run = measure(args, method, encoder, procs)
                    report["runs"].append(run)
                    print(json.dumps(run), flush=True)
                    path.write_text(json.dumps(report, indent=2))  # partial results survive
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
