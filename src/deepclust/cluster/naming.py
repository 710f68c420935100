"""Cluster names from an ImageNet-1k classifier and WordNet, offline and in well under a second.

A frozen encoder that ships an ImageNet-1k classifier (`Encoder.class_head`, e.g. the
default EfficientNet-Lite) gives every photo 1000 class probabilities from its cached
features. Per cluster they are averaged; each class's mass then counts for the class and
every WordNet hypernym of it (a synset reached by two paths counts once: `covers` is a set
relation), so a cluster of beagles, terriers and retrievers puts all its mass on "dog".
(Class probabilities are sharpened first: TEMPERATURE.) The cluster is named by the most
specific concept (fewest classes under it, then the larger share, then the more familiar
word: "horse" over its only ImageNet class "sorrel") whose share is above THRESHOLD,
among the nameable ones:

- an ImageNet class itself, or a hypernym people use: tagged at least once in WordNet's
  semantic concordance (cntlist.rev). This skips the taxonomists' links ("heavier-than-air
  craft", "placental", "even-toed ungulate", "domestic cat") for the next familiar word up
  ("aircraft", "mammal", "cat");
- and not one of TOO_ABSTRACT, the top-level WordNet concepts that fit nearly any photo.

No nameable concept above the threshold: the cluster is "mixed". Clusters that get the
same name are told apart by their largest concept under that name that the others do not
take ("dog (terrier)", "dog (retriever)"), else by a number ("dog (2)").
The hierarchy is a file in the package (imagenet_hierarchy.tsv, written by
tools/make_imagenet_hierarchy.py), so WordNet need not be installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

HIERARCHY_FILE = Path(__file__).with_name("imagenet_hierarchy.tsv")
# A photo's class probabilities are softmax(logits / TEMPERATURE): on photos unlike
# ImageNet's (small, upscaled) the classifier spreads its mass thinly over hundreds of
# classes, whose tails would otherwise add up to the broad concepts. THRESHOLD: the naming
# concept must cover more than this share of the cluster's mass (half or more: two disjoint
# concepts never both qualify, so a 50/50 cluster takes their common hypernym). Both chosen on k-means clusters of CIFAR-10 *train* photos, as
# the pair whose names came closest to the clusters' classes' own synsets
# (benchmarks/naming.py --choose; results/naming_choose_cifar10_train_100.json).
TEMPERATURE = 0.5
THRESHOLD = 0.5
# WordNet's top concepts: true of almost every photo, so they name nothing.
TOO_ABSTRACT = frozenset(
    {
        "entity",
        "physical entity",
        "abstraction",
        "thing",
        "object",
        "whole",
        "matter",
        "substance",
        "artifact",
        "instrumentality",
        "living thing",
        "organism",
        "causal agent",
        "part",
    }
)
MIXED = "mixed"
SHOWN_CLASSES = 3  # the classes with most mass, kept with each cluster's concept


@dataclass(frozen=True)
class Hierarchy:
    """The C ImageNet classes (rows 0..C-1, in classifier output order) and their hypernyms."""

    wnids: list[str]  # [S]
    names: list[str]  # [S] first WordNet word
    tagged: np.ndarray  # [S] times tagged in SemCor
    covers: np.ndarray  # [S, C] bool: synset s is class c or a hypernym of it
    num_classes: int

    @property
    def nameable(self) -> np.ndarray:
        """[S] bool: a class, or a familiar word that is not a top-level concept."""
        familiar = self.tagged > 0
        familiar[: self.num_classes] = True
        return familiar & np.array([n not in TOO_ABSTRACT for n in self.names])


def parse_hierarchy(lines: list[str], num_classes: int) -> Hierarchy:
    """TSV rows 'wnid name tagged parents' (the classes first) -> Hierarchy."""
    rows = [line.split("\t") for line in lines if line and not line.startswith("#")]
    wnids = [r[0] for r in rows]
    index = {w: i for i, w in enumerate(wnids)}
    parents = [[index[p] for p in r[3].split()] for r in rows]
    covers = np.zeros((len(rows), num_classes), dtype=bool)
    for c in range(num_classes):
        todo = [c]
        while todo:
            s = todo.pop()
            if not covers[s, c]:
                covers[s, c] = True
                todo += parents[s]
    tagged = np.array([int(r[2]) for r in rows])
    return Hierarchy(wnids, [r[1] for r in rows], tagged, covers, num_classes)


@cache
def imagenet_hierarchy() -> Hierarchy:
    """The packaged ImageNet-1k hierarchy (read once)."""
    return parse_hierarchy(HIERARCHY_FILE.read_text(encoding="utf-8").splitlines(), 1000)


def cluster_class_means(
    head: nn.Linear,
    features: torch.Tensor,
    clusters: torch.Tensor,
    k: int,
    temperature: float = TEMPERATURE,
    chunk: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] -> (mean class probabilities per cluster [K, C], cluster sizes [K]):
    softmax(head(features) / temperature), in chunks on the head's device."""
    device = head.weight.device
    sums = torch.zeros(k, head.out_features, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(features), chunk):
            x = features[start : start + chunk].to(device, torch.float32)
            probs = torch.softmax(head.float()(x) / temperature, dim=1).double().cpu()
            sums.index_add_(0, clusters[start : start + chunk].long(), probs)
    sizes = torch.bincount(clusters.long(), minlength=k).double()
    return (sums / sizes.clamp_min(1)[:, None]).numpy(), sizes.numpy()


def name_clusters(
    means: np.ndarray,
    sizes: np.ndarray,
    hierarchy: Hierarchy,
    threshold: float = THRESHOLD,
) -> list[dict[str, Any]]:
    """means [K, C] class probabilities per cluster -> per cluster {name, concept, classes}:
    concept = {wnid, name, share} that names it (None: mixed or empty), classes = the top
    SHOWN_CLASSES classes with their share. Duplicate names are told apart."""
    shares = means @ hierarchy.covers.T.astype(means.dtype)  # [K, S]
    out = [
        _name_one(means[k], shares[k], hierarchy, threshold) if sizes[k] else EMPTY.copy()
        for k in range(len(means))
    ]
    _tell_apart(out, shares, hierarchy)
    return out


EMPTY: dict[str, Any] = {"name": "", "concept": None, "classes": []}


def _name_one(
    means: np.ndarray, shares: np.ndarray, hierarchy: Hierarchy, threshold: float
) -> dict[str, Any]:
    """One cluster's class means [C] and concept shares [S] -> {name, concept, classes}."""
    leaves = hierarchy.covers.sum(1)
    ok = np.flatnonzero(hierarchy.nameable & (shares > threshold))
    tagged, names = hierarchy.tagged, hierarchy.names
    pick = min(ok, key=lambda s: (leaves[s], -shares[s], -tagged[s], names[s]), default=None)
    top = np.argsort(-means, kind="stable")[:SHOWN_CLASSES]
    return {
        "name": hierarchy.names[pick] if pick is not None else MIXED,
        "concept": _concept(hierarchy, shares, pick) if pick is not None else None,
        "classes": [_concept(hierarchy, means, int(c)) for c in top],
    }


def _concept(hierarchy: Hierarchy, shares: np.ndarray, s: int) -> dict[str, Any]:
    return {
        "wnid": hierarchy.wnids[s],
        "name": hierarchy.names[s],
        "share": round(float(shares[s]), 4),
    }


def _tell_apart(named: list[dict[str, Any]], shares: np.ndarray, hierarchy: Hierarchy) -> None:
    """Clusters sharing a name get '(the largest concept under it no other one takes)',
    else '(2)', '(3)'...; the cluster with the most mass on its qualifier chooses first."""
    groups: dict[str, list[int]] = {}
    for k, entry in enumerate(named):
        if entry["name"]:
            groups.setdefault(entry["name"], []).append(k)
    nameable, leaves = hierarchy.nameable, hierarchy.covers.sum(1)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        root = named[members[0]]["concept"]
        under = hierarchy.covers[hierarchy.wnids.index(root["wnid"])] if root else None
        below = [
            s
            for s in np.flatnonzero(nameable)
            if hierarchy.names[s] != name
            and (under is None or (hierarchy.covers[s] <= under).all())
        ]
        taken: set[str] = set()
        ranked = sorted(members, key=lambda k: -max((shares[k, s] for s in below), default=0.0))
        for number, k in enumerate(ranked, start=1):
            options = sorted(below, key=lambda s: (-shares[k, s], -leaves[s]))
            free = next((s for s in options if hierarchy.names[s] not in taken), None)
            if free is None or shares[k, free] <= 0:
                named[k]["name"] = f"{name} ({number})"
                continue
            taken.add(hierarchy.names[free])
            named[k]["name"] = f"{name} ({hierarchy.names[free]})"


def concepts_of(
    encoder: Any, features: torch.Tensor, clusters: torch.Tensor, k: int
) -> dict[str, Any] | None:
    """cluster_concepts.json for clusters [N] of photos with cached features [N, D] of
    `encoder`: {source, threshold, clusters: name_clusters(...)}; None when the encoder has
    no ImageNet-1k classifier (its clusters stay unnamed)."""
    head = getattr(encoder, "class_head", None)
    if head is None or head.out_features != 1000 or features.shape[1] != head.in_features:
        return None
    means, sizes = cluster_class_means(head, features, clusters, k)
    named = name_clusters(means, sizes, imagenet_hierarchy())
    source = f"ImageNet-1k classifier of {encoder.identity}, WordNet 3.0 hypernyms"
    return {"source": source, "temperature": TEMPERATURE, "threshold": THRESHOLD, "clusters": named}
