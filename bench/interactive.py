"""The report page's interactive charts: the PNGs' charts (bench/charts.py) drawn by
plotly.js from the same records (bench/chartdata.py), with filters by workload, broker
and mode, and the median and min-max on hover.

The page must work offline from one file: plotly.js is inlined from the plotly package,
never fetched from a CDN. Every trace carries its workload, broker and mode in `meta`;
the filters redraw each chart with the traces that match (Plotly.react), so what a chart
shows is exactly what the filters say."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io
import plotly.offline
from plotly.subplots import make_subplots

from bench.chartdata import (
    DELIVERY_MODES,
    FAULT_LABELS,
    QUESTIONS,
    SATURATION_MODES,
    VERDICTS,
    Bar,
    DeliveryGrid,
    LatencyBar,
    Point,
    cell_text,
    queue_colors,
    row_label,
    verdict,
)

MODE_COLORS = {"raw": "#4c72b0", "direct": "#dd8452", "http": "#55a868", "batch": "#c44e52",
               "direct+history": "#f0b27a", "http+history": "#a9d18e"}
MODE_DASHES = {"raw": "solid", "direct": "dash", "http": "dot"}
OTHER_COLORS = ("#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
BASE_LAYOUT = {"template": "plotly_white", "margin": {"t": 40, "r": 20, "b": 50, "l": 20},
               "legend": {"x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
               "font": {"size": 12}}


@dataclass
class Chart:
    """One interactive chart: its anchor id, its question, its figure (all traces)."""

    id: str
    figure: dict[str, Any]
    note: str = ""


def _mode_color(mode: str) -> str:
    if mode in MODE_COLORS:
        return MODE_COLORS[mode]
    return OTHER_COLORS[sum(map(ord, mode)) % len(OTHER_COLORS)]


def _plain(fig: go.Figure) -> dict[str, Any]:
    # plotly's own serialiser, so that numpy values and NaN come out as the browser reads them
    return json.loads(plotly.io.to_json(fig, validate=True))


def _layout(fig: go.Figure, height: int, **extra: Any) -> None:
    fig.update_layout(**BASE_LAYOUT, height=height, **extra)
    fig.update_yaxes(automargin=True)
    fig.update_xaxes(automargin=True)


def _meta(record: Any, legend: bool = True) -> dict[str, Any]:
    return {"workload": record.workload, "broker": record.broker, "mode": record.mode,
            "legend": legend}


def _groups(records: list[Any]) -> dict[tuple[str, str, str], list[Any]]:
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for record in records:
        groups.setdefault((record.workload, record.broker, record.mode), []).append(record)
    return groups


def _bars(records: list[Any], value: Callable[[Any], float],
          whisker: Callable[[Any], tuple[float, float]], custom: Callable[[Any], list[Any]],
          hover: str, **layout: Any) -> go.Figure:
    """Horizontal bars per queue, a trace per workload, broker and mode (`hover` follows
    "queue, mode"), whiskers below and above the bar."""
    fig = go.Figure()
    for (_, _, mode), mine in _groups(records).items():
        fig.add_bar(orientation="h", y=[r.queue for r in mine], x=[value(r) for r in mine],
                    name=mode, legendgroup=mode, offsetgroup=mode,
                    marker_color=_mode_color(mode), meta=_meta(mine[0]),
                    error_x={"type": "data", "array": [whisker(r)[1] for r in mine],
                             "arrayminus": [whisker(r)[0] for r in mine], "thickness": 1},
                    customdata=[custom(r) for r in mine],
                    hovertemplate=f"%{{y}}, {mode}{hover}<extra></extra>")
    _layout(fig, 160 + 60 * len({r.queue for r in records}), barmode="group", **layout)
    return fig


def throughput(bars: list[Bar]) -> Chart:
    """The fastest queue on top; the whisker and the hover give the repeats' min-max."""
    fig = _bars(bars, lambda b: b.median, lambda b: (b.median - b.low, b.high - b.median),
                lambda b: [b.low, b.high],
                "<br>median %{x:,.0f} tasks/s<br>min\u2013max %{customdata[0]:,.0f}\u2013"
                "%{customdata[1]:,.0f}",
                xaxis_title="tasks/s", yaxis={"categoryorder": "total ascending"})
    return Chart("throughput", _plain(fig))


def latency(bars: list[LatencyBar]) -> Chart:
    """End-to-end p50 as the bar, p99 as the whisker, at each workload's compared load;
    the quickest queue on top."""
    fig = _bars(bars, lambda b: b.p50, lambda b: (0.0, b.p99 - b.p50),
                lambda b: [b.p99, b.load],
                ", %{customdata[1]}<br>p50 %{x:.1f} ms<br>p99 %{customdata[0]:.1f} ms",
                xaxis_title="ms end to end", yaxis={"categoryorder": "total descending"})
    return Chart("latency", _plain(fig), "Each workload at the highest offered rate that "
                 "every queue and mode kept up with.")


def saturation(points: list[Point]) -> Chart:
    """p50 and p99 against the offered rate, side by side; a line per queue and mode,
    coloured by queue, dashed by mode."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("p50", "p99"), horizontal_spacing=0.08)
    colors = queue_colors(p.queue for p in points)
    lines: dict[tuple[str, str, str, str], list[Point]] = {}
    for point in sorted(points, key=lambda p: p.offered):
        lines.setdefault((point.workload, point.broker, point.mode, point.queue), []).append(point)
    for (_, _, mode, queue), mine in lines.items():
        for col, name in ((1, "p50"), (2, "p99")):
            fig.add_scatter(
                x=[p.offered for p in mine], y=[getattr(p, name) for p in mine],
                mode="lines+markers", name=f"{queue}, {mode}", legendgroup=f"{queue}, {mode}",
                line={"color": colors[queue], "dash": MODE_DASHES.get(mode, "dashdot")},
                meta=_meta(mine[0], legend=col == 1), customdata=[p.achieved for p in mine],
                hovertemplate=f"{queue}, {mode}<br>offered %{{x:,.0f}}/s<br>achieved "
                              f"%{{customdata:,.0f}}/s<br>{name} %{{y:.1f}} ms<extra></extra>",
                row=1, col=col)
    _layout(fig, 460)
    # dtick 1: a label at each power of ten only, none squeezed in between
    fig.update_yaxes(type="log", dtick=1, title_text="ms end to end", col=1)
    fig.update_yaxes(type="log", dtick=1, col=2)
    fig.update_xaxes(title_text="offered tasks/s")
    return Chart("saturation", _plain(fig), "Solid: the library alone (raw); dashed: "
                 "through queuebench (direct); dotted: over HTTP.")


def _colorscale() -> list[list[Any]]:
    # A step per verdict: the z values are 0..3, drawn over zmin -0.5 .. zmax 3.5.
    colors, steps = [color for _, color, _ in VERDICTS.values()], len(VERDICTS)
    return [[edge, color] for i, color in enumerate(colors)
            for edge in (i / steps, (i + 1) / steps)]


def delivery(grid: DeliveryGrid | None) -> Chart:
    """One heat map: a row per backend, broker and mode (the first on top), a column per
    fault, the counts written in the cells. Its `meta.rows` names each row's broker and
    mode, so that the filters can drop rows."""
    fig = go.Figure()
    if grid is None or not grid.rows:
        return Chart("delivery", _plain(fig), "No faults in these results.")
    rows = list(reversed(grid.rows))  # plotly draws the first row at the bottom
    cells = [[grid.cells.get((row, fault)) for fault in grid.faults] for row in rows]
    fig.add_heatmap(
        x=[FAULT_LABELS.get(f, f).replace("\n", "<br>") for f in grid.faults],
        y=[row_label(row) for row in rows], z=[[verdict(c) for c in line] for line in cells],
        text=[[cell_text(c).replace("\n", "<br>") for c in line] for line in cells],
        texttemplate="%{text}", zmin=-0.5, zmax=len(VERDICTS) - 0.5,
        colorscale=_colorscale(), showscale=False, hoverongaps=False, xgap=2, ygap=2,
        meta={"rows": [{"broker": row[1], "mode": row[2]} for row in rows]},
        customdata=[[[(c or {}).get(k) for k in ("tasks", "finished", "recovery_s", "note")]
                     for c in line] for line in cells],
        hovertemplate="%{y}, %{x}<br>%{text}<br>tasks %{customdata[0]}, finished "
                      "%{customdata[1]}<br>recovered in %{customdata[2]} s<br>"
                      "%{customdata[3]}<extra></extra>")
    _layout(fig, 140 + 40 * len(rows), xaxis={"side": "top", "tickangle": 0})
    key = "; ".join(f"{name}: {text}" for text, _, name in VERDICTS.values())
    return Chart("delivery", _plain(fig), f"{key}; blank: not run. Hover for the "
                 "recovery time and the note.")


# ---------------------------------------------------------------- the page


def _options(values: list[str]) -> str:
    return "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>'
                   for v in values)


def filters_html(charts: list[Chart]) -> str:
    """Select boxes for workload and broker, a checkbox per mode, built from what the
    traces carry. At first: the first workload and broker, raw against direct and the
    delivery modes, so that no chart starts with more than about six series."""
    metas = [m for c in charts for t in c.figure["data"]
             for m in (t.get("meta") or {}).get("rows") or [t.get("meta") or {}]]

    def present(key: str) -> list[str]:
        return list(dict.fromkeys(str(m[key]) for m in metas if m.get(key) is not None))

    ticked = {*SATURATION_MODES, *DELIVERY_MODES}
    modes = "".join(
        f'<label><input type="checkbox" name="mode" value="{html.escape(m)}"'
        f'{" checked" if m in ticked else ""}> {html.escape(m)}</label> '
        for m in present("mode"))
    return ('<form id="filters" class="filters" onsubmit="return false">\n'
            f'<label>workload <select id="f-workload">{_options(present("workload"))}'
            '</select></label>\n'
            f'<label>broker <select id="f-broker">{_options(present("broker"))}'
            '<option value="">all</option></select></label>\n'
            f'<fieldset><legend>mode</legend>{modes}</fieldset>\n</form>\n')


def chart_html(chart: Chart) -> str:
    note = f'<p class="note">{html.escape(chart.note)}</p>' if chart.note else ""
    return (f'<section id="{chart.id}-chart" class="chart">\n'
            f"<h2>{html.escape(QUESTIONS[chart.id])}</h2>\n{note}\n"
            f'<div class="plot" id="{chart.id}-plot"></div>\n'
            f'<p class="empty" id="{chart.id}-empty" hidden>Nothing to show for these '
            "filters.</p>\n</section>\n")


SCRIPT = """
const FIGURES = JSON.parse(document.getElementById("figures").textContent);
function chosen() {
  return {workload: document.getElementById("f-workload").value,
          broker: document.getElementById("f-broker").value,
          modes: new Set(Array.from(document.querySelectorAll("input[name=mode]:checked"),
                                    e => e.value))};
}
function matches(trace, f) {
  const m = trace.meta || {};
  return (m.workload === undefined || m.workload === f.workload)
      && (m.broker === undefined || f.broker === "" || m.broker === f.broker)
      && (m.mode === undefined || f.modes.has(m.mode));
}
function rowsOf(trace, f) {
  // A heat map keeps the rows whose broker and mode are chosen; null when none is.
  const rows = trace.meta && trace.meta.rows;
  if (!rows) return trace;
  const keep = rows.map(r => (f.broker === "" || r.broker === f.broker) && f.modes.has(r.mode));
  if (!keep.some(Boolean)) return null;
  const pick = a => a.filter((_, i) => keep[i]);
  return {...trace, y: pick(trace.y), z: pick(trace.z), text: pick(trace.text),
          customdata: pick(trace.customdata),
          meta: {...trace.meta, rows: pick(rows)}};
}
function draw() {
  const f = chosen();
  for (const [id, fig] of Object.entries(FIGURES)) {
    const seen = new Set();
    const shown = fig.data.filter(t => matches(t, f)).map(t => rowsOf(t, f));
    const data = shown.filter(t => t !== null).map(t => {
      // One legend entry per group among the traces shown, whichever broker they are of.
      const first = Boolean(t.meta && t.meta.legend) && !seen.has(t.legendgroup);
      if (first) seen.add(t.legendgroup);
      return {...t, showlegend: first};
    });
    document.getElementById(id + "-empty").hidden = data.length > 0;
    Plotly.react(id + "-plot", data, fig.layout, {displaylogo: false, responsive: true});
  }
}
document.getElementById("filters").addEventListener("change", draw);
draw();
"""


def script_html(charts: list[Chart]) -> str:
    """plotly.js itself, the figures as JSON, and the few lines that filter them."""
    figures = json.dumps({c.id: c.figure for c in charts}).replace("</", "<\\/")
    return (f"<script>{plotly.offline.get_plotlyjs()}</script>\n"
            f'<script type="application/json" id="figures">{figures}</script>\n'
            f"<script>{SCRIPT}</script>\n")
