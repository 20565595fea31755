"""arq's own cron jobs, generated from core's schedule (`queuebench scheduler --native`).

An arq Worker of its own queue holds one cron job per entry, `unique`, so arq gives
each tick one job id (`cron:<entry>:<ms>`) however many such workers run. The job
submits the entry's task through core (`TaskBackend.submit`, with the tick's
idempotency key), so the task has its record and runs on the ordinary workers.

arq's cron is a set of allowed values per field, evaluated in one time zone per
worker (`Worker(timezone=...)`) with weekday AND day: an entry that cannot be said
so (an interval that does not divide a minute, an hour or a day; a crontab that
restricts both day and weekday; entries in different time zones) is one clear line.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from arq.cron import CronJob, cron
from croniter import croniter

from core.errors import ConfigError
from core.schedule.entries import Entry, Schedule
from core.schedule.scheduler import fire

CRON_QUEUE = "arq:queue:qb:cron"
Fields = dict[str, Any]


def _interval_fields(entry: Entry) -> Fields:
    every = entry.every or 0
    s = int(every)
    if s == every and s < 60 and 60 % s == 0:
        return {"second": set(range(0, 60, s))}
    if s == every and s % 60 == 0 and s < 3600 and 3600 % s == 0:
        return {"minute": set(range(0, 60, s // 60)), "second": 0}
    if s == every and s % 3600 == 0 and 86400 % s == 0:
        return {"hour": set(range(0, 24, s // 3600)), "minute": 0, "second": 0}
    raise ConfigError(f"--native on arq: entry {entry.name!r}: every {every:g}s is not a "
                      "whole divisor of a minute, an hour or a day, which arq's cron cannot "
                      "say; run core's scheduler (without --native)")


def _cron_fields(entry: Entry) -> Fields:
    minute, hour, day, month, weekday = croniter(entry.cron).expanded
    if day != ["*"] and weekday != ["*"]:
        raise ConfigError(f"--native on arq: entry {entry.name!r}: crontab {entry.cron!r} "
                          "restricts both day and weekday (cron: either; arq: both); run "
                          "core's scheduler (without --native)")
    fields: Fields = {"second": 0}
    for name, values in (("minute", minute), ("hour", hour), ("day", day), ("month", month)):
        if values != ["*"]:
            fields[name] = set(values)
    if weekday != ["*"]:
        fields["weekday"] = {(int(w) - 1) % 7 for w in weekday}  # cron: 0 Sunday; arq: 0 Monday
    return fields


def _job(entry: Entry) -> CronJob:
    async def tick(ctx: dict[str, Any]) -> str:
        # arq's unique job id ends with the tick's time in ms: core's key for the tick.
        at = float(str(ctx["job_id"]).rsplit(":", 1)[1]) / 1000
        return (await fire(ctx["backend"], entry, at)).id

    fields = _interval_fields(entry) if entry.every is not None else _cron_fields(entry)
    return cron(tick, name=f"cron:{entry.name}", unique=True, microsecond=0, keep_result=0,
                **fields)


def cron_jobs(schedule: Schedule) -> tuple[list[CronJob], ZoneInfo]:
    """The schedule as arq cron jobs, and the one time zone they are evaluated in
    (intervals of hours fall on the hours of that zone, core's on UTC's)."""
    zones = {e.timezone for e in schedule.values() if e.cron is not None}
    if len(zones) > 1:
        raise ConfigError(f"--native on arq: one time zone per worker, the schedule has "
                          f"{', '.join(sorted(zones))}; run core's scheduler (without --native)")
    zone = ZoneInfo(zones.pop()) if zones else ZoneInfo("UTC")
    return [_job(e) for e in schedule.values()], zone
