"""Hand-made results.json pieces for the guide, compare and schema tests: a summary row
with the figures a test names, the runs behind a latency range, and a faults row."""

from __future__ import annotations

from typing import Any

Range = tuple[float, float, float]  # median, min, max


def spread(figures: Range | None) -> dict[str, float | None]:
    if figures is None:
        return {"median": None, "min": None, "max": None}
    median, low, high = figures
    return {"median": median, "min": low, "max": high}


def row(backend: str, *, broker: str = "redis", workload: str = "noop", mode: str = "raw",
        phase: str = "burst", rate: float | None = None, drain: Range | None = None,
        submit: Range | None = None, e2e_p50: float | None = None, repeats: int = 3,
        config: str | None = None) -> dict[str, Any]:
    """A summary row as bench/stats.py writes it (config only when given)."""
    out: dict[str, Any] = {
        "backend": backend, "broker": broker, "workload": workload, "mode": mode,
        "phase": phase, "repeats": repeats, "throughput_tasks_per_s": spread(drain),
        "submit_rps": spread(submit),
        "latency_ms": {} if e2e_p50 is None else
        {"end_to_end": {"p50": e2e_p50, "p95": e2e_p50 * 2, "p99": e2e_p50 * 3}},
        "errors": 0, "lost": 0, "tasks": 3000 * repeats, "offered_rate": rate}
    if config is not None:
        out["config"] = config
    return out


def runs(summary_row: dict[str, Any], e2e_p50s: list[float]) -> list[dict[str, Any]]:
    """The repeats behind a row, one a p50: where a latency's min-max range comes from."""
    keys = ("backend", "broker", "workload", "mode", "phase", "offered_rate")
    return [{**{k: summary_row[k] for k in keys}, "repeat": i, "round": i, "tasks": 3000,
             "submit_rps": 1000.0, "throughput_tasks_per_s": 1000.0, "errors": 0, "lost": 0,
             "latency_ms": {"end_to_end": {"p50": p50, "p95": p50 * 2, "p99": p50 * 3}}}
            for i, p50 in enumerate(e2e_p50s)]


def fault(backend: str, fault_name: str, *, lost: int = 0, run_twice: int = 0,
          broker: str = "redis", mode: str = "queuebench", tasks: int = 200,
          error: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "backend": backend, "broker": broker, "mode": mode, "fault": fault_name,
        "tasks": tasks, "finished": tasks - lost, "lost": lost, "run_twice": run_twice,
        "recovery_s": 1.5, "deadline_s": 60.0, "note": "", "settings": "",
        "seconds": 30.0}
    if error is not None:
        out["error"] = error
    return out


def results(summary: list[dict[str, Any]], *, run_rows: list[dict[str, Any]] | None = None,
            faults: list[dict[str, Any]] | None = None, version: int | None = 2
            ) -> dict[str, Any]:
    """A whole results.json; version None: a version-1 file (no schema_version)."""
    out: dict[str, Any] = {
        "meta": {"started": "2026-12-04T22:43:36+00:00", "profile": "quick",
                 "command": "queuebench bench", "machine": {}, "versions": {},
                 "settings": {}},
        "runs": run_rows or [], "failures": [], "summary": summary, "ratios": [],
        "overhead": [], "saturation": []}
    if version is not None:
        out = {"schema_version": version, **out}
    if faults is not None:
        out["faults"] = faults
    return out
