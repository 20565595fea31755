"""Live updates: one `qb:events` subscription per API process, fanned out to every
open dashboard (server-sent events), and the recent activity the charts draw.

Each client gets at most one message every BATCH seconds, holding the ids that
changed since its last one and the charts' series: a burst of thousands of events
is a few small messages, and nothing reads Redis on a timer. The activity window
holds what this process saw since its first dashboard client; the counters that
survive restarts are /metrics'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from core.states import TaskState
from core.store.keys import EVENTS_CHANNEL

log = logging.getLogger("queuebench.dashboard")

BATCH = 0.4  # seconds between two messages to one client, at most
TICK = 2.0  # seconds between messages when nothing happens (the charts move on)
WINDOW = 300  # seconds of activity kept
STEP = 5  # seconds per chart point
SAMPLES = 500  # latencies kept per second (a uniform sample beyond)
STATES = [s.value for s in TaskState]


@dataclass
class Second:
    states: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # final events with a latency, sampled or not


class Activity:
    """Events per second by state, and end-to-end latencies (submitted to final)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.seconds: deque[tuple[int, Second]] = deque()

    def add(self, event: dict[str, Any], now: float | None = None) -> None:
        second = int(time.time() if now is None else now)
        if not self.seconds or self.seconds[-1][0] < second:
            self.seconds.append((second, Second()))
            while self.seconds[0][0] <= second - self.window:
                self.seconds.popleft()
        bucket = self.seconds[-1][1]
        bucket.states[event.get("state", "")] += 1
        latency = event.get("latency")
        if isinstance(latency, int | float):
            bucket.seen += 1
            if len(bucket.latencies) < SAMPLES:
                bucket.latencies.append(float(latency))
            elif (slot := random.randrange(bucket.seen)) < SAMPLES:  # reservoir sample
                bucket.latencies[slot] = float(latency)

    def series(self, now: float | None = None, step: int = STEP) -> dict[str, Any]:
        """Chart points, oldest first, one per `step` seconds over the window:
        `t` (their start, epoch seconds), tasks/s per state, latency p50/p95/p99 (s)."""
        end = int(time.time() if now is None else now) // step * step + step
        points = self.window // step
        start = end - points * step
        rates = {state: [0.0] * points for state in STATES}
        samples: list[list[float]] = [[] for _ in range(points)]
        for second, bucket in self.seconds:
            if start <= second < end:
                i = (second - start) // step
                for state, n in bucket.states.items():
                    if state in rates:
                        rates[state][i] += n / step
                samples[i] += bucket.latencies
        return {"t": [start + i * step for i in range(points)], "step": step,
                "rates": {s: [round(r, 2) for r in v] for s, v in rates.items() if any(v)},
                "latency": {f"p{q}": [percentile(s, q) for s in samples] for q in (50, 95, 99)}}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 4)


class _Client:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.wake = asyncio.Event()


class LiveHub:
    """The process's one subscription; `stream()` is one client's SSE body."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.activity = Activity()
        self._clients: set[_Client] = set()
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # subscribed
        self._closing = asyncio.Event()
        self._chart: tuple[float, dict[str, Any]] = (0.0, {})

    def start(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
            _end_streams_on_exit(self)

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(EVENTS_CHANNEL)
                    self._ready.set()
                    async for message in pubsub.listen():
                        self._dispatch(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: subscribe again
                self._ready.clear()
                log.warning("dashboard events: %s; subscribing again in 1 s", exc)
                await asyncio.sleep(1)

    def _dispatch(self, event: dict[str, Any]) -> None:
        self.activity.add(event)
        for client in self._clients:
            client.ids.add(event.get("id", ""))
            client.wake.set()

    def chart(self) -> dict[str, Any]:
        """The charts' series, computed at most once per BATCH for all clients."""
        made, series = self._chart
        if time.monotonic() - made >= BATCH:
            series = self.activity.series()
            self._chart = (time.monotonic(), series)
        return series

    async def stream(self) -> AsyncIterator[str]:
        """One client's SSE body. The client is subscribed once this returns: a page
        that fetches its live part when the stream opens misses no change."""
        self.start()
        with contextlib.suppress(TimeoutError):  # Redis away: the stream says nothing
            await asyncio.wait_for(self._ready.wait(), 5)
        client = _Client()
        self._clients.add(client)
        return self._messages(client)

    async def _messages(self, client: _Client) -> AsyncIterator[str]:
        try:
            yield "retry: 1000\n\n"
            while not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.wake.wait(), TICK)
                client.wake.clear()
                ids, client.ids = client.ids, set()
                yield f"data: {json.dumps({'ids': sorted(ids), 'chart': self.chart()})}\n\n"
                with contextlib.suppress(TimeoutError):  # gather the next batch
                    await asyncio.wait_for(self._closing.wait(), BATCH)
        finally:
            self._clients.discard(client)

    def close_streams(self) -> None:
        self._closing.set()
        for client in self._clients:
            client.wake.set()

    async def aclose(self) -> None:
        self.close_streams()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener


def _end_streams_on_exit(hub: LiveHub) -> None:
    """uvicorn waits for open responses before it shuts down, and an event stream never
    ends on its own: end them when uvicorn's signal comes (its handler still runs)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous) or getattr(previous, "_qb_streams", False):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(hub.close_streams)
            previous(signum, frame)

        handler._qb_streams = True  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError):  # not the main thread: nothing to do
            signal.signal(sig, handler)
