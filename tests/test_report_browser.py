"""report.html in a real browser (Debian's chromium driven by Playwright, as
tests/test_dashboard_browser.py), rendered from the committed full-profile results and
hand-made fault rows, opened from a file:// URL with every other request aborted: every
chart is drawn, no legend lies on a plot area, no tick label on another, and the
filters change what is shown. A screenshot of each chart is saved to the test's tmp
directory, and to $QB_SCREENSHOTS when set."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bench import report
from tests.bench_results import docs_results

# The dashboard's tests launch the browser (or skip, or fail in CI, without one).
from tests.test_dashboard_browser import TIMEOUT_MS, browser  # noqa: F401

CHARTS = ("throughput", "latency", "saturation", "delivery")

# Boxes in page pixels, from the drawn SVG: each plot area (plotly's drag rectangle of a
# subplot), the legend, and every tick label, per chart.
BOXES_JS = """id => {
  const root = document.getElementById(id + "-plot");
  const box = e => { const r = e.getBoundingClientRect();
                     return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const labels = sel => Array.from(root.querySelectorAll(sel))
      .filter(e => e.textContent.trim() !== "").map(e => ({text: e.textContent, ...box(e)}));
  return {plots: Array.from(root.querySelectorAll(".nsewdrag"), box),
          legend: Array.from(root.querySelectorAll(".legend"), box),
          xticks: labels(".xtick text, .x2tick text"),
          yticks: labels(".ytick text, .y2tick text"),
          cells: labels("text.heatmap-label"),
          traces: root.data.length,
          drawn: root.querySelectorAll(".trace, .hm, .heatmaplayer image").length};
}"""


def _overlap(a: dict[str, float], b: dict[str, float], slack: float = 0.5) -> bool:
    # Touching edges are no overlap: a pixel's rounding must not fail the test.
    return (a["x"] + slack < b["x"] + b["w"] and b["x"] + slack < a["x"] + a["w"]
            and a["y"] + slack < b["y"] + b["h"] and b["y"] + slack < a["y"] + a["h"])


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report")
    report.render(docs_results(), out)
    return (out / "report.html").as_uri()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Where screenshots go: the tmp directory, and $QB_SCREENSHOTS when set."""
    dirs = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("QB_SCREENSHOTS"):
        dirs.append(Path(os.environ["QB_SCREENSHOTS"]))
        dirs[-1].mkdir(parents=True, exist_ok=True)
    return dirs


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any, page_url: str) -> AsyncIterator[Any]:  # noqa: F811
    """The report, offline: any request but the file itself is aborted and recorded."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    refused: list[str] = []

    async def offline(route: Any) -> None:
        if route.request.url.startswith("file://"):
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort()

    await context.route("**/*", offline)
    made = await context.new_page()
    made.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    made.on("pageerror", lambda error: errors.append(str(error)))
    await made.goto(page_url)
    for chart in CHARTS:
        await made.wait_for_selector(f"#{chart}-plot .main-svg")
    yield made
    await context.close()
    assert errors == [], errors
    assert refused == [], f"the report asked the network for {refused}"


async def _boxes(page: Any, chart: str) -> dict[str, Any]:
    return await page.evaluate(BOXES_JS, chart)  # type: ignore[no-any-return]


async def test_every_chart_is_drawn_offline_and_saved_as_a_screenshot(
        page: Any, shots: list[Path]) -> None:
    for chart in CHARTS:
        boxes = await _boxes(page, chart)
        assert boxes["traces"] > 0 and boxes["drawn"] > 0, (chart, boxes["traces"])
        assert boxes["plots"], chart
        for directory in shots:
            await page.locator(f"#{chart}-chart").screenshot(path=str(directory / f"{chart}.png"))
    assert all((d / f"{c}.png").stat().st_size > 0 for d in shots for c in CHARTS)


async def test_no_legend_lies_on_a_plot_area(page: Any) -> None:
    for chart in CHARTS:
        boxes = await _boxes(page, chart)
        for legend in boxes["legend"]:
            for plot in boxes["plots"]:
                assert not _overlap(legend, plot), (chart, legend, plot)


async def test_no_tick_or_cell_label_overlaps_another(page: Any) -> None:
    for chart in CHARTS:
        boxes = await _boxes(page, chart)
        for axis in ("xticks", "yticks", "cells"):
            labels = boxes[axis]
            assert labels or axis == "cells", (chart, axis)
            clashes = [(a["text"], b["text"]) for i, a in enumerate(labels)
                       for b in labels[i + 1:] if _overlap(a, b)]
            assert clashes == [], (chart, axis, clashes)


async def _shown(page: Any, chart: str, key: str) -> list[Any]:
    """Each trace's `meta[key]` of what the chart draws now (a heat map's: its rows')."""
    return await page.evaluate(  # type: ignore[no-any-return]
        f"""Array.from(document.getElementById('{chart}-plot').data,
                       t => t.meta.rows ? t.meta.rows.map(r => r['{key}']) : t.meta['{key}'])
            .flat()""")


async def test_the_filters_change_what_is_shown(page: Any) -> None:
    # At first: the first workload and broker, raw against direct, the delivery modes.
    before = {chart: (await _boxes(page, chart))["traces"] for chart in CHARTS}
    assert set(await _shown(page, "throughput", "workload")) == {"noop"}
    assert set(await _shown(page, "throughput", "mode")) == {"raw", "direct"}
    for chart in CHARTS:
        assert set(await _shown(page, chart, "broker")) == {"redis"}, chart

    await page.select_option("#f-workload", "sleep")
    for chart in ("throughput", "latency"):
        assert set(await _shown(page, chart, "workload")) == {"sleep"}, chart

    await page.select_option("#f-broker", "rabbitmq")
    for chart in ("throughput", "delivery"):
        assert set(await _shown(page, chart, "broker")) == {"rabbitmq"}, chart
    await page.select_option("#f-broker", "")
    assert set(await _shown(page, "delivery", "broker")) == {"redis", "rabbitmq"}

    await page.select_option("#f-workload", "noop")
    await page.check("input[name=mode][value=http]")
    await page.uncheck("input[name=mode][value=raw]")
    await page.uncheck("input[name=mode][value=raw-defaults]")
    assert set(await _shown(page, "saturation", "mode")) == {"direct", "http"}
    assert "raw-defaults" not in await _shown(page, "delivery", "mode")

    await page.check("input[name=mode][value=raw]")
    await page.check("input[name=mode][value=raw-defaults]")
    await page.uncheck("input[name=mode][value=http]")
    await page.select_option("#f-broker", "redis")
    assert {chart: (await _boxes(page, chart))["traces"] for chart in CHARTS} == before
