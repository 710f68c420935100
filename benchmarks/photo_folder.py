"""`deepclust cluster` on a folder of photos, as a new user runs it; JSON in benchmarks/results/.

The CIFAR-10 JPEG test split is copied into one flat folder under anonymous names in a
seeded random order (img00000.jpg ...), so the tool sees no label, not even in a name or
the order; this script keeps the names' classes apart and scores the predictions CSV
against them. Parts (--parts, comma-separated):

- full:     `deepclust cluster FLAT --k 10` with an empty feature cache (cold), then again
            with the cache filled (warm): ACC/NMI/ARI, wall time and peak RSS of each run.
- subsets:  random subsets of the flat folder (--sizes, --seeds): the default recipe, any
            candidate recipes (--recipe NAME=ARGS: `cluster` with those extra arguments)
            and k-means (`train --method kmeans --config frozen`) on the same cached
            features, ACC per seed and mean, and the run-health warnings each run printed.
- commands: time and peak RSS of `evaluate`, `predict` (20 images) and `report` on the
            full run (evaluate on a labelled run: --labelled-size images in class folders,
            since the flat folder has no labels to evaluate against).
- k_auto:   the K `cluster --k auto` chooses on each folder above (true K 10), per
            estimator, from the cached features.
- before:   the same commands with the code before `cluster` existed (--before-src, a
            checkout's src/ folder): its frozen IMC-SwAV run on the same folder (`train
            --config frozen --dataset imagefolder --protocol all`, features from the same
            cache), then predict, report and evaluate as above.

Each command runs as its own process; its peak RSS is that process's (os.wait4).
Protocol train+test (fit and scored on the same images); labels are used only to score.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deepclust.engine.machine import cpu_model, load_average
from deepclust.evaluation.metrics import score
from deepclust.evaluation.predictions import read_predictions_csv

RESULTS = Path(__file__).parent / "results"


def flat_copy(test_dir: Path, work: Path, seed: int = 0) -> tuple[Path, dict[str, int], list[str]]:
    """(flat folder, file name -> class id, class names): test_dir/<class>/*.jpg copied as
    work/flat/imgNNNNN.jpg in a seeded random order."""
    classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    items = [(c, f) for c in classes for f in sorted((test_dir / c).iterdir())]
    random.Random(seed).shuffle(items)
    flat = work / "flat"
    truth = {f"img{i:05d}.jpg": classes.index(c) for i, (c, _) in enumerate(items)}
    if not flat.is_dir() or len(list(flat.iterdir())) != len(items):
        shutil.rmtree(flat, ignore_errors=True)
        flat.mkdir(parents=True)
        for i, (_, f) in enumerate(items):
            shutil.copyfile(f, flat / f"img{i:05d}.jpg")
    return flat, truth, classes


def subset(
    flat: Path, work: Path, size: int, seed: int, classes: dict[str, int] | None = None
) -> Path:
    """work/sub<size>-s<seed>/: a random subset of the flat folder (in class folders when
    `classes` maps names to class ids: a labelled copy)."""
    names = sorted(p.name for p in flat.iterdir())
    pick = random.Random(1000 + seed).sample(names, size)
    folder = work / (f"sub{size}-s{seed}" + ("-labelled" if classes else ""))
    if not folder.is_dir():
        for name in pick:
            target = folder / f"class{classes[name]}" if classes else folder
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(flat / name, target / name)
    return folder


def timed(argv: list[str], env: dict[str, str], quiet: bool = True) -> dict[str, object]:
    """Run `python -m deepclust ARGV`; wall seconds, its own peak RSS (GiB) and the warnings
    it printed. The child is reaped with os.wait4, whose rusage is that child's alone."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "deepclust", *(["--no-progress"] if quiet else []), *argv],
            env=env,
            stdout=out,
            stderr=err,
            text=True,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"deepclust {' '.join(argv)} failed:\n{stderr[-2000:]}")
    return {
        "argv": argv,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
        "warnings": [line[9:] for line in stderr.splitlines() if line.startswith("warning: ")],
        "stdout": stdout.splitlines()[-25:],
    }


def scores(run: Path, truth: dict[str, int]) -> dict[str, float]:
    rows = read_predictions_csv(run / "predictions.csv")
    y = np.array([truth[Path(r["path"]).name] for r in rows])
    p = np.array([int(r["cluster"]) for r in rows])
    s = score(y, p, num_clusters=10).as_dict()
    return {k: round(float(s[k]), 4) for k in ("acc", "nmi", "ari")} | {"n": len(rows)}


def part_full(flat: Path, truth: dict[str, int], work: Path, env: dict[str, str]) -> dict:
    cold_cache = work / "cold-cache"
    shutil.rmtree(cold_cache, ignore_errors=True)
    out = {}
    for name in ("cold", "warm"):
        run = work / f"full-{name}"
        shutil.rmtree(run, ignore_errors=True)
        load = load_average()
        res = timed(
            ["cluster", str(flat), "--k", "10", "--out", str(run)],
            {**env, "DEEPCLUST_CACHE": str(cold_cache)},
        )
        out[name] = {**res, **scores(run, truth), "load_before": load, "load_after": load_average()}
    return out


def part_subsets(
    flat: Path,
    truth: dict[str, int],
    work: Path,
    env: dict[str, str],
    sizes: list[int],
    seeds: list[int],
    recipes: dict[str, list[str]],
) -> dict:
    """recipes: candidate recipes besides the default, name -> extra `cluster` arguments."""
    out: dict[str, dict] = {}
    for size in sizes:
        rows = []
        for seed in seeds:
            folder = subset(flat, work, size, seed)
            row: dict[str, object] = {"seed": seed}
            cluster = ["cluster", str(folder), "--k", "10", "--no-report"]
            for name, argv in {
                "default": cluster,
                **{name: [*cluster, *extra] for name, extra in recipes.items()},
                "kmeans": [
                    "train",
                    "--method",
                    "kmeans",
                    "--config",
                    "frozen",
                    "--dataset",
                    "photos",
                    "--data-dir",
                    str(folder),
                    "--clusters",
                    "10",
                    "--protocol",
                    "all",
                ],
            }.items():
                run = work / f"{folder.name}-{name}"
                shutil.rmtree(run, ignore_errors=True)
                res = timed([*argv, "--out", str(run)], env)
                summary = json.loads((run / "summary.json").read_text())
                row[name] = {
                    **scores(run, truth),
                    "seconds": res["seconds"],
                    "printed_warnings": res["warnings"],
                    "summary_warnings": summary.get("warnings", []),
                }
            rows.append(row)
        names = ["default", *recipes, "kmeans"]
        mean = {m: round(float(np.mean([r[m]["acc"] for r in rows])), 4) for m in names}
        out[str(size)] = {"runs": rows, "mean_acc": mean}
    return out


def part_commands(
    flat: Path, truth: dict[str, int], work: Path, env: dict[str, str], labelled_size: int
) -> dict:
    env = {**env, "DEEPCLUST_CACHE": str(work / "cold-cache")}  # the full runs' feature cache
    run = work / "full-warm"
    photos = sorted(flat.iterdir())[:20]
    pred = work / "predict20.csv"
    pred.unlink(missing_ok=True)
    out = {
        "predict_20": timed(["predict", str(run), *map(str, photos), "--out", str(pred)], env),
        "report": timed(["report", str(run), "--out", str(work / "report-full.html")], env),
    }
    labelled = subset(flat, work, labelled_size, 0, truth)
    lrun = work / f"{labelled.name}-run"
    shutil.rmtree(lrun, ignore_errors=True)
    timed(["cluster", str(labelled), "--k", "10", "--out", str(lrun), "--no-report"], env)
    out["evaluate_labelled"] = {
        **timed(["evaluate", str(lrun), "--json"], env),
        "images": labelled_size,
    }
    return out


def part_k_auto(flat: Path, work: Path, sizes: list[int], seeds: list[int]) -> dict:
    """K that `cluster --k auto` would choose (true: 10) on every folder, per estimator, from
    the features cached by the other parts (the default cache, like those runs)."""
    from deepclust.choose_k import estimate_for_config
    from deepclust.practice.folder import recipe_config

    folders = [subset(flat, work, n, s) for n in sizes for s in seeds] + [flat]
    out = {}
    for folder in folders:
        cfg = recipe_config(folder, None, overrides=[("train.progress", False)])
        out[folder.name] = {
            est: estimate_for_config(cfg, None, est).k for est in ("modularity", "eigengap")
        }
    return out


def part_before(
    flat: Path, truth: dict[str, int], work: Path, env: dict[str, str], labelled_size: int, src: str
) -> dict:
    """The commands of part_commands, run by an older checkout (PYTHONPATH=src)."""
    env = {**env, "PYTHONPATH": src, "DEEPCLUST_CACHE": str(work / "cold-cache")}
    train = [
        "train",
        "--method",
        "imc-swav",
        "--config",
        "frozen",
        "--dataset",
        "imagefolder",
        "--protocol",
        "all",
        "--clusters",
        "10",
    ]
    runs = {}
    labelled = subset(flat, work, labelled_size, 0, truth)
    for name, folder in (("full", flat), ("labelled", labelled)):
        runs[name] = work / f"before-{name}"
        shutil.rmtree(runs[name], ignore_errors=True)
        timed([*train, "--data-dir", str(folder), "--out", str(runs[name])], env, quiet=False)
    photos = sorted(flat.iterdir())[:20]
    return {
        "src": src,
        "predict_20": timed(
            [
                "predict",
                str(runs["full"]),
                *map(str, photos),
                "--out",
                str(work / "before-predict20.csv"),
            ],
            env,
            quiet=False,
        ),
        "report": timed(
            ["report", str(runs["full"]), "--out", str(work / "before-report.html")],
            env,
            quiet=False,
        ),
        "evaluate_labelled": {
            **timed(["evaluate", str(runs["labelled"]), "--json"], env, quiet=False),
            "images": labelled_size,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cifar-test", default="../shared/datasets/cifar10-jpeg/test")
    ap.add_argument("--work", default="/tmp/deepclust-photo-bench")
    ap.add_argument("--parts", default="full,subsets,commands")
    ap.add_argument("--sizes", default="300,1000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--labelled-size", type=int, default=1000)
    ap.add_argument("--before-src", help="src/ of the checkout to measure as 'before'")
    ap.add_argument("--name", default="photo_folder_cifar10_test")
    ap.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="subsets: a candidate recipe besides the default, e.g. "
        "'turtle=--method turtle' or 'sl=--set self_label.epochs=20' (repeatable)",
    )
    args = ap.parse_args()
    work = Path(args.work)
    flat, truth, _ = flat_copy(Path(args.cifar_test), work)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result: dict[str, object] = {
        "what": "deepclust cluster FOLDER --k 10 (IMC-SwAV heads on frozen EfficientNet-Lite2 @ 224 px features, then self-labelling)",
        "dataset_copy": f"CIFAR-10 (JPEG copy), test split, {len(truth):,} images in one flat folder",
        "protocol": "train+test (fit and scored on the same images; labels only to score)",
        "device": f"cpu ({cpu_model()}, {os.cpu_count()} cores)",
        "load_before": load_average(),
    }
    target = RESULTS / f"{args.name}.json"
    if target.exists():
        result = {**json.loads(target.read_text()), **result}  # parts not run now are kept
    parts = args.parts.split(",")
    if "full" in parts:
        result["full"] = part_full(flat, truth, work, env)
        target.write_text(json.dumps(result, indent=1))
    if "subsets" in parts:
        sizes, seeds = ([int(x) for x in v.split(",")] for v in (args.sizes, args.seeds))
        recipes = {r.split("=", 1)[0]: r.split("=", 1)[1].split() for r in args.recipe}
        result["subsets"] = part_subsets(flat, truth, work, env, sizes, seeds, recipes)
        target.write_text(json.dumps(result, indent=1))
    if "commands" in parts:
        result["commands"] = part_commands(flat, truth, work, env, args.labelled_size)
        target.write_text(json.dumps(result, indent=1))
    if "k_auto" in parts:
        sizes, seeds = ([int(x) for x in v.split(",")] for v in (args.sizes, args.seeds))
        result["k_auto"] = part_k_auto(flat, work, sizes, seeds)
        target.write_text(json.dumps(result, indent=1))
    if "before" in parts:
        result["before"] = part_before(flat, truth, work, env, args.labelled_size, args.before_src)
    result["load_after"] = load_average()
    target.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "commands"}, indent=1)[:3000])


if __name__ == "__main__":
    main()
