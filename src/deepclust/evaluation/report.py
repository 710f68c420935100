"""One self-contained HTML page per run: numbers, pictures of the clusters, and curves.

Everything is inlined: sample grids are base64 PNG data URIs drawn with PIL, charts are
inline SVG written here (no matplotlib, no script, no external file or network request),
so the page can be mailed, archived or opened offline. This module only draws: the data
(predictions, features, records) is gathered by `deepclust.api.report`.

Sections (each a <section id=...>): info and metrics, clusters (most confident samples
first, border green where the image's class is the cluster's Hungarian-matched class, red
where not), confusion (classes x clusters, columns in matched order), sizes, embedding
(2-D PCA or t-SNE of encoder features, by cluster and by class), names (cluster names
from cluster_names.json where the run has them), curves (loss and ACC/NMI/ARI per epoch
from metrics.jsonl), shift (from shift.json where `deepclust shift` was run).
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepclust.evaluation.metrics import confusion, hungarian_match

SECTIONS: tuple[str, ...] = (
    "metrics",
    "clusters",
    "confusion",
    "sizes",
    "embedding",
    "names",
    "curves",
    "shift",
)
MATCH, MISMATCH, UNKNOWN = (30, 160, 60), (210, 40, 40), (170, 170, 170)


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
    embedding: np.ndarray | None = None  # [M, 2]
    embedding_index: np.ndarray | None = None  # [M] rows of images the points belong to
    embedding_method: str = "PCA"
    train_records: list[dict[str, Any]] = field(default_factory=list)
    eval_records: list[dict[str, Any]] = field(default_factory=list)
    shift: dict[str, Any] | None = None
    per_cluster: int = 12
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # run-health warnings, shown first
    paths: list[str] | None = None  # [N] image files, shown under the thumbnails
    k_estimate: dict[str, Any] | None = None  # k_estimate.json: how K was chosen (--k auto)

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


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


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


def hexcol(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def png_data_uri(array: np.ndarray) -> str:
    """uint8 [H, W, 3] -> 'data:image/png;base64,...'."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb_scale(size: int, target: int = 72) -> int:
    """Integer nearest-neighbour upscale factor that brings `size` px near `target` px."""
    return max(1, round(target / max(size, 1)))


def image_strip(
    images: torch.Tensor, borders: list[tuple[int, int, int]], scale: int, pad: int = 3
) -> np.ndarray:
    """uint8 [n, 3, h, w] -> one [H, W, 3] row, each image upscaled (nearest) and framed."""
    n, _, h, w = images.shape
    side_h, side_w = h * scale + 2 * pad, w * scale + 2 * pad
    strip = np.full((side_h, max(n, 1) * (side_w + 2), 3), 255, dtype=np.uint8)
    for i in range(n):
        img = images[i].permute(1, 2, 0).numpy()
        big = img.repeat(scale, axis=0).repeat(scale, axis=1)
        x0 = i * (side_w + 2)
        strip[:, x0 : x0 + side_w] = borders[i]
        strip[pad : pad + h * scale, x0 + pad : x0 + pad + w * scale] = big
    return strip


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return esc(v)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.3f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- SVG charts


class Axes:
    """Maps data coordinates to an SVG plot area and draws its frame and ticks."""

    def __init__(
        self,
        width: int,
        height: int,
        xr: tuple[float, float],
        yr: tuple[float, float],
        margin: tuple[int, int, int, int] = (30, 20, 45, 60),  # top, right, bottom, left
    ) -> None:
        self.w, self.h = width, height
        self.top, self.right, self.bottom, self.left = margin
        self.xt = nice_ticks(*xr)
        self.yt = nice_ticks(*yr)
        self.x0, self.x1 = min(self.xt[0], xr[0]), max(self.xt[-1], xr[1])
        self.y0, self.y1 = min(self.yt[0], yr[0]), max(self.yt[-1], yr[1])
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1

    def x(self, v: float) -> float:
        span = self.w - self.left - self.right
        return self.left + (v - self.x0) / (self.x1 - self.x0) * span

    def y(self, v: float) -> float:
        span = self.h - self.top - self.bottom
        return self.h - self.bottom - (v - self.y0) / (self.y1 - self.y0) * span

    def frame(self, title: str, xlabel: str, ylabel: str, xticks: bool = True) -> list[str]:
        out = [
            f'<text x="{self.w / 2:.0f}" y="18" class="t">{esc(title)}</text>',
            f'<rect x="{self.left}" y="{self.top}" width="{self.w - self.left - self.right}" '
            f'height="{self.h - self.top - self.bottom}" class="frame"/>',
        ]
        for t in self.yt:
            yy = self.y(t)
            out.append(
                f'<line x1="{self.left}" x2="{self.w - self.right}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
                f'<text x="{self.left - 5}" y="{yy + 4:.1f}" class="yl">{tick_label(t)}</text>'
            )
        if xticks:
            for t in self.xt:
                xx = self.x(t)
                out.append(
                    f'<text x="{xx:.1f}" y="{self.h - self.bottom + 16}" class="xl">{tick_label(t)}</text>'
                )
        out.append(
            f'<text x="{(self.left + self.w - self.right) / 2:.0f}" y="{self.h - 6}" class="xl">{esc(xlabel)}</text>'
            f'<text x="14" y="{(self.top + self.h - self.bottom) / 2:.0f}" class="xl" '
            f'transform="rotate(-90 14 {(self.top + self.h - self.bottom) / 2:.0f})">{esc(ylabel)}</text>'
        )
        return out


def svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{esc(label)}">' + "".join(body) + "</svg>"
    )


def svg_line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 540,
    height: int = 300,
    y_range: tuple[float, float] | None = None,
) -> str:
    """Lines (with point markers) of named (x, y) series, with a legend."""
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not pts:
        return svg(width, 60, [f'<text x="10" y="30">{esc(title)}: no data</text>'], title)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    yr = y_range or (min(ys), max(ys))
    ax = Axes(width, height, (min(xs), max(xs)), yr, margin=(30, 130, 45, 60))
    body = ax.frame(title, xlabel, ylabel)
    for k, (name, s) in enumerate(series.items()):
        col = hexcol(colour(k))
        good = [(x, y) for x, y in s if math.isfinite(y)]
        if len(good) > 1:
            path = " ".join(f"{ax.x(x):.1f},{ax.y(y):.1f}" for x, y in good)
            body.append(f'<polyline points="{path}" fill="none" stroke="{col}" stroke-width="2"/>')
        if len(good) <= 60:
            body += [
                f'<circle cx="{ax.x(x):.1f}" cy="{ax.y(y):.1f}" r="3" fill="{col}"/>'
                for x, y in good
            ]
        ly = 40 + 18 * k
        body.append(
            f'<rect x="{width - 120}" y="{ly - 9}" width="12" height="12" fill="{col}"/>'
            f'<text x="{width - 104}" y="{ly + 1}" class="lg">{esc(name)}</text>'
        )
    return svg(width, height, body, title)


def svg_bar_chart(
    values: list[float],
    labels: list[str],
    colours: list[tuple[int, int, int]],
    title: str,
    ylabel: str,
    reference: float | None = None,
    width: int = 900,
    height: int = 280,
) -> str:
    """Vertical bars (value printed above each when there is room), optional dashed line."""
    top = max([*values, reference or 0.0, 1e-9]) * 1.1  # room for the value labels
    ax = Axes(width, height, (0, len(values)), (0, top), margin=(30, 20, 55, 60))
    body = ax.frame(title, "", ylabel, xticks=False)
    slot = (width - ax.left - ax.right) / max(len(values), 1)
    for i, (v, lab, col) in enumerate(zip(values, labels, colours, strict=True)):
        x = ax.left + i * slot + slot * 0.1
        y = ax.y(v)
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{ax.y(0) - y:.1f}" fill="{hexcol(col)}"><title>{esc(lab)}: {v:g}</title></rect>'
        )
        if len(values) <= 40:
            body.append(
                f'<text x="{x + slot * 0.4:.1f}" y="{y - 3:.1f}" class="xl">{v:g}</text>'
                f'<text x="{x + slot * 0.4:.1f}" y="{height - 38}" class="xl">{esc(lab)}</text>'
            )
    if reference is not None:
        yy = ax.y(reference)
        body.append(
            f'<line x1="{ax.left}" x2="{width - ax.right}" y1="{yy:.1f}" y2="{yy:.1f}" class="ref"/>'
        )
    return svg(width, height, body, title)


def svg_scatter(
    points: np.ndarray,
    groups: np.ndarray,
    names: list[str],
    title: str,
    colour_of: list[int] | None = None,
    width: int = 540,
    height: int = 460,
) -> str:
    """2-D points coloured by group id (colour index colour_of[g]), with a legend of names."""
    colour_of = colour_of or list(range(len(names)))
    ax = Axes(
        width,
        height,
        (float(points[:, 0].min()), float(points[:, 0].max())),
        (float(points[:, 1].min()), float(points[:, 1].max())),
        margin=(30, 150, 40, 55),
    )
    body = ax.frame(title, "component 1", "component 2")
    for (px, py), g in zip(points, groups, strict=True):
        body.append(
            f'<circle cx="{ax.x(float(px)):.1f}" cy="{ax.y(float(py)):.1f}" r="2.6" '
            f'fill="{hexcol(colour(colour_of[int(g)]))}" fill-opacity="0.75"/>'
        )
    shown = names[:24]
    for k, name in enumerate(shown):
        ly = 40 + 16 * k
        body.append(
            f'<circle cx="{width - 140}" cy="{ly - 4}" r="5" fill="{hexcol(colour(colour_of[k]))}"/>'
            f'<text x="{width - 130}" y="{ly}" class="lg">{esc(name[:20])}</text>'
        )
    if len(names) > len(shown):
        body.append(
            f'<text x="{width - 140}" y="{40 + 16 * len(shown)}" class="lg">… {len(names) - len(shown)} more</text>'
        )
    return svg(width, height, body, title)


def svg_heatmap(
    matrix: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    annotate: bool = True,
    cell: int | None = None,
) -> str:
    """Counts [R, C] as a heatmap shaded by each row's fraction, counts printed in cells."""
    r, c = matrix.shape
    cell = cell or max(12, min(52, 900 // max(c, 1)))
    longest = max((len(x[:18]) for x in col_labels), default=1)
    left, top = 130, 36 + int(6 * longest)  # room for the slanted column labels
    width, height = left + c * cell + 40, top + r * cell + 30
    body = [f'<text x="{left + c * cell / 2:.0f}" y="18" class="t">{esc(title)}</text>']
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    frac = matrix / rows
    top_frac = float(frac.max()) or 1.0
    for i in range(r):
        body.append(
            f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4:.1f}" class="yl">{esc(row_labels[i][:18])}</text>'
        )
        for j in range(c):
            f = float(frac[i, j]) / top_frac
            shade = (int(255 - 215 * f), int(255 - 160 * f), int(255 - 60 * f))
            body.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                f'fill="{hexcol(shade)}" stroke="#ddd"><title>{esc(row_labels[i])} / {esc(col_labels[j])}: '
                f"{int(matrix[i, j])}</title></rect>"
            )
            if annotate and matrix[i, j] > 0 and cell >= 22:
                ink = "#fff" if f > 0.55 else "#222"
                body.append(
                    f'<text x="{left + j * cell + cell / 2:.1f}" y="{top + i * cell + cell / 2 + 4:.1f}" '
                    f'class="cell" fill="{ink}">{int(matrix[i, j])}</text>'
                )
    for j in range(c):
        x = left + j * cell + cell / 2 + 4
        body.append(
            f'<text x="{x:.1f}" y="{top - 6}" class="col" transform="rotate(-60 {x:.1f} {top - 6})">'
            f"{esc(col_labels[j][:18])}</text>"
        )
    body.append(
        f'<text x="{left}" y="{height - 8}" class="lg">rows: true classes; columns: clusters '
        f"(matched order); shade = fraction of the row, darkest = {top_frac:.0%}</text>"
    )
    return svg(width, height, body, title)


# --------------------------------------------------------------------------- sections


def _matched(data: ReportData) -> tuple[np.ndarray | None, dict[int, int]]:
    """Confusion [C, K] over labelled images and the Hungarian map cluster -> class."""
    if data.labels is None or not (data.labels >= 0).any():
        return None, {}
    num_classes = max(len(data.class_names), int(data.labels.max()) + 1)
    conf = confusion(data.labels, data.clusters, num_classes, data.num_clusters)
    return conf, hungarian_match(conf)


def cluster_label(data: ReportData, k: int) -> str:
    name = data.cluster_names.get(k)
    return f"{k} · {name}" if name else str(k)


def class_label(data: ReportData, j: int) -> str:
    return data.class_names[j] if j < len(data.class_names) else f"class {j}"


def section_metrics(data: ReportData) -> str:
    info = data.info
    keys = [
        ("method", "method"),
        ("dataset", "dataset"),
        ("data", "data_dir"),
        ("protocol", "protocol"),
        ("fit split", "fit_split"),
        ("evaluation split", "eval_split"),
        ("encoder", "encoder"),
        ("epochs", "epochs"),
        ("seed", "seed"),
        ("clusters K", "num_clusters"),
        ("images fit / evaluated", "n_images"),
        ("device", "device"),
        ("training time", "wall_time"),
        ("torch", "torch"),
    ]
    facts = "".join(
        f"<tr><th>{esc(label)}</th><td>{esc(info[k])}</td></tr>"
        for label, k in keys
        if info.get(k) not in (None, "")
    )
    head = "<tr><th>evaluation</th><th>protocol</th><th>split</th><th>n</th><th>ACC</th><th>NMI</th><th>ARI</th><th>purity</th></tr>"
    rows = "".join(
        f"<tr><td>{esc(r.get('label', ''))}</td><td><b>{esc(r.get('protocol', ''))}</b></td>"
        f"<td>{esc(r.get('split', ''))}</td><td>{fmt(r.get('n'))}</td><td>{fmt(r.get('acc'))}</td>"
        f"<td>{fmt(r.get('nmi'))}</td><td>{fmt(r.get('ari'))}</td><td>{fmt(r.get('purity'))}</td></tr>"
        for r in data.metric_rows
    )
    if data.metric_rows:
        table = (
            f'<table class="num">{head}{rows}</table>'
            "<p class=small>ACC: one-to-one Hungarian matching of clusters to classes; NMI "
            "(arithmetic) and ARI as in scikit-learn; purity: each cluster mapped to its majority "
            "class. <b>train→test</b>: fitted on train, scored on the held-out test split; "
            "<b>train+test</b>: fitted and scored on both.</p>"
        )
    else:
        table = "<p class=small>Unlabelled images: nothing to score against.</p>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in data.notes)
    return (
        '<section id="metrics"><h2>Run and metrics</h2>'
        f'<div class="row"><table class="facts">{facts}</table><div>{table}'
        f"{'<ul class=small>' + notes + '</ul>' if notes else ''}</div></div></section>"
    )


def _thumbnail(data: ReportData, i: int, border: tuple[int, int, int], scale: int) -> str:
    """One framed thumbnail with its file name (and confidence) underneath."""
    strip = image_strip(data.images[i : i + 1], [border], scale)
    name = Path(data.paths[i]).name if data.paths and data.paths[i] else f"image {i}"
    return (
        f'<figure><img src="{png_data_uri(strip)}" alt="{esc(name)}" width="{strip.shape[1]}" '
        f'height="{strip.shape[0]}"><figcaption title="{esc(data.paths[i] if data.paths else name)}">'
        f"{esc(name)}<br>{data.confidence[i]:.2f}</figcaption></figure>"
    )


def _cluster_head(
    data: ReportData, k: int, members: np.ndarray, mapping: dict[int, int], colour_id: int
) -> str:
    swatch = f'<span style="color:{hexcol(colour(colour_id))}">●</span>'
    head = f"{swatch} <b>cluster {esc(cluster_label(data, k))}</b> · {len(members):,} images"
    if data.labelled and len(members):
        lab = data.labels[members]  # type: ignore[index]
        lab = lab[lab >= 0]
        if len(lab):
            counts = np.bincount(lab)
            major = int(counts.argmax())
            head += f" · majority {esc(class_label(data, major))} ({counts[major] / len(lab):.0%})"
    if k in mapping:
        head += f" · matched to <b>{esc(class_label(data, mapping[k]))}</b>"
    return head


def section_clusters(data: ReportData, mapping: dict[int, int], ccol: list[int]) -> str:
    scale = thumb_scale(data.images.shape[-1])
    parts = []
    for k in range(data.num_clusters):
        members = np.flatnonzero(data.clusters == k)
        head = _cluster_head(data, k, members, mapping, ccol[k])
        if not len(members):
            parts.append(f'<div class="cl"><div class="ch">{head}</div><i>empty</i></div>')
            continue
        order = members[np.argsort(-data.confidence[members], kind="stable")][: data.per_cluster]
        figures = []
        for i in order:
            if not data.labelled or data.labels[i] < 0 or k not in mapping:  # type: ignore[index]
                border = UNKNOWN
            else:
                border = MATCH if data.labels[i] == mapping[k] else MISMATCH  # type: ignore[index]
            figures.append(_thumbnail(data, int(i), border, scale))
        parts.append(
            f'<div class="cl"><div class="ch">{head}</div><div class="thumbs">{"".join(figures)}</div></div>'
        )
    legend = "Most confident first; under each image its file and confidence."
    if data.labelled:
        legend += (
            " Border: "
            '<span style="color:#1ea03c">■</span> class = the cluster\'s matched class, '
            '<span style="color:#d22828">■</span> another class, '
            '<span style="color:#aaa">■</span> unlabelled or unmatched cluster.'
        )
    return (
        f'<section id="clusters"><h2>Samples per cluster</h2><p class=small>{legend} '
        f"{len(data.clusters):,} images, shown {scale}x (nearest neighbour).</p>{''.join(parts)}</section>"
    )


def section_k_estimate(data: ReportData) -> str:
    e = data.k_estimate
    if not e:
        return ""
    curve = [(float(k), float(v)) for k, v in e["curve"].items()]
    chosen = [(x, y) for x, y in curve if int(x) == e["k"]]
    better = "higher" if e["higher_is_better"] else "lower"
    chart = svg_line_chart(
        {e["estimator"]: curve, f"chosen K = {e['k']}": chosen},
        f"{e['estimator']} over K ({better} is better)",
        "K",
        e["estimator"],
        width=620,
        height=300,
    )
    return (
        '<section id="k"><h2>How K was chosen</h2>'
        f"<p>K = <b>{e['k']}</b>, estimated without labels by <b>{esc(e['estimator'])}</b> "
        f"({esc(e['criterion'])}) over K = {min(map(int, e['curve']))}..{max(map(int, e['curve']))} "
        f"in {e['seconds']:.1f} s.</p>{chart}</section>"
    )


def section_warnings(data: ReportData) -> str:
    if not data.warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in data.warnings)
    return (
        '<section id="warnings" class="warn"><h2>Warnings about this run</h2>'
        f"<ul>{items}</ul><p class=small>From the run-health checks after training "
        "(summary.json, <code>warnings</code>).</p></section>"
    )


def section_confusion(data: ReportData, conf: np.ndarray | None, mapping: dict[int, int]) -> str:
    if conf is None:
        return '<section id="confusion"><h2>Confusion matrix</h2><p>No labels: no confusion matrix.</p></section>'
    by_class = {j: k for k, j in mapping.items()}
    order = [by_class[j] for j in range(conf.shape[0]) if j in by_class]
    order += [k for k in range(conf.shape[1]) if k not in order]
    matrix = conf[:, order]
    rows = [class_label(data, j) for j in range(conf.shape[0])]
    cols = [f"c{cluster_label(data, k)}" for k in order]
    pic = svg_heatmap(matrix, rows, cols, "classes × clusters", annotate=matrix.size <= 625)
    return f'<section id="confusion"><h2>Confusion matrix</h2><div class="scroll">{pic}</div></section>'


def section_sizes(data: ReportData, ccol: list[int]) -> str:
    k = data.num_clusters
    counts = np.bincount(data.clusters, minlength=k)
    pic = svg_bar_chart(
        [float(c) for c in counts],
        [str(i) for i in range(k)],
        [colour(ccol[i]) for i in range(k)],
        f"images per cluster (dashed: equal sizes, N/K = {len(data.clusters) / k:.0f})",
        "images",
        reference=len(data.clusters) / k,
        width=max(600, min(1150, 60 + 28 * k)),
    )
    empty = int((counts == 0).sum())
    note = f" {empty} empty clusters." if empty else ""
    return (
        f'<section id="sizes"><h2>Cluster sizes</h2><div class="scroll">{pic}</div>'
        f"<p class=small>largest / smallest = {counts.max():,} / {counts.min():,}.{note}</p></section>"
    )


def section_embedding(data: ReportData, ccol: list[int]) -> str:
    if data.embedding is None or data.embedding_index is None or len(data.embedding) < 2:
        return '<section id="embedding"><h2>Embedding</h2><p>No features to embed.</p></section>'
    idx = data.embedding_index
    k = data.num_clusters
    plots = [
        svg_scatter(
            data.embedding,
            data.clusters[idx],
            [cluster_label(data, i) for i in range(k)],
            f"{data.embedding_method} of encoder features, by cluster",
            ccol,
        )
    ]
    if data.labels is not None and (data.labels[idx] >= 0).all():
        n_cls = max(len(data.class_names), int(data.labels.max()) + 1)
        plots.append(
            svg_scatter(
                data.embedding,
                data.labels[idx],
                [class_label(data, j) for j in range(n_cls)],
                f"{data.embedding_method} of encoder features, by true class",
            )
        )
    return (
        f'<section id="embedding"><h2>2-D embedding of the features</h2><div class="row">{"".join(plots)}</div>'
        f"<p class=small>{len(idx):,} images drawn at random from the evaluation split.</p></section>"
    )


def section_names(data: ReportData) -> str:
    if not data.cluster_names:
        body = (
            "<p>This run stores no cluster names. Methods with a vision-language model "
            "write <code>cluster_names.json</code> (a list of K names, or {cluster id: name}) "
            "into the run folder; the names then label the grids and the confusion matrix.</p>"
        )
    else:
        items = "".join(
            f"<tr><td>{k}</td><td>{esc(v)}</td></tr>" for k, v in sorted(data.cluster_names.items())
        )
        body = f'<table class="num"><tr><th>cluster</th><th>name</th></tr>{items}</table>'
    return f'<section id="names"><h2>Cluster names</h2>{body}</section>'


SKIP_TRAIN_KEYS = {"event", "epoch", "time", "lr", "seconds", "images_per_s"}


def section_curves(data: ReportData) -> str:
    charts = []
    if data.train_records:
        names = [
            k
            for k in data.train_records[-1]
            if k not in SKIP_TRAIN_KEYS and isinstance(data.train_records[-1][k], int | float)
        ]
        # one chart per term: their scales differ by orders of magnitude
        for n in ["lr", *names]:
            points = [(float(r["epoch"]), float(r[n])) for r in data.train_records if n in r]
            title = "learning rate at the end of each epoch" if n == "lr" else f"{n} per epoch"
            charts.append(svg_line_chart({n: points}, title, "epoch", n, width=360, height=220))
    evals = [r for r in data.eval_records if "acc" in r]
    if len(evals) == 1:
        r = evals[0]
        charts.append(
            f"<p>One evaluation, after epoch {r.get('epoch', 0)}: ACC {fmt(r['acc'])}, "
            f"NMI {fmt(r.get('nmi'))}, ARI {fmt(r.get('ari'))}.</p>"
        )
    elif evals:
        series = {
            m.upper(): [(float(r["epoch"]), float(r[m])) for r in evals if m in r]
            for m in ("acc", "nmi", "ari")
        }
        charts.append(
            svg_line_chart(series, "evaluation per epoch", "epoch", "score", y_range=(0.0, 1.0))
        )
    if not data.train_records:
        charts.append(
            "<p>No gradient training in this run (0 epochs): the method fits once "
            "(e.g. k-means), so there is no loss curve.</p>"
        )
    return f'<section id="curves"><h2>Training curves</h2><div class="row">{"".join(charts)}</div></section>'


def _shade(v: float | None, ref: float | None) -> str:
    if v is None or not ref:
        return ""
    f = max(0.0, min(1.0, v / ref))
    return f' style="background:{hexcol((255, int(140 + 115 * f), int(140 + 115 * f)))}"'


def section_shift(data: ReportData) -> str:
    s = data.shift
    if not s:
        return (
            '<section id="shift"><h2>Distribution shift</h2><p>Not computed for this run: '
            "<code>deepclust shift RUN_DIR</code> writes shift.json, which this page then shows.</p></section>"
        )
    clean = (s.get("clean") or {}).get("acc")
    sev = [str(v) for v in s.get("severities", [])]
    head = "<tr><th>corruption</th>" + "".join(f"<th>{v}</th>" for v in sev) + "<th>mean</th></tr>"
    rows = []
    series = {}
    for name, per in s.get("corruptions", {}).items():
        vals = [per.get(v, {}).get("acc") for v in sev]
        mean = s.get("mean_acc", {}).get(name)
        rows.append(
            f"<tr><td>{esc(name)}</td>"
            + "".join(f"<td{_shade(v, clean)}>{fmt(v)}</td>" for v in vals)
            + f"<td{_shade(mean, clean)}><b>{fmt(mean)}</b></td></tr>"
        )
        series[name] = [
            (float(v), float(a)) for v, a in zip(sev, vals, strict=True) if a is not None
        ]
    lines = [
        f"clean ({esc(s.get('protocol', ''))}, {esc(s.get('eval_split', ''))}): ACC {fmt(clean)}"
    ]
    for row in s.get("splits", []):
        lines.append(
            f"{esc(row.get('protocol'))} on {esc(row.get('split'))}: ACC {fmt(row.get('acc'))}"
        )
    if s.get("mean_corrupted_acc") is not None:
        lines.append(f"mean over corruptions and severities: ACC {fmt(s['mean_corrupted_acc'])}")
    top = max([clean or 0.0, *(a for line in series.values() for _, a in line)], default=1.0)
    chart = svg_line_chart(
        series,
        "ACC by severity",
        "severity",
        "ACC",
        width=560,
        height=320,
        y_range=(0.0, top or 1.0),
    )
    return (
        '<section id="shift"><h2>Distribution shift (CIFAR-10-C recipe)</h2>'
        f"<p>{'<br>'.join(lines)}</p><div class=row><table class=num>{head}{''.join(rows)}</table>{chart}</div>"
        f"<p class=small>{esc(s.get('recipe', ''))}; {s.get('n', '')} images, corruption seed {s.get('seed', '')}.</p></section>"
    )


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:20px 28px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;border-bottom:2px solid #e4e4e4;padding-bottom:3px;margin-top:26px}
table{border-collapse:collapse;font-size:13px;margin:4px 16px 8px 0} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
table.num td{text-align:right} table.num td:first-child{text-align:left} th{background:#f4f4f4}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start} .small{font-size:12px;color:#555}
.cl{margin:6px 0 10px} .ch{font-size:13px;margin-bottom:2px} img{image-rendering:pixelated;display:block}
.thumbs{display:flex;flex-wrap:wrap;gap:4px} figure{margin:0;width:min-content}
figcaption{font-size:10px;color:#555;overflow-wrap:anywhere;text-align:center}
.warn{background:#fff4e0;border:1px solid #e0a040;padding:4px 14px;margin-top:10px} .warn h2{border:0;margin-top:6px}
.scroll{overflow-x:auto} code{background:#f4f4f4;padding:0 3px}
svg.chart{background:#fff;font-size:11px} svg .t{font-size:13px;font-weight:600;text-anchor:middle}
svg .frame{fill:none;stroke:#999} svg .grid{stroke:#eee} svg .ref{stroke:#555;stroke-dasharray:5 4}
svg .xl{text-anchor:middle;fill:#333} svg .yl{text-anchor:end;fill:#333} svg .lg{fill:#333}
svg .cell{text-anchor:middle;font-size:10px} svg .col{text-anchor:start;fill:#333}
"""


def render_html(data: ReportData) -> str:
    """The whole page as one string (no external references)."""
    conf, mapping = _matched(data)
    ccol = cluster_colours(data.num_clusters, mapping, 0 if conf is None else conf.shape[0])
    info = data.info
    title = f"deepclust report: {info.get('method', '')} on {info.get('dataset', '')}"
    sub = (
        f"{info.get('protocol', '')} · encoder {info.get('encoder', '')} · K = {data.num_clusters}"
    )
    body = [
        f"<h1>{esc(title)}</h1><div class=small>{esc(sub)} · {esc(info.get('run_dir', ''))}</div>",
        section_warnings(data),
        section_metrics(data),
        section_k_estimate(data),
        section_clusters(data, mapping, ccol),
        section_confusion(data, conf, mapping) if data.labelled else "",
        section_sizes(data, ccol),
        section_embedding(data, ccol),
        section_names(data) if data.cluster_names else "",
        section_curves(data),
        section_shift(data) if data.labelled or data.shift else "",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
