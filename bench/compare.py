"""`queuebench bench compare A B`: two results.json side by side (another machine,
another version, another config), so that CI can tell a regression from noise.

Cells are matched by (backend, broker, workload, mode, phase, config, offered_rate);
per cell and figure, the ratio B/A of the medians. A change is "separate" when the two
min-max ranges over the repeats do not overlap. A figure regressed when it got worse
than the threshold allows (throughput and submit lower, latency higher) and its
ranges are separate; with a single repeat there is no range, and the threshold alone
decides. The faults rows are compared too: more lost or more run twice in B is a
regression (counts of tasks: no noise to allow for).

Exit status 1 when anything regressed, else 0; 2 when a file cannot be read."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import schema
from bench.schema import CELL, FIGURES, Cells, Figure

DEFAULT_FIGURES = ("throughput", "submit", "e2e_p50", "e2e_p99")
FAULT_COUNTS = ("lost", "run_twice")


@dataclasses.dataclass(frozen=True)
class Change:
    """One figure of one cell in A and in B. `separate`: the ranges do not overlap
    (None: one side has no range); `worse`: past the threshold in the bad direction."""

    figure: str
    a: float
    b: float
    ratio: float | None
    separate: bool | None
    worse: bool

    @property
    def regressed(self) -> bool:
        return self.worse and self.separate is not False


@dataclasses.dataclass
class Comparison:
    cells: dict[tuple[Any, ...], list[Change]]   # matched cells, with their changes
    only_a: list[tuple[Any, ...]]
    only_b: list[tuple[Any, ...]]
    faults: dict[tuple[Any, ...], list[Change]]
    faults_only_a: list[tuple[Any, ...]]
    faults_only_b: list[tuple[Any, ...]]

    @property
    def regressions(self) -> list[tuple[tuple[Any, ...], Change]]:
        return [(cell, c) for rows in (self.cells, self.faults)
                for cell, changes in rows.items() for c in changes if c.regressed]


def _change(figure: Figure, a: schema.Spread, b: schema.Spread, threshold: float) -> Change:
    ratio = b.median / a.median if a.median else None
    if ratio is None:
        worse = False
    elif figure.higher_is_better:
        worse = ratio < 1 - threshold
    else:
        worse = ratio > 1 + threshold
    overlap = a.overlaps(b)
    return Change(figure.name, a.median, b.median, ratio,
                  None if overlap is None else not overlap, worse)


def _fault_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    out = []
    for field in FAULT_COUNTS:
        if a.get(field) is None or b.get(field) is None:
            continue
        before, after = float(a[field]), float(b[field])
        out.append(Change(field, before, after, after / before if before else None,
                          after != before, after > before))
    return out


def compare(a: dict[str, Any], b: dict[str, Any], threshold: float = 0.10,
            figures: Sequence[str] = DEFAULT_FIGURES) -> Comparison:
    cells_a, cells_b = Cells(a), Cells(b)
    matched: dict[tuple[Any, ...], list[Change]] = {}
    for cell in cells_a.rows.keys() & cells_b.rows.keys():
        changes = []
        for name in figures:
            spread_a = cells_a.spread(cell, FIGURES[name])
            spread_b = cells_b.spread(cell, FIGURES[name])
            if spread_a is not None and spread_b is not None:
                changes.append(_change(FIGURES[name], spread_a, spread_b, threshold))
        matched[cell] = changes
    faults_a, faults_b = schema.faults(a), schema.faults(b)
    return Comparison(
        cells={cell: matched[cell] for cell in sorted(matched, key=_order)},
        only_a=sorted(cells_a.rows.keys() - cells_b.rows.keys(), key=_order),
        only_b=sorted(cells_b.rows.keys() - cells_a.rows.keys(), key=_order),
        faults={cell: _fault_changes(faults_a[cell], faults_b[cell])
                for cell in sorted(faults_a.keys() & faults_b.keys(), key=_order)},
        faults_only_a=sorted(faults_a.keys() - faults_b.keys(), key=_order),
        faults_only_b=sorted(faults_b.keys() - faults_a.keys(), key=_order))


def _order(cell: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, "" if v is None else v) for v in cell)


# -- output -----------------------------------------------------------------------------

def _cell_text(cell: tuple[Any, ...]) -> list[str]:
    return ["" if v is None else f"{v:,.0f}/s" if isinstance(v, float) else str(v)
            for v in cell]


def _ratio_text(change: Change | None, markdown: bool) -> str:
    if change is None:
        return "-"
    text = "-" if change.ratio is None else f"{change.ratio:.2f}"
    if change.regressed:
        return f"**{text} regressed**" if markdown else f"[bold red]{text} regressed"
    if change.separate:
        return f"{text} (apart)" if markdown else f"[yellow]{text} apart"
    return text


def rows(comparison: Comparison, figures: Sequence[str], markdown: bool
         ) -> tuple[list[str], list[list[str]]]:
    """The table's headers and rows: a cell per line, B/A per figure ("apart": the
    ranges do not overlap; "regressed": apart, or unranged, and past the threshold)."""
    headers = [*CELL[:-1], "rate", *(FIGURES[f].label + " B/A" for f in figures)]
    body = []
    for cell, changes in comparison.cells.items():
        by_name = {c.figure: c for c in changes}
        body.append([*_cell_text(cell), *(_ratio_text(by_name.get(f), markdown)
                                          for f in figures)])
    return headers, body


def fault_rows(comparison: Comparison, markdown: bool) -> tuple[list[str], list[list[str]]]:
    headers = [*schema.FAULT_CELL, *(f"{f} A -> B" for f in FAULT_COUNTS)]
    body = []
    for cell, changes in comparison.faults.items():
        by_name = {c.figure: c for c in changes}
        texts = []
        for field in FAULT_COUNTS:
            c = by_name.get(field)
            text = "-" if c is None else f"{c.a:.0f} -> {c.b:.0f}"
            if c is not None and c.regressed:
                text = f"**{text} regressed**" if markdown else f"[bold red]{text} regressed"
            texts.append(text)
        body.append([*map(str, cell), *texts])
    return headers, body


def _only(comparison: Comparison) -> list[str]:
    lines: list[str] = []
    for side, cells in (("A", comparison.only_a), ("B", comparison.only_b),
                        ("A", comparison.faults_only_a), ("B", comparison.faults_only_b)):
        lines.extend(f"only in {side}: {' '.join(t for t in _cell_text(cell) if t)}"
                     for cell in cells)
    return lines


def _verdict(comparison: Comparison, threshold: float) -> str:
    count = len(comparison.regressions)
    if not count:
        return f"no regression past {threshold:.0%} with separate ranges"
    return f"{count} regression{'s' if count > 1 else ''} past {threshold:.0%}"


def to_markdown(comparison: Comparison, figures: Sequence[str], threshold: float) -> str:
    def table(headers: list[str], body: list[list[str]]) -> list[str]:
        return [f"| {' | '.join(headers)} |", f"|{'---|' * len(headers)}",
                *(f"| {' | '.join(row)} |" for row in body)]

    lines = table(*rows(comparison, figures, markdown=True))
    if comparison.faults:
        lines += ["", *table(*fault_rows(comparison, markdown=True))]
    only = _only(comparison)
    if only:
        lines += ["", *(f"- {line}" for line in only)]
    return "\n".join([*lines, "", f"{_verdict(comparison, threshold)}."]) + "\n"


def print_rich(comparison: Comparison, figures: Sequence[str], threshold: float,
               console: Console) -> None:
    for title, (headers, body) in (("B/A per cell", rows(comparison, figures, False)),
                                   ("faults", fault_rows(comparison, False))):
        if not body:
            continue
        table = Table(title=title)
        for header in headers:
            table.add_column(header)
        for row in body:
            table.add_row(*row)
        console.print(table)
    for line in _only(comparison):
        console.print(line, markup=False)
    console.print(_verdict(comparison, threshold))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="queuebench bench compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="the baseline results.json")
    p.add_argument("b", type=Path, help="the results.json compared with it")
    p.add_argument("--threshold", type=float, default=0.10,
                   help="a change past this share counts (0.10: 10%%)")
    p.add_argument("--figures", default=",".join(DEFAULT_FIGURES),
                   help=f"comma-separated, of {', '.join(FIGURES)}")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (for a note)")
    args = p.parse_args(argv)
    args.figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = [f for f in args.figures if f not in FIGURES]
    if unknown or not args.figures:
        p.error(f"--figures: unknown {', '.join(unknown) or '(none given)'} "
                f"(choose from {', '.join(FIGURES)})")
    if not 0 <= args.threshold < 1:
        p.error("--threshold must be at least 0 and below 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        a, b = schema.load(args.a), schema.load(args.b)
    except ValueError as exc:
        print(f"queuebench bench compare: error: {exc}", file=sys.stderr)
        return 2
    comparison = compare(a, b, args.threshold, args.figures)
    if args.markdown:
        sys.stdout.write(to_markdown(comparison, args.figures, args.threshold))
    else:
        print_rich(comparison, args.figures, args.threshold, Console(width=200))
    return 1 if comparison.regressions else 0


if __name__ == "__main__":
    sys.exit(main())
