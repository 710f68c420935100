"""Every method on the frozen features of a pretrained encoder, with baselines, as JSON.

    python benchmarks/frozen_features.py --data-dir ../shared/datasets/cifar10-jpeg/test \
        --encoder efficientnet_lite2 --input-size 224 --seeds 0,1,2
    python benchmarks/frozen_features.py --dataset fashion_mnist --data-dir FOLDER_WITH_T10K \
        --dataset-copy "Fashion-MNIST test (Debian dataset-fashion-mnist)" --name frozen_fashion_test ...

Extracts the features once (timed cold unless they are cached; the cache file records the
cold extraction's wall time, device and load average, which are reported either way),
measures how often the 20 nearest neighbours share a label (the mean over all neighbour
pairs, and the accuracy of their majority vote; cosine on the mean-subtracted features, as
the methods' neighbour views use, and plain cosine), then runs the k-means / spectral /
agglomerative baselines and each deep method registered with a `frozen` config on the
cached features, once per seed, recording ACC / NMI / ARI, label-free scores and the
clustering wall time, and their mean and standard deviation over the seeds. Protocol
train+test on one split: the methods fit and are scored on the same images (no labels are
used to fit). `--set KEY=VALUE` overrides every deep method's config (a variant to compare).

Self-labelling (`--self-label-epochs N`, training/self_label.py): every deep method runs
once per seed with the stage on; the run scores its heads before the stage (an eval line
in metrics.jsonl) and after it, so each method gets a row without and a row with
self-labelling from the same training, the first timed without the stage's seconds.
Methods in `--once` (deterministic given the features: spectral, agglomerative) run on
the first seed only. Each run records the load average before and after it: the sweep
may run while the machine is shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from deepclust import api
from deepclust.cluster.neighbours import nearest_neighbours
from deepclust.config import CONFIG_ROOT, parse_overrides
from deepclust.data.datasets import load_protocol
from deepclust.encoders import build_encoder
from deepclust.encoders.cache import extract_features, extraction_info
from deepclust.engine.machine import cpu_model, load_average
from deepclust.methods import METHODS

RESULTS = Path(__file__).parent / "results"
BASELINES = ["kmeans", "spectral", "agglomerative"]
# Deep methods whose prediction has no trainable head for the self-labelling stage: DigPro
# predicts by k-means centroids on its EMA target network's projections.
NO_SELF_LABEL = {"digpro"}


def read_clusters(path: Path) -> list[int]:
    with path.open() as f:
        return [int(row["cluster"]) for row in csv.DictReader(f)]


def label_free_scores(
    feats: torch.Tensor, knn: torch.Tensor, clusters: torch.Tensor
) -> dict[str, float]:
    """Scores of a partition [N] that read no label: cosine silhouette in the frozen features
    (on a fixed 5,000-sample subsample), the share of 20-NN pairs in one cluster, and the
    entropy of the cluster sizes over log K (1 = balanced)."""
    from sklearn.metrics import silhouette_score

    x = torch.nn.functional.normalize(feats, dim=1).numpy()
    k = int(clusters.max()) + 1
    sil = (
        silhouette_score(x, clusters.numpy(), metric="cosine", sample_size=5000, random_state=0)
        if len(clusters.unique()) > 1
        else -1.0
    )
    sizes = torch.bincount(clusters, minlength=k).float() / len(clusters)
    sizes = sizes[sizes > 0]
    return {
        "silhouette_cosine": round(float(sil), 4),
        "knn20_consistency": round((clusters[knn] == clusters[:, None]).float().mean().item(), 4),
        "size_entropy": round(float(-(sizes * sizes.log()).sum() / torch.log(torch.tensor(k))), 4),
    }


def neighbour_agreement(
    feats: torch.Tensor, labels: torch.Tensor, centre: bool
) -> tuple[torch.Tensor, float, float]:
    """-> (20-NN indices [N, 20] without self, mean label agreement, majority-vote accuracy)."""
    knn = nearest_neighbours(feats, 21, centre=centre)[:, 1:]
    neighbour_labels = labels[knn]
    agreement = (neighbour_labels == labels[:, None]).float().mean().item()
    vote = (neighbour_labels.mode(dim=1).values == labels).float().mean().item()
    return knn, round(agreement, 4), round(vote, 4)


def mean_std(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    std = t.std().item() if len(values) > 1 else 0.0
    return {"mean": round(t.mean().item(), 4), "std": round(std, 4)}


def has_frozen_config(method: str) -> bool:
    return (CONFIG_ROOT / method / "frozen.yaml").is_file()


def stage_records(run_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the eval line before the self-labelling stage, the stage's line), or (None, None)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stage = next((x for x in lines if x["event"] == "self_label"), None)
    if stage is None:
        return None, None
    before = [x for x in lines[: lines.index(stage)] if x["event"] == "eval"][-1]
    return before, stage


def run_config(args: argparse.Namespace, method: str, seed: int, variant: dict) -> Any:
    config = "frozen" if method not in BASELINES and has_frozen_config(method) else None
    overrides = {
        "data.data_dir": args.data_dir,
        "data.protocol": "all",
        "encoder.name": args.encoder,
        "encoder.input_size": args.input_size,
        "train.seed": seed,
        "train.progress": False,
    }
    if config:
        epochs = 0 if method in NO_SELF_LABEL else args.self_label_epochs
        overrides.update({"self_label.epochs": epochs, **variant})
        if args.threads:
            overrides["train.cpu_threads"] = args.threads
    return api.make_config(method, args.dataset, config, overrides)


def train_run(cfg: Any, out: Path) -> tuple[dict, float, str, str]:
    """Train into `out` (replaced) -> (summary, seconds, load average before, after)."""
    if out.exists():
        shutil.rmtree(out)
    load_before = load_average()
    t = time.time()
    result = api.train(cfg, out=out)
    return result.summary, time.time() - t, load_before, load_average()


def read_run(out: Path) -> tuple[dict, float, str, str]:
    """A finished run folder (--from-runs) -> like train_run; its time is the trainer's own."""
    summary = json.loads((out / "summary.json").read_text())  # FileNotFoundError: unfinished
    unknown = "not recorded (read back from the run folder)"
    return summary, float(summary["wall_time_s"]), unknown, unknown


def run_once(args: argparse.Namespace, method: str, seed: int, variant: dict) -> dict[str, Any]:
    """Train `method` on seed (or read its run back); -> {"final": ..., "before_self_label": ...}."""
    cfg = run_config(args, method, seed, variant)
    out = Path("runs") / f"bench-{args.name}-{args.encoder}-{args.input_size}px-{method}-seed{seed}"
    summary, seconds, load_before, load_after = (read_run if args.from_runs else train_run)(
        *([out] if args.from_runs else [cfg, out])
    )
    m = summary["metrics"]
    record = {
        "seed": seed,
        **{k: m[k] for k in ("acc", "nmi", "ari", "purity")},
        "clustering_s": round(seconds, 1),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "clusters": torch.as_tensor(read_clusters(out / "predictions.csv")),
    }
    before, stage = stage_records(out)
    runs = {"final": record, "cfg": cfg, "epochs": summary["epochs"]}
    if stage is not None:
        assert before is not None
        runs["before_self_label"] = {
            **{k: before[k] for k in ("acc", "nmi", "ari", "purity")},
            "seed": seed,
            "clustering_s": round(seconds - stage["seconds"], 1),
            "loadavg_before": load_before,
        }
        record["self_label"] = stage
    return runs


def summary_row(method: str, self_label: bool, runs: list[dict], cfg: Any, epochs: int) -> dict:
    return {
        "method": method,
        "self_label": self_label,
        **{metric: mean_std([r[metric] for r in runs]) for metric in ("acc", "nmi", "ari")},
        "clustering_s": mean_std([r["clustering_s"] for r in runs]),
        "runs": runs,
        "epochs": epochs,
        "config": "frozen" if method not in BASELINES and has_frozen_config(method) else "default",
        "encoder": cfg.encoder.name,
        "train": {
            "batch_size": cfg.train.batch_size,
            "optimizer": cfg.train.optimizer.name,
            "lr": cfg.train.optimizer.lr,
            "schedule": cfg.train.schedule.name,
            "cpu_threads": cfg.train.cpu_threads,
        },
        "self_label_config": cfg.to_dict()["self_label"] if self_label else None,
        "params": cfg.params,
        "frozen_views": {
            "neighbours": cfg.encoder.neighbours,
            "centre_neighbours": cfg.encoder.centre_neighbours,
            "noise": cfg.encoder.feature_noise,
            "augmented_copies": cfg.encoder.augmented_copies,
        },
    }


def method_rows(
    args: argparse.Namespace, method: str, seeds: list[int], variant: dict, feats, knn
) -> list[dict]:
    """One row per (method, self-labelling off/on), each over the seeds."""
    finals, befores = [], []
    once = method in args.once.split(",")
    for seed in seeds[:1] if once else seeds:
        try:
            runs = run_once(args, method, seed, variant)
        except FileNotFoundError:  # --from-runs: this seed's run did not finish
            print(f"{method:14s} seed {seed}: no finished run folder, left out", flush=True)
            continue
        final = runs["final"]
        clusters = final.pop("clusters")
        final["label_free"] = label_free_scores(feats, knn, clusters) if knn is not None else None
        finals.append(final)
        if "before_self_label" in runs:
            befores.append(runs["before_self_label"])
        tag = "" if "before_self_label" not in runs else " (self-labelled)"
        print(
            f"{method:14s} seed {seed} ACC {final['acc']:.4f} NMI {final['nmi']:.4f} "
            f"ARI {final['ari']:.4f} ({final['clustering_s']:.1f} s){tag}",
            flush=True,
        )
        if befores:
            b = befores[-1]
            print(f"{'':14s} before self-labelling ACC {b['acc']:.4f} ({b['clustering_s']} s)")
    if not finals:
        return []
    cfg, epochs = runs["cfg"], runs["epochs"]
    if not befores:
        return [summary_row(method, False, finals, cfg, epochs)]
    return [
        summary_row(method, False, befores, cfg, epochs),
        summary_row(method, True, finals, cfg, epochs),
    ]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="imagefolder", help="imagefolder or a registered dataset")
    ap.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg/test")
    ap.add_argument("--dataset-copy", default="CIFAR-10 (JPEG copy), test split (10,000 images)")
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument(
        "--methods",
        default="",
        help="comma-separated; default: baselines + methods with a frozen config",
    )
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument(
        "--self-label-epochs",
        type=int,
        default=0,
        help="> 0: deep methods end with this many self-labelling epochs (scored before and after)",
    )
    ap.add_argument("--once", default="spectral,agglomerative", help="run on the first seed only")
    ap.add_argument("--threads", type=int, default=0, help="train.cpu_threads of deep methods")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every deep method (repeatable), e.g. encoder.neighbours=10",
    )
    ap.add_argument("--name", default="frozen_cifar10_test")
    ap.add_argument(
        "--from-runs",
        action="store_true",
        help="train nothing: read the finished run folders of a sweep of this --name back "
        "(a stopped sweep); their time is the trainer's own wall time, no load average",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="only join these result files of one dataset and encoder (parts of a sweep run "
        "side by side with --methods) into NAME_ENCODER_SIZEpx.json",
    )
    return ap.parse_args()


def merge(paths: list[str], name: str) -> Path:
    """One results file from parts of a sweep (same dataset, encoder, seeds, self-labelling)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    keys = ("dataset", "encoder", "input_size", "seeds", "self_label_epochs", "variant")
    for part in parts[1:]:
        if any(part[k] != parts[0][k] for k in keys):
            raise SystemExit(f"the parts differ in one of {keys}: they are not one sweep")
    out = {**parts[0], "parts": [Path(p).name for p in paths]}
    out["results"] = [row for part in parts for row in part["results"]]
    path = RESULTS / f"{name}_{out['encoder']}_{out['input_size']}px.json"
    path.write_text(json.dumps(out, indent=2))
    return path


def main() -> None:
    args = parse_args()
    if args.merge:
        print(f"written: {merge(args.merge, args.name)}")
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    variant = dict(parse_overrides(args.set))

    fit, _ = load_protocol(args.dataset, "all", args.data_dir)
    encoder = build_encoder(args.encoder, fit.image_size[0], input_size=args.input_size)
    parts = getattr(encoder, "parts", None) or [encoder]  # a joined encoder: part by part,
    t0 = time.time()  # each from its own cache, as the runs read them (engine/frozen.py)
    feats = torch.cat([extract_features(p, fit, "clean", "cpu", 256, None) for p in parts], 1)
    extraction_s = time.time() - t0
    infos = [extraction_info(p, fit) for p in parts]
    cold = (
        infos[0] if len(parts) == 1 else {p.identity: i for p, i in zip(parts, infos, strict=True)}
    )
    knn, agreement, vote, agreement_plain, vote_plain = None, None, None, None, None
    if not args.from_runs:  # read-back parts are merged with a part that measured these
        knn, agreement, vote = neighbour_agreement(feats, fit.labels, centre=True)
        _, agreement_plain, vote_plain = neighbour_agreement(feats, fit.labels, centre=False)

    deep = [m for m in METHODS.names() if m not in BASELINES and has_frozen_config(m)]
    methods = args.methods.split(",") if args.methods else BASELINES + deep
    rows: list[dict] = []
    out = {
        "dataset": args.dataset_copy,
        "protocol": "train+test (one split, fit and scored on the same images)",
        "n": len(fit),
        "encoder": args.encoder,
        "input_size": args.input_size,
        "seeds": seeds,
        "once": args.once.split(","),
        "self_label_epochs": args.self_label_epochs,
        "variant": variant,
        "device": f"cpu ({cpu_model()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores)",
        "platform": platform.platform(),
        "extraction_s": round(extraction_s, 1),
        "extraction_note": "cold"
        if extraction_s > 5
        else "features were cached (time is the cache read)",
        "cold_extraction": cold,
        "knn20_label_agreement": agreement,
        "knn20_majority_vote_acc": vote,
        "knn20_label_agreement_uncentred": agreement_plain,
        "knn20_majority_vote_acc_uncentred": vote_plain,
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}_{args.encoder}_{args.input_size}px.json"
    for method in methods:  # the file is rewritten after each method: a stopped sweep keeps them
        rows.extend(method_rows(args, method, seeds, variant, feats, knn))
        path.write_text(json.dumps(out, indent=2))
    print(
        f"extraction {extraction_s:.1f} s, 20-NN label agreement {agreement} (majority vote "
        f"{vote}; uncentred {agreement_plain} / {vote_plain}); written: {path}"
    )


if __name__ == "__main__":
    main()
