"""Unit tests of core/schedule/: the schedule file, its ticks and the scheduler, on an
injectable clock; no Redis, no worker. (The real processes, on every backend, are in
tests/conformance/test_periodic.py.)"""

from __future__ import annotations

import asyncio
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import ConfigError
from core.schedule.entries import MAX_CATCH_UP, Entry, Schedule, parse, schedule_for, tick_key
from core.schedule.scheduler import EntryState, Scheduler, due, fire
from core.store.records import TaskRecord, new_task_id
from core.tasks.features import supported_options
from core.tasks.options import TaskOptions

API_EXAMPLE = """
[every-second-noop]
task = "noop"
args = ["tick"]
every = 1.0

[nightly-add]
task = "add"
kwargs = {x = 1, y = 2}
cron = "30 2 * * *"
timezone = "Europe/Paris"
options = {queue = "default"}
catch_up = true
"""


def ts(*parts: int, tz: Any = UTC) -> float:
    return datetime(*parts, tzinfo=tz).timestamp()  # type: ignore[misc]


class Submits:
    """A backend stand-in: records submits and, as core's record script does, gives a
    second submit with the same idempotency key the first task."""

    redis = None

    def __init__(self) -> None:
        self.tasks: list[TaskRecord] = []
        self.keys: dict[str, TaskRecord] = {}

    async def submit(self, name: str, args: list[Any] | None = None,
                     kwargs: dict[str, Any] | None = None, options: Any = None, *,
                     schedule: str | None = None) -> TaskRecord:
        key = options.idempotency_key if options else None
        if key and key in self.keys:
            return self.keys[key]
        record = TaskRecord(id=new_task_id(), name=name, backend="test", args=args or [],
                            kwargs=kwargs or {}, schedule=schedule)
        self.tasks.append(record)
        if key:
            self.keys[key] = record
        return record

    def of(self, entry: str) -> list[TaskRecord]:
        return [t for t in self.tasks if t.schedule == entry]


class Memory:
    """ScheduleState in memory: what the schedulers share through Redis."""

    def __init__(self) -> None:
        self.states: dict[str, EntryState] = {}

    async def read(self, names: list[str]) -> dict[str, EntryState]:
        return {n: self.states.setdefault(n, EntryState()) for n in names}

    async def dealt_with(self, name: str, tick: float) -> None:
        self.states.setdefault(name, EntryState()).last_tick = tick

    async def pause(self, name: str, paused: bool) -> None:
        self.states.setdefault(name, EntryState()).paused = paused


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scheduler(schedule: Schedule, clock: Clock, backend: Submits | None = None,
              state: Memory | None = None) -> Scheduler:
    return Scheduler(backend or Submits(), schedule, state=state or Memory(),  # type: ignore[arg-type]
                     clock=clock)


def one(**kw: Any) -> Schedule:
    return Schedule([Entry(**{"name": "e", "task": "noop", **kw})])


# -- the file and its validation ------------------------------------------------------------

def test_the_contracts_example_parses() -> None:
    schedule = parse(tomllib.loads(API_EXAMPLE)).check()
    assert list(schedule) == ["every-second-noop", "nightly-add"]
    tick = schedule["every-second-noop"]
    assert (tick.task, tick.args, tick.every, tick.cron, tick.catch_up) == (
        "noop", ["tick"], 1.0, None, False)
    nightly = schedule["nightly-add"]
    assert (nightly.kwargs, nightly.cron, nightly.timezone, nightly.catch_up) == (
        {"x": 1, "y": 2}, "30 2 * * *", "Europe/Paris", True)
    assert nightly.options == TaskOptions(queue="default")


def test_core_declares_a_schedule_of_its_own() -> None:
    schedule = schedule_for(None)
    assert schedule and all(e.task for e in schedule.values())


@pytest.mark.parametrize(("toml", "words"), [
    ('[a]\ntask = "no_such_task"\nevery = 1', "unknown task 'no_such_task'"),
    ('[a]\ntask = "divide"\nargs = [1]\nevery = 1', "bad arguments for 'divide'"),
    ('[a]\ntask = "divide"\nargs = [1, "x"]\nevery = 1', "bad arguments for 'divide'"),
    ('[a]\ntask = "noop"\nkwargs = {nope = 1}\nevery = 1', "bad arguments for 'noop'"),
    ('[a]\ntask = "noop"\ncron = "61 * * * *"', "bad crontab '61 * * * *'"),
    ('[a]\ntask = "noop"\ncron = "* * * *"', "bad crontab"),
    ('[a]\ntask = "noop"\ncron = "0 * * * * *"', "bad crontab"),  # no seconds field
    ('[a]\ntask = "noop"\ncron = "* * * * *"\ntimezone = "Mars/Base"', "unknown time zone"),
    ('[a]\ntask = "noop"', "one of `every`"),
    ('[a]\ntask = "noop"\nevery = 1\ncron = "* * * * *"', "one of `every`"),
    ('[a]\ntask = "noop"\nevery = 0', "at least"),
    ('[a]\ntask = "noop"\nevery = "1"', "`every` must be a number"),
    ('[a]\nevery = 1', "`task` is missing"),
    ('[a]\ntask = "noop"\nevery = 1\nevry = 2', "unknown key(s) evry"),
    ('[a]\ntask = "noop"\nevery = 1\noptions = {bogus = 1}', "option bogus"),
    ('[a]\ntask = "noop"\nevery = 1\noptions = {idempotency_key = "k"}', "idempotency_key"),
    ('[a]\ntask = "noop"\nevery = 1\nargs = "x"', "`args` must be a list"),
    ('["a b"]\ntask = "noop"\nevery = 1', "a name is"),
    ("a = 1", "a table"),
])
def test_a_bad_entry_is_one_line_naming_it(toml: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tomllib.loads(toml), "SCHEDULE_FILE=s.toml").check()
    line = str(caught.value.detail)
    assert "\n" not in line and words in line and "SCHEDULE_FILE=s.toml" in line, line


def test_an_option_the_backend_cannot_honour_is_refused() -> None:
    schedule = parse(tomllib.loads('[a]\ntask = "noop"\nevery = 1\noptions = {priority = 5}'))
    with pytest.raises(ConfigError, match=r"backend 'arq' cannot honour option.*priority"):
        schedule.check(supported_options({"queues": "native"}), "arq")  # type: ignore[dict-item]
    schedule.check()  # with no backend given, only the task and arguments are checked


def test_a_missing_file_is_one_line(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"SCHEDULE_FILE=.*cannot read"):
        schedule_for(str(tmp_path / "none.toml"))
    (tmp_path / "bad.toml").write_text("[a\n")
    with pytest.raises(ConfigError, match="not TOML"):
        schedule_for(str(tmp_path / "bad.toml"))


# -- ticks ------------------------------------------------------------------------------

def test_interval_ticks_are_epoch_multiples_whoever_computes_them() -> None:
    entry = Entry(name="e", task="noop", every=1.0)
    assert entry.ticks(10.5, 13.2, 100) == [11.0, 12.0, 13.0]
    assert entry.ticks(10.0, 13.0, 2) == [12.0, 13.0]  # the latest ones
    assert entry.next_after(13.0) == 14.0
    tenth = Entry(name="e", task="noop", every=0.1)
    assert tenth.ticks(0.0, 0.3, 100) == [0.1, 0.2, 0.3]
    assert tenth.ticks(0.3, 0.5, 100) == [0.4, 0.5]  # a tick dealt with is not due again
    assert tick_key(tenth, 0.3) == "sched:e:300"


def test_crontab_ticks_in_their_time_zone_across_dst() -> None:
    paris = Entry(name="e", task="noop", cron="30 2 * * *", timezone="Europe/Paris")
    # 02:30 Paris is 01:30 UTC in winter, 00:30 UTC in summer
    assert paris.next_after(ts(2026, 1, 10)) == ts(2026, 1, 10, 1, 30)
    assert paris.next_after(ts(2026, 7, 10)) == ts(2026, 7, 10, 0, 30)
    minutely = Entry(name="e", task="noop", cron="* * * * *")
    assert minutely.ticks(ts(2026, 1, 1, 12, 0, 30), ts(2026, 1, 1, 12, 3), 100) == [
        ts(2026, 1, 1, 12, 1), ts(2026, 1, 1, 12, 2), ts(2026, 1, 1, 12, 3)]


# -- the scheduler, on an injectable clock ---------------------------------------------------

async def test_a_crontab_entry_fires_at_the_minute() -> None:
    clock = Clock(ts(2026, 1, 1, 12, 0, 30))
    backend = Submits()
    s = scheduler(one(task="add", args=[1, 2], cron="* * * * *"), clock, backend)
    await s.start()
    for second in (31, 45, 59):
        clock.now = ts(2026, 1, 1, 12, 0, second)
        assert await s.run_pending() == []
    assert s.next_wake(clock.now) == 1.0
    clock.now = ts(2026, 1, 1, 12, 1) + 0.002
    [fired] = await s.run_pending()
    assert (fired.name, fired.args, fired.schedule) == ("add", [1, 2], "e")
    clock.now = ts(2026, 1, 1, 12, 1, 30)
    assert await s.run_pending() == []
    clock.now = ts(2026, 1, 1, 12, 2, 0)
    assert len(await s.run_pending()) == 1


async def test_an_interval_of_one_second_fires_once_a_second() -> None:
    clock = Clock(1000.0)
    backend = Submits()
    s = scheduler(one(every=1.0), clock, backend)
    await s.start()
    for step in range(1, 41):  # 10 s in passes of 0.25 s
        clock.now = 1000.0 + step * 0.25
        await s.run_pending()
    assert len(backend.tasks) == 10


async def test_two_schedulers_fire_each_tick_once() -> None:
    clock, backend, state = Clock(1000.0), Submits(), Memory()
    schedule = one(every=1.0)
    a, b = (scheduler(schedule, clock, backend, state) for _ in range(2))
    await a.start()
    await b.start()
    for step in range(1, 21):
        clock.now = 1000.0 + step * 0.5
        await a.run_pending()
        await b.run_pending()
    assert len(backend.tasks) == 10
    assert a.fired + b.fired == 20  # both fired every tick; the key made each one task


async def test_missed_ticks_are_skipped_by_default_and_replayed_with_catch_up() -> None:
    clock, backend, state = Clock(1000.0), Submits(), Memory()
    schedule = Schedule([Entry(name="skip", task="noop", every=1.0),
                         Entry(name="replay", task="noop", every=1.0, catch_up=True)])
    s = scheduler(schedule, clock, backend, state)
    await s.start()
    clock.now = 1002.0
    await s.run_pending()
    # down for 10 s; a new process picks up from the state the others left
    clock.now = 1012.5
    again = scheduler(schedule, clock, backend, state)
    await again.start()
    fired = await again.run_pending()
    assert [t.schedule for t in fired].count("skip") == 1  # the latest tick, once
    assert [t.schedule for t in fired].count("replay") == 10  # 1003 ... 1012
    assert len(backend.of("skip")) == 2 and len(backend.of("replay")) == 12


def test_catch_up_is_bounded() -> None:
    entry = Entry(name="e", task="noop", every=1.0, catch_up=True)
    ticks, skipped = due(entry, 0.0, 10_000.0)
    assert len(ticks) == MAX_CATCH_UP and ticks[-1] == 10_000.0
    ticks, skipped = due(Entry(name="e", task="noop", every=1.0), 0.0, 10.0)
    assert (ticks, skipped) == ([10.0], 9)


async def test_a_first_start_fires_nothing_from_before_it() -> None:
    clock = Clock(ts(2026, 1, 1, 12, 0, 30))
    backend = Submits()
    s = scheduler(Schedule([Entry(name="c", task="noop", cron="* * * * *", catch_up=True)]),
                  clock, backend)
    await s.start()
    assert await s.run_pending() == []


async def test_a_paused_entry_skips_its_ticks_and_resuming_replays_none() -> None:
    clock, backend, state = Clock(1000.0), Submits(), Memory()
    s = scheduler(one(every=1.0, catch_up=True), clock, backend, state)
    await s.start()
    await state.pause("e", True)
    for step in range(1, 6):
        clock.now = 1000.0 + step
        assert await s.run_pending() == []
    await state.pause("e", False)
    clock.now = 1006.0
    assert len(await s.run_pending()) == 1


async def test_a_failed_submit_is_tried_again_with_the_same_key() -> None:
    clock = Clock(1000.0)

    class Flaky(Submits):
        calls = 0

        async def submit(self, *args: Any, **kwargs: Any) -> TaskRecord:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("redis away")
            return await super().submit(*args, **kwargs)

    backend = Flaky()
    s = scheduler(one(every=1.0), clock, backend)
    await s.start()
    clock.now = 1001.0
    with pytest.raises(ConnectionError):
        await s.run_pending()
    clock.now = 1001.5
    assert len(await s.run_pending()) == 1
    assert list(backend.keys) == ["sched:e:1001000"]


async def test_a_scheduler_stopped_mid_send_still_queues_the_tick_it_began() -> None:
    """SIGTERM cancels arq's cron job or taskiq's loop mid-submit; a cancelled submit
    would end the tick's record FAILURE NotQueued (CI saw it on arq's native cron)."""
    began, release = asyncio.Event(), asyncio.Event()

    class Slow(Submits):
        async def submit(self, *args: Any, **kwargs: Any) -> TaskRecord:
            began.set()
            await release.wait()
            return await super().submit(*args, **kwargs)

    backend = Slow()
    [entry] = one(every=1.0).values()
    sending = asyncio.ensure_future(fire(backend, entry, 1001.0))
    await began.wait()
    sending.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert list(backend.keys) == ["sched:e:1001000"]


# -- the libraries' own schedulers, generated from the same schedule --------------------------

def test_arq_cron_jobs_from_the_schedule() -> None:
    pytest.importorskip("arq")
    from backends.arq_impl.cron import cron_jobs

    schedule = Schedule([
        Entry(name="s", task="noop", every=5),
        Entry(name="m", task="noop", every=900),
        Entry(name="h", task="noop", every=7200),
        Entry(name="c", task="noop", cron="*/20 9-10 * * 1,0", timezone="Europe/Paris"),
    ])
    jobs, zone = cron_jobs(schedule)
    by = {j.name: j for j in jobs}
    assert str(zone) == "Europe/Paris"
    assert by["cron:s"].second == set(range(0, 60, 5)) and by["cron:s"].unique
    assert (by["cron:m"].minute, by["cron:m"].second) == ({0, 15, 30, 45}, 0)
    assert by["cron:h"].hour == set(range(0, 24, 2))
    c = by["cron:c"]
    assert (c.minute, c.hour, c.weekday) == ({0, 20, 40}, {9, 10}, {0, 6})  # Mon, Sun
    assert c.microsecond == 0
    start = datetime(2026, 1, 5, 9, 10, tzinfo=zone)  # a Monday
    c.calculate_next(start)
    assert c.next_run == start + timedelta(minutes=10)


@pytest.mark.parametrize(("entry", "words"), [
    (Entry(name="x", task="noop", every=7), "not a whole divisor"),
    (Entry(name="x", task="noop", every=1.5), "not a whole divisor"),
    (Entry(name="x", task="noop", cron="0 0 1 * 1"), "both day and weekday"),
])
def test_what_arq_cron_cannot_say_is_one_line(entry: Entry, words: str) -> None:
    pytest.importorskip("arq")
    from backends.arq_impl.cron import cron_jobs

    with pytest.raises(ConfigError, match=words):
        cron_jobs(Schedule([entry]))


def test_celery_beat_schedule_from_the_schedule() -> None:
    pytest.importorskip("celery")
    from celery.schedules import crontab

    from backends.celery_impl.beat import beat_schedule, beat_timezone

    schedule = parse(tomllib.loads(API_EXAMPLE))
    beat = beat_schedule(schedule)
    assert beat["every-second-noop"]["schedule"] == timedelta(seconds=1)
    assert beat["every-second-noop"]["args"] == ("tick",)
    nightly = beat["nightly-add"]
    assert nightly["task"] == "add" and nightly["kwargs"] == {"x": 1, "y": 2}
    assert nightly["schedule"] == crontab(minute="30", hour="2")
    assert beat_timezone(schedule) == "Europe/Paris"
    with pytest.raises(ConfigError, match="one time zone"):
        beat_timezone(Schedule([Entry(name="a", task="noop", cron="* * * * *"),
                                Entry(name="b", task="noop", cron="* * * * *",
                                      timezone="Asia/Tokyo")]))


def test_taskiq_scheduled_tasks_from_the_schedule() -> None:
    pytest.importorskip("taskiq")
    from backends.taskiq_impl.scheduler import EntrySource

    source = EntrySource(parse(tomllib.loads(API_EXAMPLE)))
    tick, nightly = source.tasks
    assert (tick.schedule_id, tick.task_name, tick.args, tick.interval, tick.cron) == (
        "every-second-noop", "noop", ["tick"], 1, None)
    assert (nightly.schedule_id, nightly.task_name, nightly.kwargs) == (
        "nightly-add", "add", {"x": 1, "y": 2})
    assert (nightly.cron, nightly.cron_offset, nightly.interval) == (
        "30 2 * * *", "Europe/Paris", None)


@pytest.mark.parametrize(("entry", "words"), [
    (Entry(name="x", task="noop", every=0.5), "every 0.5s, where taskiq's interval is a whole"),
    (Entry(name="x", task="noop", every=2.5), "every 2.5s, where taskiq's interval is a whole"),
    (Entry(name="x", task="noop", cron="0 0 L * *"), "uses L, # or W"),
    (Entry(name="x", task="noop", cron="0 0 * * 1#2"), "uses L, # or W"),
    (Entry(name="x", task="noop", cron="0 0 15W * *"), "uses L, # or W"),
])
def test_what_taskiq_scheduler_cannot_say_is_one_line(entry: Entry, words: str) -> None:
    pytest.importorskip("taskiq")
    from backends.taskiq_impl.scheduler import EntrySource

    with pytest.raises(ConfigError, match=words) as refused:
        EntrySource(Schedule([Entry(name="fine", task="noop", every=1), entry]))
    line = refused.value.detail
    assert "\n" not in line and "'x'" in line and "without --native" in line


@pytest.mark.parametrize(("cron", "pycron_reads_it_alike"), [
    ("*/15 9-17 * * 1-5", True),
    ("0 0 1,15 * 1-5", True),
    ("0 0 */2 * 1", False),  # pycron: AND (a `*` in the day field); croniter: OR
    ("0 12 1 * 7", False),  # pycron has no 7 for Sunday
    ("30 6 * jan,jul sun", False),  # nor month names
    ("5/10 * * * *", False),  # nor steps from a start
])
def test_taskiq_cron_fires_on_the_minutes_croniter_ticks(cron: str,
                                                          pycron_reads_it_alike: bool) -> None:
    """pycron, handed croniter's expansion, matches exactly the minutes core ticks on
    (every minute of the day of the first tick, and that tick's time of day on each day
    of a year, in a zone with DST); handed the entry's own text, it would not always."""
    pytest.importorskip("taskiq")
    from zoneinfo import ZoneInfo

    import pycron
    from croniter import croniter

    from backends.taskiq_impl.scheduler import taskiq_cron

    zone = ZoneInfo("Europe/Paris")
    ours = taskiq_cron(Entry(name="x", task="noop", cron=cron, timezone="Europe/Paris"))
    it = croniter(cron, datetime(2026, 1, 1, tzinfo=zone))
    first = it.get_next(datetime)
    day = first.replace(hour=0, minute=0)
    ticks = {first}
    while (tick := it.get_next(datetime)) < day + timedelta(days=1):
        ticks.add(tick)
    minutes = [day + timedelta(minutes=m) for m in range(24 * 60)]
    days = [first.replace(month=1, day=1) + timedelta(days=d) for d in range(365)]
    core = [at in ticks for at in minutes] + [croniter.match(cron, at) for at in days]
    assert sum(core) > 1
    sample = minutes + days
    assert [pycron.is_now(ours, at) for at in sample] == core
    assert ([pycron.is_now(cron, at) for at in sample] == core) is pycron_reads_it_alike


def test_taskiq_sends_stand_for_the_ticks_of_core_grid() -> None:
    """Two taskiq schedulers started apart send an interval at whole seconds of their
    own phase, a few ms late, or a hair early (a slewed clock): each send stands for
    the latest tick of the epoch grid, the same in both, one tick a send."""
    pytest.importorskip("taskiq")
    from backends.taskiq_impl.scheduler import tick_of

    entry = Entry(name="e", task="noop", every=5)
    for phase in (0, 1, 3, 4):  # the second its scheduler started in, within the span
        sends = [1000 + phase + 5 * k + jitter
                 for k, jitter in enumerate([0.004, -0.0005, 0.03, 0.002, 0.0])]
        assert [tick_of(entry, s) for s in sends] == [1000.0, 1005.0, 1010.0, 1015.0, 1020.0]
    minutely = Entry(name="c", task="noop", cron="* * * * *")
    assert tick_of(minutely, ts(2026, 1, 1, 12, 1) + 0.003) == ts(2026, 1, 1, 12, 1)
    assert tick_of(minutely, ts(2026, 1, 1, 12, 1) - 0.001) == ts(2026, 1, 1, 12, 1)
    assert tick_of(minutely, ts(2026, 1, 1, 12, 1, 30)) == ts(2026, 1, 1, 12, 1)  # started late
