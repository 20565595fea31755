"""core/worker/runner.py against a real Redis, with tasks of the tests' own and no
library: what the start script answers decides whether a delivery runs, and every
outcome reaches the record, however Redis or the lane fails on the way."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis as redis_sync
from redis.asyncio import Redis

import core.worker.runner as runner_module
from core.errors import RetryTask
from core.settings import Settings
from core.states import TaskState
from core.store.keys import OWNED_KEY, TASK_KEY, WORKERS_SEEN_KEY
from core.store.records import RecordStore, connect
from core.worker.runner import Runner
from tests.support_faults import RedisServer
from tests.support_worker import eventually, new_record, register


@pytest_asyncio.fixture
async def runner(settings: Settings, redis: Redis, own_heartbeat: None,
                 ) -> AsyncIterator[Runner]:
    made = Runner(settings, redis, offload_sync=True)
    yield made
    for lane in made._lanes:
        await lane.close()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The runs of the task `counted` (registered for the test)."""
    seen: list[Any] = []

    async def counted(payload: Any = None) -> Any:
        seen.append(payload)
        return payload

    register(monkeypatch, counted)
    return seen


async def _record(store: RecordStore, task_id: str) -> Any:
    return await store.get(task_id)


# -- what the start finds ----------------------------------------------------------------

async def test_a_pending_task_runs_and_ends_success(
        runner: Runner, store: RecordStore, calls: list[Any]) -> None:
    record = await new_record(store, "counted")
    assert await runner.run(record.id, "counted", {"payload": 7}) == 7
    assert calls == [7]
    done = await eventually(lambda: _final(store, record.id))
    assert (done.state, done.result, done.worker) == (TaskState.SUCCESS, 7, runner.worker)


async def _final(store: RecordStore, task_id: str) -> Any:
    record = await store.get(task_id)
    return record if record is not None and record.state.finished else None


async def test_a_task_whose_record_is_gone_is_not_run_and_not_written(
        runner: Runner, store: RecordStore, redis: Redis, calls: list[Any]) -> None:
    record = await new_record(store, "counted")
    await redis.delete(TASK_KEY.format(record.id))
    assert await runner.run(record.id, "counted", {"payload": 1}) is None
    assert calls == []
    assert not await redis.exists(TASK_KEY.format(record.id))  # no partial record written


async def test_a_task_a_live_worker_runs_is_busy_and_left_to_it(
        runner: Runner, store: RecordStore, redis: Redis, calls: list[Any]) -> None:
    record = await new_record(store, "counted")
    await redis.zadd(WORKERS_SEEN_KEY, {"other:1": time.time()})
    assert (await store.start(record.id, "other:1"))[0] == TaskState.PENDING
    assert await runner.run(f"{record.id}~1", "counted", {"payload": 1},
                            {"task_id": record.id}) is None
    assert calls == []
    running = await store.get(record.id)
    assert (running.state, running.worker) == (TaskState.STARTED, "other:1")  # type: ignore[union-attr]


@pytest.mark.parametrize("state", [TaskState.REVOKED, TaskState.EXPIRED, TaskState.SUCCESS])
async def test_a_task_already_final_is_not_run_and_stays_as_it_is(
        runner: Runner, store: RecordStore, calls: list[Any], state: TaskState) -> None:
    """Revoked before it ran, expired in its queue, or a redelivery of a task that
    finished: the delivery is acknowledged without a run, and the record keeps its
    final state and result."""
    if state is TaskState.EXPIRED:
        record = await new_record(store, "counted", expires_at=time.time() - 1)
    else:
        record = await new_record(store, "counted")
    if state is TaskState.REVOKED:
        await store.revoke(record.id)
    elif state is TaskState.SUCCESS:
        await store.start(record.id, "other:1")
        await store.finish(record.id, TaskState.SUCCESS, result="first", worker="other:1")
    assert await runner.run(record.id, "counted", {"payload": 1}) is None
    assert calls == []
    after = await store.get(record.id)
    assert after.state is state  # type: ignore[union-attr]
    assert after.result == ("first" if state is TaskState.SUCCESS else None)  # type: ignore[union-attr]


async def test_a_failed_run_with_retries_left_is_retry_and_raised_as_retrytask(
        runner: Runner, store: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    async def breaks() -> None:
        raise ValueError("no")

    register(monkeypatch, breaks)
    record = await new_record(store, "breaks")
    with pytest.raises(RetryTask):
        await runner.run(record.id, "breaks", {}, {"max_retries": 1})
    assert (await store.get(record.id)).state is TaskState.RETRY  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="no"):  # the next run: its last
        await runner.run(f"{record.id}~r", "breaks", {},
                         {"task_id": record.id, "max_retries": 1})
    done = await eventually(lambda: _final(store, record.id))
    assert (done.state, done.retries, done.error["type"]) == (TaskState.FAILURE, 1, "ValueError")


# -- a final write the lane could not confirm --------------------------------------------

@pytest.fixture
def spoils_its_owned_set(runner: Runner, redis: Redis, monkeypatch: pytest.MonkeyPatch,
                         ) -> str:
    """Registers the task `spoils_its_owned_set`, after which Redis refuses the run's
    final write (WRONGTYPE: the runner's owned set is not a set); that set's key."""
    owned = OWNED_KEY.format(runner.worker)

    async def spoils_its_owned_set() -> str:
        await redis.delete(owned)
        await redis.set(owned, "not a set")
        return "done"

    register(monkeypatch, spoils_its_owned_set)
    return owned


async def test_a_final_write_redis_refused_on_the_lane_is_written_again(
        runner: Runner, store: RecordStore, redis: Redis, calls: list[Any],
        spoils_its_owned_set: str) -> None:
    """Redis refuses the SUCCESS sent on the lane (WRONGTYPE, while the run's owned
    set is not a set): the next start reads the refusal, and the runner writes it
    again through the store once Redis takes it."""
    owned = spoils_its_owned_set
    first, second = await new_record(store, "spoils_its_owned_set"), await new_record(
        store, "counted")
    assert await runner.run(first.id, "spoils_its_owned_set", {}) == "done"
    assert await eventually(lambda: redis.hget(TASK_KEY.format(first.id), "state")) == b"STARTED"
    await redis.delete(owned)
    await runner.run(second.id, "counted", {"payload": 2})
    done = await eventually(lambda: _final(store, first.id))
    assert (done.state, done.result) == (TaskState.SUCCESS, "done")


async def _deferred(runner: Runner) -> bool:
    return bool(runner.heartbeat._deferred)


async def test_a_write_refused_past_its_tries_is_left_to_the_heartbeat(
        runner: Runner, store: RecordStore, redis: Redis, spoils_its_owned_set: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Left idle, the lane's refused write is read by the drain; Redis refuses it
    again through the store, so the heartbeat thread writes it once Redis takes it."""
    monkeypatch.setattr(runner_module, "FINISH_RETRIES", (0.01,))
    owned = spoils_its_owned_set
    record = await new_record(store, "spoils_its_owned_set")
    assert await runner.run(record.id, "spoils_its_owned_set", {}) == "done"
    assert await eventually(lambda: _deferred(runner))  # Redis still refuses it
    assert (await store.get(record.id)).state is TaskState.STARTED  # type: ignore[union-attr]
    await redis.delete(owned)
    done = await eventually(lambda: _final(store, record.id))
    assert (done.state, done.result) == (TaskState.SUCCESS, "done")


async def test_a_lane_whose_connection_failed_mid_flight_has_its_writes_done_again(
        runner: Runner, store: RecordStore, settings: Settings, calls: list[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane's connection is killed while the task runs: its SUCCESS never reaches
    Redis (the send fails, or the read of its reply does, at the next start), and the
    runner writes it again through the store."""
    async def cuts_every_connection() -> str:
        admin = redis_sync.Redis.from_url(settings.redis_url)
        try:
            admin.client_kill_filter(_type="normal", skipme=True)
        finally:
            admin.close()
        return "done"

    register(monkeypatch, cuts_every_connection)
    first, second = await new_record(store, "cuts_every_connection"), await new_record(
        store, "counted")
    await runner.run(second.id, "counted", {"payload": 0})  # the lane is made and in use
    third = await new_record(store, "counted")
    assert await runner.run(first.id, "cuts_every_connection", {}) == "done"
    await runner.run(third.id, "counted", {"payload": 3})
    done = await eventually(lambda: _final(store, first.id))
    assert (done.state, done.result) == (TaskState.SUCCESS, "done")
    assert (await eventually(lambda: _final(store, third.id))).result == 3


async def test_a_final_write_whose_send_fails_is_written_again_once_redis_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_heartbeat: None) -> None:
    """Redis is away when the SUCCESS is sent (the lane's connection gone with it): the
    send fails, and the runner writes it through the store, tried again until Redis
    is back."""
    server = RedisServer(tmp_path, appendfsync="always")  # the record outlives the kill
    settings = Settings(redis_url=server.url, history_enabled=False, worker_heartbeat=0.2)
    records = connect(server.url)
    runner = Runner(settings, records, offload_sync=True)

    async def redis_goes_away() -> str:
        for lane in runner._lanes:  # idle between its calls: its connection goes too
            await lane.close()
        server.kill()
        threading.Timer(0.5, server.start).start()
        return "done"

    register(monkeypatch, redis_goes_away)
    try:
        store = RecordStore(records, history=False)
        record = await new_record(store, "redis_goes_away")
        assert await runner.run(record.id, "redis_goes_away", {}) == "done"
        assert not any(lane.sent for lane in runner._lanes)  # not left on the lane
        done = await eventually(lambda: _final(store, record.id))
        assert (done.state, done.result) == (TaskState.SUCCESS, "done")
    finally:
        await records.aclose()
        server.stop()


# -- a RETRY is never deferred ----------------------------------------------------------

async def test_a_retry_is_written_before_the_library_hears_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_heartbeat: None) -> None:
    """Redis goes away while a run fails: the run does not end (and the library does not
    schedule the next one) until RETRY is written. Were RETRY left to the heartbeat, the
    next run would find the task STARTED under this live worker, be refused as BUSY,
    and the task would stay RETRY with nothing left to run it."""
    monkeypatch.setattr(runner_module, "FINISH_RETRIES", (0.01,))  # a final write's tries
    server = RedisServer(tmp_path, appendfsync="always")  # the record outlives the kill
    settings = Settings(redis_url=server.url, history_enabled=False, worker_heartbeat=0.2)
    records = connect(server.url)

    async def fails_while_redis_is_away() -> None:
        server.kill()
        threading.Timer(0.5, server.start).start()
        raise RuntimeError("failed while Redis was away")

    register(monkeypatch, fails_while_redis_is_away)
    try:
        record = await new_record(RecordStore(records, history=False), "fails_while_redis_is_away")
        runner = Runner(settings, records, offload_sync=True)
        with pytest.raises(RetryTask):
            await runner.run(record.id, "fails_while_redis_is_away", {}, {"max_retries": 2})
        found = redis_sync.Redis.from_url(server.url, socket_connect_timeout=1)
        try:
            assert found.hget(TASK_KEY.format(record.id), "state") == b"RETRY"
        finally:
            found.close()
    finally:
        await records.aclose()
        server.stop()
