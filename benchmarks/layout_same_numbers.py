"""A refactor changes no number (and no speed): line counts, longest functions, demo and a
frozen CIFAR-10 run, recorded before and after.

    python benchmarks/layout_same_numbers.py --out /work/bench/layout/before.json
    python benchmarks/layout_same_numbers.py --before /work/bench/layout/before.json
        # -> benchmarks/results/layout_same_numbers.json (before, after, equal)

The code measured is the deepclust that PYTHONPATH imports (the first command with
PYTHONPATH=<checkout of the commit before the change>/src, the second with this one's); --name names the result (layout_same_numbers for #21; scale_small_sets for #19, whose
small-set path must keep today's results and speed). The frozen run is IMC-SwAV
(configs/imc-swav/frozen.yaml) and k-means on the cached EfficientNet-Lite2 @ 224 px features
of the CIFAR-10 test split (train+test, seed 0).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(importlib.util.find_spec("deepclust").origin).parent  # the code measured (PYTHONPATH)
RESULTS = Path(__file__).parent / "results"
METRICS = ("acc", "nmi", "ari")


def line_counts() -> dict[str, int]:
    """`wc -l` of every module under src/deepclust, by path relative to it."""
    return {
        str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in sorted(SRC.rglob("*.py"))
    }


def function_lengths() -> list[tuple[str, int]]:
    """(module:qualified name, lines) of every function under src/deepclust, longest first:
    the walker of tests/test_layout.py, which keeps them under 80 lines."""
    spec = importlib.util.spec_from_file_location("test_layout", ROOT / "tests" / "test_layout.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.function_lengths(SRC)


def demo_numbers() -> list[dict[str, object]]:
    from deepclust.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        rows = run_demo(out=Path(tmp), progress=False)
        seconds = round(time.time() - t0, 1)
    return [{"label": r["label"], **{m: r[m] for m in METRICS}} for r in rows] + [
        {"label": "demo wall time (all runs)", "seconds": seconds}
    ]


def frozen_numbers(data_dir: str) -> list[dict[str, object]]:
    from deepclust import api

    rows = []
    for method, config in (("kmeans", None), ("imc-swav", "frozen")):
        overrides = {
            "data.data_dir": data_dir,
            "data.protocol": "all",
            "encoder.name": "efficientnet_lite2",
            "encoder.input_size": 224,
            "train.seed": 0,
            "train.progress": False,
        }
        cfg = api.make_config(method, "imagefolder", config, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            summary = api.train(cfg, out=Path(tmp) / method).summary
            seconds = round(time.time() - t0, 1)
        metrics = summary["metrics"]
        rows.append(
            {"method": method, "epochs": summary["epochs"], "seconds": seconds}
            | {m: metrics[m] for m in METRICS}
        )
    return rows


def measure(data_dir: str) -> dict[str, object]:
    from deepclust.engine.machine import cpu_model, load_average

    load = load_average()
    return {
        "line_counts": line_counts(),
        "longest_functions": function_lengths()[:15],
        "demo": demo_numbers(),
        "frozen_cifar10_test_lite2_224": frozen_numbers(data_dir),
        "device": f"CPU ({cpu_model()})",
        "load_before": load,
        "load_after": load_average(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared/datasets/cifar10-jpeg/test"))
    ap.add_argument("--out", type=Path, help="write this measurement alone here")
    ap.add_argument("--before", type=Path, help="a --out file to compare this measurement with")
    ap.add_argument("--name", default="layout_same_numbers", help="results/NAME.json")
    ap.add_argument(
        "--untimed",
        action="store_true",
        help="run outside the shared CPU lock: the seconds are left out (only numbers count)",
    )
    args = ap.parse_args()
    now = measure(args.data_dir)
    if args.untimed:
        for row in now["frozen_cifar10_test_lite2_224"]:
            row["seconds"] = None  # measured outside the shared lock: not a timing
    if args.out:
        args.out.write_text(json.dumps(now, indent=1))
        return
    before = json.loads(args.before.read_text())

    def numbers(m: dict) -> list:
        drop = ("seconds",)
        rows = m["demo"] + m["frozen_cifar10_test_lite2_224"]
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    result = {
        "what": __doc__.split("\n\n")[0],
        "protocol": "train+test; digits (1,797) and CIFAR-10 JPEG test split (10,000); seed 0",
        "numbers_equal": numbers(before) == numbers(now),
        "before": before,
        "after": now,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    print("numbers equal:", result["numbers_equal"])


if __name__ == "__main__":
    main()
