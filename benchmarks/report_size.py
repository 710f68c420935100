"""How big and how slow report.html is on a 10,000-photo run, with every photo in it.

    python benchmarks/report_size.py --photos /work/shared/datasets/cifar10-jpeg/test

1. `deepclust cluster PHOTOS --k K --no-report` (skipped when --run names a finished run).
2. `deepclust report RUN --out FILE`, timed as a whole process (start-up, loading the run,
   the embedding, the page), --repeats times; and once in this process, timing the page
   alone (evaluation/report.render_html: sprites, charts, template) and the sprites in it.
3. The page: bytes in all, in the sprites, photos linked and drawn.
4. The choice of sprites: bytes per photo of the sprites against one JPEG per photo (the
   same tiles, the same quality) over every photo of the run.
5. Headless Chromium (a fresh profile each time): seconds to --screenshot (1200 x 2400) and
   to --dump-dom the page as written (clusters open, the rest folded) and with every fold
   open, median of --repeats, next to an empty page (Chromium's own start-up).
6. With --before TREE: the same (command time, bytes, Chromium) for the report that the
   source tree TREE writes of the same run (e.g. the main branch before this page).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
SCREEN = "--window-size=1200,2400"


def deepclust(*args: str, src: str | None = None) -> float:
    """Run the CLI as a user would (from the source tree `src` where given); wall seconds."""
    env = {**os.environ, "PYTHONPATH": src} if src else None
    t0 = time.time()
    cmd = [sys.executable, "-m", "deepclust", "--no-progress", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.time() - t0


def timed_reports(run: Path, page: Path, repeats: int, src: str | None = None) -> list[float]:
    """Wall seconds of `deepclust report RUN --out PAGE`, `repeats` times."""
    seconds = []
    for _ in range(repeats):
        page.unlink(missing_ok=True)
        seconds.append(round(deepclust("report", str(run), "--out", str(page), src=src), 1))
    return seconds


def chromium_seconds(page: Path, mode: str, repeats: int) -> float:
    """Median wall seconds of headless Chromium rendering `page` (mode: screenshot or dump)."""
    from deepclust.evaluation.report import HEADLESS_CHROMIUM_FLAGS, find_chromium

    browser = find_chromium()
    if browser is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as profile:
            out = Path(profile) / "shot.png"
            what = [f"--screenshot={out}", SCREEN] if mode == "screenshot" else ["--dump-dom"]
            flags = [*HEADLESS_CHROMIUM_FLAGS, f"--user-data-dir={profile}/p"]
            t0 = time.time()
            done = subprocess.run(
                [browser, *flags, "--virtual-time-budget=5000", *what, page.as_uri()],
                capture_output=True,
                timeout=300,
            )
            times.append(time.time() - t0)
            if done.returncode != 0 or (mode == "screenshot" and not out.is_file()):
                raise SystemExit(f"chromium failed on {page}: {done.stderr[-400:]!r}")
    return round(statistics.median(times), 2)


def page_in_process(run: Path, out: Path) -> dict:
    """Write the report in this process; seconds of the page alone and of its sprites."""
    from deepclust import api
    from deepclust.evaluation import gallery
    from deepclust.evaluation import report as rep

    spent = {"page": 0.0, "sprites": 0.0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.time()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.time() - t0

        return wrapper

    render, tiles = rep.render_html, gallery.Sprites.tiles
    rep.render_html = timed("page", render)
    gallery.Sprites.tiles = timed("sprites", tiles)  # type: ignore[method-assign]
    try:
        t0 = time.time()
        api.report(run, out=out, device="cpu")
        total = time.time() - t0
    finally:
        rep.render_html, gallery.Sprites.tiles = render, tiles  # type: ignore[method-assign]
    return {
        "api_report_s": round(total, 2),
        "page_s": round(spent["page"], 2),
        "sprites_s": round(spent["sprites"], 2),
    }


def sprite_or_one_jpeg_each(run: Path) -> dict:
    """Bytes per photo: the report's sprites against one JPEG (data URI) per photo."""
    from deepclust.api.runs import load_run
    from deepclust.evaluation import gallery

    images = load_run(run, "cpu").load_split().images
    sprites = gallery.Sprites(images)
    order = np.arange(len(images))
    sprites.tiles(order)
    sprite_bytes = sum(len(rule) for rule in sprites.rules)
    each = 0
    for start in range(0, len(images), 512):
        block = images[start : start + 512]
        for i in range(len(block)):
            pixels = gallery.sprite_pixels(block[i : i + 1], sprites.cell, 1)
            each += len(gallery.jpeg_data_uri(pixels))
    n = len(images)
    return {
        "photos": n,
        "tile_px": list(sprites.cell),
        "shown_px": list(sprites.shown),
        "sprite_bytes_per_photo": round(sprite_bytes / n),
        "one_jpeg_each_bytes_per_photo": round(each / n),
    }


def page_facts(page: Path) -> dict:
    """Bytes of the page and of its sprites, photos linked and drawn."""
    text = page.read_text()
    head = text[: text.index("<body>")]
    return {
        "html_bytes": len(text.encode()),
        "html_mb": round(len(text.encode()) / 1e6, 2),
        "style_with_sprites_bytes": len(head.encode()),
        "sprites": text.count("url(data:image/jpeg;base64,"),
        "photos_linked": text.count('href="file://'),
        "photos_drawn": text.count('class="t '),
        "scripts": text.count("<script"),
    }


def _commit(tree: str) -> str:
    """The short commit a source tree is at ('no git' for an exported copy)."""
    done = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True)
    return done.stdout.decode().strip() if done.returncode == 0 else "no git"


def main() -> None:
    from deepclust.engine.machine import cpu_model, load_average

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default="/work/shared/datasets/cifar10-jpeg/test")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--run", help="a finished cluster run of PHOTOS (else made)")
    ap.add_argument("--work", default="/tmp/deepclust-report-bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="report_10k")
    ap.add_argument("--before", help="a source tree (its src/) whose report to measure alike")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else work / f"k{args.k}"
    if not args.run:
        deepclust("cluster", args.photos, "--k", str(args.k), "--out", str(run), "--no-report")
    out = {
        "command": "python benchmarks/report_size.py " + " ".join(sys.argv[1:]),
        "photos": args.photos,
        "run": "deepclust cluster PHOTOS --k K --no-report (default recipe), seed 0",
        "device": f"cpu ({cpu_model()}, {os.cpu_count()} cores)",
        "loadavg_before": load_average(),
    }
    page = work / "report.html"
    out["report_command_s"] = timed_reports(run, page, args.repeats)
    out["in_process"] = page_in_process(run, page)
    out["page"] = page_facts(page)
    out["sprite_choice"] = sprite_or_one_jpeg_each(run)
    opened = work / "report_all_open.html"
    opened.write_text(page.read_text().replace("<details", "<details open"))
    empty = work / "empty.html"
    empty.write_text("<!DOCTYPE html><html><body>empty</body></html>")
    pages = [("empty", empty), ("page", page), ("all_open", opened)]
    if args.before:
        before = work / "report_before.html"
        src = str(Path(args.before) / "src")
        out["before"] = {
            "source": f"{args.before} at {_commit(args.before)}",
            "report_command_s": timed_reports(run, before, args.repeats, src),
            "html_bytes": before.stat().st_size,
        }
        pages.append(("before", before))
    out["chromium_s"] = {
        f"{name}_{mode}": chromium_seconds(path, mode, args.repeats)
        for name, path in pages
        for mode in ("screenshot", "dump")
    }
    out["loadavg_after"] = load_average()
    print(json.dumps(out, indent=1))
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
