"""bench/stats.py and bench/report.py on hand-computed and synthetic results: no services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench.report import (
    DASH,
    overhead_table,
    overhead_table_data,
    ratios_table,
    render,
    summary_table,
    verdict,
)
from bench.stats import (
    OVERHEAD_TARGETS,
    cdf_points,
    overhead,
    percentiles,
    ratios,
    saturation,
    summarise,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART_FILES = {"throughput.png", "latency.png", "saturation.png", "delivery.png", "cdf.png"}


# ---------------------------------------------------------------- percentiles


def test_percentiles_of_1_to_100_interpolate_between_closest_ranks() -> None:
    # numpy "linear": position q * (n - 1) in the sorted data, so p95 of 1..100 sits
    # at 94.05 -> 95 + 0.05 * (96 - 95) = 95.05, p99 at 98.01 -> 99.01.
    result = percentiles([float(v) for v in range(100, 0, -1)])
    assert result["p50"] == pytest.approx(50.5)
    assert result["p95"] == pytest.approx(95.05)
    assert result["p99"] == pytest.approx(99.01)
    assert result["max"] == 100.0
    assert result["mean"] == pytest.approx(50.5)
    assert result["count"] == 100


def test_percentiles_of_a_small_uneven_sample() -> None:
    # [1, 2, 4, 10]: p50 at position 1.5 -> 3; p95 at 2.85 -> 4 + 0.85 * 6 = 9.1;
    # p99 at 2.97 -> 4 + 0.97 * 6 = 9.82.
    result = percentiles([10.0, 1.0, 4.0, 2.0])
    assert result["p50"] == pytest.approx(3.0)
    assert result["p95"] == pytest.approx(9.1)
    assert result["p99"] == pytest.approx(9.82)
    assert result["mean"] == pytest.approx(4.25)


def test_percentiles_of_a_single_value_are_that_value() -> None:
    assert percentiles([7.5]) == {"p50": 7.5, "p95": 7.5, "p99": 7.5, "max": 7.5,
                                  "mean": 7.5, "count": 1}


def test_percentiles_of_nothing_are_none() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None,
                               "mean": None, "count": 0}


def test_cdf_points_run_from_min_to_max_every_percent() -> None:
    values = [float(v) for v in (5, 1, 9, 3, 3, 7, 100)]
    points = cdf_points(values)
    assert len(points) == 101
    assert points[0] == 1.0
    assert points[-1] == 100.0
    assert points == sorted(points)
    assert points[50] == pytest.approx(percentiles(values)["p50"])


def test_cdf_points_with_other_counts_and_edge_cases() -> None:
    # 0, 25, 50, 75, 100% of 0..4 (positions 0, 1, 2, 3, 4).
    assert cdf_points([4.0, 0.0, 2.0, 1.0, 3.0], points=5) == pytest.approx([0, 1, 2, 3, 4])
    assert cdf_points([2.0], points=3) == [2.0, 2.0, 2.0]
    assert cdf_points([]) == []


# ---------------------------------------------------------------- summary


def run(backend: str, workload: str, mode: str, phase: str = "burst", repeat: int = 0,
        throughput: float | None = 100.0, submit: float | None = 200.0, e2e_p50: float = 5.0,
        lost: int = 0, offered: float | None = None, **extra: Any) -> dict[str, Any]:
    """One run as bench/cli.py writes it."""
    latency = {"p50": e2e_p50, "p95": e2e_p50 * 3, "p99": e2e_p50 * 6, "max": e2e_p50 * 9,
               "mean": e2e_p50 * 1.5, "count": 100}
    cdf = [e2e_p50 * 0.2 + e2e_p50 * 6 * (i / 100) ** 3 for i in range(101)]
    return {"backend": backend, "workload": workload, "mode": mode, "phase": phase,
            "repeat": repeat, "round": repeat, "tasks": 100, "offered_rate": offered,
            "throughput_tasks_per_s": throughput, "submit_rps": submit,
            "latency_ms": {"submit": {**latency, "p50": 1.0, "p95": 2.0, "p99": 3.0},
                           "end_to_end": latency},
            "latency_cdf_ms": {"end_to_end": cdf},
            "errors": 0, "lost": lost, "duration_s": 1.0, **extra}


def test_summarise_takes_median_min_max_over_repeats() -> None:
    runs = [run("arq", "noop", "raw", repeat=i, throughput=t, submit=s, e2e_p50=p)
            for i, (t, s, p) in enumerate([(90.0, 300.0, 4.0), (110.0, 100.0, 8.0),
                                           (100.0, 200.0, 5.0)])]
    [row] = summarise(runs)
    assert row["backend"] == "arq" and row["mode"] == "raw" and row["phase"] == "burst"
    assert row["repeats"] == 3
    assert row["throughput_tasks_per_s"] == {"median": 100.0, "min": 90.0, "max": 110.0}
    assert row["submit_rps"] == {"median": 200.0, "min": 100.0, "max": 300.0}
    assert row["latency_ms"]["end_to_end"] == {"p50": 5.0, "p95": 15.0, "p99": 30.0}
    assert set(row["latency_ms"]) == {"submit", "end_to_end"}  # no queue_wait measured
    assert (row["errors"], row["lost"], row["tasks"]) == (0, 0, 300)
    assert row["offered_rate"] is None


def test_summarise_ignores_none_and_keeps_first_appearance_order() -> None:
    runs = [run("dramatiq", "noop", "http", throughput=None),
            run("arq", "noop", "http", throughput=None, lost=2),
            run("dramatiq", "noop", "http", repeat=1, throughput=50.0),
            run("arq", "noop", "http", repeat=1, throughput=None, lost=1),
            {"backend": "ceiling", "workload": "noop", "mode": "ceiling", "phase": "burst",
             "throughput_tasks_per_s": None, "submit_rps": 900.0, "latency_ms": None,
             "errors": None, "lost": None, "tasks": 500}]
    dramatiq, arq, ceiling = summarise(runs)
    assert dramatiq["backend"] == "dramatiq" and dramatiq["repeats"] == 2
    assert dramatiq["throughput_tasks_per_s"] == {"median": 50.0, "min": 50.0, "max": 50.0}
    assert arq["throughput_tasks_per_s"] == {"median": None, "min": None, "max": None}
    assert arq["lost"] == 3
    assert ceiling["submit_rps"]["median"] == 900.0
    assert ceiling["latency_ms"] == {}
    assert ceiling["errors"] is None and ceiling["lost"] is None


def test_summarise_keeps_each_offered_rate_of_a_sweep_apart() -> None:
    runs = [run("arq", "noop", "http", "sustained", offered=rate, repeat=i)
            for rate in (100.0, 200.0) for i in range(2)]
    rows = summarise(runs)
    assert [(r["offered_rate"], r["repeats"]) for r in rows] == [(100.0, 2), (200.0, 2)]


# ---------------------------------------------------------------- ratios and saturation


def test_ratios_against_raw_and_the_ceiling() -> None:
    runs = [run("celery", "noop", "raw", throughput=200.0),
            run("celery", "noop", "direct", throughput=190.0),
            run("celery", "noop", "http", throughput=100.0, submit=300.0),
            run("arq", "noop", "raw", throughput=400.0),
            run("arq", "noop", "http", throughput=100.0, submit=300.0),  # no direct run
            run("celery", "sleep", "http", throughput=10.0, submit=50.0),  # no raw run
            run("ceiling", "noop", "ceiling", throughput=None, submit=1000.0)]
    celery_noop, arq_noop, celery_sleep = ratios(summarise(runs))
    assert celery_noop == {"backend": "celery", "broker": "redis", "workload": "noop",
                           "direct_vs_raw": pytest.approx(0.95), "http_vs_raw": 0.5,
                           "http_submit_vs_ceiling": pytest.approx(0.3)}
    assert arq_noop["direct_vs_raw"] is None
    assert arq_noop["http_vs_raw"] == 0.25
    assert celery_sleep["direct_vs_raw"] is None and celery_sleep["http_vs_raw"] is None
    # No ceiling measured on sleep: the noop ceiling stands in.
    assert celery_sleep["http_submit_vs_ceiling"] == pytest.approx(0.05)


def test_ratios_prefer_the_ceiling_of_the_same_workload() -> None:
    runs = [run("arq", "sleep", "http", submit=100.0),
            run("ceiling", "noop", "ceiling", throughput=None, submit=1000.0),
            run("ceiling", "sleep", "ceiling", throughput=None, submit=200.0)]
    [row] = ratios(summarise(runs))
    assert row["http_submit_vs_ceiling"] == pytest.approx(0.5)


def test_ratios_without_a_ceiling_are_none() -> None:
    [row] = ratios(summarise([run("arq", "noop", "http")]))
    assert row["http_submit_vs_ceiling"] is None


# ---------------------------------------------------------------- overhead against targets


def noop_runs(raw_submit: float = 400.0, direct_submit: float = 420.0,
              batch_submit: float | None = 1000.0, http_submit: float = 700.0,
              raw_drain: float = 600.0, direct_drain: float = 580.0, http_drain: float = 500.0,
              raw_p50: float = 4.0, direct_p50: float = 5.5) -> list[dict[str, Any]]:
    """arq on noop in every mode, a ceiling of 1,000/s, a sweep at 100 and 400/s."""
    runs = [run("arq", "noop", "raw", throughput=raw_drain, submit=raw_submit),
            run("arq", "noop", "direct", throughput=direct_drain, submit=direct_submit),
            run("arq", "noop", "http", throughput=http_drain, submit=http_submit),
            run("ceiling", "noop", "ceiling", throughput=None, submit=1000.0)]
    if batch_submit is not None:
        runs.append(run("arq", "noop", "batch", throughput=590.0, submit=batch_submit))
    for rate, worse in ((100.0, 1.0), (400.0, 10.0)):  # the lowest rate is compared
        runs += [run("arq", "noop", "raw", "sustained", offered=rate, e2e_p50=raw_p50 * worse),
                 run("arq", "noop", "direct", "sustained", offered=rate,
                     e2e_p50=direct_p50 * worse)]
    return runs


def test_overhead_ratios_against_the_library_alone() -> None:
    [row] = overhead(summarise(noop_runs()))
    assert (row["backend"], row["workload"]) == ("arq", "noop")
    assert row["direct_submit_vs_raw"] == pytest.approx(1.05)
    assert row["batch_submit_vs_raw"] == pytest.approx(2.5)
    assert row["http_submit_vs_ceiling"] == pytest.approx(0.7)
    assert row["direct_vs_raw"] == pytest.approx(580 / 600)
    assert row["http_vs_raw"] == pytest.approx(500 / 600)
    assert (row["raw_submit_rps"], row["batch_submit_rps"]) == (400.0, 1000.0)
    assert (row["sustained_rate"], row["raw_e2e_p50_ms"], row["direct_e2e_p50_ms"]) == \
        (100.0, 4.0, 5.5)
    assert row["e2e_p50_limit_ms"] == pytest.approx(1.2 * 4.0 + 1.0)


def test_overhead_marks_met_and_missed_targets() -> None:
    [row] = overhead(summarise(noop_runs()))
    # 0.70 of the ceiling is exactly the target: met; http at 0.83 of raw misses 0.90.
    assert row["met"] == {"direct_submit_vs_raw": True, "batch_submit_vs_raw": True,
                          "http_submit_vs_ceiling": True, "direct_vs_raw": True,
                          "http_vs_raw": False, "e2e_p50": True}
    [slow] = overhead(summarise(noop_runs(direct_submit=390.0, batch_submit=790.0,
                                          direct_drain=560.0, direct_p50=5.9)))
    assert not any(slow["met"][name] for name in ("direct_submit_vs_raw", "batch_submit_vs_raw",
                                                  "direct_vs_raw", "e2e_p50"))
    assert set(slow["met"]) == {*OVERHEAD_TARGETS, "e2e_p50"}


def test_overhead_with_missing_data_is_none_not_a_pass() -> None:
    runs = [r for r in noop_runs(batch_submit=None)
            if r["backend"] != "ceiling" and not (r["mode"] == "raw" and r["phase"] == "sustained")]
    [row] = overhead(summarise(runs))
    assert row["batch_submit_vs_raw"] is None and row["http_submit_vs_ceiling"] is None
    assert row["sustained_rate"] is None and row["e2e_p50_limit_ms"] is None
    assert row["met"]["batch_submit_vs_raw"] is None
    assert row["met"]["http_submit_vs_ceiling"] is None
    assert row["met"]["e2e_p50"] is None
    assert row["met"]["direct_submit_vs_raw"] is True


def test_overhead_is_of_noop_only() -> None:
    assert overhead(summarise([run("arq", "sleep", "raw"), run("arq", "sleep", "direct")])) == []


def test_overhead_table_shows_targets_marks_and_dashes() -> None:
    runs = [r for r in noop_runs(batch_submit=None) if r["backend"] != "ceiling"]
    table = overhead_table_data(overhead(summarise(runs)))
    rows = {str(row[1]): row[2:] for row in table.rows}
    assert rows["direct submit / raw submit"] == ["1.05", "≥ 1.00", "✅ met"]
    assert rows["http end to end / raw"] == ["0.83", "≥ 0.90", ("❌ missed", "bad")]
    assert rows["batch submit / raw submit"] == [DASH, "≥ 2.00", DASH]
    assert rows["http submit / ceiling"] == [DASH, "≥ 0.70", DASH]
    [latency] = [v for k, v in rows.items() if k.startswith("sustained end to end p50")]
    assert latency == ["5.50 ms (raw 4.00 ms)", "≤ 1.2 \u00d7 raw + 1 ms = 5.80 ms", "✅ met"]
    assert len(table.rows) == len(OVERHEAD_TARGETS) + 1


def test_overhead_table_without_a_raw_latency_shows_no_limit() -> None:
    runs = [r for r in noop_runs() if not (r["mode"] == "raw" and r["phase"] == "sustained")]
    latency = overhead_table_data(overhead(summarise(runs))).rows[-1]
    assert latency[1:] == ["sustained end to end p50, direct", f"{DASH} (raw {DASH})",
                           "≤ 1.2 \u00d7 raw + 1 ms", DASH]


def test_saturation_picks_the_highest_rate_kept_up_with() -> None:
    def at(rate: float, achieved: float, repeat: int = 0, lost: int = 0) -> dict[str, Any]:
        return run("arq", "noop", "http", "sustained", repeat=repeat, throughput=achieved,
                   offered=rate, lost=lost, e2e_p50=rate / 100)

    runs = [at(400.0, 300.0), at(100.0, 99.0), at(100.0, 100.0, repeat=1),
            at(200.0, 192.0), at(200.0, 190.0, repeat=1),  # median 191 >= 190: kept up
            at(300.0, 299.0, lost=1),  # fast enough but lost a task
            run("arq", "noop", "http", "burst")]  # not part of the sweep
    [group] = saturation(runs)
    assert group["max_sustained_rate"] == 200.0
    assert [p[0] for p in group["points"]] == [100.0, 200.0, 300.0, 400.0]
    assert group["points"][0] == (100.0, 99.5, pytest.approx(3.0))
    assert group["points"][1][1] == 191.0


def test_saturation_with_no_rate_kept_up_with_is_none() -> None:
    [group] = saturation([run("arq", "noop", "http", "sustained", throughput=10.0,
                              offered=100.0)])
    assert group["max_sustained_rate"] is None


# ---------------------------------------------------------------- report


BACKENDS = ("celery", "arq", "dramatiq")


def synthetic_results() -> dict[str, Any]:
    runs = []
    for b_index, backend in enumerate(BACKENDS):
        for workload, base in (("noop", 1000.0), ("sleep", 80.0)):
            for m_index, mode in enumerate(("raw", "direct", "http")):
                for repeat in range(2):
                    runs.append(run(backend, workload, mode, repeat=repeat,
                                    throughput=base * (1 + b_index) * (1.0, 0.97, 0.6)[m_index]
                                    + repeat * 5,
                                    submit=(400.0 if mode == "raw" else 500.0) + 100 * b_index,
                                    e2e_p50=2.0 + b_index + m_index,
                                    lost=3 if (backend, mode, repeat) == ("dramatiq", "http", 1)
                                    else 0))
        runs.append(run(backend, "noop", "batch", throughput=950.0 * (1 + b_index),
                        submit=1000.0 + 100 * b_index, batch_size=100))
        for rate in (100.0, 400.0):
            runs.append(run(backend, "noop", "http", "sustained", throughput=rate * 0.99
                            if rate == 100.0 or backend == "arq" else 250.0, offered=rate,
                            e2e_p50=1.0 + b_index))
    runs.append(run("ceiling", "noop", "ceiling", throughput=None, submit=2000.0))
    runs[0]["latency_ms"]["end_to_end"]["p99"] = None  # a missing figure
    summary = summarise(runs)
    return {"meta": {"started": "2026-11-25T22:30:00Z", "finished": "2026-11-25T22:40:00Z",
                     "profile": "quick", "command": "queuebench bench --profile quick",
                     "machine": {"platform": "Linux", "python": "3.11.2", "cpus": 2,
                                 "memory_gb": 24.0, "redis": "7.0.15"},
                     "versions": {"celery": {"celery": "5.7.0", "kombu": "5.7.0"},
                                  "arq": {"arq": "0.28.0"},
                                  "dramatiq": {"dramatiq": "2.2.0"}},
                     "settings": {"processes": 2, "concurrency": 8, "users": 32},
                     "mapping": {"celery": "2 worker processes x threads pool of 4",
                                 "arq": "2 worker processes x max_jobs 8",
                                 "dramatiq": "2 processes x 4 threads"}},
            "runs": runs, "summary": summary, "ratios": ratios(summary),
            "overhead": overhead(summary), "saturation": saturation(runs)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    # Drawing takes a few seconds: once for the tests that only read the output.
    return render(synthetic_results(), tmp_path_factory.mktemp("report"))


def test_render_writes_every_file(rendered: list[Path]) -> None:
    written = rendered
    names = {p.name for p in written}
    assert names == {"report.md", "report.html", *CHART_FILES}
    for path in written:
        assert path.exists() and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_render_html_is_self_contained(rendered: list[Path]) -> None:
    # plotly.js inlined, nothing loaded from elsewhere (tests/test_report_browser.py opens
    # the page with the network cut); the CDF, which has no interactive twin, as a PNG.
    page = rendered[0].with_name("report.html").read_text(encoding="utf-8")
    assert "<script src" not in page and "<link" not in page
    assert "plotly.js v" in page
    assert page.count('<img alt="cdf" src="data:image/png;base64,') == 1
    for chart in ("throughput", "latency", "saturation", "delivery"):
        assert f'id="{chart}-chart"' in page and f'id="{chart}-plot"' in page
    # The anchors the decision guide links to (no faults here: no delivery table).
    for table in ("throughput", "latency", "saturation", "overhead", "ratios"):
        assert f'<h2 id="{table}-table">' in page
    assert "2 worker processes x threads pool of 4" in page
    assert 'class="num bad">⚠ 3 lost<' in page


def test_render_markdown_highlights_lost_and_shows_the_meta(rendered: list[Path]) -> None:
    text = rendered[0].with_name("report.md").read_text(encoding="utf-8")
    assert "**⚠ 3 lost**" in text
    assert "2 worker processes x max_jobs 8" in text
    assert "kombu 5.7.0" in text and "profile" in text
    assert "![throughput](throughput.png)" in text
    assert '<a id="throughput-chart"></a>' in text and '<a id="overhead-table"></a>' in text
    assert "direct/raw ok" in text
    assert "ok, generator not the bottleneck" in text
    assert "sustained @ 400/s" in text
    assert "## Overhead against the library alone (noop)" in text
    # celery: batch 1,000/s over raw 400/s met; http submit 500/s over a 2,000/s ceiling not.
    assert "| celery | batch submit / raw submit | 2.50 | ≥ 2.00 | ✅ met |" in text
    assert "| celery | http submit / ceiling | 0.25 | ≥ 0.70 | **❌ missed** |" in text
    # No raw sustained run: no latency verdict.
    assert f"| celery | sustained end to end p50, direct | {DASH} (raw {DASH}) |" in text


def test_render_html_marks_a_missed_target(rendered: list[Path]) -> None:
    page = rendered[0].with_name("report.html").read_text(encoding="utf-8")
    assert '<h2 id="overhead-table">Overhead against the library alone (noop)</h2>' in page
    assert '<td class="bad">❌ missed</td>' in page and "<td>✅ met</td>" in page


def test_render_survives_a_json_round_trip_and_nulls(tmp_path: Path) -> None:
    # Tuples become lists in results.json; the report reads either.
    results = json.loads(json.dumps(synthetic_results()))
    results["summary"][0]["throughput_tasks_per_s"] = None
    results["ratios"][0]["direct_vs_raw"] = None
    assert len(render(results, tmp_path)) == 7


def test_render_of_runs_alone_and_of_nothing(tmp_path: Path) -> None:
    results = synthetic_results()
    only_runs = {"meta": results["meta"], "runs": results["runs"]}
    assert len(render(only_runs, tmp_path / "runs")) == 7
    # Nothing to draw: every chart is still there, saying so.
    empty = render({}, tmp_path / "empty")
    assert {p.name for p in empty} == {"report.md", "report.html", *CHART_FILES}


def test_verdicts() -> None:
    assert verdict({"direct_vs_raw": 0.96, "http_submit_vs_ceiling": 0.5}) == (
        "direct/raw ok; ok, generator not the bottleneck", False)
    text, warn = verdict({"direct_vs_raw": 0.9, "http_submit_vs_ceiling": 0.85})
    assert "below 95%" in text and "near ceiling" in text and warn
    assert verdict({}) == ("\u2013", False)


def test_rich_tables_render() -> None:
    results = synthetic_results()
    console = Console(record=True, width=200)
    console.print(summary_table(results))
    console.print(ratios_table(results))
    console.print(overhead_table(results))
    text = console.export_text()
    assert "dramatiq" in text and "ceiling" in text
    # Brackets as text, not read as rich markup.
    assert "1,002 [1,000\u20131,005]" in text and "[min\u2013max]" in text
    assert "near ceiling" not in text and "direct/raw" in text
    assert "Overhead against the library alone" in text and "❌ missed" in text


def test_findings_rank_drain_call_overlaps_noise_and_name_latency_and_saturation() -> None:
    from bench.stats import findings

    def burst(backend: str, mode: str, med: float, lo: float, hi: float) -> dict[str, Any]:
        return {"backend": backend, "workload": "noop", "mode": mode, "phase": "burst",
                "throughput_tasks_per_s": {"median": med, "min": lo, "max": hi}}

    def steady(backend: str, rate: float, p50: float) -> dict[str, Any]:
        return {"backend": backend, "workload": "noop", "mode": "raw", "phase": "sustained",
                "offered_rate": rate, "latency_ms": {"end_to_end": {"p50": p50}}}

    summary = [burst("arq", "raw", 600, 550, 650), burst("celery", "raw", 900, 640, 950),
               burst("dramatiq", "raw", 2000, 1900, 2100), burst("arq", "direct", 500, 480, 520),
               steady("arq", 250, 25.0), steady("celery", 250, 4.0),
               steady("dramatiq", 250, 5.0), steady("dramatiq", 500, 6.0)]
    sat = [{"backend": "arq", "mode": "raw", "workload": "noop", "max_sustained_rate": 250.0},
           {"backend": "dramatiq", "mode": "raw", "workload": "noop",
            "max_sustained_rate": 500.0},
           {"backend": "celery", "mode": "raw", "workload": "noop", "max_sustained_rate": None}]
    assert findings(summary, sat) == [
        # celery's min (640) is under arq's max (650): no clear order between them
        "noop, drain, the library alone: dramatiq 2,000/s, "
        "then celery 900/s (within noise of arq), then arq 600/s.",
        "noop, drain, through queuebench: arq 500/s.",
        # 250/s is the lightest load all three ran; 500/s only dramatiq did
        "noop, end-to-end p50 at 250/s, the library alone: celery 4.0 ms, dramatiq 5.0 ms, "
        "arq 25.0 ms.",
        "noop, highest rate kept up with (95% achieved, none lost), the library alone: "
        "dramatiq 500/s, arq 250/s, celery none offered.",
    ]


# ---------------------------------------------------------------- the broker dimension


def test_a_broker_keeps_its_runs_apart_in_summary_ratios_overhead_and_saturation() -> None:
    runs = [run("celery", "noop", mode, throughput=t, broker=broker)
            for broker, scale in (("redis", 1.0), ("rabbitmq", 0.5))
            for mode, t in (("raw", 200.0 * scale), ("direct", 180.0 * scale))]
    runs += [run("celery", "noop", "raw", "sustained", offered=50.0, broker="rabbitmq"),
             run("celery", "noop", "raw", "burst", throughput=400.0)]  # no broker: Redis
    summary = summarise(runs)
    burst = {(r["broker"], r["mode"]): r["throughput_tasks_per_s"]["median"]
             for r in summary if r["phase"] == "burst"}
    assert burst == {("redis", "raw"): 300.0, ("redis", "direct"): 180.0,
                     ("rabbitmq", "raw"): 100.0, ("rabbitmq", "direct"): 90.0}
    assert {r["broker"]: r["direct_vs_raw"] for r in ratios(summary)} == {
        "redis": pytest.approx(0.6), "rabbitmq": pytest.approx(0.9)}
    assert [r["broker"] for r in overhead(summary)] == ["redis", "rabbitmq"]
    [sat] = saturation(runs)
    assert (sat["backend"], sat["broker"]) == ("celery", "rabbitmq")


def test_the_report_shows_the_broker_as_a_column(tmp_path: Path) -> None:
    runs = [run(backend, "noop", mode, throughput=100.0, broker=broker)
            for backend in ("celery", "arq") for broker in ("redis", "rabbitmq")
            for mode in ("raw", "direct") if (backend, broker) != ("arq", "rabbitmq")]
    render({"runs": runs}, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| workload | backend | broker | raw | direct |" in md
    assert "| noop | celery | rabbitmq |" in md and "| noop | celery | redis |" in md
    assert "| noop | arq | rabbitmq |" not in md
    console = Console(width=200, record=True)
    console.print(summary_table({"runs": runs}))
    text = console.export_text()
    assert "broker" in text and "rabbitmq" in text
