"""results.json: its version, its JSON Schema (bench/results.schema.json, documented in
docs/bench-schema.md), and its rows read the same way whichever version wrote them.

Version 1 (no "schema_version" key) wrote a `defaults` session's mode as "raw/defaults"
and left "broker" out before RabbitMQ ran; version 2 adds "schema_version" and the
optional "faults" rows. Readers (bench/guide.py, bench/compare.py) go through `cells`,
which gives every summary row its broker, its bare mode and its config, so that a cell
of one file meets the same cell of another."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

VERSION = 2
VERSIONS = (1, 2)
SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
#: What names one cell of the summary: a row of one file matches the row of another
#: with the same values.
CELL = ("backend", "broker", "workload", "mode", "phase", "config", "offered_rate")
#: ... and one row of "faults".
FAULT_CELL = ("backend", "broker", "mode", "fault")


def version(results: dict[str, Any]) -> int:
    """The file's schema version: 1 when it has none (written before the key existed)."""
    return int(results.get("schema_version", 1))


def load(path: Path) -> dict[str, Any]:
    """A results.json, refused with one line when it is not one this code reads."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable results.json ({exc})") from None
    if not isinstance(results, dict) or "summary" not in results:
        raise ValueError(f"{path}: not a results.json (no \"summary\")")
    if version(results) not in VERSIONS:
        raise ValueError(f"{path}: schema_version {version(results)}; this queuebench reads "
                         f"{', '.join(map(str, VERSIONS))}")
    return results


def json_schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_FILE.read_text()))


def normalised(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row or run with "broker" (default redis), its mode without the config
    suffix, and "config" (default safe): "raw/defaults" is mode raw, config defaults."""
    mode, _, suffix = str(row.get("mode")).partition("/")
    return {**row, "broker": row.get("broker") or "redis", "mode": mode,
            "config": suffix or row.get("config") or "safe"}


def key(row: dict[str, Any], fields: tuple[str, ...] = CELL) -> tuple[Any, ...]:
    return tuple(row.get(f) for f in fields)


@dataclasses.dataclass(frozen=True)
class Spread:
    """A figure over a cell's repeats: the median and, with two repeats or more, the
    lowest and highest (None with one: a single run has no range to overlap)."""

    median: float
    low: float | None = None
    high: float | None = None

    @property
    def ranged(self) -> bool:
        return self.low is not None and self.high is not None

    def overlaps(self, other: Spread) -> bool | None:
        """Whether the two min-max ranges share a point; None when either has none."""
        if not (self.ranged and other.ranged):
            return None
        assert self.low is not None and self.high is not None
        assert other.low is not None and other.high is not None
        return self.low <= other.high and other.low <= self.high


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure of a summary row: a spread of the summary ("throughput_tasks_per_s")
    or a latency percentile ("end_to_end", "p50"), whose range comes from the runs."""

    name: str
    label: str
    higher_is_better: bool
    unit: str
    field: str = ""
    latency: tuple[str, str] | None = None


FIGURES = {f.name: f for f in (
    Figure("throughput", "drain", True, "/s", field="throughput_tasks_per_s"),
    Figure("submit", "submit", True, "/s", field="submit_rps"),
    Figure("e2e_p50", "end-to-end p50", False, " ms", latency=("end_to_end", "p50")),
    Figure("e2e_p95", "end-to-end p95", False, " ms", latency=("end_to_end", "p95")),
    Figure("e2e_p99", "end-to-end p99", False, " ms", latency=("end_to_end", "p99")),
    Figure("wait_p50", "queue wait p50", False, " ms", latency=("queue_wait", "p50")),
)}


class Cells:
    """A results.json's summary rows by cell, each figure with its spread."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in results.get("summary") or []:
            self.rows.setdefault(key(normalised(row)), normalised(row))
        self._runs: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for run in results.get("runs") or []:
            self._runs.setdefault(key(normalised(run)), []).append(run)

    def spread(self, cell: tuple[Any, ...], figure: Figure) -> Spread | None:
        """The figure of a cell; None when the cell or the figure is absent."""
        row = self.rows.get(cell)
        if row is None:
            return None
        if figure.latency is None:
            got = row.get(figure.field) or {}
            if got.get("median") is None:
                return None
            if (row.get("repeats") or 0) < 2:
                return Spread(got["median"])
            return Spread(got["median"], got.get("min"), got.get("max"))
        kind, point = figure.latency
        median = ((row.get("latency_ms") or {}).get(kind) or {}).get(point)
        if median is None:
            return None
        # The summary keeps a latency's median over repeats only; its range is the runs'.
        values = [v for v in (((r.get("latency_ms") or {}).get(kind) or {}).get(point)
                              for r in self._runs.get(cell, [])) if v is not None]
        if len(values) < 2:
            return Spread(median)
        return Spread(median, min(values), max(values))


def faults(results: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The "faults" rows by (backend, broker, mode, fault); none in a version-1 file."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in results.get("faults") or []:
        rows.setdefault(key({**row, "broker": row.get("broker") or "redis"}, FAULT_CELL),
                        {**row, "broker": row.get("broker") or "redis"})
    return rows
