"""Writes docs/features.md, the feature matrix, from the conformance suite's JUnit
reports (one per backend: `pytest --backend B --junitxml build/junit-B.xml`).

Each semantics test declares the feature it proves and records the support level it
exercised (tests/conftest.py `feature`); a cell shows that level (or "refused" when a
test proved the refusal) and is green only when every test behind it passed: not when
one was skipped, nor when one was marked as expected to fail (xfail), whether it failed
or passed anyway (xpass).

    python -m tests.matrix build/junit-*.xml [--out docs/features.md] [--readme README.md]
"""

from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

from core.settings import BACKENDS
from core.tasks.features import FEATURES, Support

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "conformance"
# Where the tests behind a cell are: the conformance suite's modules, and the outage tests.
TEST_FILES = (*sorted(SUITE.glob("test_*.py")), ROOT / "tests" / "test_faults.py")
ICON = {"passed": "✅", "failed": "❌", "xfail": "⚠️", "xpass": "❔", "skipped": "⏭️",
        "refused": "🚫"}
# A cell's outcome is the first of these among its tests'.
OUTCOMES = ("failed", "xfail", "xpass", "skipped", "passed")
# How a cell reads: the level the tests exercised (tests/conftest.py `feature`), and
# "refused" for a feature not supported whose refusal (422 or 409) a test proved.
LEVELS = (Support.NATIVE.value, Support.CORE.value, "refused", Support.NONE.value)


class Result(NamedTuple):
    test: str
    support: str  # the level the test exercised
    outcome: str  # one of OUTCOMES
    reason: str = ""  # an xfail's or xpass's: why the test is expected to fail


def _outcome(case: ET.Element, props: dict[str | None, str | None]) -> tuple[str, str]:
    """The outcome and reason as pytest writes them: an xfail as a skip of type
    `pytest.xfail`; an xpass (not strict) as a pass, told apart by the `xpass`
    property that tests/conftest.py adds."""
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed", ""
    skipped = case.find("skipped")
    if skipped is not None:
        if skipped.get("type") == "pytest.xfail":
            return "xfail", skipped.get("message") or ""
        return "skipped", ""
    if "xpass" in props:
        return "xpass", props["xpass"] or ""
    return "passed", ""


def read_reports(paths: list[Path]) -> dict[tuple[str, str], list[Result]]:
    """(feature, backend) -> the results of the tests that prove it"""
    cells: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for path in paths:
        for case in ET.parse(path).getroot().iter("testcase"):
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            match = re.match(r"(\w+)\[(.*)\]", case.get("name", ""))
            if "feature" not in props or not match:
                continue
            backend = next(b for b in BACKENDS if b in match.group(2).split("-"))
            cells[(str(props["feature"]), column(backend, props.get("broker")))].append(
                Result(match.group(1), str(props["support"]), *_outcome(case, props)))
    return cells


def column(backend: str, broker: str | None) -> str:
    """A backend on Redis is its own column; on another broker (`--broker rabbitmq`),
    one beside it: "celery on rabbitmq"."""
    return backend if broker in (None, "redis") else f"{backend} on {broker}"


def columns(cells: dict[tuple[str, str], list[Result]]) -> list[str]:
    present = {key[1] for key in cells}
    return [c for b in BACKENDS for c in (b, *sorted(p for p in present
                                                       if p.startswith(f"{b} on ")))
            if c in present]


def verdict(results: list[Result]) -> str:
    """The worst outcome of the tests behind the cell, in OUTCOMES' order: passed only
    when every one passed. A skip is no proof, nor is an xfail (a known failure) or an
    xpass (a known failure that did not happen this time)."""
    if not results:
        return "skipped"
    return min((r.outcome for r in results), key=OUTCOMES.index)


def label(results: list[Result]) -> str:
    """What the tests exercised, not only what the adapter claims: a refusal reads
    "refused" once a test proved it; levels that differ between tests are all shown."""
    levels = {"refused" if r.support == Support.NONE and r.outcome == "passed" else r.support
              for r in results}
    return " + ".join(level for level in LEVELS if level in levels) or Support.NONE.value


def icon(results: list[Result]) -> str:
    outcome = verdict(results)
    if outcome == "passed" and label(results) == "refused":
        return ICON["refused"]
    return ICON[outcome]


def _link_to(test: str) -> str:
    for path in TEST_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(rf"(async )?def {test}\(", line):
                return f"../{path.relative_to(ROOT)}#L{number}"
    return f"../{SUITE.relative_to(ROOT)}/"


def _tally(results: list[Result]) -> str:
    if verdict(results) == "passed":
        return "all passed" if len(results) > 1 else "passed"
    counts = Counter(r.outcome for r in results)
    return ", ".join(f"{counts[o]} {o}" for o in ("passed", *OUTCOMES[:-1]) if counts[o])


def _reasons(results: list[Result]) -> str:
    """Why the cell's xfail and xpass tests are expected to fail, as table text."""
    reasons = dict.fromkeys(" ".join(r.reason.split()).replace("|", "\\|")
                            for r in results if r.outcome in ("xfail", "xpass"))
    return "; ".join(reason for reason in reasons if reason)


def _cell(results: list[Result]) -> str:
    if not results:
        return "not run"
    tests = sorted({r.test for r in results})
    links = ", ".join(f"[{i + 1}]({_link_to(t)})" for i, t in enumerate(tests))
    why = _reasons(results)
    tally = f"{_tally(results)}: {why}" if why else _tally(results)
    return f"{icon(results)} **{label(results)}** ({tally}; tests {links})"


def render(cells: dict[tuple[str, str], list[Result]]) -> str:
    backends = columns(cells)
    lines = [
        "# Feature matrix",
        "",
        "Generated by `python -m tests.matrix` from the conformance suite's JUnit reports;",
        "do not edit by hand. **native**: the queue library's own mechanism; **in core**:",
        "queuebench implements it once for every backend; **refused**: not supported, and",
        "the tests proved that the API says so (422 naming the backend and the option, or",
        "409 for cancelling a running task). The level is the one the tests exercised. A",
        "cell is ✅ (or 🚫 for a proved refusal) only when every test behind it passed;",
        "❌ when one failed; ⚠️ xfail when one marked as a known failure failed, ❔ xpass",
        "when it passed anyway (the failure is known to happen at times), each with the",
        "reason; ⏭️ when one was skipped. Each cell links to its tests.",
        "",
        "| feature | what it means | " + " | ".join(backends) + " |",
        "| --- | --- | " + " | ".join("---" for _ in backends) + " |",
    ]
    for feature, meaning in FEATURES.items():
        row = [_cell(cells.get((feature, b), [])) for b in backends]
        lines.append(f"| {feature} | {meaning} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- features:start -->", "<!-- features:end -->"


def summary(cells: dict[tuple[str, str], list[Result]]) -> str:
    """The matrix without links, for the README (between its feature markers)."""
    backends = columns(cells)
    lines = ["| feature | " + " | ".join(backends) + " |",
             "| --- | " + " | ".join("---" for _ in backends) + " |"]
    for feature in FEATURES:
        row = []
        for b in backends:
            results = cells.get((feature, b), [])
            if not results:
                row.append("not run")
                continue
            cell = f"{icon(results)} **{label(results)}**"
            if verdict(results) != "passed":
                cell += f" ({_tally(results)})"
            row.append(cell)
        lines.append(f"| {feature} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> bool:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "features.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="whose feature section (between its markers) gets the summary")
    args = parser.parse_args(argv)
    cells = read_reports(args.reports)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(cells))
    print(f"wrote {args.out}")
    if update_readme(args.readme, summary(cells)):
        print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
