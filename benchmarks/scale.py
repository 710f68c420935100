"""Large collections on this machine's CPU, part by part; JSON in benchmarks/results/.

    flock /work/bench/cpu.lock python benchmarks/scale.py --parts knn --work /work/bench/scale

Parts (--parts, comma-separated; each writes benchmarks/results/scale_<part>.json, and each
is best run as its own process, so that its peak RSS is its own):

- synthetic: 1,000,000 x 1,280 float16 clustered features into WORK/synthetic.npy (not
             timed): 1,000 Gaussian centres in a 256-dimensional subspace, each cluster
             spread along its own 32 random directions, plus isotropic noise; labels alongside.
- choice:    neighbour search on the first 200,000 synthetic rows, before choosing: exact
             chunked matmul (today's path) on a 2,000-query sample, extrapolated to all
             rows; faiss IVF-Flat, IVF with float16 storage, PCA-256 + IVF, and usearch's
             HNSW (benchmark-only: pip install usearch); recall@20 and extrapolated seconds
             for the 1M graph.
- knn:       the 20-NN graph of all 1M rows through deepclust.cluster.neighbours, its
             recall@20 checked again on another 2,000-query sample against exact search.
- kmeans:    spherical k-means, K=1,000, on the 1M rows (deepclust.cluster.kmeans_at_scale).
- heads:     frozen IMC-SwAV heads on the 1M rows read from the memory-mapped cache: HEAD_STEPS
             steps of the epoch, timed, and the full epoch extrapolated from them.
- cifar-bare:    images/s of deepclust's extraction, of a bare timm loop doing the same job
                 (uint8 -> resize -> normalise -> forward) and of the forward alone, on the
                 same 2,048 CIFAR-10 images (Lite0, 128 px, same encoder batch and threads;
                 3 alternating rounds after a warm-up, the best of each kept).
- cifar-killed:  `deepclust cluster` on CIFAR-10 train+test (60,000 JPEGs) as one flat
                 folder of links, empty cache, killed (SIGKILL) during feature extraction.
- cifar-resumed: the same command again, resuming; scores, extraction images/s, peak RSS.

Every part records wall seconds, peak RSS (ru_maxrss of this process), threads and
/proc/loadavg before and after.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from deepclust.engine.machine import cpu_model, load_average

RESULTS = Path(__file__).parent / "results"
N, DIM, CENTRES, SUBSPACE, RANK = 1_000_000, 1280, 1000, 256, 32
K_NN, QUERIES = 20, 2000


def peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def machine() -> dict[str, object]:
    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "device": "cpu"}


def synthetic_features(path: Path, n: int = N, seed: int = 0, chunk: int = 50_000) -> None:
    """Write clustered float16 features [n, DIM] to path (.npy) and their labels beside it."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(DIM, SUBSPACE, generator=gen))[0]
    centres = torch.randn(CENTRES, SUBSPACE, generator=gen) @ basis.T  # [C, DIM], norm ~16
    labels = torch.randint(CENTRES, (n,), generator=gen)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, DIM))
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        x = centres[lab].clone()
        for c in lab.unique().tolist():
            rows = (lab == c).nonzero().squeeze(1)
            directions = torch.randn(DIM, RANK, generator=torch.Generator().manual_seed(c + 1))
            spread = torch.randn(len(rows), RANK, generator=gen) @ directions.T
            x[rows] += 0.5 * spread / RANK**0.5  # norm ~ 0.5 sqrt(DIM) along 32 directions
        x += 0.05 * torch.randn(x.shape, generator=gen)
        out[start : start + len(lab)] = x.half().numpy()
    out.flush()
    np.save(path.with_name(path.stem + "_labels.npy"), labels.numpy())


def load_synthetic(work: Path) -> torch.Tensor:
    path = work / "synthetic.npy"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run --parts synthetic first.")
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def part_synthetic(work: Path) -> dict[str, object]:
    synthetic_features(work / "synthetic.npy")
    return {"path": str(work / "synthetic.npy"), "shape": [N, DIM], "dtype": "float16"}


def part_choice(work: Path, n: int = 200_000) -> dict[str, object]:
    """Neighbour search options on the first n rows; seconds extrapolated to N rows."""
    import faiss

    from deepclust.cluster.neighbours import UnitRows, exact_knn_of_sample, recall_at_k

    faiss.omp_set_num_threads(torch.get_num_threads())
    rows = UnitRows(load_synthetic(work)[:n], centre=False)
    x = rows.read(0, n).numpy()
    queries = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:QUERIES].sort().values
    t0 = time.perf_counter()
    truth = exact_knn_of_sample(rows, queries, K_NN)
    exact_s = time.perf_counter() - t0
    out: dict[str, object] = {
        "rows": n,
        "queries": QUERIES,
        "exact_matmul": {
            "seconds_for_queries": round(exact_s, 2),
            "extrapolated_1m_graph_s": round(exact_s * (N / QUERIES) * (N / n), 0),
        },
    }
    nlist = round(4 * n**0.5)
    for spec in (f"IVF{nlist},Flat", f"IVF{nlist},SQfp16", f"PCA256,IVF{nlist},Flat"):
        index = faiss.index_factory(DIM, spec, faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = 10
        t0 = time.perf_counter()
        index.train(x[np.random.default_rng(0).choice(n, 40 * nlist, replace=False)])
        index.add(x)
        build = time.perf_counter() - t0
        for nprobe in (4, 8):
            faiss.extract_index_ivf(index).nprobe = nprobe
            t0 = time.perf_counter()
            found = torch.from_numpy(index.search(x[queries.numpy()], K_NN)[1])
            search = time.perf_counter() - t0
            out[f"faiss {spec} nprobe={nprobe}"] = {
                "build_s": round(build, 1),
                "search_s_for_queries": round(search, 2),
                "recall_at_20": round(recall_at_k(found, truth), 4),
                "extrapolated_1m_search_s": round(search * N / QUERIES, 0),
            }
        del index
    out["usearch HNSW f16 (connectivity 16)"] = _usearch_option(x, queries, truth)
    return out


def _usearch_option(x: np.ndarray, queries: torch.Tensor, truth: torch.Tensor) -> dict:
    """usearch's HNSW (cosine, float16 storage; the maintained HNSW library considered besides
    faiss), built on all rows and searched for the sampled queries."""
    from usearch.index import Index

    from deepclust.cluster.neighbours import recall_at_k

    index = Index(ndim=x.shape[1], metric="cos", dtype="f16", connectivity=16)
    t0 = time.perf_counter()
    index.add(np.arange(len(x)), x, threads=torch.get_num_threads())
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = index.search(x[queries.numpy()], K_NN, threads=torch.get_num_threads()).keys
    search = time.perf_counter() - t0
    return {
        "build_s": round(build, 1),
        "extrapolated_1m_build_s": round(build * N / len(x), 0),
        "search_s_for_queries": round(search, 2),
        "recall_at_20": round(recall_at_k(torch.from_numpy(found.astype(np.int64)), truth), 4),
        "extrapolated_1m_search_s": round(search * N / QUERIES, 0),
    }


def part_knn(work: Path) -> dict[str, object]:
    from deepclust.cluster.neighbours import (
        UnitRows,
        exact_knn_of_sample,
        neighbour_graph,
        recall_at_k,
    )

    feats = load_synthetic(work)
    t0 = time.perf_counter()
    graph = neighbour_graph(feats, K_NN, sample=QUERIES, seed=0)
    seconds = time.perf_counter() - t0
    np.save(work / "knn20.npy", graph.indices.numpy())  # part heads reads it
    check = torch.randperm(N, generator=torch.Generator().manual_seed(1))[:QUERIES].sort().values
    truth = exact_knn_of_sample(UnitRows(feats, centre=False), check, K_NN)
    return {
        "graph": graph.describe(),
        "seconds": round(seconds, 1),
        "exact": graph.exact,
        "nlist": graph.nlist,
        "nprobe": graph.nprobe,
        "recall_at_20_tuning_sample": round(graph.recall or 1.0, 4),
        "recall_at_20_independent_sample": round(recall_at_k(graph.indices[check], truth), 4),
        "queries": QUERIES,
    }


def part_kmeans(work: Path) -> dict[str, object]:
    from deepclust.cluster.kmeans_at_scale import kmeans_rows
    from deepclust.evaluation.metrics import score

    feats = load_synthetic(work)
    t0 = time.perf_counter()
    result = kmeans_rows(feats, CENTRES, seed=0)
    seconds = time.perf_counter() - t0
    labels = np.load(work / "synthetic_labels.npy")
    return {
        "k": CENTRES,
        "seconds": round(seconds, 1),
        "iterations": result.n_iter,
        "nmi_vs_generating_centres": round(score(labels, result.labels.numpy()).nmi, 4),
    }


# ------------------------------------------------------------------ CIFAR-10 as one folder

CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg"
ENCODER, INPUT = "efficientnet_lite0", 128
# The decoded store (60,000 x 3 x 32 x 32 = 184 MB) is put on disk (data/disk_store.py), as a
# collection past the in-memory budget would be, by giving that budget as 64 MiB.
STORE_MB = "64"
KILL_AT_CHUNKS = 12  # of 30 feature chunks (2,048 images each): killed ~40% into extraction


def flat_folder(work: Path) -> tuple[Path, dict[str, int]]:
    """WORK/flat60k/imgNNNNN.jpg: symbolic links to CIFAR-10's train and test JPEGs in a
    seeded random order (no class in any name), and each name's class for scoring."""
    import random

    classes = sorted(p.name for p in (CIFAR / "train").iterdir() if p.is_dir())
    items = [
        (c, f)
        for split in ("train", "test")
        for c in classes
        for f in sorted((CIFAR / split / c).iterdir())
    ]
    random.Random(0).shuffle(items)
    flat = work / "flat60k"
    truth = {f"img{i:05d}.jpg": classes.index(c) for i, (c, _) in enumerate(items)}
    if not flat.is_dir() or len(list(flat.iterdir())) != len(items):
        flat.mkdir(parents=True, exist_ok=True)
        for i, (_, f) in enumerate(items):
            link = flat / f"img{i:05d}.jpg"
            if not link.is_symlink():
                link.symlink_to(f.resolve())
    return flat, truth


def cluster_argv(flat: Path, run: Path) -> list[str]:
    return [
        "--no-progress",
        "cluster",
        str(flat),
        "--k",
        "10",
        "--out",
        str(run),
        "--set",
        f"encoder.name={ENCODER}",
        "--set",
        f"encoder.input_size={INPUT}",
    ]


def cluster_env(work: Path) -> dict[str, str]:
    import os

    return {**os.environ, "DEEPCLUST_CACHE": str(work / "cache"), "DEEPCLUST_STORE_MB": STORE_MB}


def run_cluster(argv: list[str], env: dict[str, str], kill_when: Path | None = None) -> dict:
    """`python -m deepclust ARGV` as a child; its wall seconds and own peak RSS (os.wait4).
    kill_when: a feature .partial folder; the child is killed (SIGKILL) once it holds
    KILL_AT_CHUNKS chunk files."""
    import os
    import signal
    import subprocess
    import sys

    t0 = time.perf_counter()
    log = open(Path(argv[argv.index("--out") + 1]).with_suffix(".log"), "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepclust", *argv], env=env, stdout=log, stderr=log
    )
    chunks = 0
    while kill_when is not None and proc.poll() is None:
        found = (
            list(kill_when.parent.glob("*.partial/*.safetensors"))
            if kill_when.parent.exists()
            else []
        )
        chunks = len(found)
        if chunks >= KILL_AT_CHUNKS:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.5)
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    return {
        "argv": argv,
        "exit_code": os.waitstatus_to_exitcode(status),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
        **({"killed_with_chunks_saved": chunks} if kill_when is not None else {}),
    }


def part_cifar_killed(work: Path) -> dict[str, object]:
    """`deepclust cluster` on the 60,000-image folder with an empty cache, killed during
    feature extraction once KILL_AT_CHUNKS chunks are saved."""
    import shutil

    flat, _ = flat_folder(work)
    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "run-killed", ignore_errors=True)
    env = cluster_env(work)
    res = run_cluster(
        cluster_argv(flat, work / "run-killed"), env, work / "cache" / "features" / "x"
    )
    return {"images": 60_000, "store_mb_budget": STORE_MB, **res}


def part_cifar_resumed(work: Path) -> dict[str, object]:
    """The same command again: decoding and extraction resume, then clustering and report."""
    import shutil

    from safetensors import safe_open

    from deepclust.encoders.feature_file import open_mapped  # noqa: F401 (the cache's reader)
    from deepclust.evaluation.metrics import score
    from deepclust.evaluation.predictions import read_predictions_csv

    flat, truth = flat_folder(work)
    run = work / "run-resumed"
    shutil.rmtree(run, ignore_errors=True)
    res = run_cluster(cluster_argv(flat, run), cluster_env(work))
    rows = read_predictions_csv(run / "predictions.csv")
    labels = np.array([truth[Path(r["path"]).name] for r in rows])
    found = np.array([int(r["cluster"]) for r in rows])
    (cache,) = (work / "cache" / "features").glob("*.safetensors")
    with safe_open(str(cache), framework="pt") as f:
        info = f.metadata()
    extraction = 60_000 / float(info["seconds"])
    return {
        **res,
        "scores": {
            k: round(float(v), 4) for k, v in score(labels, found).as_dict().items() if k != "n"
        },
        "extraction_metadata": info,
        "extraction_images_per_s": round(extraction, 1),
    }


def part_cifar_bare(work: Path, count: int = 2048, rounds: int = 3) -> dict[str, object]:
    """Images/s of deepclust's extraction and of bare timm loops (tf_efficientnet_lite0, no
    deepclust code) on the same decoded images, at the encoder batch the extraction runs and
    the same threads: the bare loop doing the same job (uint8 -> resize 32->128 bilinear,
    normalise, channels_last forward) and the forward alone on inputs made beforehand (the
    ceiling). Everything is warmed up first; `rounds` rounds alternate the three, and each
    keeps its best round (the least disturbed by anything else on the machine)."""
    import os

    import timm
    import torchvision.transforms.v2.functional as TF

    from deepclust.data.readers import decode_files
    from deepclust.data.store import ImageSet
    from deepclust.data.views import eval_images
    from deepclust.encoders import build_encoder
    from deepclust.encoders.cache import extract_features, extraction_batch_size

    flat, _ = flat_folder(work)
    os.environ.update(DEEPCLUST_NO_CACHE="1", DEEPCLUST_NO_PROGRESS="1")
    files = sorted(flat.iterdir())[:count]
    decoded = decode_files([str(f) for f in files], 32)
    images = ImageSet(torch.from_numpy(decoded.images), torch.full((count,), -1))
    encoder = build_encoder(ENCODER, 10, input_size=INPUT)
    t = encoder.eval_transform()
    batch = extraction_batch_size(encoder, eval_images(images.images[:1], t), 512)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    model = model.to(memory_format=torch.channels_last)
    mean, std = torch.tensor(t.mean).view(3, 1, 1), torch.tensor(t.std).view(3, 1, 1)
    ready = eval_images(images.images, t).contiguous(memory_format=torch.channels_last)

    def deepclust() -> None:
        extract_features(encoder, images, batch_size=512, progress=False)

    @torch.inference_mode()
    def bare_same_job() -> None:
        for b in images.images.split(batch):
            x = TF.resize(b.float() / 255, [INPUT], antialias=True)
            model(((x - mean) / std).contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def bare_forward() -> None:
        for b in ready.split(batch):
            model(b)

    loops = {"deepclust": deepclust, "bare_same_job": bare_same_job, "bare_forward": bare_forward}
    extract_features(
        encoder, ImageSet(images.images[:batch], images.labels[:batch]), progress=False
    )
    bare_same_job()  # warm-up (one pass each)
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            loop()
            rates[name].append(round(count / (time.perf_counter() - t0), 1))
    best = {name: max(r) for name, r in rates.items()}
    return {
        "images": count,
        "encoder_batch": batch,
        "images_per_s_each_round": rates,
        "images_per_s_best_round": best,
        "deepclust_vs_bare_same_job": round(best["deepclust"] / best["bare_same_job"], 3),
        "deepclust_vs_bare_forward": round(best["deepclust"] / best["bare_forward"], 3),
    }


def synthetic_cache(work: Path, images: torch.Tensor) -> None:
    """The synthetic rows as the float32 feature-cache file of Lite0 at 128 px on `images`,
    so that a run on them reads its features from the cache (memory-mapped)."""
    from safetensors.torch import save_file

    from deepclust.encoders import build_encoder
    from deepclust.encoders.cache import cache_key
    from deepclust.encoders.feature_file import write_from_chunks

    folder = work / "heads-cache" / "features"
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(build_encoder(ENCODER, 1, input_size=INPUT), "clean", images)
    if (folder / f"{key}.safetensors").exists():
        return
    feats, chunks = load_synthetic(work), []
    for start in range(0, N, 50_000):
        chunks.append(folder / f"chunk{start:07d}.safetensors")
        save_file({"features": feats[start : start + 50_000].float()}, str(chunks[-1]))
    write_from_chunks(folder / f"{key}.safetensors", "features", chunks, (N, DIM))
    for c in chunks:
        c.unlink()


# Steps of the heads' epoch that run: a full epoch (3,907 steps of 256) takes over an hour on
# 2 cores at K=1,000 (the MI term's K x K joint distribution dominates each step), past the
# shared lock's 15 minutes; its time is extrapolated from these steps (the step cost does
# not depend on N: batches are drawn uniformly from the memory-mapped rows).
HEAD_STEPS = 300


def part_heads(work: Path) -> dict[str, object]:
    """An epoch of the frozen IMC-SwAV recipe (K=1,000) on the 1M synthetic rows, through
    api.train: a registered dataset of 1M one-pixel images whose Lite0 features are the
    synthetic rows, put in the feature cache beforehand (float32, 5.1 GB, memory-mapped by
    the run); neighbour views use the 20-NN graph of part knn instead of computing it again."""
    import os

    from deepclust import api
    from deepclust.cluster.neighbours import NeighbourGraph
    from deepclust.data import datasets
    from deepclust.data.store import ImageSet
    from deepclust.engine import frozen

    labels = torch.from_numpy(np.load(work / "synthetic_labels.npy"))
    images = ImageSet(torch.zeros(N, 3, 1, 1, dtype=torch.uint8), labels)
    info = datasets.DatasetInfo(
        "synthetic-1m", "synthetic features", ("train",), CENTRES, None, "", ""
    )
    datasets.DATASETS.register("synthetic-1m")(
        datasets.DatasetEntry(info, lambda root, split, opts: images, None)
    )
    synthetic_cache(work, images.images)
    os.environ.update(DEEPCLUST_CACHE=str(work / "heads-cache"), DEEPCLUST_NO_PROGRESS="1")
    knn = torch.from_numpy(np.load(work / "knn20.npy"))
    measured = json.loads((RESULTS / "scale_knn.json").read_text())
    frozen.announced_graph = lambda feats, k, chunk=4096, centre=False: NeighbourGraph(
        knn[:, :k],
        False,
        0.0,
        measured["recall_at_20_tuning_sample"],
        QUERIES,
        measured["nlist"],
        measured["nprobe"],
    )
    overrides = [
        ("clusters", CENTRES),
        ("encoder.name", ENCODER),
        ("encoder.input_size", INPUT),
        ("data.protocol", "all"),
        ("train.epochs", 1),
        ("train.eval_every", 1),
        ("train.progress", False),
        ("train.max_steps_per_epoch", HEAD_STEPS),
        ("self_label.epochs", 0),  # the heads' epoch alone (the stage is timed in cluster runs)
    ]
    cfg = api.make_config("imc-swav", "synthetic-1m", "frozen", overrides)
    shutil.rmtree(work / "heads-run", ignore_errors=True)  # this benchmark's own scratch run
    t0 = time.perf_counter()
    result = api.train(cfg, out=work / "heads-run")
    seconds = time.perf_counter() - t0
    epochs = [json.loads(line) for line in (work / "heads-run" / "metrics.jsonl").open()]
    epoch = next(e for e in epochs if "seconds" in e)
    full_epoch = -(-N // result.summary["schedule"]["batch_size"])
    return {
        "rows": N,
        "clusters": CENTRES,
        "run_seconds_total": round(seconds, 1),
        "steps_run": HEAD_STEPS,
        "steps_in_full_epoch": full_epoch,
        "measured": {k: epoch[k] for k in ("seconds", "images_per_s", "loss") if k in epoch},
        "full_epoch_seconds_extrapolated": round(epoch["seconds"] / HEAD_STEPS * full_epoch, 0),
        "nmi_vs_generating_centres": round(result.summary["metrics"].get("nmi", float("nan")), 4),
        "schedule": result.summary.get("schedule"),
        "config": {k: v for k, v in overrides},
    }


PARTS: dict[str, Callable[[Path], dict[str, object]]] = {
    "heads": part_heads,
    "cifar-bare": part_cifar_bare,
    "cifar-killed": part_cifar_killed,
    "cifar-resumed": part_cifar_resumed,
    "synthetic": part_synthetic,
    "choice": part_choice,
    "knn": part_knn,
    "kmeans": part_kmeans,
}


def run_part(name: str, work: Path) -> Path:
    start_load = load_average()
    result = PARTS[name](work)
    record = {
        "part": name,
        **result,
        "peak_rss_gib": peak_rss_gib(),
        "machine": machine(),
        "loadavg_start": start_load,
        "loadavg_end": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"scale_{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parts", required=True, help=f"comma-separated: {', '.join(PARTS)}")
    ap.add_argument("--work", default="/work/bench/scale", help="scratch folder (not committed)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.parts.split(","):
        if name not in PARTS:
            raise SystemExit(f"unknown part '{name}': choose from {', '.join(PARTS)}")
        run_part(name, work)


if __name__ == "__main__":
    main()
