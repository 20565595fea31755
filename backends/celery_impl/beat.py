"""Celery beat, configured from core's schedule (`queuebench scheduler --native`).

`beat_schedule` is generated from the entries (an interval as a timedelta, a crontab
as Celery's `crontab` in the app's time zone), so a Celery user sees the beat they
know. Beat decides when; `CoreScheduler` sends each due entry through core
(`TaskBackend.submit`), so the task gets its record, names its entry, and runs on
the ordinary workers. Celery's rule stands: run one beat (two send every tick
twice); `queuebench scheduler` without --native is the one that any number may run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import crontab

from core.errors import ConfigError
from core.schedule.entries import Entry, Schedule
from core.schedule.scheduler import fire
from core.settings import Settings

SCHEDULER = "backends.celery_impl.beat:CoreScheduler"


def beat_schedule(schedule: Schedule) -> dict[str, dict[str, Any]]:
    """Celery's `beat_schedule` for `schedule`."""
    out: dict[str, dict[str, Any]] = {}
    for entry in schedule.values():
        if entry.every is not None:
            when: Any = timedelta(seconds=entry.every)
        else:
            assert entry.cron is not None
            minute, hour, day, month, weekday = entry.cron.split()
            when = crontab(minute=minute, hour=hour, day_of_month=day, month_of_year=month,
                           day_of_week=weekday)
        out[entry.name] = {"task": entry.task, "schedule": when, "args": tuple(entry.args),
                           "kwargs": entry.kwargs}
    return out


def beat_timezone(schedule: Schedule) -> str:
    """Celery evaluates every crontab in the app's one time zone."""
    zones = {e.timezone for e in schedule.values() if e.cron is not None}
    if len(zones) > 1:
        raise ConfigError(f"--native on celery: beat has one time zone, the schedule has "
                          f"{', '.join(sorted(zones))}; run core's scheduler (without --native)")
    return zones.pop() if zones else "UTC"


class CoreScheduler(Scheduler):
    """Beat's in-memory scheduler, whose sends go through core's submit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backend: Any = None
        super().__init__(*args, **kwargs)

    def apply_async(self, entry: ScheduleEntry, producer: Any = None, advance: bool = True,
                    **kwargs: Any) -> Any:
        entry = self.reserve(entry) if advance else entry
        core_entry: Entry = self.app.conf.queuebench_schedule[entry.name]
        if self._loop is None:
            from backends.celery_impl import Backend

            self._loop = asyncio.new_event_loop()
            self._backend = Backend(self.app.conf.queuebench_settings)
        return self._loop.run_until_complete(fire(self._backend, core_entry, None))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._backend.aclose())
            self._loop.close()
            self._loop = None
        super().close()


def configure(app: Celery, settings: Settings, schedule: Schedule) -> Celery:
    app.conf.update(beat_schedule=beat_schedule(schedule), timezone=beat_timezone(schedule),
                    beat_scheduler=SCHEDULER, queuebench_schedule=schedule,
                    queuebench_settings=settings, beat_max_loop_interval=1)
    return app
