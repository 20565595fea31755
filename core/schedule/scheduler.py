"""`queuebench scheduler`: fires the periodic schedule through `TaskBackend.submit`.

No leader, no lease: every scheduler process computes the same ticks
(core/schedule/entries.py) and submits each with the idempotency key of that tick. The
create script (core/store/lua/create.lua) claims the key, creates the record and
queues the message in one step, so however many schedulers run, a tick fires once,
and when one dies the others go on firing without a hand-over. Each fired task's
record names its entry (`schedule`); the same script adds it to the entry's index
`qb:schedule:<name>:tasks` and writes `last_run_at` and `last_task_id` into the
entry's hash `qb:schedule:<name>`, which also holds `paused` and `last_tick` (the
latest tick a scheduler dealt with, from which a restart knows what it missed).

Missed ticks (all schedulers down, a long stall): by default only the latest one
fires, late, once (as Celery beat does); with `catch_up` each fires, oldest first,
at most MAX_CATCH_UP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from core.errors import QueuebenchError
from core.schedule.entries import MAX_CATCH_UP, Entry, Schedule, tick_key
from core.store.keys import SCHEDULE_KEY
from core.store.records import TaskRecord

log = logging.getLogger("queuebench.scheduler")

# The longest the loop sleeps: how soon it sees a pause, a resume or a stop.
MAX_SLEEP = 1.0


class Submitter(Protocol):
    """What the scheduler needs of a backend (TaskBackend has it)."""

    redis: Any

    async def submit(self, name: str, args: list[Any] | None = None,
                     kwargs: dict[str, Any] | None = None, options: Any = None, *,
                     schedule: str | None = None) -> TaskRecord: ...


@dataclass
class EntryState:
    paused: bool = False
    last_tick: float | None = None
    last_run_at: float | None = None
    last_task_id: str | None = None


def _float(value: Any) -> float | None:
    return float(value) if value not in (None, b"", "") else None


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class ScheduleState:
    """Each entry's shared state, in Redis: one hash per entry."""

    FIELDS = ("paused", "last_tick", "last_run_at", "last_task_id")

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def read(self, names: list[str]) -> dict[str, EntryState]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(SCHEDULE_KEY.format(name), *self.FIELDS)
            found = await pipe.execute()
        return {name: EntryState(paused=_text(paused) == "1", last_tick=_float(tick),
                                 last_run_at=_float(run), last_task_id=_text(task_id))
                for name, (paused, tick, run, task_id) in zip(names, found, strict=True)}

    async def dealt_with(self, name: str, tick: float) -> None:
        await self.redis.hset(SCHEDULE_KEY.format(name), "last_tick", repr(tick))

    async def pause(self, name: str, paused: bool) -> None:
        await self.redis.hset(SCHEDULE_KEY.format(name), "paused", "1" if paused else "0")


async def fire(backend: Submitter, entry: Entry, tick: float | None) -> TaskRecord:
    """Submit one tick of `entry`: once per tick whoever else fires it (its
    idempotency key); `tick` None fires now, unkeyed (POST /schedules/{name}/run,
    Celery beat's sends).

    A scheduler stopped mid-send (SIGTERM cancels arq's cron job, taskiq's loop) still
    queues the tick it began: a cancelled submit ends its record FAILURE NotQueued,
    which is right for a client gone away but would fail a tick nobody abandoned."""
    options = entry.options
    if tick is not None:
        options = options.model_copy(update={"idempotency_key": tick_key(entry, tick)})
    sending = asyncio.ensure_future(backend.submit(entry.task, entry.args, entry.kwargs,
                                                   options, schedule=entry.name))
    try:
        return await asyncio.shield(sending)
    except asyncio.CancelledError:
        await asyncio.wait([sending])
        raise


def due(entry: Entry, cursor: float, now: float) -> tuple[list[float], int]:
    """The ticks of `entry` to fire at `now`, the last one dealt with being `cursor`;
    and how many are skipped."""
    limit = MAX_CATCH_UP if entry.catch_up else 1
    ticks = entry.ticks(cursor, now, limit)
    if not ticks:
        return [], 0
    missed = len(entry.ticks(cursor, now, MAX_CATCH_UP + 1)) if not entry.catch_up else 0
    return ticks, max(0, missed - len(ticks))


class Scheduler:
    """Fires `schedule` through `backend`. `clock` (wall-clock seconds) is injectable
    for tests; `run_pending(now)` is one pass."""

    def __init__(self, backend: Submitter, schedule: Schedule, *,
                 state: ScheduleState | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.schedule = schedule
        self.state = state or ScheduleState(backend.redis)
        self.clock = clock
        self.cursors: dict[str, float] = {}
        self.fired = 0

    async def start(self, now: float | None = None) -> None:
        """Pick up where the schedulers before left off: each entry's last tick dealt
        with (shared in Redis); an entry never run starts now, with nothing missed."""
        now = self.clock() if now is None else now
        found = await self.state.read(list(self.schedule))
        for name in self.schedule:
            last = found[name].last_tick
            self.cursors[name] = now if last is None else min(last, now)

    async def run_pending(self, now: float | None = None) -> list[TaskRecord]:
        """Fire what is due at `now`; the records that stand for the ticks fired."""
        now = self.clock() if now is None else now
        states = await self.state.read(list(self.schedule))
        fired: list[TaskRecord] = []
        for name, entry in self.schedule.items():
            cursor = self.cursors.get(name, now)
            ticks, skipped = due(entry, cursor, now)
            if not ticks:
                continue
            if states[name].paused:
                log.debug("%s: paused, tick %s not fired", name, ticks[-1])
            else:
                if skipped:
                    log.info("%s: %d missed tick(s) skipped (catch_up is off)", name, skipped)
                for tick in ticks:
                    fired.append(await self._fire(entry, tick, now))
            self.cursors[name] = ticks[-1]
            await self.state.dealt_with(name, ticks[-1])
        return fired

    async def _fire(self, entry: Entry, tick: float, now: float) -> TaskRecord:
        record = await fire(self.backend, entry, tick)
        self.fired += 1
        log.info("%s: tick %.3f fired %s %s (%.3fs late)", entry.name, tick, entry.task,
                 record.id, now - tick)
        return record

    def next_wake(self, now: float) -> float:
        """Seconds until the next tick of any entry, at most MAX_SLEEP."""
        if not self.schedule:
            return MAX_SLEEP
        soonest = min(entry.next_after(now) for entry in self.schedule.values())
        return max(0.0, min(MAX_SLEEP, soonest - now))

    async def run(self, stop: asyncio.Event) -> None:
        """Fire the schedule until `stop` is set. A Redis or submit failure is logged
        and tried again on the next pass; the ticks it missed follow the entry's
        catch-up policy."""
        while True:
            try:
                await self.start()
                break
            except RedisError as exc:
                log.warning("scheduler: redis: %s; trying again in 1 s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if stop.is_set():
                    return
        log.info("scheduler: %d entr%s: %s", len(self.schedule),
                 "y" if len(self.schedule) == 1 else "ies",
                 "; ".join(f"{e.name} ({e.task}, {e.when})" for e in self.schedule.values()))
        while not stop.is_set():
            try:
                await self.run_pending()
            except (RedisError, QueuebenchError, OSError) as exc:
                log.warning("scheduler: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.next_wake(self.clock()))


def run_scheduler(settings: Any, backend_cls: Callable[[Any], Any], schedule: Schedule) -> None:
    """`queuebench scheduler`: core's scheduler on `backend_cls`, until SIGTERM or SIGINT."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        backend = backend_cls(settings)
        try:
            await Scheduler(backend, schedule).run(stop)
        finally:
            await backend.aclose()

    asyncio.run(main())
    log.info("scheduler: stopped")
