"""Feature-extraction speed and peak memory of the curated encoders on this CPU.

    nice -n 10 python benchmarks/encoder_speed.py                 # every curated encoder
    nice -n 10 python benchmarks/encoder_speed.py --encoders dinov2-s clip-b32 --batches 2

Each encoder is built with RANDOM weights (weights=random: no download; the arithmetic,
and so the speed, is that of the real weights) at 224 px, the input size `deepclust
cluster` uses for every encoder (configs/<method>/frozen.yaml), in a fresh process so
that its peak resident memory is its own. A warm-up call on 2 images, then `--batches` timed
batches of `--batch-size` random images, inference mode, float32, in the memory layout
deepclust extracts with (encoders/cache.fast_layout). Writes
benchmarks/results/encoder_speed_cpu.json with the machine, its load average before and
after (the machine may be shared) and the command.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
INPUT_SIZE = 224


def measure(name: str, batch_size: int, batches: int, threads: int) -> dict:
    """images/s and peak RSS of one encoder's forward passes (run in its own process)."""
    import torch

    from deepclust.encoders import build_encoder
    from deepclust.encoders.cache import fast_layout

    torch.set_num_threads(threads)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    encoder = build_encoder(name, INPUT_SIZE, weights="random", input_size=INPUT_SIZE).eval()
    params = sum(p.numel() for p in encoder.parameters())
    x = torch.randn(batch_size, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.inference_mode(), fast_layout(encoder) as layout:  # as deepclust extracts
        x = x.contiguous(memory_format=layout)
        encoder(x[:2])  # warm-up (first-call allocations)
        start = time.perf_counter()
        for _ in range(batches):
            out = encoder(x)
        seconds = time.perf_counter() - start
    return {
        "encoder": name,
        "feature_dim": int(out.shape[1]),
        "parameters_m": round(params / 1e6, 1),
        "input_size": INPUT_SIZE,
        "images": batch_size * batches,
        "seconds": round(seconds, 2),
        "images_per_s": round(batch_size * batches / seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_import_mib": round(rss_start),
    }


def main() -> None:
    from deepclust.encoders.catalog import CURATED
    from deepclust.engine.machine import cpu_model, load_average

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", nargs="+", default=[c.name for c in CURATED])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one encoder
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch_size, args.batches, args.threads)))
        return
    load_before, rows = load_average(), []
    for name in args.encoders:
        child = [sys.executable, __file__, "--one", name, "--batch-size", str(args.batch_size)]
        child += ["--batches", str(args.batches), "--threads", str(args.threads)]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "encoder_speed",
        "device": f"cpu ({cpu_model()}, {args.threads} threads)",
        "weights": "random (same arithmetic as the real weights)",
        "batch_size": args.batch_size,
        "loadavg_before": load_before,
        "loadavg_after": load_average(),
        "rows": rows,
        "command": shlex.join(["python", "benchmarks/encoder_speed.py", *sys.argv[1:]]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoder_speed_cpu.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
