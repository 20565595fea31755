"""The benchmark's open-loop generator (bench/openloop.py): intended times fixed in
advance, calls that never wait for each other, latency counted from the intended time,
and lateness (coordinated omission) counted rather than hidden. No assertion here
depends on the machine being fast: each bound holds however slow it is."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import pytest

from bench import openloop
from bench.session import limited_by


def test_a_constant_schedule_is_evenly_spaced() -> None:
    assert openloop.schedule(4.0, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert openloop.schedule(1000.0, 0) == []


def test_a_poisson_schedule_is_seeded_and_averages_the_rate() -> None:
    first = openloop.schedule(500.0, 20_000, "poisson", seed=7)
    assert first == openloop.schedule(500.0, 20_000, "poisson", seed=7)
    assert first != openloop.schedule(500.0, 20_000, "poisson", seed=8)
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert all(g >= 0 for g in gaps)
    assert statistics.fmean(gaps) == pytest.approx(1 / 500, rel=0.03)
    # exponential gaps: their spread is their mean (a constant schedule's is 0)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 500, rel=0.05)


def test_a_bad_schedule_is_refused() -> None:
    for rate, count, arrivals in ((0, 5, "constant"), (10, -1, "constant"), (10, 5, "burst")):
        with pytest.raises(ValueError):
            openloop.schedule(rate, count, arrivals)


async def test_calls_start_on_schedule_without_waiting_for_earlier_replies() -> None:
    """Every call blocks until the LAST one has started: a closed-loop generator, which
    waits for a reply before it sends again, would never finish this."""
    n = 20
    started = 0
    everyone_in = asyncio.Event()

    async def call() -> int:
        nonlocal started
        started += 1
        if started == n:
            everyone_in.set()
        await everyone_in.wait()
        return started

    offsets = openloop.schedule(200.0, n)
    out = await asyncio.wait_for(openloop.drive(call, offsets), timeout=30)
    assert out.results == [n] * n and out.failed == 0
    assert out.intended == [out.start + o for o in offsets]
    # latency counts from the intended time: the first call waited at least until the
    # last one's intended time
    assert out.latency[0] >= offsets[-1] - offsets[0]
    assert all(lat >= lag for lat, lag in zip(out.latency, out.lag, strict=True))


async def test_a_generator_that_falls_behind_counts_it() -> None:
    """A blocking producer run on the loop (what the harness must never do) holds every
    later call back: each such call is counted late, and the achieved rate shows it."""
    def blocking() -> None:
        time.sleep(0.02)  # 20 ms on the loop, at 1 ms intervals

    async def call() -> None:
        blocking()

    n = 20
    out = await openloop.drive(call, openloop.schedule(1000.0, n))
    # call i cannot start before i * 20 ms, yet was intended at i * 1 ms
    assert all(out.lag[i] >= i * 0.019 for i in range(n))
    assert out.late >= n - 1
    assert out.offered_rate == pytest.approx(1000.0)
    assert out.achieved_rate is not None and out.achieved_rate < 0.1 * out.offered_rate


async def test_failed_calls_are_counted_not_dropped() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise RuntimeError("503")
        return "ok"

    out = await openloop.drive(call, openloop.schedule(1000.0, 10))
    assert len(out.results) == 10 and out.failed == 5


def test_what_limited_a_sustained_run_is_named() -> None:
    def run(achieved: float, late: int, done: float) -> dict:  # type: ignore[type-arg]
        return {"offered_rate": 100.0, "tasks": 200, "throughput_tasks_per_s": done,
                "generator": {"achieved_rate": achieved, "late": late}}

    assert limited_by(run(99.0, 0, 98.0)) is None
    assert limited_by(run(50.0, 150, 49.0)) == "submit"     # accepted far below offered
    assert limited_by(run(99.0, 10, 98.0)) == "generator"   # on rate, but late starts
    assert limited_by(run(99.0, 2, 98.0)) is None           # 1% late is tolerated
    assert limited_by(run(99.0, 0, 60.0)) == "workers"      # submitted, not completed


def test_a_burst_drains_from_when_every_worker_process_is_ready() -> None:
    from bench.session import _throughput, readiness

    # process "a" from t=0; "b" finishes its first task at t=2: the barrier
    ok = [(True, 0.0, t / 10, "a") for t in range(1, 41)] + \
        [(True, 0.0, 2.0 + t / 10, "b") for t in range(20)]
    ready = readiness(ok, processes=2)
    assert ready["at"] == 2.0 and ready["workers_seen"] == 2 and ready["used"]
    assert ready["before"] == sum(end <= 2.0 for _, _, end, _ in ok)
    # counted from the barrier on: completions after t=2, over the time after it
    after = [end for _, _, end, _ in ok if end > 2.0]
    assert _throughput([(0.0, 0.0, e) for _, _, e, _ in ok], "burst", ready) == \
        pytest.approx(len(after) / (max(after) - 2.0))
    # one process never ran a task: no barrier, the first 5% are skipped instead
    alone = readiness(ok[:40], processes=2)
    assert alone["at"] is None and not alone["used"]
    # a process ready only at the very end: too late to use
    late = readiness([*ok[:40], (True, 0.0, 4.05, "b")], processes=2)
    assert late["at"] == 4.05 and not late["used"]
