"""The figures of the plots page: the leaderboard table's rows as numbers, drawn by matplotlib as SVG.

matplotlib is used without pyplot (no global figure state, no display): each figure is a ``Figure`` saved
to SVG, with text kept as text. Its SVG styles elements with ``style`` attributes and a ``<style>`` element,
which the pages' Content-Security-Policy (``style-src 'self'``) may refuse; they are rewritten as SVG
presentation attributes, which mean the same and are not styles. Where a scatter has many points it is
rasterized (one embedded PNG, a ``data:`` image the policy allows) so the SVG stays small.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib import font_manager, ticker
from matplotlib.figure import Figure
from PIL import Image

from backend.domain import ModelType
from backend.leaderboards.config import LeaderboardConfig
from backend.publish.table import TYPE_LABELS

#: Bumped when a figure's drawing changes, so cached SVG of the old drawing is not served.
DRAWING_VERSION = 1
#: Above this many points the scatter's markers are one embedded PNG instead of one SVG element each.
RASTERIZE_ABOVE = 1000
#: Fewer models with all benchmarks than this and their correlations mean nothing (two points are always ±1).
MIN_CORRELATED = 3
HISTOGRAM_BINS = np.arange(0, 101, 5)
PARAMS, TYPE = "#Params (B)", "Type"

# Okabe-Ito colours (told apart with colour blindness), and a marker shape per type for those who cannot.
STYLE: dict[ModelType, tuple[str, str]] = {
    ModelType.PRETRAINED: ("#009E73", "o"),
    ModelType.CONTINUOUSLY_PRETRAINED: ("#56B4E9", "s"),
    ModelType.FINE_TUNED: ("#E69F00", "D"),
    ModelType.CHAT: ("#0072B2", "^"),
    ModelType.MERGE: ("#CC79A7", "v"),
}
_BY_LABEL = {label: member for member, (_, label) in TYPE_LABELS.items()}
_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "leaderboard-plots",
    "text.parse_math": False,
    "font.size": 9,
}
_SVG, _XLINK = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
ET.register_namespace("", _SVG)
ET.register_namespace("xlink", _XLINK)


def type_name(model_type: ModelType) -> str:
    """A type's label without its emoji (the legend's font has none): "chat models (RLHF, DPO, IFT, ...)"."""
    return TYPE_LABELS[model_type][1].split(" ", 1)[1]


@dataclass(frozen=True)
class Point:
    params_b: float
    average: float
    model_type: ModelType


@dataclass(frozen=True)
class PlotData:
    """What the plots of one view are drawn from: the table's rows, as numbers. A model lacking a value a
    plot needs is left out of that plot (and counted)."""

    models: int
    average_column: str
    benchmarks: tuple[str, ...]  # the benchmarks' columns (their display names), in the config's order
    points: tuple[Point, ...]  # models with an average and a positive parameter count
    scores: tuple[tuple[float, ...], ...]  # per benchmark, the normalized scores of the models that have one
    complete: tuple[tuple[float, ...], ...]  # per model with every benchmark, its scores

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], config: LeaderboardConfig) -> PlotData:
        columns = tuple(b.column for b in config.benchmarks)
        average = config.average.column
        points = []
        for row in rows:
            params, score = _number(row.get(PARAMS)), _number(row.get(average))
            model_type = _BY_LABEL.get(row.get(TYPE, ""))
            if params is not None and params > 0 and score is not None and model_type is not None:
                points.append(Point(params, score, model_type))
        values = [tuple(_number(row.get(c)) for c in columns) for row in rows]
        return cls(
            models=len(rows),
            average_column=average,
            benchmarks=columns,
            points=tuple(points),
            scores=tuple(tuple(x for v in values if (x := v[i]) is not None) for i in range(len(columns))),
            complete=tuple(tuple(x for x in v if x is not None) for v in values if None not in v),
        )

    @property
    def types(self) -> list[ModelType]:
        """The model types of the scatter's points, in the table's order of types."""
        present = {p.model_type for p in self.points}
        return [t for t in ModelType if t in present]

    def correlation(self) -> list[list[float | None]] | None:
        """Pearson's r between every two benchmarks over the models that have all of them (None for a
        benchmark whose scores do not vary); None when fewer than MIN_CORRELATED models have all."""
        if len(self.complete) < MIN_CORRELATED:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(np.array(self.complete), rowvar=False)
        return [[float(x) if math.isfinite(x) else None for x in line] for line in np.atleast_2d(r)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def correlation_text(r: float | None) -> str:
    """How a correlation is written in the matrix's cells and the page's table."""
    return "–" if r is None else f"{r:.2f}"


@dataclass(frozen=True)
class Chart:
    """A figure the page links to: its file name, what it shows (the image's alt text), and how to draw it."""

    name: str
    alt: Callable[[PlotData], str]
    inputs: Callable[[PlotData], object]  # what the drawing depends on (its cache key)
    draw: Callable[[PlotData], Figure]
    ready: Callable[[PlotData], bool]  # whether there is anything to draw

    def fingerprint(self, data: PlotData) -> str:
        key = repr((self.name, DRAWING_VERSION, matplotlib.__version__, self.inputs(data)))
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def svg(self, data: PlotData) -> bytes:
        with matplotlib.rc_context(_RC):
            figure = self.draw(data) if self.ready(data) else _nothing()
            out = io.BytesIO()
            figure.savefig(out, format="svg", dpi=150, metadata={"Date": None, "Title": self.alt(data)})
        return for_the_page(out.getvalue())


def for_the_page(svg: bytes) -> bytes:
    """matplotlib's SVG with every ``style`` attribute and ``<style>`` element as presentation attributes,
    and each embedded PNG in 256 colours (a third of the bytes of matplotlib's, alike to the eye)."""
    root = ET.fromstring(svg)
    for element in root.iter():
        if element.tag == f"{{{_SVG}}}image":
            link = f"{{{_XLINK}}}href"
            element.set(link, _palette_png(element.get(link, "")))
        style = element.attrib.pop("style", None)
        if style:
            for declaration in style.split(";"):
                name, _, value = declaration.partition(":")
                if name.strip():
                    element.set(name.strip(), value.strip())
    for parent in root.iter():
        for child in list(parent):
            if child.tag == f"{{{_SVG}}}style":  # matplotlib's one rule: "*{stroke-linejoin: round; ...}"
                parent.remove(child)
                rule = (child.text or "").partition("{")[2].rstrip().rstrip("}")
                for declaration in rule.split(";"):
                    name, _, value = declaration.partition(":")
                    if name.strip():
                        root.set(name.strip(), value.strip())  # inherited where an element sets none
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _palette_png(uri: str) -> str:
    prefix = "data:image/png;base64,"
    if not uri.startswith(prefix):
        return uri
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))
    out = io.BytesIO()
    image.convert("RGBA").quantize(256, method=Image.Quantize.FASTOCTREE).save(out, "PNG", optimize=True)
    return prefix + base64.b64encode(out.getvalue()).decode("ascii")


@functools.cache
def _glyphs() -> frozenset[int]:
    return frozenset(font_manager.get_font(font_manager.findfont("DejaVu Sans")).get_charmap())


def plain(text: str) -> str:
    """``text`` without the characters the figures' font lacks (emoji), which matplotlib warns about."""
    glyphs = _glyphs()
    return " ".join("".join(c for c in text if ord(c) in glyphs).split())


def _nothing() -> Figure:
    figure = Figure(figsize=(6, 1.2))
    figure.text(0.5, 0.5, "Nothing to plot yet in this view", ha="center", va="center", color="#5b6676")
    return figure


def _draw_average_vs_params(data: PlotData) -> Figure:
    figure = Figure(figsize=(9.5, 5), layout="constrained")
    axes = figure.add_subplot()
    many = len(data.points) > RASTERIZE_ABOVE
    for model_type in data.types:
        chosen = [p for p in data.points if p.model_type is model_type]
        colour, marker = STYLE[model_type]
        axes.scatter(
            [p.params_b for p in chosen],
            [p.average for p in chosen],
            s=10 if many else 30,
            c=colour,
            marker=marker,
            alpha=0.6 if many else 0.85,
            linewidths=0,
            label=f"{type_name(model_type)} ({len(chosen)})",
            gid=f"models-{model_type.value}",
            rasterized=many,
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))  # 0.1, 1, 10: no mathtext
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("#Params (billions, log scale)")
    axes.set_ylabel(f"{plain(data.average_column)} (normalized, 0–100)")
    axes.grid(True, which="major", color="#d9dee6", linewidth=0.6)
    axes.set_axisbelow(True)
    # Beside the axes, never over points; markers as large as the few-points ones.
    axes.legend(
        title="Model type",
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        frameon=False,
        markerscale=1.7 if many else 1,
    )
    return figure


def _draw_distributions(data: PlotData) -> Figure:
    columns = 3
    lines = max(1, math.ceil(len(data.benchmarks) / columns))
    figure = Figure(figsize=(9, 2.6 * lines), layout="constrained")
    grid = figure.subplots(lines, columns, squeeze=False, sharex=True)
    for index, axes in enumerate(grid.flat):
        if index >= len(data.benchmarks):
            axes.set_visible(False)
            continue
        scores = np.clip(np.array(data.scores[index], dtype=float), 0, 100)
        _, _, bars = axes.hist(scores, bins=HISTOGRAM_BINS, color="#2455c3", edgecolor="white", linewidth=0.5)
        for number, bar in enumerate(bars):
            bar.set_gid(f"bins-{index}-{number}")
        axes.set_title(f"{plain(data.benchmarks[index])} ({len(scores)} models)")
        axes.set_xlim(0, 100)
        axes.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axes.tick_params(labelbottom=True)
    for axes in grid[:, 0]:
        axes.set_ylabel("models")
    figure.supxlabel("normalized score (0–100)")
    return figure


def _draw_correlation(data: PlotData) -> Figure:
    r = data.correlation() or []
    names = [plain(b) for b in data.benchmarks]
    figure = Figure(figsize=(6.4, 5.4), layout="constrained")
    axes = figure.add_subplot()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9dee6")
    cells = np.array([[math.nan if x is None else x for x in line] for line in r])
    mesh = axes.pcolormesh(np.ma.masked_invalid(cells), cmap=cmap, vmin=-1, vmax=1, edgecolors="white")
    for i, line in enumerate(r):
        for j, value in enumerate(line):
            dark = value is not None and abs(value) > 0.6
            axes.text(
                j + 0.5,
                i + 0.5,
                correlation_text(value),
                ha="center",
                va="center",
                color="white" if dark else "#1d2430",
                gid=f"r-{i}-{j}",
            )
    axes.set_xticks(np.arange(len(names)) + 0.5, names, rotation=30, ha="right")
    axes.set_yticks(np.arange(len(names)) + 0.5, names)
    axes.invert_yaxis()
    axes.set_aspect("equal")
    axes.tick_params(length=0)
    figure.colorbar(mesh, ax=axes, label="Pearson's r", shrink=0.8)
    axes.set_title(f"over the {len(data.complete)} models with every benchmark")
    return figure


def _benchmarks_text(data: PlotData) -> str:
    return ", ".join(f"{b} ({len(s)} models)" for b, s in zip(data.benchmarks, data.scores, strict=True))


CHARTS: dict[str, Chart] = {
    c.name: c
    for c in (
        Chart(
            "average-vs-params",
            alt=lambda d: (
                f"Scatter plot of the average normalized score (0 to 100) against the number of parameters "
                f"in billions on a log scale, one point for each of {len(d.points)} models, coloured by "
                f"model type: {', '.join(type_name(t) for t in d.types) or 'none'}."
            ),
            inputs=lambda d: (d.average_column, d.points),
            draw=_draw_average_vs_params,
            ready=lambda d: bool(d.points),
        ),
        Chart(
            "score-distributions",
            alt=lambda d: (
                f"Histograms of each benchmark's normalized scores (0 to 100): {_benchmarks_text(d)}."
            ),
            inputs=lambda d: (d.benchmarks, d.scores),
            draw=_draw_distributions,
            ready=lambda d: any(d.scores),
        ),
        Chart(
            "benchmark-correlations",
            alt=lambda d: (
                f"Matrix of Pearson correlations between the scores of {', '.join(d.benchmarks)}, over the "
                f"{len(d.complete)} models that have all of them; the table below gives the same values."
            ),
            inputs=lambda d: (d.benchmarks, d.complete),
            draw=_draw_correlation,
            ready=lambda d: d.correlation() is not None,
        ),
    )
}


class Renders:
    """Drawn SVG by fingerprint of what it was drawn from, so a repeated view is not drawn again.

    One drawing at a time: matplotlib's global settings (rc_context) are not per thread, and a drawing of
    10,000 points is CPU work that parallel requests would only slow down.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.drawn: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()
        self.misses = 0

    def svg(self, chart: Chart, data: PlotData) -> tuple[str, bytes]:
        """(the fingerprint, the SVG) of ``chart`` over ``data``."""
        key = chart.fingerprint(data)
        with self.lock:
            found = self.drawn.get(key)
            if found is None:
                self.misses += 1
                found = self.drawn[key] = chart.svg(data)
                while len(self.drawn) > self.size:
                    self.drawn.popitem(last=False)
            self.drawn.move_to_end(key)
        return key, found
