"""Every method on the frozen features of a pretrained encoder, with baselines, as JSON.

    python benchmarks/frozen_features.py --data-dir ../shared/datasets/cifar10-jpeg/test \
        --encoder efficientnet_lite0 --input-size 128

Extracts the features once (timed cold unless they are cached; the cache file records the
cold extraction's wall time, device and load average, which are reported either way),
measures how often the 20 nearest neighbours share a label (the mean over all neighbour
pairs, and the accuracy of their majority vote), then runs the k-means / spectral / agglomerative
baselines and each deep method registered with a `frozen` config on the cached features,
recording ACC / NMI / ARI and the clustering wall time. Protocol train+test on one split:
the methods fit and are scored on the same images (no labels are used to fit).
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

import torch

from deepclust import api
from deepclust.config import CONFIG_ROOT
from deepclust.data.datasets import load_protocol
from deepclust.encoders import build_encoder
from deepclust.encoders.cache import extract_features, extraction_info
from deepclust.engine.frozen import nearest_neighbours
from deepclust.engine.machine import load_average
from deepclust.methods import METHODS

RESULTS = Path(__file__).parent / "results"
BASELINES = ["kmeans", "spectral", "agglomerative"]


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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg/test")
    ap.add_argument("--dataset-copy", default="CIFAR-10 (JPEG copy), test split (10,000 images)")
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument(
        "--methods",
        default="",
        help="comma-separated; default: baselines + methods with a frozen config",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="frozen_cifar10_test")
    args = ap.parse_args()

    fit, _ = load_protocol("imagefolder", "all", args.data_dir)
    encoder = build_encoder(args.encoder, fit.image_size[0], input_size=args.input_size)
    t0 = time.time()
    feats = extract_features(encoder, fit, "clean", "cpu", 256, None, progress=True)
    extraction_s = time.time() - t0
    cold = extraction_info(encoder, fit)
    knn = nearest_neighbours(feats, 21)[:, 1:]  # cosine, self excluded
    neighbour_labels = fit.labels[knn]
    agreement = (neighbour_labels == fit.labels[:, None]).float().mean().item()
    vote = (neighbour_labels.mode(dim=1).values == fit.labels).float().mean().item()

    def has_frozen_config(method: str) -> bool:
        return (CONFIG_ROOT / method / "frozen.yaml").is_file()

    deep = [m for m in METHODS.names() if m not in BASELINES and has_frozen_config(m)]
    methods = args.methods.split(",") if args.methods else BASELINES + deep
    rows = []
    for method in methods:
        overrides = {
            "data.data_dir": args.data_dir,
            "data.protocol": "all",
            "encoder.name": args.encoder,
            "encoder.input_size": args.input_size,
            "train.seed": args.seed,
            "train.progress": False,
        }
        config = "frozen" if method not in BASELINES and has_frozen_config(method) else None
        cfg = api.make_config(method, "imagefolder", config, overrides)
        out = Path("runs") / f"bench-{args.name}-{method}"
        if out.exists():
            shutil.rmtree(out)
        load_before = load_average()
        t = time.time()
        result = api.train(cfg, out=out)
        seconds = time.time() - t
        m = result.summary["metrics"]
        clusters = torch.as_tensor(read_clusters(out / "predictions.csv"))
        rows.append(
            {
                "method": method,
                "acc": m["acc"],
                "nmi": m["nmi"],
                "ari": m["ari"],
                "purity": m["purity"],
                "epochs": result.summary["epochs"],
                "clustering_s": round(seconds, 1),
                "loadavg_before": load_before,
                "loadavg_after": load_average(),
                "label_free": label_free_scores(feats, knn, clusters),
                "config": "frozen" if config else "default",
                "train": {
                    "batch_size": cfg.train.batch_size,
                    "optimizer": cfg.train.optimizer.name,
                    "lr": cfg.train.optimizer.lr,
                    "schedule": cfg.train.schedule.name,
                },
                "params": cfg.params,
                "frozen_views": {
                    "neighbours": cfg.encoder.neighbours,
                    "noise": cfg.encoder.feature_noise,
                    "augmented_copies": cfg.encoder.augmented_copies,
                },
            }
        )
        print(
            f"{method:14s} ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f} ({seconds:.1f} s)"
        )
    out = {
        "dataset": args.dataset_copy,
        "protocol": "train+test (one split, fit and scored on the same images)",
        "n": len(fit),
        "encoder": args.encoder,
        "input_size": args.input_size,
        "seeds": 1,
        "seed": args.seed,
        "device": f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores, shared with other jobs)",
        "platform": platform.platform(),
        "extraction_s": round(extraction_s, 1),
        "extraction_note": "cold"
        if extraction_s > 5
        else "features were cached (time is the cache read)",
        "cold_extraction": cold,
        "knn20_label_agreement": round(agreement, 4),
        "knn20_majority_vote_acc": round(vote, 4),
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}_{args.encoder}_{args.input_size}px.json"
    path.write_text(json.dumps(out, indent=2))
    print(
        f"extraction {extraction_s:.1f} s, 20-NN label agreement {agreement:.4f} "
        f"(majority vote {vote:.4f}); written: {path}"
    )


if __name__ == "__main__":
    main()
