"""An open-loop load generator, free of coordinated omission.

Every submission has an intended time, fixed before the run from the offered rate
(constant spacing, or Poisson arrivals from a seeded generator). A call starts at its
intended time whether or not earlier calls have returned, and its latency counts from
that intended time: a generator or a server that falls behind shows up as latency,
never as fewer samples. A blocking producer (Celery's `apply_async`, Dramatiq's
`send`) runs on a thread pool big enough for the calls in flight, never on the loop
that keeps the schedule.

What the generator itself managed is reported beside what was offered: `lag` (how
late each call really started), `late` (calls that started more than LATE_S after
their intended time: the ones a closed-loop tool would have silently delayed), and
the achieved rate of accepted submissions.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

#: a call that starts this much after its intended time counts as late
LATE_S = 0.010


def schedule(rate: float, count: int, arrivals: str = "constant", seed: int = 0) -> list[float]:
    """Intended start offsets (seconds from the start) of `count` calls at `rate`/s."""
    if rate <= 0 or count < 0:
        raise ValueError("rate must be positive and count at least 0")
    if arrivals == "constant":
        return [i / rate for i in range(count)]
    if arrivals == "poisson":
        rng = random.Random(seed)
        offsets, at = [], 0.0
        for _ in range(count):
            offsets.append(at)
            at += rng.expovariate(rate)
        return offsets
    raise ValueError(f"unknown arrivals {arrivals!r} (constant or poisson)")


@dataclass
class Outcome:
    """One open-loop run: per call, in schedule order."""

    start: float                       # time.time() of offset 0
    offsets: list[float]               # intended offsets
    lag: list[float] = field(default_factory=list)       # actual start - intended, s
    latency: list[float] = field(default_factory=list)   # reply - intended, s
    results: list[Any] = field(default_factory=list)     # the call's value, or its error
    ended: float = 0.0                 # time.time() of the last reply

    @property
    def intended(self) -> list[float]:
        """Intended wall times (time.time()) of the calls."""
        return [self.start + o for o in self.offsets]

    @property
    def failed(self) -> int:
        return sum(isinstance(r, BaseException) for r in self.results)

    @property
    def late(self) -> int:
        return sum(lag > LATE_S for lag in self.lag)

    @property
    def offered_rate(self) -> float | None:
        span = self.offsets[-1] - self.offsets[0] if len(self.offsets) > 1 else 0.0
        return (len(self.offsets) - 1) / span if span > 0 else None

    @property
    def achieved_rate(self) -> float | None:
        """Accepted submissions per second, from the first intended start to the last
        reply: the offered rate when nothing fell behind."""
        ok = len(self.results) - self.failed
        span = self.ended - self.start
        if ok < 2 or span <= 0:
            return None
        # n calls at rate r span (n - 1) / r: count the same way, so a run that keeps
        # its schedule exactly achieves the offered rate.
        return (ok - 1) / span


async def drive(call: Callable[[], Awaitable[Any]], offsets: list[float]) -> Outcome:
    """Start `call()` at each offset from now; never wait for one call before the next."""
    loop = asyncio.get_running_loop()
    n = len(offsets)
    out = Outcome(start=time.time(), offsets=offsets, lag=[0.0] * n, latency=[0.0] * n,
                  results=[None] * n)
    base = time.perf_counter()

    async def one(i: int) -> None:
        out.lag[i] = time.perf_counter() - base - offsets[i]
        try:
            out.results[i] = await call()
        except Exception as exc:  # counted as failed, never a missing sample
            out.results[i] = exc
        out.latency[i] = time.perf_counter() - base - offsets[i]

    running: set[asyncio.Task[None]] = set()
    for i, offset in enumerate(offsets):
        delay = base + offset - time.perf_counter()
        if delay > 0:
            # call_at would be finer, but sleep's granularity (about 1 ms with the
            # default selector) is well inside LATE_S.
            await asyncio.sleep(delay)
        task = loop.create_task(one(i))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)
    out.ended = out.start + (time.perf_counter() - base)
    return out
