"""bench/guide.py on hand-made results: the decision guide's sentences, word for word,
where the winner is clear, where the ranges overlap, where nothing was measured, and
under faults. No services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.guide import NO_LOSS, Decision, decide, html, markdown
from tests.support_results import fault, results, row, runs

ROOT = Path(__file__).resolve().parent.parent
DRAIN = "Short tasks at a high rate (noop, drain)"


def only(decisions: list[Decision], question: str, mode: str | None = None) -> Decision:
    found = [d for d in decisions if d.question == question and d.mode == mode]
    assert len(found) == 1, [d.answer for d in decisions]
    return found[0]


def test_a_clear_winner_is_named_with_its_margin_over_the_runner_up() -> None:
    decision = only(decide(results([
        row("arq", drain=(3000.0, 2900.0, 3100.0)),
        row("celery", drain=(1500.0, 1400.0, 1600.0)),
        row("dramatiq", broker="rabbitmq", drain=(1000.0, 950.0, 1050.0)),
    ])), DRAIN, "raw")
    assert decision.answer == (
        "Short tasks at a high rate (noop, drain), the library alone (raw): arq on redis "
        "wins with 3,000/s, 2.00x the runner-up celery on redis (1,500/s).")
    assert (decision.winner, decision.runner_up) == ("arq on redis", "celery on redis")
    assert decision.margin == pytest.approx(2.0)
    assert not decision.within_noise
    assert decision.tied == ()
    assert decision.anchors == ("#throughput-chart", "#throughput-table")


def test_overlapping_ranges_are_within_noise_and_name_every_tied_queue() -> None:
    decision = only(decide(results([
        row("arq", mode="direct", drain=(3000.0, 2800.0, 3200.0)),
        row("celery", mode="direct", broker="rabbitmq", drain=(2900.0, 2700.0, 2950.0)),
        row("dramatiq", mode="direct", drain=(2000.0, 1900.0, 2100.0)),
    ])), DRAIN, "direct")
    assert decision.answer == (
        "Short tasks at a high rate (noop, drain), through queuebench (direct): within "
        "noise, arq on redis (3,000/s) and celery on rabbitmq (2,900/s): their min-max "
        "ranges overlap (arq on redis leads celery on rabbitmq by 1.03x).")
    assert decision.within_noise
    assert decision.tied == ("celery on rabbitmq",)


def test_ranges_that_only_touch_still_count_as_overlapping() -> None:
    decision = only(decide(results([
        row("arq", drain=(3000.0, 2500.0, 3100.0)),
        row("celery", drain=(2000.0, 1900.0, 2500.0)),
    ])), DRAIN, "raw")
    assert decision.within_noise


def test_lowest_latency_is_lower_is_better_with_its_range_from_the_runs() -> None:
    fast = row("celery", phase="sustained", rate=250.0, e2e_p50=2.0)
    slow = row("arq", phase="sustained", rate=250.0, e2e_p50=20.0)
    decision = only(decide(results(
        [fast, slow, row("arq", phase="sustained", rate=500.0, e2e_p50=1.0)],
        run_rows=[*runs(fast, [1.9, 2.0, 2.2]), *runs(slow, [19.0, 20.0, 24.0])])),
        "Lowest latency (noop, end-to-end p50, sustained)", "raw")
    # 500/s: only arq ran it, so the answer is at 250/s, where both did.
    assert decision.answer == (
        "Lowest latency (noop, end-to-end p50, sustained), the library alone (raw), at "
        "250/s: celery on redis wins with 2.0 ms, 10.00x lower than the runner-up arq on "
        "redis (20.0 ms).")
    assert decision.anchors[:2] == ("#latency-chart", "#latency-table")


def test_latency_ranges_that_overlap_in_the_runs_are_within_noise() -> None:
    a = row("celery", phase="sustained", rate=250.0, e2e_p50=2.0)
    b = row("arq", phase="sustained", rate=250.0, e2e_p50=2.2)
    decision = only(decide(results([a, b], run_rows=[*runs(a, [1.8, 2.0, 2.5]),
                                                      *runs(b, [2.1, 2.2, 2.4])])),
                    "Lowest latency (noop, end-to-end p50, sustained)", "raw")
    assert decision.within_noise
    assert decision.tied == ("arq on redis",)


def test_a_single_repeat_says_it_has_no_range_to_judge_noise() -> None:
    decision = only(decide(results([
        row("arq", drain=(3000.0, 3000.0, 3000.0), repeats=1),
        row("celery", drain=(2990.0, 2990.0, 2990.0), repeats=1),
    ])), DRAIN, "raw")
    assert decision.answer.endswith(
        "arq on redis wins with 3,000/s, 1.00x the runner-up celery on redis (2,990/s) "
        "(one run each: no range to judge noise).")
    assert not decision.within_noise


def test_a_question_without_data_says_not_measured() -> None:
    decisions = decide(results([row("arq", drain=(3000.0, 2900.0, 3100.0))]))
    cpu = only(decisions, "CPU-bound tasks (cpu, drain)")
    assert cpu.answer == "CPU-bound tasks (cpu, drain): not measured in this run."
    assert (cpu.winner, cpu.margin, cpu.within_noise) == (None, None, False)
    assert only(decisions, "No loss under faults").answer == \
        "No loss under faults: not measured in this run."
    assert only(decisions, DRAIN, "raw").answer == \
        "Short tasks at a high rate (noop, drain), the library alone (raw): only arq on " \
        "redis ran (3,000/s)."


def test_the_defaults_config_and_other_modes_never_answer_a_question() -> None:
    """The answers compare the same worker shape: `safe`, whether the file writes the
    config as a field or (version 1) as the mode's suffix."""
    decisions = decide(results([
        row("arq", drain=(1000.0, 900.0, 1100.0)),
        row("celery", mode="raw/defaults", drain=(9000.0, 8900.0, 9100.0)),
        row("dramatiq", config="defaults", drain=(9000.0, 8900.0, 9100.0)),
        row("taskiq", mode="http", drain=(9000.0, 8900.0, 9100.0)),
    ]))
    assert only(decisions, DRAIN, "raw").winner == "arq on redis"
    assert only(decisions, DRAIN, "raw").runner_up is None


def test_a_backend_that_loses_tasks_does_not_win_no_loss() -> None:
    decisions = decide(results([], faults=[
        fault("arq", "worker_kill", lost=3), fault("arq", "broker_restart"),
        fault("celery", "worker_kill", run_twice=1), fault("celery", "broker_restart"),
        fault("dramatiq", "worker_kill"), fault("dramatiq", "broker_restart"),
        # a fault only arq ran counts for nobody
        fault("arq", "net_cut", lost=0),
    ]))
    decision = only(decisions, "No loss under faults", "queuebench")
    assert decision.answer == (
        "No loss under faults, through queuebench (2 faults each): dramatiq on redis lost 0 "
        "and ran 0 twice; the runner-up celery on redis lost 0 and ran 1 twice (1 more).")
    assert (decision.winner, decision.runner_up, decision.margin) == \
        ("dramatiq on redis", "celery on redis", 1.0)
    assert decision.anchors == ("#delivery-chart", "#delivery-table")


def test_equal_counts_under_faults_are_a_tie_naming_the_tied() -> None:
    decisions = decide(results([], faults=[
        fault("arq", "worker_kill", mode="raw-safe"),
        fault("celery", "worker_kill", mode="raw-safe", broker="rabbitmq"),
        fault("dramatiq", "worker_kill", mode="raw-safe", lost=5),
        fault("taskiq", "worker_kill", mode="raw-defaults", lost=2),
        fault("arq", "worker_kill", mode="raw-defaults", lost=9),
    ]))
    safe = only(decisions, "No loss under faults", "raw-safe")
    assert safe.answer == (
        "No loss under faults, the library alone, safe settings (raw-safe) (1 fault each): "
        "tied at 0 lost or run twice, arq on redis and celery on rabbitmq.")
    assert safe.within_noise and safe.tied == ("celery on rabbitmq",)
    defaults = only(decisions, "No loss under faults", "raw-defaults")
    assert defaults.winner == "taskiq on redis"
    assert defaults.margin == 7.0


def test_a_fault_the_harness_failed_to_run_counts_for_nobody() -> None:
    decision = only(decide(results([], faults=[
        fault("arq", "worker_kill"), fault("celery", "worker_kill", lost=1),
        fault("arq", "net_cut", error="no namespaces"), fault("celery", "net_cut", lost=4),
    ])), "No loss under faults", "queuebench")
    assert decision.answer.startswith("No loss under faults, through queuebench (1 fault each)")
    assert decision.margin == 1.0


def test_markdown_and_html_link_each_line_to_its_table_and_chart() -> None:
    data = results([row("arq", drain=(3000.0, 2900.0, 3100.0)),
                    row("celery", drain=(1500.0, 1400.0, 1600.0))])
    text = markdown(data)
    assert text.startswith("## Decision guide\n\n- Short tasks at a high rate (noop, drain), ")
    assert "(1,500/s). ([throughput chart](#throughput-chart) · " \
        "[throughput table](#throughput-table))" in text
    page = html(data)
    assert page.startswith('<section id="decision-guide">')
    assert '<a href="#throughput-table">throughput table</a>' in page
    assert page.count("<li") == len(decide(data))


def test_the_committed_full_run_answers_every_speed_question() -> None:
    data = json.loads((ROOT / "docs" / "bench" / "results.json").read_text())
    decisions = decide(data)
    measured = [d for d in decisions if d.winner is not None]
    speed = {DRAIN, "Short tasks at a high rate (noop, submit)", "I/O-bound tasks (sleep, drain)",
             "CPU-bound tasks (cpu, drain)", "Lowest latency (noop, end-to-end p50, sustained)"}
    # the committed run has its faults dimension: the fifth question is answered too
    assert {d.question for d in measured} == speed | ({NO_LOSS} if data.get("faults") else set())
    assert all(d.margin is not None and d.margin >= 1 for d in measured if d.question in speed)
