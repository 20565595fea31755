"""The periodic schedule: entries declared once, in Python here or in `SCHEDULE_FILE`.

An entry names a shared task, its arguments and options, and when it fires: every
`every` seconds, or on a `cron` expression (minute hour day month weekday) in a
time zone. Every process computes the same ticks from the schedule alone, never from
when it started: an interval's ticks are the multiples of `every` since the Unix
epoch, a crontab's are its own. So any number of schedulers agree on what a tick
is, and one per-tick idempotency key makes each tick fire once (core/schedule/scheduler.py).

Validation is eager: an unknown task, arguments that do not fit its signature, an
option the backend cannot honour, a bad crontab or time zone is a ConfigError
naming the entry, which the command line prints as one line.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import ValidationError

from core.errors import ConfigError, InvalidArguments, UnknownTask
from core.tasks import get_task
from core.tasks.features import supported_options
from core.tasks.options import TaskOptions

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MIN_EVERY = 0.1
# Catch-up replays at most this many missed ticks of an entry (the latest ones).
MAX_CATCH_UP = 100
# What `queuebench scheduler` fires when SCHEDULE_FILE is unset: data, in the format a
# user's SCHEDULE_FILE has.
DEFAULT_SCHEDULE = Path(__file__).resolve().parent / "default.toml"
# Options that a schedule cannot carry: the scheduler sets the key per tick, and a
# fixed eta would hold every tick's task back to one moment.
NOT_SCHEDULABLE = {"idempotency_key", "eta"}
ENTRY_KEYS = {"task", "args", "kwargs", "options", "every", "cron", "timezone", "catch_up"}


@dataclass(frozen=True)
class Entry:
    """One periodic task: `every` seconds, or a `cron` expression in `timezone`."""

    name: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: TaskOptions = field(default_factory=TaskOptions)
    every: float | None = None
    cron: str | None = None
    timezone: str = "UTC"
    # After downtime: False fires only the latest missed tick (as Celery beat does),
    # True each missed tick, oldest first, at most MAX_CATCH_UP of them.
    catch_up: bool = False

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError("a name is 1 to 64 letters, digits, '_', '.', ':' or '-'")
        if (self.every is None) == (self.cron is None):
            raise ValueError("give one of `every` (seconds) and `cron`")
        if self.every is not None and not (math.isfinite(self.every)
                                           and self.every >= MIN_EVERY):
            raise ValueError(f"`every` is a number of seconds, at least {MIN_EVERY}")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        object.__setattr__(self, "_zone", zone)
        if self.cron is not None:
            fields = self.cron.split()
            if len(fields) != 5 or not croniter.is_valid(self.cron):
                raise ValueError(f"bad crontab {self.cron!r} (five fields: "
                                 "minute hour day month weekday)")
        fixed = NOT_SCHEDULABLE & self.options.in_use()
        if fixed:
            raise ValueError(f"option(s) {', '.join(sorted(fixed))} cannot be scheduled")

    @property
    def zone(self) -> ZoneInfo:
        zone: ZoneInfo = self.__dict__["_zone"]
        return zone

    @property
    def when(self) -> str:
        """The entry's timing, as a person would read it."""
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron!r} {self.timezone}"

    def ticks(self, after: float, until: float, limit: int) -> list[float]:
        """The ticks in (after, until], oldest first: the latest `limit` of them."""
        if self.every is not None:
            last = self._index(until)
            first = max(self._index(after) + 1, last - limit + 1)
            return [self._interval_tick(k) for k in range(first, last + 1)]
        latest: list[float] = []
        it = croniter(self.cron, self._local(until) + timedelta(microseconds=1))
        while len(latest) < limit:
            tick = float(it.get_prev(float))
            if tick <= after:
                break
            latest.append(tick)
        return latest[::-1]

    def next_after(self, now: float) -> float:
        """The first tick after `now`."""
        if self.every is not None:
            return self._interval_tick(self._index(now) + 1)
        return float(croniter(self.cron, self._local(now)).get_next(float))

    def _index(self, ts: float) -> int:
        """Which interval tick `ts` is at or after (0.3 / 0.1 is 2.9999999999999996)."""
        assert self.every is not None
        return math.floor(ts / self.every + 1e-9)

    def _interval_tick(self, k: int) -> float:
        assert self.every is not None
        return round(k * self.every, 6)  # 0.1 * 3 is 0.30000000000000004, not a key

    def _local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.zone)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "args": self.args,
                "kwargs": self.kwargs, "options": self.options.model_dump(exclude_none=True),
                "every": self.every, "cron": self.cron, "timezone": self.timezone,
                "catch_up": self.catch_up}


def tick_key(entry: Entry, tick: float) -> str:
    """The idempotency key of one tick: the same in every scheduler process."""
    return f"sched:{entry.name}:{round(tick * 1000)}"


class Schedule(Mapping[str, Entry]):
    """The entries by name, in the order declared."""

    def __init__(self, entries: Iterable[Entry] = (), source: str = "schedule") -> None:
        self.source = source  # where it was declared, for error lines
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ConfigError(f"{source}: entry {entry.name!r} is declared twice")
            self._entries[entry.name] = entry

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, supported: Iterable[str] | None = None, backend: str = "") -> Schedule:
        """Raise ConfigError for the first entry whose task is unknown, whose
        arguments do not fit its signature, or (given what the backend supports)
        whose options the backend cannot honour."""
        allowed = None if supported is None else set(supported)
        for entry in self._entries.values():
            where = f"{self.source}: entry {entry.name!r}"
            try:
                get_task(entry.task).bind(entry.args, entry.kwargs)
            except UnknownTask as exc:
                raise ConfigError(f"{where}: {exc.detail}") from None
            except InvalidArguments as exc:
                first = exc.detail[0]
                raise ConfigError(f"{where}: bad arguments for "
                                  f"{entry.task!r}: {first['msg']} "
                                  f"({'.'.join(map(str, first['loc'][1:]))})") from None
            refused = sorted(entry.options.in_use() - allowed) if allowed is not None else []
            if refused:
                raise ConfigError(f"{where}: backend {backend!r} cannot "
                                  f"honour option(s): {', '.join(refused)}")
        return self


def parse(data: Mapping[str, Any], source: str = "schedule") -> Schedule:
    """A schedule from TOML's tables (docs/api.md, "Periodic schedule")."""
    entries = []
    for name, table in data.items():
        where = f"{source}: entry {name!r}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: a table ([{name}]) is expected")
        unknown = sorted(set(table) - ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(ENTRY_KEYS))}")
        if "task" not in table:
            raise ConfigError(f"{where}: `task` is missing")
        try:
            entries.append(Entry(
                name=name, task=str(table["task"]), args=_typed(table, "args", list),
                kwargs=_typed(table, "kwargs", dict),
                options=TaskOptions.model_validate(_typed(table, "options", dict)),
                every=_every(table.get("every")), cron=table.get("cron"),
                timezone=str(table.get("timezone", "UTC")),
                catch_up=_typed(table, "catch_up", bool, False)))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"{where}: option {'.'.join(map(str, first['loc']))}: "
                              f"{first['msg']}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return Schedule(entries, source)


def _typed(table: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = table.get(key, kind() if default is None else default)
    if not isinstance(value, kind):
        raise TypeError(f"`{key}` must be a {kind.__name__}")
    return value


def _every(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("`every` must be a number of seconds")
    return float(value)


def load(path: str | Path, source: str | None = None) -> Schedule:
    """Read a schedule file (SCHEDULE_FILE); any problem is a ConfigError naming it."""
    source = source or f"SCHEDULE_FILE={path}"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not TOML ({exc})") from None
    return parse(data, source)


def schedule_for(schedule_file: str | None, features: Mapping[str, Any] | None = None,
                 backend: str = "") -> Schedule:
    """SCHEDULE_FILE's schedule, else core's own; checked (against a backend's
    features when given)."""
    schedule = (load(schedule_file) if schedule_file
                else load(DEFAULT_SCHEDULE, "core's schedule"))
    supported = None if features is None else supported_options(dict(features))
    return schedule.check(supported, backend)
