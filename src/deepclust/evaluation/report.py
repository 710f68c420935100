"""One self-contained HTML page per run: the photos of every cluster, numbers, and charts.

Everything is inlined, so the page can be mailed, archived or opened offline (no script, no
network request; its only addresses are data: URIs and file:// links to the photos): every
photo is a tile of a JPEG sprite (gallery.py), the charts (charts.py, matplotlib) are base64
PNG data URIs, the style sheet sits in the page. This module only draws: the data
(predictions, features, records) is gathered by `deepclust.api.report`.

The page is Jinja2 templates (templates/report/, autoescaped): page.html.j2 lays out the
sections, each section is one template, `<name>.html.j2`, filled by one function here,
`section_<name>(page) -> its variables, or None to leave it out`. Adding a section is a
template and a function listed in PAGE.

Sections (each a <section id=...>), in the order a photographer reads them: warnings (run
health), overview (per cluster its name, size and coherence; the run's label-free quality;
the clusters that look alike), clusters (one fold per cluster: its most typical photos open,
the others in a nested fold, each photo linked to its file; frame green where the photo's
class is the cluster's Hungarian-matched class, red where not), outliers (photos with low
neighbour agreement, apart: each photo appears once on the page), metrics (run facts and
scores), k (how K was chosen). Then, folded under "Details" (DETAILS), the technical charts,
each with a sentence saying what it shows: sizes, confusion (classes x clusters), embedding
(2-D PCA or t-SNE of encoder features), curves (loss terms and learning rate per epoch,
ACC/NMI/ARI per evaluation from metrics.jsonl), shift (from shift.json where `deepclust
shift` was run).
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepclust.evaluation import charts
from deepclust.evaluation.gallery import Sprites
from deepclust.evaluation.metrics import confusion, hungarian_match
from deepclust.evaluation.quality import NEIGHBOURS, OUTLIER_AGREEMENT

SECTIONS: tuple[str, ...] = (
    "overview",
    "clusters",
    "metrics",
    "confusion",
    "sizes",
    "embedding",
    "curves",
    "shift",
)


@dataclass
class ReportData:
    """Everything the page shows. Arrays index the evaluation images 0..N-1."""

    info: dict[str, Any]  # method, dataset, protocol, encoder, epochs, seed, device, ...
    metric_rows: list[dict[str, Any]]  # {label, protocol, split, n, acc, nmi, ari, purity}
    images: torch.Tensor  # uint8 [N, 3, H, W]
    clusters: np.ndarray  # [N] int
    confidence: np.ndarray  # [N] float
    num_clusters: int
    labels: np.ndarray | None = None  # [N] int, -1 = unlabelled
    class_names: list[str] = field(default_factory=list)
    cluster_names: dict[int, str] = field(default_factory=dict)
    # per cluster, what the encoder's ImageNet classifier sees (the name's concept and share,
    # the top classes): api/reporting.concept_lines
    cluster_concepts: dict[int, str] = field(default_factory=dict)
    embedding: np.ndarray | None = None  # [M, 2]
    embedding_index: np.ndarray | None = None  # [M] rows of images the points belong to
    embedding_method: str = "PCA"
    train_records: list[dict[str, Any]] = field(default_factory=list)
    eval_records: list[dict[str, Any]] = field(default_factory=list)
    shift: dict[str, Any] | None = None
    per_cluster: int = 12
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # run-health warnings, shown first
    skipped: dict[str, Any] | None = None  # summary.json's skipped_images: {count, files}
    paths: list[str] | None = None  # [N] image files, shown under the thumbnails
    k_estimate: dict[str, Any] | None = None  # k_estimate.json: how K was chosen (--k auto)
    agreement: np.ndarray | None = None  # [N] neighbour agreement (frozen runs), shown per photo
    quality: dict[str, Any] | None = None  # summary.json's label-free quality

    @property
    def labelled(self) -> bool:
        return self.labels is not None and bool((self.labels >= 0).any())


# --------------------------------------------------------------------------- viewing

HEADLESS_CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",  # running as root in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the page is self-contained: nothing to fetch
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or None (for screenshots and page checks)."""
    import shutil

    names = ("chromium", "chromium-browser", "google-chrome")
    return next((path for path in map(shutil.which, names) if path), None)


# --------------------------------------------------------------------------- helpers

PALETTE = (
    (215, 38, 61),
    (27, 108, 168),
    (42, 157, 63),
    (240, 138, 36),
    (123, 63, 160),
    (20, 163, 163),
    (231, 90, 168),
    (140, 109, 49),
    (164, 177, 29),
    (85, 85, 85),
    (102, 163, 224),
    (242, 193, 46),
)


def colour(i: int) -> tuple[int, int, int]:
    """A distinct RGB colour per index: 12 hand-picked, then golden-angle hues."""
    if i < len(PALETTE):
        return PALETTE[i]
    hue = (i * 0.618033988749895) % 1.0
    light = (0.45, 0.62, 0.32)[(i // 10) % 3]
    r, g, b = colorsys.hls_to_rgb(hue, light, 0.7)
    return int(r * 255), int(g * 255), int(b * 255)


def cluster_colours(num_clusters: int, mapping: dict[int, int], num_classes: int) -> list[int]:
    """Colour index per cluster: its matched class's (so both embeddings agree), else new ones."""
    out, spare = [], num_classes
    for k in range(num_clusters):
        if k in mapping:
            out.append(mapping[k])
        else:
            out.append(spare)
            spare += 1
    return out


def fmt(v: Any, digits: int = 4) -> str:
    """A number as the tables show it: floats to 4 places, ints with separators, None '–'."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


# --------------------------------------------------------------------------- sections


@dataclass
class Page:
    """The data and what every section derives from it: the confusion [C, K] over the
    labelled images, the Hungarian map cluster -> class, a colour index per cluster, which
    photos are outliers [N] (bool), and the sprites the sections draw their photos into."""

    data: ReportData
    conf: np.ndarray | None
    mapping: dict[int, int]
    cluster_colour: list[int]
    outlier: np.ndarray
    sprites: Sprites

    @classmethod
    def of(cls, data: ReportData) -> Page:
        conf, mapping = None, {}
        if data.labelled:
            num_classes = max(len(data.class_names), int(data.labels.max()) + 1)  # type: ignore[union-attr]
            conf = confusion(data.labels, data.clusters, num_classes, data.num_clusters)
            mapping = hungarian_match(conf)
        colours = cluster_colours(data.num_clusters, mapping, 0 if conf is None else conf.shape[0])
        outlier = np.zeros(len(data.clusters), dtype=bool)
        if data.agreement is not None:
            at_most = (data.quality or {}).get("outlier_agreement_at_most", OUTLIER_AGREEMENT)
            outlier = data.agreement <= at_most
        return cls(data, conf, mapping, colours, outlier, Sprites(data.images))

    def cluster_label(self, k: int) -> str:
        name = self.data.cluster_names.get(k)
        return f"{k} · {name}" if name else str(k)

    def class_label(self, j: int) -> str:
        names = self.data.class_names
        return names[j] if j < len(names) else f"class {j}"

    @cached_property
    def clusters(self) -> list[dict[str, Any]]:
        """Per cluster its heading facts (cluster_facts), for the overview and the photos."""
        return [cluster_facts(self, k) for k in range(self.data.num_clusters)]


FACTS = (
    ("method", "method"),
    ("dataset", "dataset"),
    ("data", "data_dir"),
    ("protocol", "protocol"),
    ("fit split", "fit_split"),
    ("evaluation split", "eval_split"),
    ("encoder", "encoder"),
    ("epochs", "epochs"),
    ("self-labelling", "self_label"),
    ("seed", "seed"),
    ("clusters K", "num_clusters"),
    ("images fit / evaluated", "n_images"),
    ("device", "device"),
    ("training time", "wall_time"),
    ("torch", "torch"),
)


def _skipped_files(skipped: dict[str, Any] | None) -> tuple[int, list[dict[str, str]]]:
    """(how many files the run left out, the ones named) from summary.json's skipped_images."""
    if not isinstance(skipped, dict) or not isinstance(skipped.get("count"), int):
        return 0, []
    files = skipped.get("files") if isinstance(skipped.get("files"), list) else []
    named = [f for f in files if isinstance(f, dict)]
    return skipped["count"], [
        {"path": str(f.get("path")), "reason": str(f.get("reason"))} for f in named
    ]


def section_warnings(page: Page) -> dict[str, Any] | None:
    count, files = _skipped_files(page.data.skipped)
    if not page.data.warnings and not count:
        return None
    return {
        "warnings": page.data.warnings,
        "skipped": count,
        "skipped_files": files,
        "skipped_more": count - len(files),
    }


def section_metrics(page: Page) -> dict[str, Any]:
    info = page.data.info
    facts = [(label, info[k]) for label, k in FACTS if info.get(k) not in (None, "")]
    return {"facts": facts, "rows": page.data.metric_rows, "notes": page.data.notes}


def section_k(page: Page) -> dict[str, Any] | None:
    """How K was chosen (k_estimate.json): the criterion's curve with the chosen K marked."""
    e = page.data.k_estimate
    if not e:
        return None
    curve = [(float(k), float(v)) for k, v in e["curve"].items()]
    chosen = [(x, y) for x, y in curve if int(x) == e["k"]]
    better = "higher" if e["higher_is_better"] else "lower"
    chart = charts.line_chart(
        {e["estimator"]: curve, f"chosen K = {e['k']}": chosen},
        [colour(0), colour(1)],
        f"{e['estimator']} over K ({better} is better)",
        "K",
        e["estimator"],
        width=620,
    )
    ks = [int(k) for k in e["curve"]]
    return {"e": e, "k_min": min(ks), "k_max": max(ks), "chart": chart}


def _shown_score(data: ReportData) -> np.ndarray:
    """Per photo, what the page shows: the neighbour agreement where the run has it (it drops
    in a mixed cluster), else the model's confidence."""
    return data.agreement if data.agreement is not None else data.confidence


def _mark(page: Page, i: int, k: int) -> str:
    """The frame class of photo i in cluster k: ' ok' where its class is the cluster's matched
    class, ' no' where not, '' where either is unknown."""
    data, mapping = page.data, page.mapping
    if not data.labelled or data.labels[i] < 0 or k not in mapping:  # type: ignore[index]
        return ""
    return " ok" if data.labels[i] == mapping[k] else " no"  # type: ignore[index]


def file_url(path: str) -> str:
    """The file:// URL of a photo's file (absolute, percent-quoted), for the page's links."""
    return Path(path).absolute().as_uri()


def _photos(page: Page, order: np.ndarray, in_title: bool = False) -> list[dict[str, Any]]:
    """Photos order [n], in that order, drawn into sprites: per photo its tile's class and
    position, the link to its file (None without one), its name, score and title (with its
    cluster where in_title)."""
    data, score = page.data, _shown_score(page.data)
    what = "agreement" if data.agreement is not None else "confidence"
    out = []
    for i, tile in zip(order.tolist(), page.sprites.tiles(order), strict=True):
        path = data.paths[i] if data.paths else None
        name = Path(path).name if path else f"image {i}"
        k = int(data.clusters[i])
        where = f" · cluster {page.cluster_label(k)}" if in_title else ""
        out.append(
            {
                "cls": f"t {tile.sprite}{_mark(page, i, k)}",
                "pos": tile.position,
                "href": file_url(path) if path else None,
                "name": name,
                "cluster": page.cluster_label(k),
                "score": f"{score[i]:.2f}",
                "title": f"{name}{where} · {what} {score[i]:.2f}",
            }
        )
    return out


def _gallery(page: Page, order: np.ndarray, shown: int, in_title: bool = False) -> dict[str, Any]:
    """The first `shown` photos of order [n] (open, captioned) and the rest (folded), each part
    in its own sprites so that the folded part is decoded only when opened."""
    head, rest = order[:shown], order[shown:]
    return {"head": _photos(page, head, in_title), "rest": _photos(page, rest, in_title)}


def cluster_facts(page: Page, k: int) -> dict[str, Any]:
    """Cluster k's heading: label, name, size, outliers among them, colour, coherence (its
    photos' mean agreement), matched and majority class."""
    data = page.data
    members = data.clusters == k
    out: dict[str, Any] = {
        "id": k,
        "label": page.cluster_label(k),
        "name": data.cluster_names.get(k, ""),
        "concepts": data.cluster_concepts.get(k, ""),
        "size": int(members.sum()),
        "outliers": int((members & page.outlier).sum()),
        "colour": charts.hexcol(colour(page.cluster_colour[k])),
        "matched": page.class_label(page.mapping[k]) if k in page.mapping else None,
        "majority": None,
    }
    if data.labelled and out["size"]:
        lab = data.labels[members]  # type: ignore[index]
        lab = lab[lab >= 0]
        if len(lab):
            counts = np.bincount(lab)
            major = int(counts.argmax())
            out["majority"] = f"{page.class_label(major)} ({counts[major] / len(lab):.0%})"
    coherence = ((data.quality or {}).get("coherence") or [None] * data.num_clusters)[k]
    out["coherence"] = None if coherence is None else f"{coherence:.2f}"
    return out


def section_overview(page: Page) -> dict[str, Any]:
    """The clusters at a glance (name, size, coherence), the run's label-free quality, and
    the clusters that look alike with the recut command that merges the closest pair."""
    data, q = page.data, page.data.quality
    k = data.num_clusters
    pairs = [
        {"a": page.cluster_label(p["clusters"][0]), "b": page.cluster_label(p["clusters"][1]),
         "share": f"{p['link_share']:.0%}"}
        for p in (q or {}).get("similar_pairs", [])
    ]  # fmt: skip
    merge = f"deepclust recut {data.info.get('run_dir', 'RUN')} --k {k - 1}" if k > 2 else None
    return {
        "q": q,
        "clusters": page.clusters,
        "names": bool(data.cluster_names),
        "concepts": bool(data.cluster_concepts),
        "labelled": data.labelled,
        "pairs": pairs,
        "merge": merge,
        "outliers": int(page.outlier.sum()),
    }


def section_clusters(page: Page) -> dict[str, Any]:
    """Every photo, per cluster: its most typical ones open, the others folded, outliers left
    to their own section (each photo appears once)."""
    data, score = page.data, _shown_score(page.data)
    clusters = []
    for facts in page.clusters:
        members = np.flatnonzero((data.clusters == facts["id"]) & ~page.outlier)
        order = members[np.argsort(-score[members], kind="stable")]
        clusters.append({**facts, **_gallery(page, order, data.per_cluster)})
    shown = "agreement" if data.agreement is not None else "confidence"
    return {
        "clusters": clusters,
        "labelled": data.labelled,
        "shown": shown,
        "n": len(data.clusters),
        "outliers": int(page.outlier.sum()),
    }


OUTLIERS_SHOWN = 24


def section_outliers(page: Page) -> dict[str, Any] | None:
    """The photos that fit no cluster well (agreement at most the quality's threshold),
    least fitting first; None when there are none."""
    data, low = page.data, np.flatnonzero(page.outlier)
    if not len(low):
        return None
    order = low[np.argsort(data.agreement[low], kind="stable")]  # type: ignore[index]
    at_most = (data.quality or {}).get("outlier_agreement_at_most", OUTLIER_AGREEMENT)
    neighbours = (data.quality or {}).get("neighbours", NEIGHBOURS)
    return {
        "n": len(low),
        "at_most": f"{at_most:.0%}",
        "neighbours": neighbours,
        **_gallery(page, order, OUTLIERS_SHOWN, in_title=True),
    }


def section_confusion(page: Page) -> dict[str, Any] | None:
    """Classes x clusters, the clusters in the order of their matched classes."""
    if not page.data.labelled or page.conf is None:
        return None
    conf = page.conf
    by_class = {j: k for k, j in page.mapping.items()}
    order = [by_class[j] for j in range(conf.shape[0]) if j in by_class]
    order += [k for k in range(conf.shape[1]) if k not in order]
    matrix = conf[:, order]
    rows = [page.class_label(j) for j in range(conf.shape[0])]
    cols = [f"c{page.cluster_label(k)}" for k in order]
    frac = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
    chart = charts.heatmap(matrix, rows, cols, "classes × clusters")
    return {"chart": chart, "darkest": f"{float(frac.max()) or 1.0:.0%}"}


def section_sizes(page: Page) -> dict[str, Any]:
    data, k = page.data, page.data.num_clusters
    counts = np.bincount(data.clusters, minlength=k)
    chart = charts.bar_chart(
        [float(c) for c in counts],
        [str(i) for i in range(k)],
        [colour(page.cluster_colour[i]) for i in range(k)],
        f"images per cluster (dashed: equal sizes, N/K = {len(data.clusters) / k:.0f})",
        "images",
        reference=len(data.clusters) / k,
        width=max(600, min(1150, 60 + 28 * k)),
    )
    return {
        "chart": chart,
        "largest": int(counts.max()),
        "smallest": int(counts.min()),
        "empty": int((counts == 0).sum()),
    }


def section_embedding(page: Page) -> dict[str, Any]:
    """The 2-D embedding coloured by cluster, and by class when every point has a label."""
    data = page.data
    if data.embedding is None or data.embedding_index is None or len(data.embedding) < 2:
        return {"charts": [], "n": 0}
    idx, k = data.embedding_index, data.num_clusters
    plots = [
        charts.scatter(
            data.embedding,
            data.clusters[idx],
            [page.cluster_label(i) for i in range(k)],
            [colour(c) for c in page.cluster_colour],
            f"{data.embedding_method} of encoder features, by cluster",
        )
    ]
    if data.labels is not None and (data.labels[idx] >= 0).all():
        n_cls = max(len(data.class_names), int(data.labels.max()) + 1)
        plots.append(
            charts.scatter(
                data.embedding,
                data.labels[idx],
                [page.class_label(j) for j in range(n_cls)],
                [colour(j) for j in range(n_cls)],
                f"{data.embedding_method} of encoder features, by true class",
            )
        )
    return {"charts": plots, "n": len(idx)}


SKIP_TRAIN_KEYS = {"event", "epoch", "time", "lr", "seconds", "images_per_s"}


def section_curves(page: Page) -> dict[str, Any]:
    """One chart per loss term and the learning rate (their scales differ by orders of
    magnitude), and the evaluations per epoch."""
    train, plots = page.data.train_records, []
    if train:
        last = train[-1]
        names = [k for k in last if k not in SKIP_TRAIN_KEYS and isinstance(last[k], int | float)]
        for n in ["lr", *names]:
            points = [(float(r["epoch"]), float(r[n])) for r in train if n in r]
            title = "learning rate at the end of each epoch" if n == "lr" else f"{n} per epoch"
            plots.append(charts.line_chart({n: points}, [colour(0)], title, "epoch", n, 360, 220))
    evals = [r for r in page.data.eval_records if "acc" in r]
    if len(evals) > 1:
        series = {
            m.upper(): [(float(r["epoch"]), float(r[m])) for r in evals if m in r]
            for m in ("acc", "nmi", "ari")
        }
        plots.append(
            charts.line_chart(
                series,
                [colour(i) for i in range(3)],
                "evaluation per epoch",
                "epoch",
                "score",
                y_range=(0.0, 1.0),
            )
        )
    return {
        "charts": plots,
        "one_eval": evals[0] if len(evals) == 1 else None,
        "trained": bool(train),
    }


def _shade(v: float | None, ref: float | None) -> str:
    """A cell's background: from red (ACC 0) to white (ACC = the clean ACC)."""
    if v is None or not ref:
        return ""
    f = max(0.0, min(1.0, v / ref))
    return charts.hexcol((255, int(140 + 115 * f), int(140 + 115 * f)))


def section_shift(page: Page) -> dict[str, Any] | None:
    """shift.json: ACC per corruption and severity, shaded against the clean ACC."""
    s = page.data.shift
    if not s:
        return {"s": None} if page.data.labelled else None
    clean = (s.get("clean") or {}).get("acc")
    sev = [str(v) for v in s.get("severities", [])]
    rows, series = [], {}
    for name, per in s.get("corruptions", {}).items():
        vals = [per.get(v, {}).get("acc") for v in sev]
        mean = s.get("mean_acc", {}).get(name)
        cells = [(v, _shade(v, clean)) for v in vals]
        rows.append({"name": name, "cells": cells, "mean": (mean, _shade(mean, clean))})
        series[name] = [
            (float(v), float(a)) for v, a in zip(sev, vals, strict=True) if a is not None
        ]
    top = max([clean or 0.0, *(a for line in series.values() for _, a in line)], default=1.0)
    chart = charts.line_chart(
        series,
        [colour(i) for i in range(len(series))],
        "ACC by severity",
        "severity",
        "ACC",
        width=560,
        height=320,
        y_range=(0.0, top or 1.0),
    )
    return {"s": s, "clean": clean, "severities": sev, "rows": rows, "chart": chart}


# The page, top to bottom: (template name = section id, the function that fills it).
PAGE: tuple[tuple[str, Callable[[Page], dict[str, Any] | None]], ...] = (
    ("warnings", section_warnings),
    ("overview", section_overview),
    ("clusters", section_clusters),
    ("outliers", section_outliers),
    ("metrics", section_metrics),
    ("k", section_k),
    ("sizes", section_sizes),
    ("confusion", section_confusion),
    ("embedding", section_embedding),
    ("curves", section_curves),
    ("shift", section_shift),
)
# The technical charts: folded together at the end of the page, under "Details".
DETAILS = frozenset({"sizes", "confusion", "embedding", "curves", "shift"})


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deepclust.evaluation", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = fmt
    return env


def render_html(data: ReportData) -> str:
    """The whole page as one string (no external references)."""
    page = Page.of(data)
    sections: list[tuple[str, dict[str, Any]]] = []
    details: list[tuple[str, dict[str, Any]]] = []
    for name, build in PAGE:
        variables = build(page)
        if variables is not None:
            part = details if name in DETAILS else sections
            part.append((f"report/{name}.html.j2", variables))
    info = data.info
    return (
        _environment()
        .get_template("report/page.html.j2")
        .render(
            title=f"deepclust report: {info.get('method', '')} on {info.get('dataset', '')}",
            subtitle=f"{info.get('protocol', '')} · encoder {info.get('encoder', '')} · "
            f"K = {data.num_clusters}",
            run_dir=info.get("run_dir", ""),
            sections=sections,
            details=details,
            sprites=page.sprites.css(),
        )
    )
