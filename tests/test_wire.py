"""Golden tests of the native producers (backends/*/wire.py): the same task built by
the library's own producer and by queuebench's, for every option combination,
compared field by field (ids and timestamps aside) in what lands in Redis, against
the library version installed in this backend's environment. A library upgrade that
changes its format fails here, by name, never as a silent drop.

Each backend's format is tested in that backend's run (`--backend B`): the library is
installed only in its own environment."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import pickle
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from core.settings import Settings
from core.states import TaskState
from core.store.records import TaskRecord
from core.tasks.options import TaskOptions
from tests.conftest import redis_database

WIRE_DB = 15
PARAMS = {"celery": ("queue", "priority", "countdown", "eta", "limits"),
          "dramatiq": ("queue", "delay_ms", "options"),
          "arq": ("queue", "defer_by", "defer_until"),
          "taskiq": ("queue", "countdown")}
SOON = datetime.now(UTC) + timedelta(minutes=5)
# A submission whose arguments the Celery message shows (its argsrepr, kwargsrepr).
SHOWN = TaskRecord(id="t", name="add", backend="celery", args=[1.5, "é"],
                   kwargs={"y": [1, None], "z": "x" * 2000})


@pytest.fixture
def wire_url() -> str:
    return redis_database(WIRE_DB, flush=True)


@pytest.fixture
def wire_redis(wire_url: str) -> redis.Redis:
    return redis.Redis.from_url(wire_url)


def _only(backend_name: str, wanted: str) -> None:
    if backend_name != wanted:
        pytest.skip(f"{wanted}'s wire format is tested in the {wanted} run (its library "
                    "is installed only there)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A library's cases only in its own run: elsewhere one case says why it skips."""
    selected = metafunc.config.getoption("--backend") or []
    for wanted, cases in (("celery", CELERY_CASES), ("dramatiq", DRAMATIQ_CASES),
                          ("arq", ARQ_CASES), ("taskiq", TASKIQ_CASES)):
        if metafunc.function.__name__.startswith(f"test_{wanted}_"):
            metafunc.parametrize(PARAMS[wanted], cases if (not selected or wanted in selected)
                                 else cases[:1])


def _close(a: float, b: float, within: float) -> bool:
    return abs(a - b) <= within


def _run(client: redis.Redis, commands: list[tuple[Any, ...]]) -> None:
    for command in commands:
        client.execute_command(*command)


# -- Celery: kombu's Redis transport, protocol 2 -------------------------------------------

CELERY_CASES = list(itertools.product(
    ["default", "other"],            # queue
    [None, 0, 4, 9],                 # kombu priority (after the adapter's mapping)
    [None, 2.5],                     # countdown
    [None, SOON],                    # eta
    [None, (3.0, 13.0)],             # soft, hard time limit
))


def test_celery_message_matches_apply_async(backend_name: str, wire_url: str,
                                            wire_redis: redis.Redis,
                                            queue: str, priority: int | None,
                                            countdown: float | None, eta: datetime | None,
                                            limits: tuple[float, float] | None) -> None:
    _only(backend_name, "celery")
    from backends.celery_impl.app import celery_app
    from backends.celery_impl.wire import shown, task_commands

    app = celery_app(Settings(redis_url=wire_url))
    args = ({"x": 1.5, "y": [1, "é", None]}, {"task_id": "t", "max_retries": 2})
    soft, hard = limits or (None, None)
    extra: dict[str, Any] = {} if priority is None else {"priority": priority}
    reprs = shown(app, SHOWN)  # the adapter's argsrepr and kwargsrepr
    extra.update(reprs)
    app.tasks["add"].apply_async(args, task_id="lib", queue=queue, countdown=countdown,
                                 eta=eta, soft_time_limit=soft, time_limit=hard, **extra)
    [(lib_key, lib_raw)] = _pop_all(wire_redis)
    _run(wire_redis, task_commands(app, "add", args, task_id="nat", queue=queue,
                                   priority=priority, countdown=countdown, eta=eta,
                                   time_limit=hard, soft_time_limit=soft, **reprs))
    [(nat_key, nat_raw)] = _pop_all(wire_redis)
    assert nat_key == lib_key
    lib, nat = json.loads(lib_raw), json.loads(nat_raw)
    for message in (lib, nat):
        message["body"] = json.loads(base64.b64decode(message["body"]))
        del message["properties"]["delivery_tag"]
        message["properties"]["correlation_id"] = message["headers"]["id"] = "id"
        message["headers"]["root_id"] = "id"
        eta_header = message["headers"].pop("eta")
        message["eta"] = eta_header and datetime.fromisoformat(eta_header).timestamp()
    lib_eta, nat_eta = lib.pop("eta"), nat.pop("eta")
    assert (lib_eta is None) == (nat_eta is None)
    if nat_eta is not None:
        assert _close(lib_eta, nat_eta, 1.0)
    assert nat == lib


def _pop_all(client: redis.Redis) -> list[tuple[str, bytes]]:
    found = []
    for key in client.keys("*"):
        if client.type(key) == b"list":
            found += [(key.decode(), raw) for raw in client.lrange(key, 0, -1)]
            client.delete(key)
    return found


# -- Dramatiq: the Redis broker's enqueue ------------------------------------------------

DRAMATIQ_CASES = list(itertools.product(
    ["default", "other"], [None, 2500], [{}, {"max_retries": 3, "time_limit": 4000}]))


def test_dramatiq_message_matches_broker_enqueue(backend_name: str, wire_url: str,
                                                 wire_redis: redis.Redis,
                                                 queue: str, delay_ms: int | None,
                                                 options: dict[str, Any]) -> None:
    _only(backend_name, "dramatiq")
    from dramatiq import Message

    from backends.dramatiq_impl.actors import broker
    from backends.dramatiq_impl.wire import message_commands

    made = broker(Settings(redis_url=wire_url))
    made.declare_queue(queue)
    message = Message(queue_name=queue, actor_name="add", args=({"x": 1, "y": 2}, {}),
                      kwargs={}, options=options, message_id=str(uuid.uuid4()))
    made.enqueue(message, delay=delay_ms)
    library = _dramatiq_messages(wire_redis)
    _run(wire_redis, message_commands(message, namespace=made.namespace, delay_ms=delay_ms))
    native = _dramatiq_messages(wire_redis)
    assert [key for key, _ in native] == [key for key, _ in library]
    [(_, lib)], [(_, nat)] = library, native
    for body in (lib, nat):
        body["options"].pop("redis_message_id")
    if delay_ms is not None:
        assert _close(lib["options"].pop("eta"), nat["options"].pop("eta"), 1000)
    assert nat == lib


def _dramatiq_messages(client: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
    """(queue list, message) for each message queued, and the queue emptied."""
    found = []
    for key in sorted(k.decode() for k in client.keys("dramatiq:*")):
        if client.type(key) == b"list":
            for redis_id in client.lrange(key, 0, -1):
                raw = client.hget(f"{key}.msgs", redis_id)
                assert raw is not None, f"{key} holds {redis_id!r} but {key}.msgs does not"
                found.append((key, json.loads(raw)))
            client.delete(key, f"{key}.msgs")
    return found


# -- arq: enqueue_job --------------------------------------------------------------------

ARQ_CASES = [("arq:queue:default", None, None), ("arq:queue:other", 2.5, None),
             ("arq:queue:default", None, SOON)]


async def test_arq_job_matches_enqueue_job(backend_name: str, wire_url: str,
                                           wire_redis: redis.Redis,
                                           queue: str, defer_by: float | None,
                                           defer_until: datetime | None) -> None:
    _only(backend_name, "arq")
    from arq import create_pool
    from arq.connections import RedisSettings

    from backends.arq_impl.wire import job_commands

    pool = await create_pool(RedisSettings.from_dsn(wire_url))
    args = ({"x": 1, "y": 2}, {"task_id": "t"})
    try:
        await pool.enqueue_job("add", *args, _job_id="lib", _queue_name=queue,
                               _defer_by=defer_by, _defer_until=defer_until)
    finally:
        await pool.aclose()
    _run(wire_redis, job_commands("add", args, "nat", queue_name=queue, defer_by=defer_by,
                                  defer_until=defer_until))
    jobs = {job_id: pickle.loads(wire_redis.get(f"arq:job:{job_id}")) for job_id in ("lib", "nat")}
    assert _close(jobs["lib"].pop("et"), jobs["nat"].pop("et"), 1000)
    assert jobs["nat"] == jobs["lib"]
    scores = dict(wire_redis.zrange(queue, 0, -1, withscores=True))
    assert _close(scores[b"lib"], scores[b"nat"], 1000)
    assert _close(wire_redis.pttl("arq:job:lib"), wire_redis.pttl("arq:job:nat"), 1000)


# -- taskiq: AsyncKicker.kiq through the adapter's stream broker -------------------------

TASKIQ_CASES = list(itertools.product([None, "other"], [None, 2.5]))  # None: the default queue


def taskiq_submission(settings: Settings, queue: str | None, countdown: float | None,
                      ) -> tuple[Any, TaskRecord, dict[str, Any], TaskOptions]:
    """taskiq's Backend on `settings`, and one `add` prepared as a submit prepares it."""
    from backends.taskiq_impl import Backend

    backend = Backend(settings)
    record, arguments, options = backend.prepare(
        "add", [1.5], {"y": 2}, TaskOptions(queue=queue, countdown=countdown, max_retries=2),
        time.time())
    return backend, record, arguments, options


async def taskiq_kiq(backend: Any, record: TaskRecord, arguments: dict[str, Any],
                     options: TaskOptions, queue_label: str, countdown: float | None) -> None:
    """The task sent by taskiq's own `kiq()` on a client of the adapter's broker, with
    the labels a taskiq user routes and delays a task by."""
    from backends.taskiq_impl.broker import make_broker

    made = make_broker(backend.settings)
    await made.startup()
    try:
        labels: dict[str, Any] = {"queue_name": queue_label}
        if countdown is not None:
            labels["delay"] = countdown
        task = made.find_task(record.name)
        assert task is not None
        await (task.kicker().with_task_id(record.delivery_id).with_labels(**labels)
               .kiq(arguments, backend.meta(record, options)))
    finally:
        await made.shutdown()


def taskiq_same(lib: dict[str, Any], nat: dict[str, Any]) -> None:
    """Two taskiq messages (TaskiqMessage as JSON) alike: the delay label, a float
    the native producer computes from the submit time, within a millisecond."""
    delays = [m["labels"].pop("delay", None) for m in (lib, nat)]
    assert (delays[0] is None) == (delays[1] is None), delays
    if delays[0] is not None:
        assert _close(float(delays[0]), float(delays[1]), 0.001), delays
    assert nat == lib


async def test_taskiq_message_matches_kiq(backend_name: str, wire_url: str,
                                          wire_redis: redis.Redis, queue: str | None,
                                          countdown: float | None) -> None:
    _only(backend_name, "taskiq")
    backend, record, arguments, options = taskiq_submission(
        Settings(redis_url=wire_url, history_enabled=False), queue, countdown)
    queue = queue or "default"
    try:
        await taskiq_kiq(backend, record, arguments, options, f"taskiq:{queue}", countdown)
        library = _taskiq_messages(wire_redis)
        _run(wire_redis, backend.commands(record, arguments, options))
        native = _taskiq_messages(wire_redis)
    finally:
        await backend.aclose()
    held = f"taskiq:{queue}:delayed" if countdown else f"taskiq:{queue}"
    assert [key for key, _, _ in native] == [key for key, _, _ in library] == [held]
    [(_, lib, lib_due)], [(_, nat, nat_due)] = library, native
    assert (lib["task_id"], lib["task_name"]) == (record.delivery_id, "add")
    assert lib["args"] == [{"x": 1.5, "y": 2}, backend.meta(record, options)]
    if countdown:  # the due time: the library's clock at its kick, the native's at submit
        assert lib_due is not None and nat_due is not None
        assert _close(lib_due, record.submitted_at + countdown, 1.0)
        assert _close(nat_due, record.submitted_at + countdown, 0.001)
    else:
        assert lib_due is nat_due is None
    taskiq_same(lib, nat)


def _taskiq_messages(client: redis.Redis) -> list[tuple[str, dict[str, Any], float | None]]:
    """(key, message, due time or None) for each taskiq message queued (a stream
    entry's `data`, a delayed set's member), and the keys emptied."""
    found = []
    for key in sorted(k.decode() for k in client.keys("taskiq:*")):
        kind = client.type(key)
        if kind == b"stream":
            for _, fields in client.xrange(key):
                assert set(fields) == {b"data"}, fields
                found.append((key, json.loads(fields[b"data"]), None))
        elif kind == b"zset":
            found += [(key, json.loads(member), score)
                      for member, score in client.zrange(key, 0, -1, withscores=True)]
        client.delete(key)
    return found


async def test_taskiq_worker_runs_a_natively_sent_task(backend_name: str, wire_url: str,
                                                      queue: str | None,
                                                      countdown: float | None) -> None:
    """Sent by the native producer (in the record's create script), run by taskiq's
    own Receiver on the adapter's worker broker: not before its countdown."""
    _only(backend_name, "taskiq")
    settings = Settings(redis_url=wire_url, history_enabled=False)
    await taskiq_sent_and_run(settings, queue, countdown, "script")


async def taskiq_sent_and_run(settings: Settings, queue: str | None,
                              countdown: float | None, producer: str) -> None:
    from backends.taskiq_impl import Backend

    backend = Backend(settings)
    try:
        assert backend.producer.kind == producer
        record = await backend.submit("add", [1, 2], options=TaskOptions(
            queue=queue, countdown=countdown))
        async with taskiq_receiver(settings, [queue or "default"]):
            done = await _final(backend, record.id, timeout=30 + (countdown or 0))
    finally:
        await backend.aclose()
    assert (done.state, done.result) == (TaskState.SUCCESS, 3), done
    assert done.started_at is not None and record.submitted_at is not None
    assert done.started_at >= record.submitted_at + (countdown or 0)


@contextlib.asynccontextmanager
async def taskiq_receiver(settings: Settings, queues: list[str]) -> AsyncIterator[None]:
    """taskiq's own Receiver (what each process of `taskiq worker` runs) listening on
    the adapter's worker broker of `queues` until the block ends."""
    from concurrent.futures import ThreadPoolExecutor

    from taskiq.receiver import Receiver

    from backends.taskiq_impl.broker import make_broker

    made = make_broker(settings, queues, slots=4)
    made.is_worker_process = True
    await made.startup()
    finish = asyncio.Event()
    try:
        with ThreadPoolExecutor(2) as executor:
            receiver = Receiver(made, executor, run_startup=False, max_async_tasks=4)
            listening = asyncio.create_task(receiver.listen(finish))
            try:
                yield
            finally:
                finish.set()
                await asyncio.wait_for(listening, 30)
    finally:
        await made.shutdown()


async def _final(backend: Any, task_id: str, timeout: float) -> TaskRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = await backend.get(task_id)
        if record.state.finished or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.05)
