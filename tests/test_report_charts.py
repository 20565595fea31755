"""The report's PNG charts (bench/charts.py) drawn from the committed full-profile results
and hand-made fault rows, then measured as matplotlib laid them out: no label's box
overlaps another's, every legend lies outside every plot area, and no panel holds more
than MAX_SERIES series. No browser and no services."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from bench import chartdata, charts
from bench.report import _charts
from tests.bench_results import docs_results


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Figure]]:
    drawn = _charts(docs_results())
    for fig in drawn.values():
        fig.canvas.draw()  # lays the figure out: the boxes below are the saved image's
    yield drawn
    for fig in drawn.values():
        plt.close(fig)


def _panels(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.axison]


def _box(text: Text, renderer: Any) -> Bbox:
    return text.get_window_extent(renderer)


def _drawn_ticks(axis: Axis) -> list[Text]:
    # A locator may place ticks beyond the axis' limits; those are not drawn.
    low, high = sorted(axis.get_view_interval())
    return [label for at, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(),
                                       strict=True)
            if low <= at <= high and label.get_visible() and label.get_text()]


def _labels(fig: Figure) -> list[Text]:
    """Every piece of text a reader reads as a label: tick labels, titles, axis labels,
    the figure's title and legends, and the text written in a heat map's cells."""
    texts: list[Text] = [t for t in fig.texts if t.get_text()]  # the suptitle
    for ax in _panels(fig):
        texts += [*_drawn_ticks(ax.xaxis), *_drawn_ticks(ax.yaxis)]
        texts += [t for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts)
                  if t.get_text()]
    for legend in fig.legends:
        texts += legend.get_texts()
    return texts


def test_every_chart_is_drawn_with_data(figures: dict[str, Figure]) -> None:
    assert list(figures) == ["throughput", "latency", "saturation", "delivery", "cdf"]
    for name, fig in figures.items():
        assert _panels(fig), name
        assert fig.legends, name
        assert fig.get_suptitle() == chartdata.QUESTIONS[name]


def test_no_label_overlaps_another(figures: dict[str, Figure]) -> None:
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        labels = _labels(fig)
        clashes = [(a.get_text(), b.get_text()) for a, b in combinations(labels, 2)
                   if _box(a, renderer).overlaps(_box(b, renderer))]
        assert clashes == [], (name, clashes[:5])


def test_every_legend_lies_outside_every_plot_area(figures: dict[str, Figure]) -> None:
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        for legend in fig.legends:
            box = legend.get_window_extent(renderer)
            for ax in _panels(fig):
                assert not box.overlaps(ax.get_window_extent(renderer)), (name, ax.get_title())
            assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), name


def test_no_panel_holds_more_than_six_series(figures: dict[str, Figure]) -> None:
    for name, fig in figures.items():
        for ax in _panels(fig):
            colors = {str(line.get_color()) for line in ax.get_lines()}
            series = max(len(colors), len(ax.containers))
            assert series <= chartdata.MAX_SERIES, (name, ax.get_title(), series)


def test_a_broker_split_keeps_panels_to_six_lines() -> None:
    points = [chartdata.Point("noop", f"q{i} on {broker}", broker, "direct", rate, rate,
                              1.0 + i, 2.0 + i)
              for broker in ("redis", "rabbitmq") for i in range(4) for rate in (100.0, 200.0)]
    [row] = chartdata.saturation_panels(points)
    assert [p.title for p in row] == ["noop, raw", "noop, direct on redis",
                                      "noop, direct on rabbitmq"]
    assert [len({p.queue for p in panel.records}) for panel in row] == [0, 4, 4]


def test_charts_without_data_say_so() -> None:
    fig = charts.delivery_chart(None)
    try:
        fig.canvas.draw()
        assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["no data in these results"]
        assert fig.get_suptitle() == chartdata.QUESTIONS["delivery"]
    finally:
        plt.close(fig)


def test_the_delivery_grid_orders_rows_and_faults_and_writes_counts() -> None:
    grid = chartdata.delivery_grid(docs_results()["faults"])
    assert grid.faults == list(chartdata.FAULTS)
    assert grid.rows[:3] == [("arq", "redis", "raw-defaults"), ("arq", "redis", "raw-safe"),
                             ("arq", "redis", "queuebench")]
    assert grid.cells.get((("arq", "redis", "queuebench"), "eta_past_visibility")) is None
    worst = grid.cells[(("arq", "redis", "raw-defaults"), "net_cut")]
    assert chartdata.verdict(worst) == chartdata.LOST
    assert chartdata.cell_text(worst) == "lost 15\ntwice 0"
    assert chartdata.verdict(grid.cells[(("arq", "redis", "raw-safe"),
                                         "broker_restart")]) == chartdata.TWICE
