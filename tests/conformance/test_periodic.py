"""The periodic schedule with real `queuebench scheduler` processes: each tick fires
once however many schedulers run or die, missed ticks are skipped unless `catch_up`,
the /schedules API runs, pauses and resumes an entry, and `--native` runs the
library's own scheduler from the same file."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from core.backend import backend_class
from core.cli.procs import Proc, Server
from core.store.keys import IDEMPOTENCY_KEY, SCHEDULE_TASKS_KEY
from core.tasks.features import Support
from tests.conformance.support import Declare, cli, finished


def schedule_toml(path: Any, **entries: dict[str, Any]) -> str:
    """Write a SCHEDULE_FILE of `entries` (name -> table); its path."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    text = "".join(f'["{name}"]\n' + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                   + "\n" for name, table in entries.items())
    path.write_text(text)
    return str(path)


def entry_name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


def ticks_fired(redis_client: redis.Redis, name: str, task: str = "noop") -> dict[float, str]:
    """tick -> the task that stands for it: the per-tick idempotency keys of an entry."""
    prefix = IDEMPOTENCY_KEY.format(task, f"sched:{name}:")
    return {int(k[len(prefix):]) / 1000: str(redis_client.get(k))
            for k in redis_client.scan_iter(prefix + "*", count=1000)}


def fired(redis_client: redis.Redis, name: str) -> list[str]:
    """The ids in an entry's index (what GET /tasks?schedule= reads), oldest first."""
    return list(redis_client.zrange(SCHEDULE_TASKS_KEY.format(name), 0, -1))


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        assert asyncio.get_running_loop().time() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.1)
    return value


def contiguous(ticks: list[float], every: float) -> bool:
    return all(abs(b - a - every) < 1e-6 for a, b in itertools.pairwise(ticks))


def firing_delay(client_bodies: list[dict[str, Any]], ticks: dict[float, str]) -> float:
    """The largest submitted_at - tick over the ticks fired (seconds)."""
    from datetime import datetime

    at = {b["id"]: datetime.fromisoformat(b["submitted_at"]).timestamp() for b in client_bodies}
    return max(at[task_id] - tick for tick, task_id in ticks.items() if task_id in at)


async def schedule_tasks(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    response = await client.get("/tasks", params={"schedule": name, "limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_schedule_interval_of_one_second_fires_n_times_in_n_seconds(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name, n = entry_name("tick"), 5
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "args": [name],
                                                       "every": 1.0}})
    scheduler = start_scheduler(path)
    await until(lambda: len(fired(redis_client, name)) >= n + 2, n + 40, f"{n + 2} ticks")
    scheduler.stop()
    ticks = ticks_fired(redis_client, name)
    bodies = [await finished(client, t) for t in fired(redis_client, name)]
    assert [(b["state"], b["result"]) for b in bodies] == [("SUCCESS", name)] * len(bodies)
    listed = await schedule_tasks(client, name)
    assert {t["id"] for t in listed} == {b["id"] for b in bodies}
    # N seconds of ticks hold N ± 1 fires: counted from the tasks' own submit times
    from datetime import datetime

    times = sorted(datetime.fromisoformat(b["submitted_at"]).timestamp() for b in bodies)
    assert abs(sum(1 for t in times if t < times[0] + n) - n) <= 1, times
    assert len(ticks) == len(bodies) and contiguous(sorted(ticks), 1.0)
    print(f"periodic[{backend_name}] core: largest firing delay "
          f"{firing_delay(bodies, ticks) * 1000:.1f} ms against a 1 s tick")


async def test_schedule_two_schedulers_never_fire_a_tick_twice(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name = entry_name("pair")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "every": 0.5}})
    first, second = start_scheduler(path), start_scheduler(path)
    await until(lambda: len(fired(redis_client, name)) >= 10, 60, "10 ticks")
    await until(lambda: "fired" in first.output() and "fired" in second.output(), 10,
                "both schedulers firing")
    first.stop()
    second.stop()
    ids, ticks = fired(redis_client, name), ticks_fired(redis_client, name)
    bodies = [await finished(client, t) for t in ids]
    assert {b["state"] for b in bodies} == {"SUCCESS"}
    # Whatever the mechanism: a task fires a few ms after its tick, so two tasks of one
    # tick share its half-second slot.
    from datetime import datetime

    slots = [int(datetime.fromisoformat(b["submitted_at"]).timestamp() // 0.5) for b in bodies]
    assert len(slots) == len(set(slots)), sorted(slots)
    # and by the keys: as many tasks as ticks, each tick's its own, no tick left out
    assert len(ids) == len(set(ids)) == len(ticks)
    assert set(ticks.values()) == set(ids)
    assert contiguous(sorted(ticks), 0.5)
    print(f"periodic[{backend_name}] core x2: largest firing delay "
          f"{firing_delay(bodies, ticks) * 1000:.1f} ms against a 0.5 s tick")


async def test_schedule_a_killed_scheduler_is_replaced_by_the_other(
        client: httpx.AsyncClient, feature: Declare, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name = entry_name("takeover")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "every": 1.0}})
    doomed, survivor = start_scheduler(path), start_scheduler(path)
    await until(lambda: "fired" in doomed.output() and "fired" in survivor.output(), 60,
                "both schedulers firing")
    doomed.signal_group(signal.SIGKILL)
    doomed.stop()
    at_kill = len(fired(redis_client, name))
    await until(lambda: len(fired(redis_client, name)) >= at_kill + 3, 10,
                "3 ticks after the kill")
    survivor.stop()
    ticks = sorted(ticks_fired(redis_client, name))
    assert contiguous(ticks, 1.0), ticks  # not a tick lost over the kill


async def test_schedule_restart_skips_missed_ticks_unless_catch_up(
        client: httpx.AsyncClient, feature: Declare, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    skip, replay = entry_name("skip"), entry_name("replay")
    path = schedule_toml(tmp_path / "s.toml",
                         **{skip: {"task": "noop", "every": 1.0},
                            replay: {"task": "noop", "every": 1.0, "catch_up": True}})
    both = (skip, replay)
    first = start_scheduler(path)
    await until(lambda: all(len(fired(redis_client, e)) >= 2 for e in both), 60, "2 ticks")
    first.stop()
    down = 5  # seconds without any scheduler: the scenario, not a wait for a result
    await asyncio.sleep(down)
    before = {e: len(fired(redis_client, e)) for e in both}
    again = start_scheduler(path)
    await until(lambda: all(len(fired(redis_client, e)) >= before[e] + 2 for e in both), 60,
                "2 ticks after the restart")
    again.stop()
    skipped, replayed = (sorted(ticks_fired(redis_client, e)) for e in both)
    assert contiguous(replayed, 1.0), replayed  # every missed tick fired after all
    gaps = [b - a for a, b in itertools.pairwise(skipped)]
    assert max(gaps) >= down - 1, skipped  # the missed ones were skipped, not replayed
    assert len(replayed) - len(skipped) >= down - 2


@pytest.mark.parametrize("command", ["scheduler", "serve"])
def test_schedule_file_that_is_bad_exits_non_zero_with_one_line(
        command: str, backend_name: str, redis_url: str, tmp_path: Any) -> None:
    bad = schedule_toml(tmp_path / "bad.toml",
                        fine={"task": "noop", "every": 1},
                        broken={"task": "divide", "args": [1], "cron": "*/5 * * * *"})
    done = cli(command, "--backend", backend_name, REDIS_URL=redis_url, SCHEDULE_FILE=bad)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken" in lines[0] and "divide" in lines[0], done.stderr


async def test_schedules_api_lists_runs_pauses_and_resumes(
        client: httpx.AsyncClient, feature: Declare, tmp_path: Any,
        start_server: Callable[..., Server], start_scheduler: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name = entry_name("api")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "add", "args": [2, 3],
                                                       "every": 1.0}})
    server = start_server(SCHEDULE_FILE=path)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        [entry] = [e for e in (await api.get("/schedules")).json() if e["name"] == name]
        assert (entry["task"], entry["args"], entry["every"], entry["paused"]) == (
            "add", [2, 3], 1.0, False)
        assert entry["next_run_at"] and entry["last_run_at"] is None
        assert (await api.post("/schedules/nope/run")).status_code == 404

        response = await api.post(f"/schedules/{name}/run")
        assert response.status_code == 202, response.text
        task = response.json()
        assert response.headers["location"] == f"/tasks/{task['id']}"
        assert (await finished(api, task["id"]))["result"] == 5
        assert [t["id"] for t in await schedule_tasks(api, name)] == [task["id"]]
        entry = (await api.get(f"/schedules/{name}")).json()
        assert entry["last_task_id"] == task["id"] and entry["last_run_at"]

        paused = (await api.post(f"/schedules/{name}/pause")).json()
        assert paused["paused"] is True and paused["next_run_at"] is None
        scheduler = start_scheduler(path)
        await until(lambda: "scheduler: 1 entry" in scheduler.output(), 30, "scheduler up")
        await asyncio.sleep(3)  # three ticks while paused: none may fire
        assert fired(redis_client, name) == [task["id"]]
        resumed = (await api.post(f"/schedules/{name}/resume")).json()
        assert resumed["paused"] is False and resumed["next_run_at"]
        await until(lambda: len(fired(redis_client, name)) >= 3, 10, "ticks after resume")
        scheduler.stop()
    server.stop()


async def test_schedule_native_scheduler_fires_the_shared_tasks(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis,
        redis_url: str) -> None:
    """Celery beat, arq cron and taskiq's scheduler, generated from the same schedule;
    Dramatiq has none."""
    name = entry_name("native")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "args": [name],
                                                       "every": 1}})
    if backend_class(backend_name).support()["periodic"] is not Support.NATIVE:
        done = cli("scheduler", "--native", "--backend", backend_name, REDIS_URL=redis_url,
                   SCHEDULE_FILE=path)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "no scheduler of its own" in lines[0], done.stderr
        return
    assert feature("periodic") is Support.NATIVE
    native = start_scheduler(path, "--native")
    await until(lambda: len(fired(redis_client, name)) >= 4, 60, "4 native ticks")
    native.stop()
    bodies = [await finished(client, t) for t in fired(redis_client, name)]
    assert [(b["state"], b["result"]) for b in bodies] == [("SUCCESS", name)] * len(bodies)
    from datetime import datetime

    times = sorted(datetime.fromisoformat(b["submitted_at"]).timestamp() for b in bodies)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    ticks = ticks_fired(redis_client, name)  # arq's cron fires core's per-tick key
    # Celery beat's ticks are its own (from its start, not the epoch): the largest
    # distance from the grid of its first send stands in for the delay
    late = (firing_delay(bodies, ticks) if ticks
            else max(abs(t - times[0] - k) for k, t in enumerate(times)))
    print(f"periodic[{backend_name}] native: gaps {min(gaps):.3f}-{max(gaps):.3f} s, "
          f"largest firing delay {late * 1000:.1f} ms against a 1 s tick"
          f"{'' if ticks else ' (from its first send)'}")
    assert all(0.5 < g < 1.5 for g in gaps), gaps


def sends(proc: Proc, name: str) -> dict[float, str]:
    """tick -> task from a scheduler's log lines `<entry>: tick <t> fired <task> <id>`
    (core's scheduler writes them, and taskiq's, once per send)."""
    found = {}
    for line in proc.output().splitlines():
        words = line.split(f" {name}: tick ", 1)
        if len(words) == 2 and " fired " in words[1]:
            tick, _, _task, task_id = words[1].split()[:4]
            found[float(tick)] = task_id
    return found


async def test_schedule_two_native_schedulers_fire_each_tick_once(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    """Two `--native` schedulers at once, the second started late: arq's cron job,
    unique by its tick, and taskiq's sends, keyed by core's tick, fire each tick once.
    Celery beat's sends are its own (Celery's rule: run one beat)."""
    if backend_class(backend_name).support()["periodic"] is not Support.NATIVE:
        pytest.skip(f"{backend_name} has no scheduler of its own")
    if backend_name == "celery":
        pytest.skip("Celery beat sends each due entry unkeyed: run one beat")
    assert feature("periodic") is Support.NATIVE
    name = entry_name("native-pair")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "every": 1}})
    first = start_scheduler(path, "--native")
    await until(lambda: fired(redis_client, name), 60, "the first scheduler's tick")
    second = start_scheduler(path, "--native")
    await until(lambda: name in second.output(), 60, "the second scheduler at work")
    together = len(fired(redis_client, name))
    await until(lambda: len(fired(redis_client, name)) >= together + 6, 30,
                "6 ticks with both")
    assert first.alive() and second.alive()
    first.stop()
    second.stop()
    ids, ticks = fired(redis_client, name), ticks_fired(redis_client, name)
    bodies = [await finished(client, t) for t in ids]
    assert {b["state"] for b in bodies} == {"SUCCESS"}
    assert len(ids) == len(set(ids)) == len(ticks) and set(ticks.values()) == set(ids)
    assert contiguous(sorted(ticks), 1.0), sorted(ticks)
    # taskiq: every scheduler sends every tick, and both sends of one are its one task
    # (arq's second cron job of a tick is refused its id, and runs nothing)
    a, b = sends(first, name), sends(second, name)
    both = a.keys() & b.keys()
    assert all(a[t] == b[t] == ticks[t] for t in both), (a, b)
    assert len(both) >= 6 or backend_name == "arq", (a, b)


# What a library's scheduler cannot say: one line from `scheduler --native`, exit 2.
REFUSED_NATIVE = {
    "celery": ({"a": {"task": "noop", "cron": "* * * * *"},
                "b": {"task": "noop", "cron": "* * * * *", "timezone": "Asia/Tokyo"}},
               "beat has one time zone"),
    "arq": ({"x": {"task": "noop", "every": 1.5}}, "not a whole divisor"),
    "taskiq": ({"x": {"task": "noop", "every": 1.5}}, "whole number of seconds"),
}


def test_schedule_native_refuses_what_its_library_cannot_say_in_one_line(
        feature: Declare, backend_name: str, redis_url: str, tmp_path: Any) -> None:
    if backend_name not in REFUSED_NATIVE:
        pytest.skip(f"{backend_name} has no scheduler of its own")
    assert feature("periodic") is Support.NATIVE
    entries, words = REFUSED_NATIVE[backend_name]
    path = schedule_toml(tmp_path / "s.toml", **entries)
    done = cli("scheduler", "--native", "--backend", backend_name, REDIS_URL=redis_url,
               SCHEDULE_FILE=path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert f"--native on {backend_name}" in lines[0] and "without --native" in lines[0]
