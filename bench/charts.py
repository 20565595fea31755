"""The report's PNG charts (matplotlib), drawn from bench/chartdata.py's records.

Each chart answers one question, stated in its title; a panel holds at most about six
series on one linear or one log scale; legends sit outside the plot areas (constrained
layout makes room for them and for every label, so none overlaps another)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from bench.chartdata import (
    FAULT_LABELS,
    MAX_SERIES,
    PRIMARY_MODES,
    QUESTIONS,
    VERDICTS,
    Bar,
    Curve,
    DeliveryGrid,
    LatencyBar,
    Point,
    cell_text,
    queue_colors,
    ranked_queues,
    row_label,
    saturation_panels,
    verdict,
)

MODE_COLORS = {"raw": "#4c72b0", "direct": "#dd8452", "http": "#55a868"}


def _figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, Any]:
    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False,
                        layout="constrained")


def _legend(fig: Figure, handles: Sequence[Any], labels: Sequence[str],
            title: str | None = None) -> None:
    # Outside every plot area, on the right: constrained layout shrinks the panels for it.
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False,
               title=title)


def no_data(question: str) -> Figure:
    """A chart with nothing to draw: its question and a note, never an empty frame."""
    fig, axes = _figure(1, 1, 6, 2)
    ax = axes[0][0]
    ax.text(0.5, 0.5, "no data in these results", ha="center", va="center",
            transform=ax.transAxes)
    ax.set_axis_off()
    fig.suptitle(question)
    return fig


def _plain_numbers(axis: Any) -> None:
    axis.set_major_locator(MaxNLocator(nbins=4))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))


def _mode_bars(ax: Axes, records: Sequence[Any], value: Callable[[Any], float],
               error: Callable[[Any], tuple[float, float]], rank: Callable[[Any], float]) -> None:
    """Horizontal bars, a group per queue (the best on top), a bar per mode."""
    queues = ranked_queues(records, rank)
    modes = [m for m in PRIMARY_MODES if any(r.mode == m for r in records)]
    height = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        mine = {r.queue: r for r in records if r.mode == mode}
        ys = [q - 0.4 + height * (i + 0.5) for q, name in enumerate(queues) if name in mine]
        shown = [mine[name] for name in queues if name in mine]
        errors = [error(r) for r in shown]
        ax.barh(ys, [value(r) for r in shown], height, color=MODE_COLORS[mode], label=mode,
                xerr=[[e[0] for e in errors], [e[1] for e in errors]], capsize=2,
                error_kw={"elinewidth": 0.8})
    ax.set_yticks(range(len(queues)), queues)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    _plain_numbers(ax.xaxis)


def _bar_panels(records: Sequence[Any], question: str, unit: str,
                title: Callable[[str], str], value: Callable[[Any], float],
                error: Callable[[Any], tuple[float, float]],
                rank: Callable[[Any], float]) -> Figure:
    records = [r for r in records if r.mode in PRIMARY_MODES]
    workloads = list(dict.fromkeys(r.workload for r in records))
    if not workloads:
        return no_data(question)
    queues = len({r.queue for r in records})
    fig, axes = _figure(1, len(workloads), 3.6 * len(workloads) + 2.2, 1.4 + 0.55 * queues)
    for ax, workload in zip(axes[0], workloads, strict=True):
        _mode_bars(ax, [r for r in records if r.workload == workload], value, error, rank)
        ax.set_title(title(workload), fontsize="medium")
        ax.set_xlabel(unit)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _legend(fig, handles, labels, title="mode")
    fig.suptitle(question)
    return fig


def throughput_chart(bars: list[Bar]) -> Figure:
    """Drain rate per queue, a panel per workload; the whisker is the repeats' min-max."""
    return _bar_panels(
        bars, QUESTIONS["throughput"],
        "tasks/s", lambda w: w, lambda b: b.median,
        lambda b: (b.median - b.low, b.high - b.median), lambda b: -b.median)


def latency_chart(bars: list[LatencyBar]) -> Figure:
    """End-to-end p50 (bar) and p99 (whisker) per queue at one load per workload."""
    loads = {b.workload: b.load for b in bars}
    return _bar_panels(
        bars, QUESTIONS["latency"],
        "ms end to end", lambda w: f"{w} ({loads[w]})", lambda b: b.p50,
        lambda b: (0.0, b.p99 - b.p50), lambda b: b.p50)


def _log_ms(ax: Axes, axis: str = "y") -> None:
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    scale = ax.yaxis if axis == "y" else ax.xaxis
    scale.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    scale.set_minor_formatter(NullFormatter())  # 2x10^1 and the like, crowding the axis


def saturation_chart(points: list[Point]) -> Figure:
    """End-to-end p50 (solid) and p99 (dashed) against the offered rate: a row per
    workload, a panel per mode, a line per queue; where a line turns up, that queue has
    stopped keeping up."""
    question = QUESTIONS["saturation"]
    grid = saturation_panels(points)
    if not grid:
        return no_data(question)
    colors = queue_colors(p.queue for p in points)
    cols = max(len(row) for row in grid)
    fig, axes = _figure(len(grid), cols, 4.2 * cols + 2.2, 3.1 * len(grid))
    for ax_row, panels in zip(axes, grid, strict=True):
        for ax, panel in zip(ax_row, panels, strict=False):
            for queue in dict.fromkeys(p.queue for p in panel.records):
                mine = [p for p in panel.records if p.queue == queue]
                xs = [p.offered for p in mine]
                ax.plot(xs, [p.p50 for p in mine], marker="o", markersize=3,
                        color=colors[queue], label=queue)
                ax.plot(xs, [math.nan if p.p99 is None else p.p99 for p in mine],
                        linestyle="--", linewidth=1, color=colors[queue])
            ax.set_title(panel.title, fontsize="medium")
            ax.set_xlabel("offered tasks/s")
            ax.set_ylabel("ms end to end")
            _log_ms(ax)
            _plain_numbers(ax.xaxis)
            ax.grid(alpha=0.3)
        for ax in ax_row[len(panels):]:
            ax.set_axis_off()
    handles = [Line2D([], [], color=c, marker="o", markersize=3) for c in colors.values()]
    handles += [Line2D([], [], color="black"), Line2D([], [], color="black", linestyle="--")]
    _legend(fig, handles, [*colors, "p50", "p99"])
    fig.suptitle(question)
    return fig


def cdf_chart(curves: list[Curve]) -> Figure:
    """The share of tasks done within x ms: a panel per mode, a curve per queue; a mode
    with more than MAX_SERIES queues gets a panel per broker."""
    question = QUESTIONS["cdf"]
    modes = [m for m in PRIMARY_MODES if any(c.mode == m for c in curves)]
    if not modes:
        return no_data(question)
    panels: list[tuple[str, str | None]] = []
    for mode in modes:
        brokers = list(dict.fromkeys(c.broker for c in curves if c.mode == mode))
        many = len({c.queue for c in curves if c.mode == mode}) > MAX_SERIES
        panels += [(mode, b) for b in brokers] if many else [(mode, None)]
    colors = queue_colors(c.queue for c in curves)
    fig, axes = _figure(1, len(panels), 3.8 * len(panels) + 2.2, 3.4)
    everything = [v for c in curves for v in c.values if v > 0]
    for ax, (mode, broker) in zip(axes[0], panels, strict=True):
        for curve in (c for c in curves
                      if c.mode == mode and broker in (None, c.broker)):
            steps = len(curve.values) - 1
            ax.plot(curve.values, [i / steps for i in range(steps + 1)],
                    color=colors[curve.queue], linewidth=1.6)
        if everything and max(everything) / min(everything) > 30:
            _log_ms(ax, "x")
        where = f" on {broker}" if broker else ""
        ax.set_title(f"{curves[0].workload}, {mode}{where} ({curves[0].load})",
                     fontsize="medium")
        ax.set_xlabel("ms end to end")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of tasks")
    _legend(fig, [Line2D([], [], color=c) for c in colors.values()], list(colors))
    fig.suptitle(question)
    return fig


def delivery_chart(grid: DeliveryGrid | None) -> Figure:
    """A cell per backend, broker, mode and fault, coloured by its worst outcome, with
    the lost and run-twice counts written in it; blank where that fault was not run."""
    question = QUESTIONS["delivery"]
    if grid is None or not grid.rows:
        return no_data(question)
    matrix = [[verdict(grid.cells.get((row, fault))) for fault in grid.faults]
              for row in grid.rows]
    fig, axes = _figure(1, 1, 1.25 * len(grid.faults) + 5.5, 0.42 * len(grid.rows) + 1.8)
    ax = axes[0][0]
    cmap = ListedColormap([color for _, color, _ in VERDICTS.values()], bad="white")
    ax.imshow(matrix, cmap=cmap, vmin=-0.5, vmax=len(VERDICTS) - 0.5, aspect="auto")
    for y, row in enumerate(grid.rows):
        for x, fault in enumerate(grid.faults):
            ax.text(x, y, cell_text(grid.cells.get((row, fault))), ha="center", va="center",
                    fontsize="x-small")
    ax.set_xticks(range(len(grid.faults)),
                  [FAULT_LABELS.get(f, f.replace("_", "\n")) for f in grid.faults],
                  fontsize="small")
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(grid.rows)), [row_label(r) for r in grid.rows], fontsize="small")
    ax.tick_params(length=0)
    _legend(fig, [Patch(color=color) for _, color, _ in VERDICTS.values()],
            [text for text, _, _ in VERDICTS.values()])
    fig.suptitle(question)
    return fig
