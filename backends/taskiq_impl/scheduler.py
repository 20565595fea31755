"""taskiq's own scheduler, fed from core's schedule (`queuebench scheduler --native`).

taskiq's `TaskiqScheduler` and its `SchedulerLoop`, run by taskiq's `run_scheduler`
as `taskiq scheduler` runs them, read one schedule source of ours (`EntrySource`):
each entry of core's schedule as a taskiq `ScheduledTask`, its `schedule_id` the
entry's name; an interval as taskiq's `interval` (whole seconds), a crontab as its
`cron` with `cron_offset` the entry's time zone. taskiq's loop decides when; the
scheduler's `on_ready` (`CoreScheduler`) fires the entry through core's `fire` with
the tick the send stands for, so the task gets its record and runs on the ordinary
workers, and honours the entry's pause (GET/POST /schedules) as core's scheduler does.

taskiq's rule is to run exactly ONE `taskiq scheduler`: two send every task twice,
having no shared state. Here the idempotency key of the tick (`sched:<entry>:<tick
ms>`, core/schedule/entries.py) makes a second one harmless: every process maps a
send to the same tick of core's grid (`tick_of`), and the record script lets the
first submit of a tick through and hands the others its task. So several may run
for availability; a tick is fired once.

What taskiq's loop cannot say is refused, one line, before anything starts:
- an interval under 1 s or of a fractional second: taskiq's `interval` is whole
  seconds (its validator refuses a fractional timedelta, and its loop, which wakes
  once a second, rounds the time since the last send);
- a crontab using `L` (last day), `#` (nth weekday) or `W` (nearest weekday): pycron,
  taskiq's crontab, has none of them. Every other crontab is handed to pycron as
  the lists of values croniter expands it to, so both read it alike where their
  dialects differ (pycron has no month names, no 7 for Sunday, no `5/10` steps, and
  ANDs day and weekday when either is written with a `*`, croniter ORs them when
  both expand to restrictions).

What differs from core's scheduler, by taskiq's design: at its start taskiq sends
every interval, and every crontab whose minute it is, at once (the latest tick,
late, unless fired already); an interval counts from that send, so a task fires up
to `every` s after its tick on the epoch grid, and a loop pass late by more than
half a second moves the phase by a second, which can leave one tick to another
scheduler; no missed tick is replayed (`catch_up` is core's scheduler's); a
crontab's minute in a DST gap never comes on taskiq's wall clock, where croniter
moves the tick to the gap's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from croniter import croniter
from redis.exceptions import RedisError
from taskiq import ScheduledTask, ScheduleSource, TaskiqScheduler
from taskiq.cli.scheduler.args import SchedulerArgs
from taskiq.cli.scheduler.run import run_scheduler

from backends.taskiq_impl.broker import make_broker
from core.errors import ConfigError, QueuebenchError
from core.schedule.entries import Entry, Schedule
from core.schedule.scheduler import ScheduleState, fire
from core.settings import Settings

log = logging.getLogger("queuebench.scheduler")

# How early a send may come and still stand for the tick after it: taskiq's loop wakes
# at whole seconds, a few ms after them, but a clock slewed by NTP (at most 0.5 ms a
# second) can wake it a hair before a tick, which must not stand for the one before.
SLACK = 0.05


def _refused(entry: Entry, why: str) -> ConfigError:
    return ConfigError(f"--native on taskiq: entry {entry.name!r}: {why}; run core's "
                       "scheduler (without --native)")


def taskiq_cron(entry: Entry) -> str:
    """The entry's crontab in pycron's dialect: each field as the values croniter
    expands it to (`*` where unrestricted), so taskiq fires on croniter's minutes."""
    parsed = croniter(entry.cron)
    fields = parsed.expanded
    if parsed.nth_weekday_of_month or parsed.nearest_weekday or any(
            "l" in values for values in fields):
        raise _refused(entry, f"crontab {entry.cron!r} uses L, # or W, which taskiq's "
                              "crontab (pycron) cannot say")
    return " ".join("*" if values == ["*"] else ",".join(map(str, values))
                    for values in fields)


def scheduled_task(entry: Entry) -> ScheduledTask:
    """`entry` as taskiq's ScheduledTask; its schedule_id is the entry's name."""
    timing: dict[str, Any]
    if entry.every is not None:
        if entry.every != int(entry.every):  # core's least is 0.1 s: whole is >= 1
            raise _refused(entry, f"every {entry.every:g}s, where taskiq's interval is a "
                                  "whole number of seconds (at least 1)")
        timing = {"interval": int(entry.every)}
    else:
        timing = {"cron": taskiq_cron(entry), "cron_offset": entry.timezone}
    return ScheduledTask(task_name=entry.task, labels={}, args=entry.args,
                         kwargs=entry.kwargs, schedule_id=entry.name, **timing)


def tick_of(entry: Entry, now: float) -> float:
    """The tick a send at `now` stands for: the entry's latest on core's grid at or
    before it (SLACK). The same in every scheduler, from the schedule alone: taskiq's
    loop sends at whole seconds, an interval's sends `every` apart, so each falls in
    its own tick's span; a crontab's send comes in its minute."""
    return entry.ticks(0.0, now + SLACK, 1)[-1]


class EntrySource(ScheduleSource):
    """A taskiq schedule source holding core's schedule, checked at construction."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.tasks = [scheduled_task(entry) for entry in schedule.values()]

    async def get_schedules(self) -> list[ScheduledTask]:
        return self.tasks


class CoreScheduler(TaskiqScheduler):
    """taskiq's scheduler whose sends go through core's `fire`, keyed by the tick."""

    def __init__(self, backend_cls: Any, settings: Settings, schedule: Schedule, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.source = EntrySource(schedule)
        super().__init__(make_broker(settings), [self.source])
        self.backend_cls = backend_cls
        self.settings = settings
        self.clock = clock  # wall-clock seconds, injectable for tests
        self.backend: Any = None
        self.state: ScheduleState | None = None
        self._sending: set[asyncio.Task[Any]] = set()

    async def startup(self) -> None:
        await super().startup()
        self.backend = self.backend_cls(self.settings)
        self.state = ScheduleState(self.backend.redis)

    async def on_ready(self, source: ScheduleSource, task: ScheduledTask) -> None:
        this = asyncio.current_task()
        assert this is not None
        self._sending.add(this)
        try:
            await self._fire(task)
        finally:
            self._sending.discard(this)

    async def _fire(self, task: ScheduledTask) -> None:
        assert self.state is not None, "startup() first"
        entry = self.source.schedule[task.schedule_id]
        now = self.clock()
        tick = tick_of(entry, now)
        try:
            if (await self.state.read([entry.name]))[entry.name].paused:
                log.debug("%s: paused, tick %.3f not fired", entry.name, tick)
            else:
                record = await fire(self.backend, entry, tick)
                log.info("%s: tick %.3f fired %s %s (%.3fs late)", entry.name, tick,
                         entry.task, record.id, now - tick)
            await self.state.dealt_with(entry.name, tick)
        except (RedisError, QueuebenchError, OSError) as exc:
            # taskiq sends the entry again at its next time; this tick is another
            # scheduler's to fire, or lost.
            log.warning("%s: tick %.3f not fired: %s: %s", entry.name, tick,
                        type(exc).__name__, exc)

    async def shutdown(self) -> None:
        """After the sends under way: taskiq's loop runs each in a task of its own, which
        its cancel leaves running, and a send whose publisher closed under it would end
        its tick's record FAILURE (seen on RabbitMQ, its declare and publish slower)."""
        if self._sending:
            await asyncio.wait(self._sending, timeout=self.settings.shutdown_timeout)
        if self.backend is not None:
            await self.backend.aclose()
        await super().shutdown()


def run(backend_cls: Any, settings: Settings, schedule: Schedule) -> None:
    """taskiq's scheduler (as `taskiq scheduler` runs it) until SIGTERM or SIGINT."""
    scheduler = CoreScheduler(backend_cls, settings, schedule)  # refuses before it starts
    args = SchedulerArgs(scheduler=scheduler, modules=[], configure_logging=False,
                         log_level=settings.log_level)  # type: ignore[arg-type]

    async def main() -> None:
        # taskiq's run_scheduler shuts down when cancelled (its CLI: Ctrl-C).
        this, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert this is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, this.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_scheduler(args)

    asyncio.run(main())
    log.info("scheduler: stopped")


__all__ = ["CoreScheduler", "EntrySource", "run", "scheduled_task", "taskiq_cron", "tick_of"]
