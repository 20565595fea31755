"""The benchmark's maths: percentiles of one run, and the summary, ratios, overhead
against targets and saturation points over many runs (the `runs` list of results.json).

Plain functions over plain dicts so that results.json round-trips through them; any
figure may be None and is then left out, never counted as zero."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

PERCENTILES = ("p50", "p95", "p99")
LATENCY_KINDS = ("submit", "queue_wait", "end_to_end")
# A sustained rate counts as kept up with when the queue finishes this share of it.
SUSTAINED_SHARE = 0.95
#: Issue 9's targets for queuebench's overhead on noop (results.json "overhead"): the
#: least each ratio may be. Submit rates are of the burst (no worker running);
#: drains are burst throughput; the ceiling is Locust on a bare FastAPI + LPUSH.
OVERHEAD_TARGETS = {
    "direct_submit_vs_raw": 1.0,     # Backend.submit against the library's own client
    "batch_submit_vs_raw": 2.0,      # Backend.submit_many against the same
    "http_submit_vs_ceiling": 0.70,  # the API's submit against the bare endpoint
    "direct_vs_raw": 0.95,           # direct drain against raw drain
    "http_vs_raw": 0.90,             # end to end through the API against raw
}
#: ... and sustained end-to-end p50, direct, at most this factor of raw's plus this slack.
E2E_P50_FACTOR = 1.2
E2E_P50_SLACK_MS = 1.0


def _quantiles(values: Sequence[float], points: int = 101) -> list[float]:
    """The quantiles at `points` evenly spaced probabilities from 0 to 1, interpolated
    linearly between closest ranks.

    statistics.quantiles(method="inclusive") is numpy's default "linear" method; it
    needs two points on 3.11, and a single value is its own every quantile."""
    if points < 2:
        raise ValueError(f"a CDF needs at least 2 points, not {points}")
    data = sorted(float(v) for v in values)
    if len(data) == 1:
        return data * points
    inner = statistics.quantiles(data, n=points - 1, method="inclusive") if points > 2 else []
    return [data[0], *inner, data[-1]]


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    """p50, p95, p99, max, mean and count of one run's samples; all None when empty."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None, "count": 0}
    cuts = _quantiles(values)
    return {"p50": cuts[50], "p95": cuts[95], "p99": cuts[99], "max": cuts[100],
            "mean": statistics.fmean(values), "count": len(values)}


def cdf_points(values: Sequence[float], points: int = 101) -> list[float]:
    """The quantiles at evenly spaced probabilities from 0 to 1 (101 points: every
    percent), a CDF chart's y being index / (points - 1); [] when empty."""
    return _quantiles(values, points) if values else []


def _present(values: Iterable[Any]) -> list[float]:
    return [v for v in values if v is not None]


def _median(values: Iterable[Any]) -> float | None:
    present = _present(values)
    return statistics.median(present) if present else None


def _spread(values: Iterable[Any]) -> dict[str, float | None]:
    present = _present(values)
    if not present:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def _total(values: Iterable[Any]) -> float | None:
    present = _present(values)
    return sum(present) if present else None


def _latency(run: dict[str, Any], kind: str, name: str) -> Any:
    return ((run.get("latency_ms") or {}).get(kind) or {}).get(name)


def _group(runs: Iterable[dict[str, Any]], fields: Sequence[str]) -> dict[tuple, list[dict]]:
    # dicts keep insertion order, so groups come out in order of first appearance.
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run.get(f) for f in fields), []).append(run)
    return groups


def broker_of(row: dict[str, Any]) -> str:
    """The broker a run or row used: Redis unless it says otherwise (older results)."""
    return str(row.get("broker") or "redis")


def queue_label(row: dict[str, Any]) -> str:
    """The backend, and its broker when not Redis: "celery on rabbitmq"."""
    backend, broker = str(row.get("backend")), broker_of(row)
    return backend if broker == "redis" else f"{backend} on {broker}"


def _brokered(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "broker": broker_of(r)} for r in runs]


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (backend, broker, workload, mode, phase, offered_rate): the repeats' median,
    min and max of throughput and submit rate, the median of each latency percentile,
    and the sums of errors, lost and tasks.

    offered_rate is part of the group so that a sustained sweep gives one row per rate
    instead of a median over different loads; burst runs (rate None) group as one."""
    keys = ("backend", "broker", "workload", "mode", "phase", "offered_rate")
    summary = []
    for key, group in _group(_brokered(runs), keys).items():
        kinds = [k for k in LATENCY_KINDS if any(_latency(r, k, "p50") is not None
                                                 or _latency(r, k, "p95") is not None
                                                 or _latency(r, k, "p99") is not None
                                                 for r in group)]
        summary.append({
            **dict(zip(keys[:5], key[:5], strict=True)),
            "repeats": len(group),
            "throughput_tasks_per_s": _spread(r.get("throughput_tasks_per_s") for r in group),
            "submit_rps": _spread(r.get("submit_rps") for r in group),
            "latency_ms": {k: {p: _median(_latency(r, k, p) for r in group) for p in PERCENTILES}
                           for k in kinds},
            "errors": _total(r.get("errors") for r in group),
            "lost": _total(r.get("lost") for r in group),
            "tasks": _total(r.get("tasks") for r in group),
            "offered_rate": _median(r.get("offered_rate") for r in group),
        })
    return summary


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def _figure(row: dict[str, Any] | None, figure: str) -> float | None:
    return ((row or {}).get(figure) or {}).get("median")


def _ceiling(summary: list[dict[str, Any]], workload: Any) -> dict[str, Any] | None:
    """The load generator's own submit ceiling: the row of the same workload first, then
    any (the ceiling is measured once, usually on noop); burst rows before others."""
    rows = [r for r in summary if r.get("backend") == "ceiling" and r.get("mode") == "ceiling"]
    rows.sort(key=lambda r: (r.get("workload") != workload, r.get("phase") != "burst"))
    return rows[0] if rows else None


def ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (backend, broker, workload) in the burst phase: direct and http throughput over raw,
    and the http submit rate over the load generator's ceiling. Missing parts: None."""
    burst = [r for r in summary if r.get("phase") == "burst" and r.get("backend") != "ceiling"]
    result = []
    for (backend, broker, workload), rows in _group(_brokered(burst),
                                                    ("backend", "broker", "workload")).items():
        by_mode: dict[Any, dict[str, Any]] = {}
        for row in rows:
            by_mode.setdefault(row.get("mode"), row)
        raw = _figure(by_mode.get("raw"), "throughput_tasks_per_s")
        ceiling = _figure(_ceiling(summary, workload), "submit_rps")
        result.append({
            "backend": backend,
            "broker": broker,
            "workload": workload,
            "direct_vs_raw": _ratio(_figure(by_mode.get("direct"), "throughput_tasks_per_s"), raw),
            "http_vs_raw": _ratio(_figure(by_mode.get("http"), "throughput_tasks_per_s"), raw),
            "http_submit_vs_ceiling": _ratio(_figure(by_mode.get("http"), "submit_rps"), ceiling),
        })
    return result


def _e2e_p50(summary: list[dict[str, Any]], backend: Any, broker: str, workload: Any
             ) -> tuple[float | None, float | None, float | None]:
    """(rate, raw p50, direct p50) of sustained end-to-end latency at the lowest offered
    rate both modes ran: the lightest load, where latency is overhead, not queueing."""
    p50: dict[tuple[Any, Any], Any] = {}
    for row in summary:
        if (row.get("backend"), broker_of(row), row.get("workload"), row.get("phase")) == \
                (backend, broker, workload, "sustained"):
            p50[(row.get("mode"), row.get("offered_rate"))] = \
                ((row.get("latency_ms") or {}).get("end_to_end") or {}).get("p50")
    rates = sorted(({rate for mode, rate in p50 if mode == "raw"}
                    & {rate for mode, rate in p50 if mode == "direct"}) - {None})
    if not rates:
        return None, None, None
    return rates[0], p50[("raw", rates[0])], p50[("direct", rates[0])]


def overhead(summary: list[dict[str, Any]], workload: str = "noop") -> list[dict[str, Any]]:
    """Per backend, on `workload`: queuebench's cost against the library alone, each
    ratio of OVERHEAD_TARGETS, and sustained end-to-end p50 (direct against raw), with
    `met` per target: True, False, or None when a figure is missing."""
    burst = [r for r in summary if r.get("phase") == "burst" and r.get("workload") == workload
             and r.get("backend") != "ceiling"]
    ceiling = _figure(_ceiling(summary, workload), "submit_rps")
    result = []
    for (backend, broker), rows in _group(_brokered(burst), ("backend", "broker")).items():
        # The first row of each mode: (figure name -> its median).
        modes: dict[Any, dict[str, float | None]] = {}
        for row in rows:
            modes.setdefault(row.get("mode"), {
                "submit": _figure(row, "submit_rps"),
                "drain": _figure(row, "throughput_tasks_per_s")})
        raw, direct, batch, http = (modes.get(m, {}) for m in ("raw", "direct", "batch", "http"))
        ratios = {
            "direct_submit_vs_raw": _ratio(direct.get("submit"), raw.get("submit")),
            "batch_submit_vs_raw": _ratio(batch.get("submit"), raw.get("submit")),
            "http_submit_vs_ceiling": _ratio(http.get("submit"), ceiling),
            "direct_vs_raw": _ratio(direct.get("drain"), raw.get("drain")),
            "http_vs_raw": _ratio(http.get("drain"), raw.get("drain")),
        }
        rate, raw_p50, direct_p50 = _e2e_p50(summary, backend, broker, workload)
        limit = None if raw_p50 is None else E2E_P50_FACTOR * raw_p50 + E2E_P50_SLACK_MS
        met = {name: None if value is None else value >= OVERHEAD_TARGETS[name]
               for name, value in ratios.items()}
        met["e2e_p50"] = None if limit is None or direct_p50 is None else direct_p50 <= limit
        result.append({
            "backend": backend, "broker": broker, "workload": workload,
            "raw_submit_rps": raw.get("submit"), "direct_submit_rps": direct.get("submit"),
            "batch_submit_rps": batch.get("submit"), "ceiling_submit_rps": ceiling,
            **ratios,
            "sustained_rate": rate, "raw_e2e_p50_ms": raw_p50,
            "direct_e2e_p50_ms": direct_p50, "e2e_p50_limit_ms": limit,
            "met": met,
        })
    return result


def saturation(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (backend, broker, mode, workload) of the sustained sweep: every offered rate with the
    repeats' median achieved throughput and median p95 end-to-end latency, and the highest
    rate the queue kept up with (achieved >= 95% of offered and nothing lost)."""
    sustained = [r for r in runs
                 if r.get("phase") == "sustained" and r.get("offered_rate") is not None]
    result = []
    for (backend, broker, mode, workload), group in _group(
            _brokered(sustained), ("backend", "broker", "mode", "workload")).items():
        points = []
        best: float | None = None
        for (rate,), at_rate in sorted(_group(group, ("offered_rate",)).items()):
            achieved = _median(r.get("throughput_tasks_per_s") for r in at_rate)
            p95 = _median(_latency(r, "end_to_end", "p95") for r in at_rate)
            points.append((rate, achieved, p95))
            lost = _total(r.get("lost") for r in at_rate) or 0
            if achieved is not None and achieved >= SUSTAINED_SHARE * rate and lost == 0:
                best = rate
        result.append({"backend": backend, "broker": broker, "mode": mode,
                       "workload": workload, "max_sustained_rate": best, "points": points})
    return result


def _ranked(rows: list[dict[str, Any]]) -> str:
    """Backends fastest first by median drain, "(within noise)" where a backend's
    min-max range overlaps the next one's."""
    rows = sorted(rows, key=lambda r: -(r["throughput_tasks_per_s"]["median"] or 0))
    parts = []
    for i, row in enumerate(rows):
        spread = row["throughput_tasks_per_s"]
        text = f"{queue_label(row)} {spread['median']:,.0f}/s"
        after = rows[i + 1]["throughput_tasks_per_s"] if i + 1 < len(rows) else None
        if after is not None and after["max"] is not None and spread["min"] is not None \
                and spread["min"] <= after["max"]:
            text += f" (within noise of {queue_label(rows[i + 1])})"
        parts.append(text)
    return ", then ".join(parts)


def findings(summary: list[dict[str, Any]], sat: list[dict[str, Any]]) -> list[str]:
    """The answers a reader comes for, in sentences computed from the run (never
    written by hand): per workload, who drains fastest (the library alone, and through
    queuebench), who has the lowest end-to-end latency at the lightest load every
    backend ran, and where each saturates."""
    out: list[str] = []
    for workload in sorted({r.get("workload") for r in summary if r.get("backend") != "ceiling"}):
        rows = [r for r in summary if r.get("workload") == workload and r.get("phase") == "burst"
                and (r.get("throughput_tasks_per_s") or {}).get("median")]
        for mode, label in (("raw", "the library alone"), ("direct", "through queuebench")):
            ranked = [r for r in rows if r.get("mode") == mode]
            if ranked:
                out.append(f"{workload}, drain, {label}: {_ranked(ranked)}.")
        sustained = [r for r in summary if r.get("workload") == workload
                     and r.get("phase") == "sustained" and r.get("mode") == "raw"]
        backends = {queue_label(r) for r in sustained}
        rates = sorted(rate for rate in {r.get("offered_rate") for r in sustained}
                       if rate is not None and
                       {queue_label(r) for r in sustained if r.get("offered_rate") == rate}
                       == backends)
        if rates:
            at = [(_latency(r, "end_to_end", "p50"), queue_label(r)) for r in sustained
                  if r.get("offered_rate") == rates[0]]
            at = sorted((p50, b) for p50, b in at if p50 is not None)
            if at:
                out.append(f"{workload}, end-to-end p50 at {rates[0]:,.0f}/s, the library "
                           "alone: " + ", ".join(f"{b} {p:,.1f} ms" for p, b in at) + ".")
        kept = sorted((s for s in sat if s.get("workload") == workload
                       and s.get("mode") == "raw"),
                      key=lambda s: -(s.get("max_sustained_rate") or 0))
        if kept:
            said = [f"{queue_label(s)} {s['max_sustained_rate']:,.0f}/s"
                    if s.get("max_sustained_rate") else f"{queue_label(s)} none offered"
                    for s in kept]
            out.append(f"{workload}, highest rate kept up with (95% achieved, none lost), "
                       f"the library alone: {', '.join(said)}.")
    return out
