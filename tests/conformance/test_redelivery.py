"""Redelivery: a task whose worker died, or whose message was lost or taken by a consumer
that died, runs again once, within REDELIVERY_AFTER; a task waiting in its queue, or
running on a live worker, is not run twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
import redis

from core.backend import backend_class
from core.cli.procs import Proc, wait_until
from core.settings import Settings
from core.store.keys import DUE_KEY, OWNED_KEY, TASK_KEY, WORKERS_KEY, WORKERS_SEEN_KEY
from core.tasks.features import Support
from tests.conformance.support import (
    Declare,
    Timeline,
    finished,
    flaky_runs,
    sleep_runs,
    state_seen,
    submit,
)


async def test_task_of_a_killed_worker_runs_again_elsewhere_with_default_settings(
        client: httpx.AsyncClient, feature: Declare, queue_name: str, redis_url: str,
        start_worker: Callable[..., Proc], redis_client: redis.Redis) -> None:
    """No shortened timeouts: the settings a user gets (REDELIVERY_AFTER 30 s, the
    default heartbeat, the library's own visibility timeouts of an hour)."""
    assert feature("redelivery") is not Support.NONE
    defaults = {"WORKER_HEARTBEAT": "2"}
    doomed = start_worker(concurrency=1, queues=queue_name, **defaults)
    key = uuid.uuid4().hex
    task = await submit(client, "sleep", 2, key, options={"queue": queue_name})
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    first = (await client.get(f"/tasks/{task['id']}")).json()
    first_worker = redis_client.hget(TASK_KEY.format(task['id']), "worker")
    doomed.signal_group(signal.SIGKILL)
    doomed.stop()
    async with Timeline(redis_url) as timeline:
        rescuer = start_worker(concurrency=1, queues=queue_name, **defaults)
        body = await finished(client, task["id"], timeout=55)  # 30 s lease + a pass + 2 s
        assert (body["state"], body["result"]) == ("SUCCESS", 2)
        assert (await timeline.states(task["id"])).count("STARTED") == 1  # once, only once
    assert body["retries"] == 0  # a redelivery is not a retry
    assert sleep_runs(redis_client, key) == 1
    ran_on = redis_client.hget(TASK_KEY.format(task['id']), "worker")
    assert ran_on != first_worker
    # The rescuer's own process, or one of its children (Celery prefork, Dramatiq).
    info = json.loads(redis_client.hget(WORKERS_KEY, ran_on) or "{}")
    assert rescuer.pid in (info.get("pid"), info.get("parent")), (ran_on, info)
    assert body["started_at"] > first["started_at"]


async def test_a_killed_workers_waiting_tasks_run_elsewhere_with_default_settings(
        client: httpx.AsyncClient, backend_name: str, queue_name: str, redis_url: str,
        broker_url: str, start_worker: Callable[..., Proc]) -> None:
    """A worker holds a task beside the one it runs (a prefetching library takes the
    next message early): when it dies, that one too runs elsewhere in seconds, not
    after the library's own visibility timeout of an hour. Every message a worker
    holds must be a task it runs, whose record names its owner."""
    doomed = start_worker(concurrency=1, queues=queue_name, WORKER_HEARTBEAT="2")
    running = await submit(client, "sleep", 8, options={"queue": queue_name})
    waiting = await submit(client, "add", 1, 2, options={"queue": queue_name})
    assert await state_seen(client, running["id"], {"STARTED"}) == "STARTED"
    settings = Settings(redis_url=redis_url, broker_url=broker_url)
    backend = backend_class(backend_name)(settings)
    try:  # give a prefetching worker the time to take the waiting task (or not)
        deadline = time.monotonic() + 3
        while (await backend.queue_depths()).get(queue_name) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await backend.aclose()
    states = [(await client.get(f"/tasks/{t['id']}")).json()["state"] for t in (running, waiting)]
    assert states == ["STARTED", "PENDING"]  # killed with both on hand, neither done
    doomed.signal_group(signal.SIGKILL)
    doomed.stop()
    start_worker(concurrency=1, queues=queue_name, WORKER_HEARTBEAT="2")
    for task, result in ((running, 8), (waiting, 3)):
        body = await finished(client, task["id"], timeout=60)  # 30 s lease + a pass
        assert (body["state"], body["result"]) == ("SUCCESS", result), body


def _take_as_a_consumer_that_dies(backend_name: str, broker: redis.Redis, queue: str,
                                  delivery_id: str) -> None:
    """What the library's consumer writes when it takes a message, and nothing after:
    it died before the task started."""
    if backend_name == "arq":  # arq's poll: the in-progress mark, the job left queued
        broker.psetex(f"arq:in-progress:{delivery_id}", 3_600_000, b"1")
    elif backend_name == "celery":  # kombu: BRPOP, then the unacked hash and its index
        # (one list per priority step: `queue`, `queue:1`, ...)
        [message] = [m for k in broker.scan_iter(match=f"{queue}*") if (m := broker.rpop(k))]
        broker.zadd("unacked_index", {f"dead-{delivery_id}": time.time()})
        broker.hset("unacked", f"dead-{delivery_id}", json.dumps([message.decode(), "", queue]))
    elif backend_name == "taskiq":  # XREADGROUP: the entry pending on the consumer
        with contextlib.suppress(redis.ResponseError):  # the group exists already
            broker.xgroup_create(f"taskiq:{queue}", "taskiq", id="0", mkstream=True)
        [[_, [entry]]] = broker.xreadgroup("taskiq", "dead-consumer", {f"taskiq:{queue}": ">"},
                                           count=1)
        assert entry
    else:  # Dramatiq's fetch: the id from its queue's list into the consumer's acks
        message_id = broker.lpop(f"dramatiq:{queue}")
        assert message_id is not None
        broker.sadd(f"dramatiq:__acks__.dead-consumer.{queue}", message_id)


@pytest.mark.parametrize("fault", ["lost", "taken"])
async def test_a_task_whose_message_was_lost_or_taken_by_a_dead_consumer_runs_once(
        client: httpx.AsyncClient, backend_name: str, feature: Declare, queue_name: str,
        broker_url: str, request: pytest.FixtureRequest, start_worker: Callable[..., Proc],
        redis_client: redis.Redis, fault: str) -> None:
    """Accepted, then its message gone from the broker (`lost`: a Redis restart that lost
    the last writes, kombu's take-then-record window, an API killed between record and
    message), or taken by a consumer that died before the task started (`taken`: no
    owner for the dead-worker pass, and the library's own redelivery waits for its
    visibility timeout, an hour; arq's in-progress mark, a week here). The overdue pass
    finds its message in no queue of the library's and sends it again: it runs once."""
    assert feature("redelivery") is not Support.NONE
    if request.config.getoption("--broker") == "rabbitmq":
        pytest.skip("RabbitMQ keeps a confirmed message through a restart and hands a dead "
                    "consumer's unacked ones out again itself: core does not look into its "
                    "queues")
    key = uuid.uuid4().hex
    task = await submit(client, "flaky", 0, key, options={"queue": queue_name})
    broker = redis.Redis.from_url(broker_url)
    if fault == "lost":
        lost = list(broker.scan_iter(match=f"*{queue_name}*"))  # the library's queue keys
        assert lost and broker.delete(*lost)
    else:
        _take_as_a_consumer_that_dies(backend_name, broker, queue_name, task["id"])
    hasty = start_worker(concurrency=1, queues=queue_name, REDELIVERY_AFTER="2")
    body = await finished(client, task["id"])
    hasty.stop()  # its reaper would judge the session's later workers dead (a 2 s beat)
    assert (body["state"], flaky_runs(redis_client, key)) == ("SUCCESS", 1)
    assert redis_client.hget(TASK_KEY.format(task['id']), "deliveries") == "1"


async def test_a_task_whose_message_waits_in_the_broker_is_not_sent_again(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    """Overdue but queued where its library will deliver it (no worker consumes its queue
    yet): the reaper looks (its due time moves on a lease) and leaves it alone."""
    task = await submit(client, "add", 1, 2, options={"queue": queue_name})
    submitted = float(redis_client.zscore(DUE_KEY, task["id"]) or 0)
    hasty = start_worker(concurrency=1, queues=f"{queue_name}-other", REDELIVERY_AFTER="1")
    wait_until(lambda: float(redis_client.zscore(DUE_KEY, task["id"]) or 0) > submitted + 1,
               timeout=30, what="the reaper's look at the overdue task")
    hasty.stop()  # its reaper would judge the session's later workers dead (a 2 s beat)
    assert redis_client.hget(TASK_KEY.format(task['id']), "deliveries") in (None, "0")
    start_worker(concurrency=1, queues=queue_name)
    assert (await finished(client, task["id"]))["result"] == 3


async def test_a_second_delivery_of_a_running_task_is_refused(
        client: httpx.AsyncClient, backend_name: str, queue_name: str, redis_url: str,
        broker_url: str, start_worker: Callable[..., Proc], redis_client: redis.Redis) -> None:
    """Two deliveries of one message (a visibility-timeout redelivery while the first
    still runs, a library's redelivery racing the reaper): the owner is alive, so the
    second does not run. Sent here through the adapter, as the reaper sends."""
    from dataclasses import replace

    start_worker(concurrency=2, queues=queue_name)
    key = uuid.uuid4().hex
    task = await submit(client, "sleep", 2, key, options={"queue": queue_name})
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    settings = Settings(redis_url=redis_url, broker_url=broker_url)
    backend = backend_class(backend_name)(settings)
    try:
        record = await backend.get(task["id"])
        async with Timeline(redis_url) as timeline:
            await backend.redeliver(replace(record, deliveries=record.deliveries + 1))
            body = await finished(client, task["id"])
            assert "STARTED" not in await timeline.states(task["id"])
    finally:
        await backend.aclose()
    assert (body["state"], body["started_at"]) == ("SUCCESS", (await client.get(
        f"/tasks/{task['id']}")).json()["started_at"])
    assert sleep_runs(redis_client, key) == 1


def _roll_back_to_started(redis_client: redis.Redis, task_id: str) -> str:
    """What an AOF cut back by its last second does to a task that finished in that
    second: its record STARTED again, in its worker's owned set. Its worker id."""
    key = TASK_KEY.format(task_id)
    worker = redis_client.hget(key, "worker")
    assert worker
    redis_client.hset(key, "state", "STARTED")
    redis_client.hdel(key, "finished_at", "result")
    redis_client.sadd(OWNED_KEY.format(worker), task_id)
    return worker


async def test_a_task_rolled_back_to_started_under_its_live_worker_runs_again(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    """Redis lost a task's end (a crash with `appendfsync everysec`): its record says
    STARTED, owned by a worker that is alive but does not run it, and no message of it
    is left. The worker's owned audit sends it again: it runs once more and ends SUCCESS,
    its worker alive, with the default REDELIVERY_AFTER (30 s: nobody is judged dead)."""
    worker_proc = start_worker(concurrency=1, queues=queue_name, WORKER_HEARTBEAT="2")
    key = uuid.uuid4().hex
    task = await submit(client, "flaky", 0, key, options={"queue": queue_name})
    assert (await finished(client, task["id"]))["state"] == "SUCCESS"
    worker = _roll_back_to_started(redis_client, task["id"])
    # 3 beats of grace, twice (the first look, the one that sends), a reaper pass, a run.
    wait_until(lambda: flaky_runs(redis_client, key) == 2, timeout=30,
               what="the rolled-back task's second run")
    body = await finished(client, task["id"])
    assert (body["state"], body["result"]) == ("SUCCESS", 2)
    assert redis_client.hget(TASK_KEY.format(task["id"]), "deliveries") == "1"
    assert not redis_client.sismember(OWNED_KEY.format(worker), task["id"])
    assert worker_proc.alive()  # and not judged dead by anyone's reaper: its audit sent it
    assert time.time() - float(redis_client.zscore(WORKERS_SEEN_KEY, worker) or 0) < 30


async def test_a_long_running_task_is_not_sent_again_by_its_workers_audit(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    """Owned and STARTED for many times the audit's grace, but running: never sent
    again (two slots, so a second delivery would run beside it). Sent again, it would
    be after two graces and a reaper pass: about 16 s."""
    start_worker(concurrency=2, queues=queue_name)  # heartbeat 0.5 s: a 5 s grace
    key = uuid.uuid4().hex
    task = await submit(client, "sleep", 20, key, options={"queue": queue_name})
    body = await finished(client, task["id"], timeout=40)
    assert (body["state"], sleep_runs(redis_client, key)) == ("SUCCESS", 1)
    assert redis_client.hget(TASK_KEY.format(task["id"]), "deliveries") in (None, "0")
