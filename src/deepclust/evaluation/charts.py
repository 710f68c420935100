"""The report's charts, drawn by matplotlib (Agg, no pyplot: no global state, no display)
and returned as PNG data URIs, so the page stays one self-contained file.

Every function takes plain numbers and returns a Chart (data URI, pixel size, title); the
title also becomes the image's alt text. matplotlib is imported on first use only.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
FONT = 8.5


@dataclass
class Chart:
    src: str  # data:image/png;base64,...
    width: int
    height: int
    title: str


def hexcol(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _figure(width: int, height: int) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _axes(fig: Figure, title: str, xlabel: str = "", ylabel: str = "") -> Axes:
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=FONT + 1.5, fontweight="bold")
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.grid(True, color="#eeeeee", linewidth=0.8)
    ax.set_axisbelow(True)
    return ax


def _png(fig: Figure, title: str) -> Chart:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    width, height = (round(float(v)) for v in fig.get_size_inches() * DPI)
    src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return Chart(src, width, height, title)


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    colours: list[tuple[int, int, int]],
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 540,
    height: int = 300,
    y_range: tuple[float, float] | None = None,
) -> Chart:
    """Lines (point markers up to 60 points) of named (x, y) series [n, 2], with a legend."""
    fig = _figure(width, height)
    ax = _axes(fig, title, xlabel, ylabel)
    drawn = False
    for (name, points), col in zip(series.items(), colours, strict=False):
        good = [(x, y) for x, y in points if math.isfinite(y)]
        if not good:
            continue
        xs, ys = zip(*good, strict=True)
        marker = "o" if len(good) <= 60 else None
        ax.plot(xs, ys, color=hexcol(col), linewidth=1.8, marker=marker, markersize=3.5, label=name)
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if y_range is not None:
        ax.set_ylim(*y_range)
    if drawn:
        ax.legend(fontsize=FONT, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _png(fig, title)


def bar_chart(
    values: list[float],
    labels: list[str],
    colours: list[tuple[int, int, int]],
    title: str,
    ylabel: str,
    reference: float | None = None,
    width: int = 900,
    height: int = 280,
) -> Chart:
    """Vertical bars (value above each up to 40 bars), an optional dashed reference line."""
    fig = _figure(width, height)
    ax = _axes(fig, title, "", ylabel)
    x = np.arange(len(values))
    bars = ax.bar(x, values, width=0.8, color=[hexcol(c) for c in colours])
    if len(values) <= 40:
        ax.bar_label(bars, labels=[f"{v:g}" for v in values], fontsize=FONT - 1)
        ax.set_xticks(x, labels)
    else:
        ax.set_xticks([])
    if reference is not None:
        ax.axhline(reference, color="#555555", linestyle=(0, (5, 4)), linewidth=1)
    ax.set_ylim(0, max([*values, reference or 0.0, 1e-9]) * 1.12)
    ax.set_xlim(-0.6, len(values) - 0.4)
    return _png(fig, title)


def scatter(
    points: np.ndarray,
    groups: np.ndarray,
    names: list[str],
    colours: list[tuple[int, int, int]],
    title: str,
    width: int = 540,
    height: int = 460,
) -> Chart:
    """2-D points [M, 2] coloured by group id [M] (colours[g]), a legend of up to 24 names."""
    fig = _figure(width, height)
    ax = _axes(fig, title, "component 1", "component 2")
    ax.scatter(
        points[:, 0], points[:, 1], s=7, c=[hexcol(colours[int(g)]) for g in groups], alpha=0.75
    )
    from matplotlib.lines import Line2D

    shown = names[:24]
    handles = [
        Line2D([], [], marker="o", linestyle="", color=hexcol(colours[k]), label=name[:20])
        for k, name in enumerate(shown)
    ]
    if len(names) > len(shown):
        handles.append(Line2D([], [], linestyle="", label=f"… {len(names) - len(shown)} more"))
    ax.legend(
        handles=handles, fontsize=FONT, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False
    )
    return _png(fig, title)


def heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str) -> Chart:
    """Counts [R, C] shaded by each row's fraction (blue), counts printed when they fit."""
    r, c = matrix.shape
    cell = max(12, min(44, 900 // max(c, 1)))
    width, height = 160 + c * cell, 130 + r * cell
    fig = _figure(width, height)
    ax = _axes(fig, title)
    ax.grid(False)
    frac = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=float(frac.max()) or 1.0, aspect="auto")
    ax.set_xticks(range(c), [x[:18] for x in cols], rotation=60, ha="right")
    ax.set_yticks(range(r), [x[:18] for x in rows])
    ax.tick_params(length=0)
    if matrix.size <= 625 and cell >= 22:
        top = float(frac.max()) or 1.0
        for i, j in zip(*np.nonzero(matrix), strict=True):
            ink = "white" if frac[i, j] / top > 0.55 else "#222222"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=FONT - 1, color=ink)
    return _png(fig, title)
