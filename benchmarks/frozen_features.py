"""Every method on the frozen features of a pretrained encoder, with baselines, as JSON.

    python benchmarks/frozen_features.py --data-dir ../shared/datasets/cifar10-jpeg/test \
        --encoder efficientnet_lite0 --input-size 128

Extracts the features once (timed cold unless they are cached), measures how often the 20
nearest neighbours share a label, then runs the k-means / spectral / agglomerative
baselines and each deep method registered with a `frozen` config on the cached features,
recording ACC / NMI / ARI and the clustering wall time. Protocol train+test on one split:
the methods fit and are scored on the same images (no labels are used to fit).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from deepclust import api
from deepclust.config import CONFIG_ROOT
from deepclust.data.datasets import load_protocol
from deepclust.encoders import build_encoder
from deepclust.encoders.cache import extract_features
from deepclust.engine.frozen import nearest_neighbours
from deepclust.methods import METHODS

RESULTS = Path(__file__).parent / "results"
BASELINES = ["kmeans", "spectral", "agglomerative"]


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
    knn = nearest_neighbours(feats, 21)[:, 1:]
    agreement = (fit.labels[knn] == fit.labels[:, None]).float().mean().item()

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
        t = time.time()
        result = api.train(cfg, out=out)
        seconds = time.time() - t
        m = result.summary["metrics"]
        rows.append(
            {
                "method": method,
                "acc": m["acc"],
                "nmi": m["nmi"],
                "ari": m["ari"],
                "purity": m["purity"],
                "epochs": result.summary["epochs"],
                "clustering_s": round(seconds, 1),
                "config": "frozen" if config else "default",
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
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "platform": platform.platform(),
        "extraction_s": round(extraction_s, 1),
        "extraction_note": "cold"
        if extraction_s > 5
        else "features were cached (time is the cache read)",
        "knn20_label_agreement": round(agreement, 4),
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}_{args.encoder}_{args.input_size}px.json"
    path.write_text(json.dumps(out, indent=2))
    print(
        f"extraction {extraction_s:.1f} s, 20-NN label agreement {agreement:.4f}; written: {path}"
    )


if __name__ == "__main__":
    main()
