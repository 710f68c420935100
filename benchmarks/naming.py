"""Cluster names from the encoder's ImageNet classifier (cluster/naming.py), scored against
the classes' WordNet synsets, as JSON.

    python benchmarks/naming.py --name cifar10_test
    python benchmarks/naming.py --dataset fashion_mnist --data-dir FOLDER_WITH_T10K \\
        --per-class 100 --name fashion_test_100   # a folder holding only the t10k files
    python benchmarks/naming.py --data-dir ../shared/datasets/cifar10-jpeg/train \\
        --per-class 100 --choose --name choose_cifar10_train_100

The photos' features come from the feature cache (extract_features), the clusters from
spherical k-means with K = the number of classes (seed 0) on them; the names from the
encoder's classifier. Per cluster: its name, the concept and top classes with their shares,
the majority class and how the named synset relates to that class's synset (CLASS_SYNSETS,
mapped by hand): synonym (the same synset), hypernym (the name is more general), hyponym
(more specific), or unrelated ("mixed" counts as unrelated). strict = synonym or hypernym;
lenient also counts hyponyms. Labels are used only to score. --per-class N keeps the first
N photos of each class. --choose names the clusters at every pair of TEMPERATURES and THRESHOLDS and
scores each by closeness (1 / (1 + hops between the named and the class synset) when one is
the other's hypernym, else 0), to choose naming.THRESHOLD on training photos.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepclust.cluster import naming
from deepclust.cluster.spherical_kmeans import spherical_kmeans
from deepclust.data.datasets import load_protocol
from deepclust.data.store import ImageSet
from deepclust.data.vocabulary import read_synsets
from deepclust.encoders import build_encoder
from deepclust.encoders.cache import extract_features

RESULTS = Path(__file__).parent / "results"
THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(9)]  # 0.5 .. 0.9: more than half
TEMPERATURES = [1.0, 0.5, 0.25]
# class folder / name -> WordNet 3.0 noun synset (data.noun offset), chosen by hand
CLASS_SYNSETS = {
    "airplane": "02691156",  # airplane.n.01
    "automobile": "02958343",  # car.n.01 (auto, automobile)
    "bird": "01503061",  # bird.n.01
    "cat": "02121620",  # cat.n.01 (true cat)
    "deer": "02430045",  # deer.n.01
    "dog": "02084071",  # dog.n.01
    "frog": "01639765",  # frog.n.01
    "horse": "02374451",  # horse.n.01
    "ship": "04194289",  # ship.n.01
    "truck": "04490091",  # truck.n.01
    "T-shirt/top": "03595614",  # jersey.n.03 (T-shirt, tee shirt)
    "Trouser": "04489008",  # trouser.n.01 (pant)
    "Pullover": "04021028",  # pullover.n.01 (slipover), a sweater
    "Dress": "03236735",  # dress.n.01 (frock)
    "Coat": "03057021",  # coat.n.01
    "Sandal": "04133789",  # sandal.n.01
    "Shirt": "04197391",  # shirt.n.01
    "Sneaker": "03472535",  # gym_shoe.n.01 (sneaker, tennis shoe)
    "Bag": "02774152",  # bag.n.04 (handbag, pocketbook, purse)
    "Ankle boot": "02872752",  # boot.n.01
}


def load(args: argparse.Namespace) -> ImageSet:
    """The dataset (its first --per-class photos of each class when given)."""
    data, _ = load_protocol(args.dataset, "all", args.data_dir)
    if args.per_class:
        rows = [
            torch.nonzero(data.labels == c).flatten()[: args.per_class]
            for c in range(data.num_classes)
        ]
        data = data.subset(torch.cat(rows))
    return data


def relation(named: str, target: str, parents: dict[str, list[str]]) -> tuple[str, int | None]:
    """How synset `named` relates to `target` (offsets): (kind, hops), hops None if unrelated."""
    up = hops_up(target, parents)
    if named in up:
        return ("synonym" if up[named] == 0 else "hypernym"), up[named]
    down = hops_up(named, parents)
    if target in down:
        return "hyponym", down[target]
    return "unrelated", None


def hops_up(offset: str, parents: dict[str, list[str]]) -> dict[str, int]:
    """Every hypernym of a synset (itself included) with its fewest hops."""
    found, frontier = {offset: 0}, [offset]
    while frontier:
        nxt = []
        for s in frontier:
            for p in parents.get(s, []):
                if p not in found:
                    found[p] = found[s] + 1
                    nxt.append(p)
        frontier = nxt
    return found


def clusters_of(features: torch.Tensor, k: int) -> torch.Tensor:
    return spherical_kmeans(features, k, seed=0, n_init=3).labels


def scored(
    named: list[dict[str, Any]], clusters: np.ndarray, data: ImageSet, parents: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Per cluster its name, concept, classes, majority class and the name's relation to it."""
    labels = data.labels.numpy()
    rows = []
    for k, entry in enumerate(named):
        members = labels[clusters == k]
        if not len(members):
            continue
        major = int(np.bincount(members, minlength=data.num_classes).argmax())
        cls = data.class_names[major]
        concept = entry["concept"]
        kind, hops = (
            relation(concept["wnid"][1:], CLASS_SYNSETS[cls], parents)
            if concept
            else ("unrelated", None)
        )
        rows.append(
            {
                "cluster": k,
                "size": len(members),
                "name": entry["name"],
                "concept": concept,
                "classes": entry["classes"],
                "majority_class": cls,
                "majority_share": round(float((members == major).mean()), 4),
                "relation": kind,
                "hops": hops,
            }
        )
    return rows


def shares(rows: list[dict[str, Any]]) -> dict[str, float]:
    kinds = [r["relation"] for r in rows]
    strict = sum(k in ("synonym", "hypernym") for k in kinds)
    return {
        "strict": round(strict / len(rows), 4),
        "lenient": round((strict + kinds.count("hyponym")) / len(rows), 4),
        "closeness": round(
            float(np.mean([1 / (1 + r["hops"]) if r["hops"] is not None else 0 for r in rows])), 4
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="imagefolder")
    ap.add_argument("--data-dir", default="../shared/datasets/cifar10-jpeg/test")
    ap.add_argument("--per-class", type=int, default=0)
    ap.add_argument("--encoder", default="efficientnet_lite2")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--choose", action="store_true")
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    data = load(args)
    encoder = build_encoder(args.encoder, data.image_size[0], input_size=args.input_size)
    features = extract_features(encoder, data, "clean", torch.device("cpu"), 128, None, False)
    k = data.num_classes
    clusters = clusters_of(features, k)
    parents = {s.offset: s.hypernyms for s in read_synsets("/usr/share/wordnet/data.noun")}
    t = time.perf_counter()
    concepts = naming.concepts_of(encoder, features, clusters, k)
    seconds = time.perf_counter() - t
    assert concepts is not None, f"{args.encoder} has no ImageNet classifier"
    result: dict[str, Any] = {
        "dataset": args.name,
        "photos": len(data),
        "encoder": f"{args.encoder}@{args.input_size}px",
        "clusters": f"spherical k-means, K={k}, seed 0, 3 starts, on the cached features",
        "naming_seconds": round(seconds, 3),
        "temperature": naming.TEMPERATURE,
        "threshold": naming.THRESHOLD,
        "rows": scored(concepts["clusters"], clusters.numpy(), data, parents),
    }
    result["score"] = shares(result["rows"])
    if args.choose:
        result["sweep"] = sweep(encoder, features, clusters, data, parents)
    path = RESULTS / f"naming_{args.name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"wrote {path}")


def sweep(
    encoder: Any, features: torch.Tensor, clusters: torch.Tensor, data: ImageSet, parents
) -> list[dict[str, Any]]:
    """The scores at every (temperature, threshold) pair (with each cluster's name), the
    best closeness first (ties: the milder temperature, then the lower threshold)."""
    out = []
    for temperature in TEMPERATURES:
        means, sizes = naming.cluster_class_means(
            encoder.class_head, features, clusters, data.num_classes, temperature
        )
        for threshold in THRESHOLDS:
            named = naming.name_clusters(means, sizes, naming.imagenet_hierarchy(), threshold)
            rows = scored(named, clusters.numpy(), data, parents)
            names = [r["name"] for r in rows]
            out.append(
                {"temperature": temperature, "threshold": threshold, **shares(rows), "names": names}
            )
    out.sort(key=lambda r: (-r["closeness"], -r["temperature"], r["threshold"]))
    for r in out[:5]:
        print(f"T {r['temperature']}, threshold {r['threshold']}: {r}")
    return out


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['dataset']}: {result['photos']} photos, {result['encoder']}, naming {result['naming_seconds']} s"
    )
    for r in result["rows"]:
        top = ", ".join(f"{c['name']} {c['share']:.2f}" for c in r["classes"])
        print(
            f"  {r['name']:28s} {r['majority_class']:12s} {r['majority_share']:.2f}  {r['relation']:9s}  {top}"
        )
    print(f"  score: {result['score']}")


if __name__ == "__main__":
    main()
