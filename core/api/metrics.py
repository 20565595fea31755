"""`GET /metrics`: the whole system in one scrape, read from Redis.

The counters and histograms live in one hash, `qb:metrics`, that the record scripts
(core/store/records.py) update as each task moves: whatever process submitted or ran a
task, and across restarts of any of them, the numbers are exact and one scrape of
any API process sees them all. Queue depths come from each library's own structures
(`TaskBackend.queue_depths`), live workers from the heartbeats (core/worker/heartbeat.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.asyncio import Redis

from core.store.keys import METRIC_BOUNDS, METRICS_KEY
from core.store.records import as_str
from core.store.workers import workers

Labels = tuple[str, ...]


@dataclass
class Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(METRIC_BOUNDS) + 1))
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus's buckets: (le, observations at or below it), +Inf last."""
        out, total = [], 0
        for bound, n in zip([*map(str, METRIC_BOUNDS), "+Inf"], self.buckets, strict=True):
            total += n
            out.append((bound, total))
        return out


@dataclass
class Counts:
    """`qb:metrics` read once: labels are (task, backend) and (task, backend, state)."""

    submitted: dict[Labels, int] = field(default_factory=dict)
    finished: dict[Labels, int] = field(default_factory=dict)
    runtime: dict[Labels, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    queue_wait: dict[Labels, Histogram] = field(default_factory=lambda: defaultdict(Histogram))

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> Counts:
        counts = cls()
        for key, value in raw.items():
            kind, *labels = as_str(key).split("|")
            if kind == "s" and len(labels) == 2:
                counts.submitted[tuple(labels)] = int(value)
            elif kind == "f" and len(labels) == 3:
                counts.finished[tuple(labels)] = int(value)
            elif kind in ("r", "w") and len(labels) == 3:
                histogram = (counts.runtime if kind == "r" else counts.queue_wait)[
                    (labels[0], labels[1])]
                if labels[2] == "sum":
                    histogram.sum = float(value)
                elif labels[2].isdigit() and 1 <= int(labels[2]) <= len(histogram.buckets):
                    histogram.buckets[int(labels[2]) - 1] = int(value)
        return counts

    def by_state(self) -> dict[str, int]:
        """Finished tasks per state, over every task and backend."""
        out: dict[str, int] = defaultdict(int)
        for (_, _, state), n in self.finished.items():
            out[state] += n
        return dict(out)


async def read_counts(redis: Redis) -> Counts:
    return Counts.parse(await redis.hgetall(METRICS_KEY))


async def live_worker_counts(redis: Redis, interval: float) -> dict[str, int]:
    """`queuebench worker` processes per backend that beat within three intervals."""
    out: dict[str, int] = defaultdict(int)
    for w in await workers(redis, alive_within=interval * 3):
        if w.get("role") == "worker":
            out[str(w.get("backend", ""))] += 1
    return dict(out)


def families(counts: Counts, depths: dict[str, int], backend: str,
             live: dict[str, int]) -> Iterator[Metric]:
    submitted = CounterMetricFamily("queuebench_tasks_submitted", "Tasks submitted",
                                    labels=["task", "backend"])
    for labels, n in sorted(counts.submitted.items()):
        submitted.add_metric(labels, n)
    yield submitted
    finished = CounterMetricFamily("queuebench_tasks_finished",
                                   "Tasks that reached a final state",
                                   labels=["task", "backend", "state"])
    for labels, n in sorted(counts.finished.items()):
        finished.add_metric(labels, n)
    yield finished
    for name, doc, series in (
        ("queuebench_task_runtime_seconds", "Run time of each run (started to its end)",
         counts.runtime),
        ("queuebench_task_queue_wait_seconds", "Queue wait (submitted to started)",
         counts.queue_wait),
    ):
        histogram = HistogramMetricFamily(name, doc, labels=["task", "backend"])
        for labels, h in sorted(series.items()):
            histogram.add_metric(labels, h.cumulative(), h.sum)
        yield histogram
    depth = GaugeMetricFamily("queuebench_queue_depth",
                              "Messages waiting in the queue, read from the library's own "
                              "structures", labels=["queue", "backend"])
    for queue, n in sorted(depths.items()):
        depth.add_metric([queue, backend], n)
    yield depth
    alive = GaugeMetricFamily("queuebench_workers", "Live worker processes (heartbeats)",
                              labels=["backend"])
    for name, n in sorted({backend: 0, **live}.items()):
        alive.add_metric([name], n)
    yield alive


class _Snapshot:
    """A collector of families read beforehand (Redis is asyncio; collect() is not)."""

    def __init__(self, found: Iterable[Metric]) -> None:
        self.found = list(found)

    def collect(self) -> Iterator[Metric]:
        return iter(self.found)


def render(found: Iterable[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(found))  # type: ignore[arg-type]
    return generate_latest(registry)


async def scrape(backend: Any) -> bytes:
    """The Prometheus text of the system `backend` (a TaskBackend) is part of."""
    counts = await read_counts(backend.redis)
    depths = await backend.queue_depths()
    live = await live_worker_counts(backend.redis, backend.settings.worker_heartbeat)
    return render(families(counts, depths, backend.name, live))


__all__ = ["Counts", "Histogram", "read_counts", "render", "scrape"]
