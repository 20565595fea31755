"""The benchmark's report: results.json (see bench/cli.py) turned into report.md, one
self-contained report.html, PNG charts, and rich tables for the terminal.

Any figure may be None and shows as "-"; a missing part of the results leaves out its
table or chart rather than failing, so a partial run still gives a report."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from rich.table import Table as RichTable
from rich.text import Text

from bench import chartdata, charts, guide, interactive
from bench.chartdata import QUESTIONS
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
    id: str = ""  # its anchor, "<id>-table": the decision guide links to it


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


def _burst(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in summary if r.get("phase") == "burst"]


# ---------------------------------------------------------------- tables


def _pivot(rows: list[dict[str, Any]], figure: str, title: str, note: str,
           id: str) -> TableData:
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
                     align="lll" + "r" * len(modes), note=note, id=id)


def throughput_table(summary: list[dict[str, Any]]) -> TableData:
    rows = [r for r in _burst(summary) if r.get("backend") != "ceiling"]
    return _pivot(rows, "throughput_tasks_per_s", "Throughput, burst (tasks/s)",
                  f"Median over repeats [min{DASH}max]. Burst: a preloaded queue drained by "
                  "the workers, from the first 5% of completions to the last.", id="throughput")


def submit_table(summary: list[dict[str, Any]]) -> TableData:
    return _pivot(_burst(summary), "submit_rps", "Submit rate, burst (tasks/s)",
                  "Burst submissions with no worker running; batch: the direct burst through "
                  "Backend.submit_many. The ceiling: the same Locust load on a bare FastAPI "
                  "endpoint doing one Redis LPUSH.", id="submit")


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
                          "batch: a submit is a whole submit_many call.", id="latency")


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
                     note="Lost: submitted but never reached a final state. Sums over repeats.",
                     id="errors")


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
                          "http submit rate over the load generator's ceiling.", id="ratios")


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
                          f"{DASH}: not measured.", id="overhead")


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
                     note="Kept up: achieved at least 95% of the offered rate, nothing lost.",
                     id="saturation")


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
                          "own redelivery waits for a visibility timeout, or never comes).",
                     id="kill")


def _delivery_text(cell: dict[str, Any] | None) -> Cell:
    """One cell of the delivery table: "lost / run twice / recovery s", marked "bad"
    when a task was lost (or the cell failed), "warn" when one ran twice."""
    if cell is None:
        return ""
    if cell.get("error"):
        return ("error", "bad")
    recovery = cell.get("recovery_s")
    text = f"{cell['lost']} / {cell['run_twice']} / " + \
        (DASH if recovery is None else f"{recovery:.1f} s")
    if cell["lost"]:
        return (text, "bad")
    return (text, "warn") if cell["run_twice"] else text


def delivery_table(faults: list[dict[str, Any]]) -> TableData:
    """results["faults"] at a glance: a row per backend, broker and mode, a column per
    fault (the heat map's grid), each cell "lost / run twice / recovery"."""
    grid = chartdata.delivery_grid(faults)
    body: list[list[Cell]] = [[*row, *(_delivery_text(grid.cells.get((row, f)))
                                       for f in grid.faults)] for row in grid.rows]
    deadline = max((f.get("deadline_s") or 0 for f in faults), default=0)
    return TableData("Delivery under faults: lost / run twice / recovery",
                     ["backend", "broker", "mode", *grid.faults], body,
                     align="lll" + "r" * len(grid.faults),
                     note="raw-defaults: the library as its users run it out of the box; "
                          "raw-safe: with its safe settings; queuebench: through queuebench. "
                          f"Per cell: tasks lost (not done {deadline:g} s after the fault "
                          "ended), tasks run to their end twice, seconds from the fault's "
                          f"start until the last task finished ({DASH}: some never did). A "
                          "library that redelivers later than that (Celery's 1 h visibility "
                          "timeout) shows as lost. What happened in each cell: the "
                          "[cell by cell](#delivery-cells-table) table.",
                     id="delivery")


def delivery_cells_table(faults: list[dict[str, Any]]) -> TableData:
    """results["faults"] cell by cell, with what happened (the fault's own line) and
    what differed from defaults."""
    grid = chartdata.delivery_grid(faults)
    body: list[list[Cell]] = []
    for row in grid.rows:
        for fault in grid.faults:
            cell = grid.cells.get((row, fault))
            if cell is None:
                continue
            lost, twice = cell.get("lost"), cell.get("run_twice")
            recovery = cell.get("recovery_s")
            body.append([*row, fault, _count(cell.get("tasks")), _count(cell.get("finished")),
                         (str(lost), "bad") if lost else _count(lost),
                         (str(twice), "warn") if twice else _count(twice),
                         DASH if recovery is None else f"{recovery:.1f}",
                         (f"error: {cell['error']}", "bad") if cell.get("error")
                         else "; ".join(str(part) for part in (cell.get("note"),
                                                               cell.get("settings")) if part)])
    return TableData("Delivery under faults, cell by cell",
                     ["backend", "broker", "mode", "fault", "tasks", "finished", "lost",
                      "run twice", "recovered in (s)", "what happened; settings"], body,
                     align="llllrrrrrl", id="delivery-cells")


def settings_table_data(rows: list[dict[str, str]]) -> TableData:
    headers = ["backend", "broker", "mode", "config", "workers", "acks", "prefetch",
               "log level", "producer", "other"]
    return TableData("Configuration per backend, mode and config",
                     headers, [[str(r.get(h, "")) for h in headers] for r in rows],
                     align="l" * len(headers),
                     note="http runs direct's workers behind `queuebench serve`.", id="settings")


def report_tables(results: dict[str, Any]) -> list[TableData]:
    summary = _summary(results)
    tables = [throughput_table(summary), submit_table(summary), latency_table(summary),
              errors_table(summary), ratios_table_data(_ratios(results)),
              overhead_table_data(_overhead(results))]
    sat = _saturation(results)
    if sat:
        tables.append(saturation_table(sat))
    tables.append(delivery_table(results.get("faults") or []))
    tables.append(kill_table(results.get("runs") or []))
    tables.append(settings_table_data((results.get("meta") or {}).get("settings_table") or []))
    tables.append(delivery_cells_table(results.get("faults") or []))
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
    anchor = f' id="{table.id}-table"' if table.id else ""
    return (f"<h2{anchor}>{html.escape(table.title)}</h2>\n<table>\n"
            f"<thead><tr>{head}</tr></thead>\n"
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
.filters { padding: .4em 0; border-bottom: 1px solid #ddd; display: flex; flex-wrap: wrap;
           gap: .5em 1.5em; align-items: center; }
.filters fieldset { border: 0; margin: 0; padding: 0; }
.filters legend { float: left; margin-right: .5em; font-weight: bold; }
.chart .plot { width: 100%; }
"""

NAMES = {"celery": "Celery", "arq": "arq", "dramatiq": "Dramatiq", "taskiq": "taskiq"}


def title(results: dict[str, Any]) -> str:
    """The report's title: the queues this run compared."""
    names = [NAMES.get(b, b) for b in ((results.get("meta") or {}).get("versions") or {})]
    queues = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)
    return f"queuebench: {queues or 'the queues'} side by side"

# A block of the report's opening, as (Markdown, HTML).
Block = tuple[str, str]


def preamble(results: dict[str, Any]) -> list[Block]:
    """What opens the report, above the charts: the decision guide (bench/guide.py),
    computed from the run, each line linking to the chart and table behind it."""
    return [(guide.markdown(results) + "\n", guide.html(results) + "\n")]


def _charts(results: dict[str, Any]) -> dict[str, Figure]:
    """The PNG charts by anchor id, each drawn whether or not it has data (a 'no data'
    note), so that a partial run still has every picture the report links to."""
    summary, sat = _summary(results), _saturation(results)
    faults = results.get("faults")
    return {"throughput": charts.throughput_chart(chartdata.drain_bars(summary)),
            "latency": charts.latency_chart(chartdata.latency_bars(summary, sat)),
            "saturation": charts.saturation_chart(chartdata.saturation_points(summary)),
            "delivery": charts.delivery_chart(chartdata.delivery_grid(faults)
                                              if faults else None),
            "cdf": charts.cdf_chart(chartdata.cdf_curves(results.get("runs") or [], sat))}


def _interactive(results: dict[str, Any]) -> list[interactive.Chart]:
    summary, sat = _summary(results), _saturation(results)
    faults = results.get("faults")
    return [interactive.throughput(chartdata.drain_bars(summary)),
            interactive.latency(chartdata.latency_bars(summary, sat)),
            interactive.saturation(chartdata.saturation_points(summary)),
            interactive.delivery(chartdata.delivery_grid(faults) if faults else None)]


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _anchor(ident: str) -> str:
    return f'<a id="{ident}"></a>\n\n'


def _markdown(results: dict[str, Any], blocks: list[Block], tables: list[TableData],
              pngs: dict[str, Path]) -> str:
    parts = [f"# {title(results)}", "", *(md for md, _ in blocks)]
    parts += [f"- **{label}**: {_md_escape(text)}"
              for label, text in meta_items(results.get("meta") or {})]
    parts += ["", *(f"{_anchor(f'{ident}-chart')}## {QUESTIONS[ident]}\n\n"
                    f"![{ident}]({path.name})\n" for ident, path in pngs.items())]
    found = findings(results)
    if found:
        parts += ["## Findings", "", *(f"- {_md_escape(f)}" for f in found), ""]
    parts += [(_anchor(f"{t.id}-table") if t.id else "") + markdown_table(t) + "\n"
              for t in tables]
    return "\n".join(parts)


def _html(results: dict[str, Any], blocks: list[Block], tables: list[TableData],
          cdf: Path) -> str:
    found = findings(results)
    short = ("<h2>Findings</h2>\n<ul>\n" + "\n".join(f"<li>{html.escape(f)}</li>"
                                                    for f in found) + "\n</ul>\n") if found else ""
    items = "\n".join(f"<dt>{html.escape(label)}</dt><dd>{html.escape(text)}</dd>"
                      for label, text in meta_items(results.get("meta") or {}))
    plots = _interactive(results)
    # The CDF has no interactive twin: its picture, inlined.
    spread = (f'<section id="cdf-chart" class="chart">\n<h2>{html.escape(QUESTIONS["cdf"])}'
              f'</h2>\n<img alt="cdf" src="data:image/png;base64,'
              f'{base64.b64encode(cdf.read_bytes()).decode("ascii")}">\n</section>\n')
    body = "\n".join(html_table(t) for t in tables)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title(results))}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n<h1>{html.escape(title(results))}</h1>\n{''.join(h for _, h in blocks)}"
            f"<dl>\n{items}\n</dl>\n{interactive.filters_html(plots)}"
            f"{''.join(interactive.chart_html(c) for c in plots)}{spread}{short}{body}\n"
            f"{interactive.script_html(plots)}</body>\n</html>\n")


def render(results: dict[str, Any], out: Path, blocks: list[Block] | None = None) -> list[Path]:
    """Write report.md (with the PNGs), report.html (one file, interactive, offline) and
    the PNG charts into `out`; return the written paths. `blocks` open both reports;
    by default `preamble(results)`."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = {ident: _save(fig, out / f"{ident}.png") for ident, fig in _charts(results).items()}
    blocks = preamble(results) if blocks is None else blocks
    tables = report_tables(results)
    md = out / "report.md"
    md.write_text(_markdown(results, blocks, tables, pngs), encoding="utf-8")
    page = out / "report.html"
    page.write_text(_html(results, blocks, tables, pngs["cdf"]), encoding="utf-8")
    return [*pngs.values(), md, page]


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

