"""Seeds, label-free selection, distribution shift and the HTML report of one cheap configuration.

    python benchmarks/evaluation_showcase.py --data-dir ../shared/datasets/cifar10-jpeg

Trains (or reuses) N seeds of k-means on pixels, train->test, into runs/<name>/seed-<s>/,
ranks them without labels (every criterion) against the best-by-labels, runs the
corruption suite on the label-free pick, writes its report (and a chromium screenshot when
a chromium binary exists), and records the figures in benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from deepclust import api
from deepclust.evaluation.report import HEADLESS_CHROMIUM_FLAGS, find_chromium

RESULTS = Path(__file__).parent / "results"


def screenshot(html: Path, png: Path, height: int) -> bool:
    """Render `html` headless with chromium into `png` (1200 px wide); False without chromium."""
    binary = find_chromium()
    if binary is None:
        return False
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            binary,
            *HEADLESS_CHROMIUM_FLAGS,
            f"--user-data-dir={png.parent / '.chromium-profile'}",
            f"--screenshot={png.resolve()}",
            f"--window-size=1200,{height}",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=300,
        check=True,
    )
    shutil.rmtree(png.parent / ".chromium-profile", ignore_errors=True)
    from PIL import Image  # 256 colours keep the PNG small enough to keep in docs/

    Image.open(png).convert("RGB").quantize(colors=256).save(png, optimize=True)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg")
    ap.add_argument("--dataset-copy", default="CIFAR-10 (JPEG copy)")
    ap.add_argument("--name", default="showcase_cifar10_kmeans_pixels")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-init", type=int, default=3, help="k-means restarts per seed")
    ap.add_argument("--max-images", type=int, default=2000, help="images for the selection")
    ap.add_argument("--shift-max-images", type=int, help="subset for the shift table")
    ap.add_argument("--embedding", default="tsne", choices=["pca", "tsne"])
    ap.add_argument("--screenshot", help="PNG path for a screenshot of the report")
    ap.add_argument("--screenshot-height", type=int, default=3000)
    args = ap.parse_args()

    root = Path("runs") / args.name
    cfg = api.make_config(
        "kmeans",
        "imagefolder",
        overrides={
            "data.data_dir": args.data_dir,
            "data.protocol": "train-test",
            "encoder.name": "pixels",
            "params.n_init": args.n_init,
            "train.progress": False,
        },
    )
    timings = {}
    t0 = time.time()
    seeds = api.train_seeds(cfg, args.seeds, out=root, resume=True)  # also ranks them
    timings["train_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    selection = api.select(
        [root], max_images=args.max_images, out=root / "selection.json", device="cpu"
    )
    timings["select_s"] = round(time.time() - t0, 1)
    pick = Path(selection["pick_run_dir"])
    t0 = time.time()
    shift = api.shift(pick, max_images=args.shift_max_images, device="cpu")
    timings["shift_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    report = api.report(pick, embedding=args.embedding, device="cpu", protocols="both")
    timings["report_s"] = round(time.time() - t0, 1)
    shot = None
    if args.screenshot and screenshot(report, Path(args.screenshot), args.screenshot_height):
        shot = args.screenshot
    out = {
        "dataset": args.dataset_copy,
        "method": "kmeans",
        "encoder": "pixels",
        "n_init": args.n_init,
        "protocol": shift["protocol"],
        "seeds": {
            k: seeds.summary.get(k) for k in ("runs", "mean", "std", "best", "label_free_pick")
        },
        "selection": {
            "criterion": selection["criterion"],
            "pick": selection["pick_run_dir"],
            "images": selection["images"],
            "runs": selection["runs"],
            "label_free_vs_labels": selection.get("label_free_vs_labels"),
        },
        "shift": {
            k: shift[k]
            for k in (
                "n",
                "clean",
                "splits",
                "mean_acc",
                "mean_corrupted_acc",
                "relative_acc",
                "train_minus_test_acc",
                "corruptions",
            )
            if k in shift
        },
        "report": str(report),
        "screenshot": shot,
        "timings": timings,
        "device": seeds.summary.get("device"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{args.name}.json"
    target.write_text(json.dumps(out, indent=2))
    print(f"written {target}; report {report}; screenshot {shot}")


if __name__ == "__main__":
    main()
