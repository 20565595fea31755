"""The benchmark's report: results.json (see bench/cli.py) turned into report.md, one
self-contained report.html, PNG charts, and rich tables for the terminal.

Any figure may be None and shows as "-"; a missing part of the results leaves out its
table or chart rather than failing, so a partial run still gives a report."""

from __future__ import annotations

import base64
import html
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from rich.table import Table as RichTable
from rich.text import Text

from bench.faults import delivery_table
from bench.stats import (
    E2E_P50_FACTOR,
    E2E_P50_SLACK_MS,
    OVERHEAD_TARGETS,
    broker_of,
    overhead,
    queue_label,
    ratios,
    saturation,
    summarise,
)
from bench.stats import (
    findings as _findings,
)

DASH = "\u2013"  # an en dash: "no figure"
MODES = ("raw", "direct", "batch", "http", "direct+history", "http+history")
MODE_COLORS = {"raw": "#4c72b0", "direct": "#dd8452", "batch": "#c44e52", "http": "#55a868",
               "direct+history": "#f0b27a", "http+history": "#a9d18e", "ceiling": "#8c8c8c"}
MODE_LINES = {"raw": "-", "direct": "--", "http": ":", "direct+history": "-.",
              "http+history": (0, (1, 3))}
KIND_TITLES = {"submit": "submit", "queue_wait": "queue wait", "end_to_end": "end to end"}
DIRECT_OK = OVERHEAD_TARGETS["direct_vs_raw"]
OVERHEAD_LABELS = {
    "direct_submit_vs_raw": "direct submit / raw submit",
    "batch_submit_vs_raw": "batch submit / raw submit",
    "http_submit_vs_ceiling": "http submit / ceiling",
    "direct_vs_raw": "direct drain / raw drain",
    "http_vs_raw": "http end to end / raw",
}
CEILING_OK = 0.8  # below this share of the generator's own ceiling, the generator is not the limit

# A cell is its text, or (text, css class) when it must stand out: "bad" or "warn".
Cell = str | tuple[str, str]


@dataclass
class TableData:
    """One report table, rendered alike to Markdown and HTML."""

    title: str
    headers: list[str]
    rows: list[list[Cell]]
    align: str  # a letter per column: "l" for labels, "r" for numbers
    note: str = ""


# ---------------------------------------------------------------- figures and text


def _num(value: Any) -> str:
    if value is None:
        return DASH
    value = float(value)
    if value != 0 and abs(value) < 1:
        return f"{value:.3g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 \
        else f"{value:.2f}"


def _count(value: Any) -> str:
    return DASH if value is None else str(value)


def _spread_text(spread: dict[str, Any] | None) -> str:
    """"median [min-max]", or the median alone when the repeats agree (or there is one)."""
    spread = spread or {}
    median, low, high = spread.get("median"), spread.get("min"), spread.get("max")
    if median is None:
        return DASH
    if low is None or high is None or low == high:
        return _num(median)
    return f"{_num(median)} [{_num(low)}{DASH}{_num(high)}]"


def _ratio_text(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def _median_of(row: dict[str, Any], figure: str) -> float | None:
    return (row.get(figure) or {}).get("median")


def _latency(row: dict[str, Any], kind: str, name: str) -> float | None:
    return ((row.get("latency_ms") or {}).get(kind) or {}).get(name)


def _phase_text(row: dict[str, Any]) -> str:
    rate = row.get("offered_rate")
    phase = str(row.get("phase") or DASH)
    return phase if rate is None else f"{phase} @ {_num(rate)}/s"


def verdict(row: dict[str, Any]) -> tuple[str, bool]:
    """The ratios row in words, and whether any part of it calls for a look."""
    parts, warn = [], False
    direct = row.get("direct_vs_raw")
    if direct is not None:
        parts.append("direct/raw ok" if direct >= DIRECT_OK else "direct/raw below 95%")
        warn = warn or direct < DIRECT_OK
    ceiling = row.get("http_submit_vs_ceiling")
    if ceiling is not None:
        parts.append("ok, generator not the bottleneck" if ceiling < CEILING_OK else
                     "near ceiling: the load generator or the API host may be the bottleneck")
        warn = warn or ceiling >= CEILING_OK
    return ("; ".join(parts) or DASH), warn


# ---------------------------------------------------------------- the results' parts


def _summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    return results.get("summary") or summarise(results.get("runs") or [])


def _ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    return results.get("ratios") or ratios(_summary(results))


def _overhead(results: dict[str, Any]) -> list[dict[str, Any]]:
    return results.get("overhead") or overhead(_summary(results))


def _saturation(results: dict[str, Any]) -> list[dict[str, Any]]:
    return results.get("saturation") or saturation(results.get("runs") or [])


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


def _modes(rows: Iterable[dict[str, Any]]) -> list[str]:
    present = _unique(r.get("mode") for r in rows)
    return [m for m in MODES if m in present] + [m for m in present if m not in MODES]


def _queues(rows: Iterable[dict[str, Any]]) -> list[str]:
    return [b for b in _unique(r.get("backend") for r in rows) if b != "ceiling"]


def _by_queue(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "backend": queue_label(r)} for r in rows]


def _burst(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in summary if r.get("phase") == "burst"]


def _level(rows: list[dict[str, Any]], sat: list[dict[str, Any]], workload: Any) -> Any:
    """The offered rate at which to compare sustained latency: the highest one that every
    queue and mode kept up with, else the lowest (a sweep tried several)."""
    rates = sorted(_unique(r.get("offered_rate") for r in rows))
    if not rates:
        return None
    limits = [s.get("max_sustained_rate") for s in sat if s.get("workload") == workload]
    common = [r for r in rates
              if limits and all(lim is not None and r <= lim for lim in limits)]
    return common[-1] if common else rates[0]


def _compared(rows: list[dict[str, Any]], sat: list[dict[str, Any]],
              workload: Any) -> tuple[list[dict[str, Any]], str]:
    """A workload's rows to compare latency on: sustained if there are any, else burst."""
    mine = [r for r in rows if r.get("workload") == workload and r.get("backend") != "ceiling"]
    sustained = [r for r in mine if r.get("phase") == "sustained"]
    if not sustained:
        return [r for r in mine if r.get("phase") == "burst"], "burst"
    level = _level(sustained, sat, workload)
    label = "sustained" if level is None else f"sustained @ {_num(level)}/s"
    return [r for r in sustained if r.get("offered_rate") == level], label


# ---------------------------------------------------------------- tables


def _pivot(rows: list[dict[str, Any]], figure: str, title: str, note: str) -> TableData:
    """Rows per workload and backend, one column per mode: 'median [min-max]'."""
    modes = _modes(rows)
    cells: dict[tuple[Any, Any], dict[Any, str]] = {}
    for row in rows:
        key = (row.get("workload"), row.get("backend"), broker_of(row))
        cells.setdefault(key, {}).setdefault(row.get("mode"), _spread_text(row.get(figure)))
    # Grouped by workload, queues in the order they ran.
    workloads = _unique(w for w, _, _ in cells)
    ordered = sorted(cells.items(), key=lambda item: workloads.index(item[0][0]))
    body: list[list[Cell]] = [[str(w), str(b), k, *(line.get(m, DASH) for m in modes)]
                              for (w, b, k), line in ordered]
    return TableData(title, ["workload", "backend", "broker", *modes], body,
                     align="lll" + "r" * len(modes), note=note)


def throughput_table(summary: list[dict[str, Any]]) -> TableData:
    rows = [r for r in _burst(summary) if r.get("backend") != "ceiling"]
    return _pivot(rows, "throughput_tasks_per_s", "Throughput, burst (tasks/s)",
                  f"Median over repeats [min{DASH}max]. Burst: a preloaded queue drained by "
                  "the workers, from the first 5% of completions to the last.")


def submit_table(summary: list[dict[str, Any]]) -> TableData:
    return _pivot(_burst(summary), "submit_rps", "Submit rate, burst (tasks/s)",
                  "Burst submissions with no worker running; batch: the direct burst through "
                  "Backend.submit_many. The ceiling: the same Locust load on a bare FastAPI "
                  "endpoint doing one Redis LPUSH.")


def latency_table(summary: list[dict[str, Any]]) -> TableData:
    kinds = _unique(k for r in summary for k in (r.get("latency_ms") or {}))
    body: list[list[Cell]] = []
    for row in summary:
        if not row.get("latency_ms"):
            continue
        body.append([str(row.get("backend")), broker_of(row), str(row.get("workload")),
                     str(row.get("mode")), _phase_text(row),
                     *(" / ".join(_num(_latency(row, k, p)) for p in ("p50", "p95", "p99"))
                       for k in kinds)])
    headers = ["backend", "broker", "workload", "mode", "phase",
               *(f"{KIND_TITLES.get(k, k)} p50 / p95 / p99" for k in kinds)]
    return TableData("Latency (ms)", headers, body, align="lllll" + "r" * len(kinds),
                     note="Each percentile is the median of the repeats' own percentiles. "
                          "batch: a submit is a whole submit_many call.")


def errors_table(summary: list[dict[str, Any]]) -> TableData:
    body: list[list[Cell]] = []
    for row in summary:
        lost = row.get("lost")
        body.append([str(row.get("backend")), broker_of(row), str(row.get("workload")),
                     str(row.get("mode")), _phase_text(row), _count(row.get("tasks")),
                     _count(row.get("errors")),
                     (f"⚠ {lost} lost", "bad") if lost else _count(lost)])
    return TableData("Errors and lost tasks",
                     ["backend", "broker", "workload", "mode", "phase", "tasks", "errors",
                      "lost"], body, align="lllllrrr",
                     note="Lost: submitted but never reached a final state. Sums over repeats.")


def ratios_table_data(rows: list[dict[str, Any]]) -> TableData:
    body: list[list[Cell]] = []
    for row in rows:
        text, warn = verdict(row)
        body.append([str(row.get("backend")), broker_of(row), str(row.get("workload")),
                     _ratio_text(row.get("direct_vs_raw")), _ratio_text(row.get("http_vs_raw")),
                     _ratio_text(row.get("http_submit_vs_ceiling")),
                     (text, "warn") if warn else text])
    return TableData("Ratios, burst",
                     ["backend", "broker", "workload", "direct / raw", "http / raw",
                      "http submit / ceiling", "verdict"], body, align="lllrrrl",
                     note="Median throughput of each mode over the queue's own raw client; "
                          "http submit rate over the load generator's ceiling.")


def _ms(value: Any) -> str:
    return DASH if value is None else f"{_num(value)} ms"


def _mark(met: bool | None) -> Cell:
    # Missing data is no pass: a dash, like any figure not measured.
    if met is None:
        return DASH
    return "✅ met" if met else ("❌ missed", "bad")


def overhead_table_data(rows: list[dict[str, Any]]) -> TableData:
    """Per backend: each overhead ratio against its target, then sustained latency."""
    body: list[list[Cell]] = []
    for row in rows:
        backend, met = queue_label(row), row.get("met") or {}
        for name, target in OVERHEAD_TARGETS.items():
            body.append([backend, OVERHEAD_LABELS.get(name, name), _ratio_text(row.get(name)),
                         f"≥ {target:.2f}", _mark(met.get(name))])
        rate, limit = row.get("sustained_rate"), row.get("e2e_p50_limit_ms")
        body.append([backend, "sustained end to end p50, direct" +
                     (f" @ {_num(rate)}/s" if rate is not None else ""),
                     f"{_ms(row.get('direct_e2e_p50_ms'))} (raw {_ms(row.get('raw_e2e_p50_ms'))})",
                     f"≤ {E2E_P50_FACTOR:g} \u00d7 raw + {E2E_P50_SLACK_MS:g} ms" +
                     (f" = {_num(limit)} ms" if limit is not None else ""),
                     _mark(met.get("e2e_p50"))])
    workload = rows[0].get("workload") if rows else "noop"
    return TableData(f"Overhead against the library alone ({workload})",
                     ["backend", "measure", "value", "target", "result"], body, align="llrrl",
                     note="Submit: burst rate with no worker running (raw: the library's own "
                          "client; batch: Backend.submit_many). Drain: burst tasks/s. Latency: "
                          "the lowest sustained rate both raw and direct ran. "
                          f"{DASH}: not measured.")


def saturation_table(sat: list[dict[str, Any]]) -> TableData:
    body: list[list[Cell]] = []
    for group in sat:
        points = ", ".join(f"{_num(rate)}→{_num(done)} ({_num(p95)} ms)"
                           for rate, done, p95 in group.get("points") or [])
        best = group.get("max_sustained_rate")
        body.append([str(group.get("backend")), broker_of(group), str(group.get("workload")),
                     str(group.get("mode")), _num(best) if best is not None else ("none", "warn"),
                     points])
    return TableData("Saturation, sustained",
                     ["backend", "broker", "workload", "mode", "kept up to (tasks/s)",
                      "offered → achieved (p95 end to end)"], body, align="llllrl",
                     note="Kept up: achieved at least 95% of the offered rate, nothing lost.")


def kill_table(runs: list[dict[str, Any]]) -> TableData:
    """A worker SIGKILLed mid-burst (bench/session.py `_kill`): what never finished."""
    body: list[list[Cell]] = []
    for run in sorted((r for r in runs if r.get("phase") == "kill"),
                      key=lambda r: (str(r.get("backend")), str(r.get("mode")))):
        lost, failed = run.get("lost") or 0, run.get("errors") or 0
        body.append([str(run.get("backend")), str(run.get("mode")), str(run.get("workload")),
                     _count(run.get("tasks")), _count(run.get("finished_before_kill")),
                     (f"{lost} ({run.get('lost_share', 0):.1%})", "bad") if lost else "0",
                     (str(failed), "bad") if failed else "0"])
    return TableData("A worker killed mid-burst",
                     ["backend", "mode", "workload", "tasks", "done before the kill",
                      "never finished", "failed"], body, align="lllrrrr",
                     note="One worker SIGKILLed a few seconds into the drain and a new one "
                          "started; never finished: not done a minute later (queuebench's "
                          "reaper redelivers after REDELIVERY_AFTER, 30 s; the libraries' "
                          "own redelivery waits for a visibility timeout, or never comes).")


def settings_table_data(rows: list[dict[str, str]]) -> TableData:
    headers = ["backend", "broker", "mode", "config", "workers", "acks", "prefetch",
               "log level", "producer", "other"]
    return TableData("Configuration per backend, mode and config",
                     headers, [[str(r.get(h, "")) for h in headers] for r in rows],
                     align="l" * len(headers),
                     note="http runs direct's workers behind `queuebench serve`.")


def report_tables(results: dict[str, Any]) -> list[TableData]:
    summary = _summary(results)
    tables = [throughput_table(summary), submit_table(summary), latency_table(summary),
              errors_table(summary), ratios_table_data(_ratios(results)),
              overhead_table_data(_overhead(results))]
    sat = _saturation(results)
    if sat:
        tables.append(saturation_table(sat))
    tables.append(kill_table(results.get("runs") or []))
    tables.append(delivery_table(results.get("faults") or []))
    tables.append(settings_table_data((results.get("meta") or {}).get("settings_table") or []))
    return [t for t in tables if t.rows]


# ---------------------------------------------------------------- meta


def meta_items(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The run's circumstances as (label, text) pairs, in reading order."""
    items = [(label, str(meta[key])) for key, label in
             (("started", "started"), ("finished", "finished"), ("profile", "profile"),
              ("command", "command")) if meta.get(key) is not None]
    machine = meta.get("machine") or {}
    if machine:
        items.append(("machine", ", ".join(f"{k} {v}" for k, v in machine.items())))
    for backend, versions in (meta.get("versions") or {}).items():
        text = ", ".join(f"{k} {v}" for k, v in versions.items()) \
            if isinstance(versions, dict) else str(versions)
        items.append((f"versions: {backend}", text))
    for backend, mapping in (meta.get("mapping") or {}).items():
        items.append((f"workers: {backend}", str(mapping)))
    settings = meta.get("settings") or {}
    if settings:
        items.append(("settings", ", ".join(f"{k}={v}" for k, v in settings.items())))
    return items


# ---------------------------------------------------------------- charts


def _no_data(ax: Axes, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _maybe_log(ax: Axes, values: Iterable[float | None], axis: str = "y") -> None:
    """Log scale when the values span more than 30x, so the small ones stay visible."""
    present = [v for v in values if v is not None]
    if present and min(present) > 0 and max(present) / min(present) > 30:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        # Plain numbers (0.5, 20) read better than powers of ten for milliseconds.
        (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(
            FuncFormatter(lambda value, _: f"{value:g}"))


def _legend(ax: Axes, **kwargs: Any) -> None:
    # matplotlib warns about an empty legend, and warnings are errors in the tests.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _grouped_bars(ax: Axes, rows: list[dict[str, Any]], figure: str) -> None:
    """x = queue, one bar per mode at its median, min-max as the error bar."""
    queues, modes = _queues(rows), _modes(rows)
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        xs, heights, below, above = [], [], [], []
        for x, queue in enumerate(queues):
            row = next((r for r in rows if r.get("backend") == queue and r.get("mode") == mode),
                       None)
            spread = (row or {}).get(figure) or {}
            if spread.get("median") is None:
                continue
            median = spread["median"]
            xs.append(x - 0.4 + width * (i + 0.5))
            heights.append(median)
            below.append(median - (spread.get("min") if spread.get("min") is not None
                                   else median))
            above.append((spread.get("max") if spread.get("max") is not None
                          else median) - median)
        if xs:
            ax.bar(xs, heights, width, yerr=[below, above], capsize=3, label=mode,
                   color=MODE_COLORS.get(mode, "#999999"))
    ax.set_xticks(range(len(queues)), queues)


def throughput_chart(summary: list[dict[str, Any]]) -> Figure:
    """A panel per workload of burst throughput, and a panel of submit rates with the
    load generator's ceiling as a dashed line."""
    burst = _burst(summary)
    queue_rows = [r for r in burst if r.get("backend") != "ceiling"]
    workloads = _unique(r.get("workload") for r in queue_rows)
    ceilings = [r for r in burst if r.get("backend") == "ceiling"]
    submit_workload = next((c.get("workload") for c in ceilings if c.get("workload")
                            in workloads), workloads[0] if workloads else None)
    fig, axes = plt.subplots(1, len(workloads) + 1, figsize=(4.5 * (len(workloads) + 1), 4.2),
                             squeeze=False)
    for ax, workload in zip(axes[0], workloads, strict=False):
        _grouped_bars(ax, [r for r in queue_rows if r.get("workload") == workload],
                      "throughput_tasks_per_s")
        ax.set_title(f"{workload}: tasks/s (burst)")
        ax.set_ylabel("tasks/s")
        _legend(ax, title="mode", fontsize="small")
    ax = axes[0][-1]
    submit_rows = [r for r in queue_rows if r.get("workload") == submit_workload]
    if not submit_rows:
        _no_data(ax, "submit rate")
        return fig
    _grouped_bars(ax, submit_rows, "submit_rps")
    ceiling = next((c for c in ceilings if c.get("workload") == submit_workload),
                   ceilings[0] if ceilings else None)
    if ceiling and _median_of(ceiling, "submit_rps") is not None:
        ax.axhline(_median_of(ceiling, "submit_rps"), color="black", linestyle="--",
                   linewidth=1, label="ceiling (Locust on bare FastAPI + LPUSH)")
    ax.set_title(f"{submit_workload}: submit rate (burst)")
    ax.set_ylabel("requests/s")
    _legend(ax, fontsize="small")
    return fig


def latency_chart(summary: list[dict[str, Any]], sat: list[dict[str, Any]]) -> Figure:
    """A panel per workload: one bar per queue and mode, dark to p50, mid to p95 and
    light to p99 of end-to-end latency."""
    workloads = _unique(r.get("workload") for r in summary if r.get("backend") != "ceiling")
    fig, axes = plt.subplots(1, max(len(workloads), 1), figsize=(5 * max(len(workloads), 1), 4.2),
                             squeeze=False)
    if not workloads:
        _no_data(axes[0][0], "end-to-end latency")
    for ax, workload in zip(axes[0], workloads, strict=False):
        rows, label = _compared(summary, sat, workload)
        rows = [r for r in rows if _latency(r, "end_to_end", "p50") is not None]
        if not rows:
            _no_data(ax, f"{workload}: end-to-end latency")
            continue
        queues, modes = _queues(rows), _modes(rows)
        width = 0.8 / max(len(modes), 1)
        for i, mode in enumerate(modes):
            mine = {r.get("backend"): r for r in rows if r.get("mode") == mode}
            xs = [x - 0.4 + width * (i + 0.5) for x, q in enumerate(queues) if q in mine]
            for name, alpha in (("p99", 0.3), ("p95", 0.6), ("p50", 1.0)):
                heights = [_latency(mine[q], "end_to_end", name) for q in queues if q in mine]
                ax.bar(xs, [h if h is not None else 0 for h in heights], width, alpha=alpha,
                       color=MODE_COLORS.get(mode, "#999999"),
                       label=mode if name == "p50" else None)
        ax.set_xticks(range(len(queues)), queues)
        _maybe_log(ax, [_latency(r, "end_to_end", p) for r in rows for p in ("p50", "p99")])
        ax.set_title(f"{workload}: end to end, {label}")
        ax.set_ylabel("ms (dark p50, mid p95, light p99)")
        _legend(ax, title="mode", fontsize="small")
    return fig


def _median_curve(curves: list[list[float]]) -> list[float]:
    # Repeats' CDFs combined point by point: the median of each quantile.
    length = len(curves[0])
    same = [c for c in curves if len(c) == length]
    return [statistics.median(c[i] for c in same) for i in range(length)]


def cdf_chart(runs: list[dict[str, Any]], sat: list[dict[str, Any]]) -> Figure:
    """End-to-end latency CDF per queue and mode, for noop (else the first workload)."""
    def curve(run: dict[str, Any]) -> list[float]:
        return list((run.get("latency_cdf_ms") or {}).get("end_to_end") or [])

    usable = [r for r in runs if len(curve(r)) >= 2 and r.get("backend") != "ceiling"]
    workloads = _unique(r.get("workload") for r in usable)
    workload = "noop" if "noop" in workloads else workloads[0] if workloads else None
    rows, label = _compared(usable, sat, workload)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if not rows:
        _no_data(ax, "end-to-end latency CDF")
        return fig
    queues = _queues(rows)
    all_values: list[float] = []
    for q_index, queue in enumerate(queues):
        for mode in _modes(rows):
            curves = [curve(r) for r in rows if r.get("backend") == queue
                      and r.get("mode") == mode]
            if not curves:
                continue
            values = _median_curve(curves)
            all_values += values
            ax.plot(values, [i / (len(values) - 1) for i in range(len(values))],
                    color=f"C{q_index}", linestyle=MODE_LINES.get(mode, "-."), linewidth=1.8,
                    label=f"{queue} {mode}")
    _maybe_log(ax, all_values, axis="x")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("share of tasks")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.set_title(f"{workload}: end-to-end latency CDF, {label}")
    _legend(ax, fontsize="small")
    return fig


def saturation_chart(sat: list[dict[str, Any]]) -> Figure:
    """A panel per workload: achieved against offered rate, the diagonal being 'kept up'."""
    workloads = _unique(s.get("workload") for s in sat)
    queues = _queues(sat)
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4.5),
                             squeeze=False)
    for ax, workload in zip(axes[0], workloads, strict=False):
        top = 0.0
        for group in (s for s in sat if s.get("workload") == workload):
            points = [(p[0], p[1]) for p in group.get("points") or [] if p[1] is not None]
            if not points:
                continue
            top = max(top, *(max(p) for p in points))
            queue, mode = group.get("backend"), group.get("mode")
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    color=f"C{queues.index(queue) if queue in queues else 9}",
                    linestyle=MODE_LINES.get(str(mode), "-."), label=f"{queue} {mode}")
        if top:
            ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1,
                    label="achieved = offered")
        ax.set_title(f"{workload}: sustained rate")
        ax.set_xlabel("offered (tasks/s)")
        ax.set_ylabel("achieved (tasks/s)")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize="small")
    return fig


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------- Markdown and HTML


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: TableData) -> str:
    def cell(value: Cell) -> str:
        return f"**{_md_escape(value[0])}**" if isinstance(value, tuple) else _md_escape(value)

    align = ["---:" if a == "r" else "---" for a in table.align]
    lines = [f"## {table.title}", "",
             "| " + " | ".join(table.headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def html_table(table: TableData) -> str:
    def cell(index: int, value: Cell) -> str:
        text, flag = value if isinstance(value, tuple) else (value, "")
        classes = " ".join(c for c in ("num" if table.align[index] == "r" else "", flag) if c)
        attr = f' class="{classes}"' if classes else ""
        return f"<td{attr}>{html.escape(text)}</td>"

    num = ' class="num"'
    head = "".join(f"<th{num if table.align[i] == 'r' else ''}>{html.escape(h)}</th>"
                   for i, h in enumerate(table.headers))
    body = "\n".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>"
                     for row in table.rows)
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (f"<h2>{html.escape(table.title)}</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n"
            f"<tbody>\n{body}\n</tbody>\n</table>\n{note}")


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left; }
th { background: #f4f4f4; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b00020; font-weight: bold; background: #fde8ea; }
.warn { color: #8a5a00; background: #fff4d6; }
.note { color: #666; font-size: .9em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { font-weight: bold; } dd { margin: 0; }
img { max-width: 100%; margin: .5em 0; }
"""

TITLE = "queuebench: Celery, arq and Dramatiq side by side"


def _markdown(meta: dict[str, Any], tables: list[TableData], charts: list[Path],
              found: list[str]) -> str:
    parts = [f"# {TITLE}", ""]
    if found:
        parts += ["## In short", "", *(f"- {_md_escape(f)}" for f in found), ""]
    parts += [f"- **{label}**: {_md_escape(text)}" for label, text in meta_items(meta)]
    parts += ["", *(markdown_table(t) + "\n" for t in tables)]
    parts += [f"![{p.stem}]({p.name})\n" for p in charts]
    return "\n".join(parts)


def _html(meta: dict[str, Any], tables: list[TableData], charts: list[Path],
          found: list[str]) -> str:
    short = ("<h2>In short</h2>\n<ul>\n" + "\n".join(f"<li>{html.escape(f)}</li>"
                                                    for f in found) + "\n</ul>\n") if found else ""
    items = "\n".join(f"<dt>{html.escape(label)}</dt><dd>{html.escape(text)}</dd>"
                      for label, text in meta_items(meta))
    images = "\n".join(
        f'<h2>{html.escape(p.stem)}</h2>\n<img alt="{html.escape(p.stem)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode("ascii")}">'
        for p in charts)
    body = "\n".join(html_table(t) for t in tables)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(TITLE)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(TITLE)}</h1>\n{short}<dl>\n{items}\n</dl>\n{body}\n{images}\n"
            f"</body>\n</html>\n")


def render(results: dict[str, Any], out: Path) -> list[Path]:
    """Write report.md, report.html (self-contained) and the PNG charts into `out`;
    return the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    # A queue in the charts is a backend on a broker: "celery on rabbitmq" apart.
    summary, sat = _by_queue(_summary(results)), _by_queue(_saturation(results))
    charts = [_save(throughput_chart(summary), out / "throughput.png"),
              _save(latency_chart(summary, sat), out / "latency.png"),
              _save(cdf_chart(_by_queue(results.get("runs") or []), sat), out / "cdf.png")]
    if sat:
        charts.append(_save(saturation_chart(sat), out / "saturation.png"))
    meta, tables = results.get("meta") or {}, report_tables(results)
    md = out / "report.md"
    found = findings(results)
    md.write_text(_markdown(meta, tables, charts, found), encoding="utf-8")
    page = out / "report.html"
    page.write_text(_html(meta, tables, charts, found), encoding="utf-8")
    return [*charts, md, page]


# ---------------------------------------------------------------- terminal


def _rich(table: TableData, **kwargs: Any) -> RichTable:
    # Headers and cells as Text, so that "[min-max]" is not read as rich markup.
    out = RichTable(title=table.title, **kwargs)
    for i, header in enumerate(table.headers):
        out.add_column(Text(header), justify="right" if table.align[i] == "r" else "left")
    for row in table.rows:
        out.add_row(*(Text(c[0], style="bold red" if c[1] == "bad" else "yellow")
                      if isinstance(c, tuple) else Text(c) for c in row))
    return out


def findings(results: dict[str, Any]) -> list[str]:
    """The report's opening sentences (bench/stats.py `findings`), and what a worker's
    death cost each backend and configuration."""
    found = _findings(_summary(results), _saturation(results))
    kills = [r for r in results.get("runs") or [] if r.get("phase") == "kill"]
    if kills:
        found.append("a worker killed mid-burst, tasks not done (never finished or "
                     "failed): " + ", ".join(
            f"{r['backend']} {r['mode']} {(r.get('lost') or 0) + (r.get('errors') or 0)} "
            f"of {r.get('tasks')}"
            for r in sorted(kills, key=lambda r: (r["backend"], r["mode"]))) + ".")
    return found


def summary_table(results: dict[str, Any]) -> RichTable:
    """The burst summary, one row per queue, workload and mode (and the ceiling)."""
    headers = ["backend", "broker", "workload", "mode", f"tasks/s median [min{DASH}max]",
               "submit rps", "e2e p50 ms", "e2e p95 ms", "e2e p99 ms", "errors", "lost"]
    rows: list[list[Cell]] = []
    for row in _burst(_summary(results)):
        lost = row.get("lost")
        rows.append([str(row.get("backend")), broker_of(row), str(row.get("workload")),
                     str(row.get("mode")),
                     _spread_text(row.get("throughput_tasks_per_s")),
                     _num(_median_of(row, "submit_rps")),
                     *(_num(_latency(row, "end_to_end", p)) for p in ("p50", "p95", "p99")),
                     _count(row.get("errors")),
                     (f"⚠ {lost}", "bad") if lost else _count(lost)])
    return _rich(TableData("Burst", headers, rows, align="llll" + "r" * 7))


def ratios_table(results: dict[str, Any]) -> RichTable:
    return _rich(ratios_table_data(_ratios(results)))


def overhead_table(results: dict[str, Any]) -> RichTable:
    return _rich(overhead_table_data(_overhead(results)))

