"""The decision guide at the top of the report: for each question a reader brings (short
tasks at a high rate, I/O-bound, CPU-bound, lowest latency, no loss under faults),
which backend and broker wins, by what margin over the runner-up, and "within noise"
where their min-max ranges overlap, the library alone and through queuebench.

Every sentence is computed from a results.json (no sentence about results is written
by hand), so a new run rewrites the guide; each links to the table and chart behind it
(the report's anchors: #throughput-chart, #throughput-table, ...)."""

from __future__ import annotations

import dataclasses
import html as html_lib
from collections.abc import Iterable
from typing import Any

from bench.schema import FIGURES, Cells, Figure, Spread, faults

THROUGHPUT = ("#throughput-chart", "#throughput-table")
SUBMIT = ("#submit-table",)  # submit rates have a table, no chart
LATENCY = ("#latency-chart", "#latency-table", "#saturation-chart", "#saturation-table")
DELIVERY = ("#delivery-chart", "#delivery-table")
#: The modes an answer is given for: the library alone and queuebench's own path; both
#: in the `safe` config, the same worker shape for every backend.
SPEED_VIEWS = (("raw", "the library alone (raw)"), ("direct", "through queuebench (direct)"))
#: results["faults"] modes, queuebench first.
FAULT_VIEWS = (("queuebench", "through queuebench"),
               ("raw-safe", "the library alone, safe settings (raw-safe)"),
               ("raw-defaults", "the library alone, its defaults (raw-defaults)"))
NO_LOSS = "No loss under faults"


@dataclasses.dataclass(frozen=True)
class Decision:
    """One line of the guide. `winner` and `runner_up` name a backend and its broker
    ("arq on redis"); `margin` is the winner's lead as a factor >= 1 (speed and
    latency) or as a count of tasks (faults: the runner-up's lost and run twice minus
    the winner's); `tied` the others within noise of the winner (their ranges overlap
    its range; for faults, the same count); `within_noise` whether the runner-up is
    among them; `mode` the mode answered for (raw, direct; for faults raw-safe,
    raw-defaults, queuebench). Without data: winner None, the answer "...: not measured
    in this run"."""

    question: str
    answer: str
    anchors: tuple[str, ...]
    winner: str | None = None
    runner_up: str | None = None
    margin: float | None = None
    within_noise: bool = False
    mode: str | None = None
    tied: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Question:
    title: str
    workload: str
    phase: str
    figure: Figure
    anchors: tuple[str, ...]


QUESTIONS = (
    Question("Short tasks at a high rate (noop, drain)", "noop", "burst",
             FIGURES["throughput"], THROUGHPUT),
    Question("Short tasks at a high rate (noop, submit)", "noop", "burst",
             FIGURES["submit"], SUBMIT),
    Question("I/O-bound tasks (sleep, drain)", "sleep", "burst", FIGURES["throughput"],
             THROUGHPUT),
    Question("CPU-bound tasks (cpu, drain)", "cpu", "burst", FIGURES["throughput"],
             THROUGHPUT),
    Question("Lowest latency (noop, end-to-end p50, sustained)", "noop", "sustained",
             FIGURES["e2e_p50"], LATENCY),
)


def queue(row: dict[str, Any]) -> str:
    return f"{row['backend']} on {row['broker']}"


def _value(spread: Spread, figure: Figure) -> str:
    digits = 0 if figure.higher_is_better else 1
    return f"{spread.median:,.{digits}f}{figure.unit}"


def _and(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _candidates(cells: Cells, question: Question, mode: str
                ) -> tuple[float | None, list[tuple[str, Spread]]]:
    """(offered rate, [(queue, spread)]) of one question in one mode. A sustained
    question is answered at the lowest rate that the most queues ran, so that every
    queue named ran the same load."""
    rows = [(row, cells.spread(cell, question.figure)) for cell, row in cells.rows.items()
            if (row["workload"], row["phase"], row["mode"], row["config"])
            == (question.workload, question.phase, mode, "safe")
            and row["backend"] != "ceiling"]
    found = [(row, spread) for row, spread in rows if spread is not None]
    rate = None
    if question.phase == "sustained" and found:
        by_rate: dict[float, int] = {}
        for row, _ in found:
            if row.get("offered_rate") is not None:
                by_rate[row["offered_rate"]] = by_rate.get(row["offered_rate"], 0) + 1
        if not by_rate:
            return None, []
        most = max(by_rate.values())
        rate = min(r for r, n in by_rate.items() if n == most)
        found = [(row, s) for row, s in found if row.get("offered_rate") == rate]
    return rate, [(queue(row), spread) for row, spread in found]


def _speed(cells: Cells, question: Question, mode: str, view: str) -> Decision | None:
    rate, found = _candidates(cells, question, mode)
    if not found:
        return None
    figure = question.figure
    sign = -1 if figure.higher_is_better else 1
    ranked = sorted(found, key=lambda c: (sign * c[1].median, c[0]))
    where = f"{question.title}, {view}" + (f", at {rate:,.0f}/s" if rate is not None else "")
    (winner, best), rest = ranked[0], ranked[1:]
    alone = Decision(question.title, f"{where}: only {winner} ran ({_value(best, figure)}).",
                     question.anchors, winner, mode=mode)
    if not rest:
        return alone
    runner, second = rest[0]
    high, low = max(best.median, second.median), min(best.median, second.median)
    margin = high / low if low > 0 else None
    tied = tuple(name for name, spread in rest if best.overlaps(spread))
    if best.overlaps(second):
        named = [(winner, best), *((n, s) for n, s in rest if n in tied)]
        answer = (f"{where}: within noise, "
                  f"{_and(f'{n} ({_value(s, figure)})' for n, s in named)}: "
                  "their min-max ranges overlap"
                  + (f" ({winner} leads {runner} by {margin:.2f}x)." if margin else "."))
        return dataclasses.replace(alone, answer=answer, runner_up=runner, margin=margin,
                                   within_noise=True, tied=tied)
    lead = "" if margin is None else \
        f"{margin:.2f}x " + ("" if figure.higher_is_better else "lower than ")
    answer = (f"{where}: {winner} wins with {_value(best, figure)}, {lead}the runner-up "
              f"{runner} ({_value(second, figure)})")
    if not (best.ranged and second.ranged):
        answer += " (one run each: no range to judge noise)"
    return dataclasses.replace(alone, answer=answer + ".", runner_up=runner, margin=margin,
                               tied=tied)


def _count(row: dict[str, Any], field: str) -> int:
    return int(row.get(field) or 0)


def _delivery(rows: list[dict[str, Any]], mode: str, view: str) -> Decision | None:
    """Fewest tasks lost plus run twice, over the faults every queue of `mode` ran
    without an error of the harness (a fault one queue skipped compares nothing)."""
    ran: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["mode"] == mode and not row.get("error") and row.get("lost") is not None:
            ran.setdefault(queue(row), {})[row["fault"]] = row
    if not ran:
        return None
    common = set.intersection(*(set(by_fault) for by_fault in ran.values()))
    if not common:
        return None
    score = {name: (sum(_count(by_fault[f], "lost") for f in common),
                    sum(_count(by_fault[f], "run_twice") for f in common))
             for name, by_fault in ran.items()}
    ranked = sorted(score, key=lambda name: (sum(score[name]), name))
    where = f"{NO_LOSS}, {view} ({len(common)} fault{'s' if len(common) > 1 else ''} each)"
    winner, rest = ranked[0], ranked[1:]

    def said(name: str) -> str:
        lost, twice = score[name]
        return f"{name} lost {lost} and ran {twice} twice"

    if not rest:
        return Decision(NO_LOSS, f"{where}: only {said(winner)}.", DELIVERY, winner, mode=mode)
    runner = rest[0]
    margin = sum(score[runner]) - sum(score[winner])
    tied = tuple(name for name in rest if sum(score[name]) == sum(score[winner]))
    answer = (f"{where}: tied at {sum(score[winner])} lost or run twice, "
              f"{_and([winner, *tied])}." if tied else
              f"{where}: {said(winner)}; the runner-up {said(runner)} ({margin} more).")
    return Decision(NO_LOSS, answer, DELIVERY, winner, runner, float(margin), bool(tied), mode,
                    tied)


def _not_measured(title: str, anchors: tuple[str, ...]) -> Decision:
    """A question the run has no data for links to its chart alone: the report draws
    every chart (a "no data" note), but leaves out an empty table."""
    return Decision(title, f"{title}: not measured in this run.",
                    tuple(a for a in anchors if a.endswith("-chart")))


def decide(results: dict[str, Any]) -> list[Decision]:
    """The guide's lines, question by question, the library alone before queuebench;
    a question with no data in the run is one line saying so."""
    cells = Cells(results)
    out: list[Decision] = []
    for question in QUESTIONS:
        found = [d for mode, view in SPEED_VIEWS if (d := _speed(cells, question, mode, view))]
        out.extend(found or [_not_measured(question.title, question.anchors)])
    rows = list(faults(results).values())
    found = [d for mode, view in FAULT_VIEWS if (d := _delivery(rows, mode, view))]
    out.extend(found or [_not_measured(NO_LOSS, DELIVERY)])
    return out


def _anchor_label(anchor: str) -> str:
    return anchor.lstrip("#").replace("-", " ")


def markdown(results: dict[str, Any], base: str = "") -> str:
    """The guide as a Markdown section: a heading and a bullet per decision; `base`
    prefixes its links (the README links into docs/bench/report.md)."""
    lines = ["## Decision guide", ""]
    for d in decide(results):
        links = " · ".join(f"[{_anchor_label(a)}]({base}{a})" for a in d.anchors)
        lines.append(f"- {d.answer} ({links})")
    return "\n".join(lines) + "\n"


def html(results: dict[str, Any]) -> str:
    """The guide as an HTML section (id "decision-guide"), a list item per decision."""
    items = []
    for d in decide(results):
        links = " · ".join(f'<a href="{html_lib.escape(a)}">{html_lib.escape(_anchor_label(a))}'
                           "</a>" for a in d.anchors)
        noise = ' class="within-noise"' if d.within_noise else ""
        items.append(f"<li{noise}>{html_lib.escape(d.answer)} ({links})</li>")
    return ('<section id="decision-guide">\n<h2>Decision guide</h2>\n<ul>\n'
            + "\n".join(items) + "\n</ul>\n</section>\n")


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.guide RESULTS [--base PATH]`: the guide of a results.json as
    Markdown (what the README's "Which queue?" section holds, for docs/bench)."""
    import argparse

    from bench.schema import load

    p = argparse.ArgumentParser(prog="python -m bench.guide", description=main.__doc__)
    p.add_argument("results")
    p.add_argument("--base", default="", help="prefix of the links (default: none)")
    args = p.parse_args(argv)
    print(markdown(load(args.results), args.base), end="")


if __name__ == "__main__":
    main()
