"""What each chart of the report shows, as flat records read from results.json: one
question per chart. bench/charts.py draws them as PNGs and bench/interactive.py as plotly
figures; both take the same records, so the picture and the page never disagree.

A record names its workload, queue ("celery on rabbitmq"), broker and mode, so that a
chart can put one workload in a panel and the page can filter by any of them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.stats import broker_of, queue_label

# The library alone, and through queuebench in process and over HTTP: the comparison the
# charts make. Other modes (batch, +history, /defaults) stay in the tables and filters.
PRIMARY_MODES = ("raw", "direct", "http")
SATURATION_MODES = ("raw", "direct")
MAX_SERIES = 6  # more lines than this in one panel cannot be told apart

FAULTS = ("worker_kill", "worker_restart", "broker_restart", "broker_crash_everysec",
          "eta_past_visibility", "net_cut")
FAULT_LABELS = {"worker_kill": "worker\nSIGKILL", "worker_restart": "worker\nrestart",
                "broker_restart": "broker\nrestart", "broker_crash_everysec":
                "broker crash\n(everysec)", "eta_past_visibility": "eta past\nvisibility",
                "net_cut": "network\ncut"}
DELIVERY_MODES = ("raw-defaults", "raw-safe", "queuebench")
# Each chart's one question: its title in the PNG, the Markdown and the page.
QUESTIONS = {
    "throughput": "How fast does each queue drain a full queue? (burst, higher is better)",
    "latency": "How long from submit to done at a load all keep up with? "
               "(bar p50, whisker p99, lower is better)",
    "saturation": "At what offered rate does latency take off? (end to end, sustained load)",
    "cdf": "How is end-to-end latency spread? (share of tasks done within x ms)",
    "delivery": "What is lost or run twice when something dies? (tasks per fault)",
}
# A delivery cell's verdict, worst last: its colour in both renderings.
OK, TWICE, LOST, FAILED = 0, 1, 2, 3
VERDICTS = {OK: ("none lost or run twice", "#a6d96a", "green"),
            TWICE: ("run twice", "#fdae61", "orange"), LOST: ("lost", "#d7191c", "red"),
            FAILED: ("did not run (error)", "#bdbdbd", "grey")}
# matplotlib's tab10, so that a queue has one colour in the PNGs and on the page.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


def _e2e(row: dict[str, Any], name: str) -> float | None:
    return ((row.get("latency_ms") or {}).get("end_to_end") or {}).get(name)


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def queue_colors(queues: Iterable[str]) -> dict[str, str]:
    return {q: PALETTE[i % len(PALETTE)] for i, q in enumerate(_unique(queues))}


# ---------------------------------------------------------------- drain rate


@dataclass(frozen=True)
class Bar:
    """A queue's median drain rate in one mode, with the repeats' range."""

    workload: str
    queue: str
    broker: str
    mode: str
    median: float
    low: float
    high: float


def drain_bars(summary: list[dict[str, Any]]) -> list[Bar]:
    """Burst throughput (tasks/s) of every queue, workload and mode that has one."""
    bars = []
    for row in summary:
        spread = row.get("throughput_tasks_per_s") or {}
        median = spread.get("median")
        if row.get("phase") != "burst" or row.get("backend") == "ceiling" or median is None:
            continue
        low, high = spread.get("min"), spread.get("max")
        bars.append(Bar(str(row.get("workload")), queue_label(row), broker_of(row),
                        str(row.get("mode")), median, median if low is None else low,
                        median if high is None else high))
    return bars


def ranked_queues(records: Iterable[Any], score: Callable[[Any], float]) -> list[str]:
    """Queues best first, by their lowest score in any mode, so that bars read sorted."""
    best: dict[str, float] = {}
    for record in records:
        best[record.queue] = min(best.get(record.queue, math.inf), score(record))
    return sorted(best, key=lambda q: best[q])


# ---------------------------------------------------------------- latency at one load


def level(rows: list[dict[str, Any]], sat: list[dict[str, Any]], workload: Any) -> Any:
    """The offered rate at which to compare sustained latency: the highest one that every
    queue and mode kept up with, else the lowest (a sweep tried several)."""
    rates = sorted(_unique(r.get("offered_rate") for r in rows))
    if not rates:
        return None
    limits = [s.get("max_sustained_rate") for s in sat if s.get("workload") == workload]
    common = [r for r in rates
              if limits and all(lim is not None and r <= lim for lim in limits)]
    return common[-1] if common else rates[0]


def compared(rows: list[dict[str, Any]], sat: list[dict[str, Any]],
             workload: Any) -> tuple[list[dict[str, Any]], str]:
    """A workload's rows to compare latency on: sustained if there are any, else burst."""
    mine = [r for r in rows if r.get("workload") == workload and r.get("backend") != "ceiling"]
    sustained = [r for r in mine if r.get("phase") == "sustained"]
    if not sustained:
        return [r for r in mine if r.get("phase") == "burst"], "burst"
    rate = level(sustained, sat, workload)
    label = "sustained" if rate is None else f"sustained @ {_fmt_rate(rate)}/s"
    return [r for r in sustained if r.get("offered_rate") == rate], label


@dataclass(frozen=True)
class LatencyBar:
    """End-to-end p50 and p99 of a queue in one mode, at the workload's compared load."""

    workload: str
    queue: str
    broker: str
    mode: str
    p50: float
    p99: float
    load: str


def latency_bars(summary: list[dict[str, Any]], sat: list[dict[str, Any]]) -> list[LatencyBar]:
    bars = []
    for workload in _unique(r.get("workload") for r in summary if r.get("backend") != "ceiling"):
        rows, load = compared(summary, sat, workload)
        for row in rows:
            p50, p99 = _e2e(row, "p50"), _e2e(row, "p99")
            if p50 is None:
                continue
            bars.append(LatencyBar(str(workload), queue_label(row), broker_of(row),
                                   str(row.get("mode")), p50, p50 if p99 is None else p99, load))
    return bars


# ---------------------------------------------------------------- saturation


@dataclass(frozen=True)
class Point:
    """One offered rate of a sustained sweep: what came out, and how long it took."""

    workload: str
    queue: str
    broker: str
    mode: str
    offered: float
    achieved: float | None
    p50: float
    p99: float | None


def saturation_points(summary: list[dict[str, Any]]) -> list[Point]:
    points = []
    for row in summary:
        rate, p50 = row.get("offered_rate"), _e2e(row, "p50")
        if row.get("phase") != "sustained" or rate is None or p50 is None:
            continue
        points.append(Point(str(row.get("workload")), queue_label(row), broker_of(row),
                            str(row.get("mode")), rate,
                            (row.get("throughput_tasks_per_s") or {}).get("median"), p50,
                            _e2e(row, "p99")))
    return points


@dataclass(frozen=True)
class Panel:
    """A panel of small multiples: its title and the records it draws."""

    title: str
    records: list[Any]


def saturation_panels(points: list[Point]) -> list[list[Panel]]:
    """A row per workload swept over two rates or more, a panel per mode (raw, direct); a
    mode's queues are split by broker into panels of their own when there are more than
    MAX_SERIES of them. Each panel's points in order of offered rate."""
    grid = []
    for workload in _unique(p.workload for p in points):
        if len({p.offered for p in points if p.workload == workload}) < 2:
            continue  # one rate is no curve: its latency is in the latency chart
        row = []
        for mode in SATURATION_MODES:
            mine = sorted((p for p in points if p.workload == workload and p.mode == mode),
                          key=lambda p: p.offered)
            groups = [("", mine)]
            if len(_unique(p.queue for p in mine)) > MAX_SERIES:
                groups = [(f" on {b}", [p for p in mine if p.broker == b])
                          for b in _unique(p.broker for p in mine)]
            row += [Panel(f"{workload}, {mode}{suffix}", records) for suffix, records in groups]
        if any(panel.records for panel in row):
            grid.append(row)
    return grid


# ---------------------------------------------------------------- latency distribution


@dataclass(frozen=True)
class Curve:
    """A queue's end-to-end latency CDF in one mode: the ms at each percent, 0 to 100."""

    workload: str
    queue: str
    broker: str
    mode: str
    values: list[float]
    load: str


def _median_curve(curves: list[list[float]]) -> list[float]:
    # Repeats' CDFs combined point by point: the median of each quantile.
    same = [c for c in curves if len(c) == len(curves[0])]
    return [statistics.median(c[i] for c in same) for i in range(len(curves[0]))]


def cdf_curves(runs: list[dict[str, Any]], sat: list[dict[str, Any]]) -> list[Curve]:
    """For noop (else the first workload) at the compared load, a curve per queue and mode
    of PRIMARY_MODES."""
    def values(run: dict[str, Any]) -> list[float]:
        return list((run.get("latency_cdf_ms") or {}).get("end_to_end") or [])

    usable = [r for r in runs if len(values(r)) >= 2 and r.get("mode") in PRIMARY_MODES]
    workloads = _unique(r.get("workload") for r in usable)
    workload = "noop" if "noop" in workloads else workloads[0] if workloads else None
    rows, load = compared(usable, sat, workload)
    curves = []
    for queue, mode in _unique((queue_label(r), r.get("mode")) for r in rows):
        mine = [values(r) for r in rows if queue_label(r) == queue and r.get("mode") == mode]
        broker = next(broker_of(r) for r in rows if queue_label(r) == queue)
        curves.append(Curve(str(workload), queue, broker, str(mode), _median_curve(mine), load))
    return curves


# ---------------------------------------------------------------- delivery under faults


@dataclass(frozen=True)
class DeliveryGrid:
    """results["faults"] as a grid: a row per backend, broker and mode, a column per fault;
    a cell is that run's row, or None when it was not run."""

    rows: list[tuple[str, str, str]]
    faults: list[str]
    cells: dict[tuple[tuple[str, str, str], str], dict[str, Any]]


def delivery_grid(faults: list[dict[str, Any]]) -> DeliveryGrid:
    def mode_rank(mode: str) -> int:
        return DELIVERY_MODES.index(mode) if mode in DELIVERY_MODES else len(DELIVERY_MODES)

    cells = {((str(f.get("backend")), broker_of(f), str(f.get("mode"))), str(f.get("fault"))): f
             for f in faults}
    rows = sorted(_unique(key for key, _ in cells),
                  key=lambda r: (r[0], r[1], mode_rank(r[2]), r[2]))
    present = _unique(fault for _, fault in cells)
    order = [f for f in FAULTS if f in present] + [f for f in present if f not in FAULTS]
    return DeliveryGrid(rows, order, cells)


def row_label(row: tuple[str, str, str]) -> str:
    return f"{row[0]} / {row[1]} / {row[2]}"


def verdict(cell: dict[str, Any] | None) -> float:
    """OK, TWICE, LOST or FAILED for a run, NaN for a fault not run on that row."""
    if cell is None:
        return math.nan
    if cell.get("error"):
        return FAILED
    if cell.get("lost"):
        return LOST
    return TWICE if cell.get("run_twice") else OK


def cell_text(cell: dict[str, Any] | None) -> str:
    """What the heat map writes in a cell: the counts, so the colour is never all it says."""
    if cell is None:
        return ""
    if cell.get("error"):
        return "error"
    return f"lost {cell.get('lost', 0)}\ntwice {cell.get('run_twice', 0)}"
