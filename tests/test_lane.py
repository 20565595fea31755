"""core/worker/lane.py against a real Redis, on both kinds of connection a runner
gives it (asyncio: arq's loop; blocking: Celery's and Dramatiq's worker threads): a
final write goes unawaited, and every write it cannot confirm is handed back."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from core.settings import Settings
from core.states import TaskState
from core.store.keys import OWNED_KEY, TASK_KEY
from core.store.records import RecordStore, answer
from core.worker.lane import DRAIN_AFTER, Lane, Sent, ThreadDrain, new_lane
from tests.support_worker import eventually, new_record

WORKER = "host:1"
SUCCESS = {"result": 1, "worker": WORKER}


@pytest_asyncio.fixture(params=["asyncio", "blocking"])
async def lane(request: pytest.FixtureRequest, settings: Settings, store: RecordStore,
               ) -> AsyncIterator[Lane]:
    if request.param == "asyncio":
        made = new_lane(store)
    else:
        client = SyncRedis.from_url(settings.redis_url)
        made = new_lane(RecordStore(client, history=False, lease=5))
    yield made
    await made.close()


async def _state(redis: Redis, task_id: str) -> str:
    return (await redis.hget(TASK_KEY.format(task_id), "state") or b"").decode()


async def _lane_id(lane: Lane) -> int:
    """The lane's connection's id, asked on it (either kind of connection)."""
    await answer(lane.connection.send_command("CLIENT", "ID"))
    return int(await answer(lane.connection.read_response()))


async def test_a_final_write_goes_unawaited_and_its_reply_comes_with_the_next_start(
        lane: Lane, store: RecordStore, redis: Redis) -> None:
    """A worker waits on Redis once a task: the finish is sent and Redis runs it at
    once; its reply is read with the next start's, in the same round trip."""
    first, second = await new_record(store), await new_record(store)
    assert await lane.start(first.id, WORKER, "1") == (("PENDING", 0), ())
    assert await lane.finish(first.id, TaskState.SUCCESS, SUCCESS) == ()
    assert [w.task_id for w in lane.sent] == [first.id]  # not read yet
    assert await eventually(lambda: _is(redis, first.id, "SUCCESS"))
    assert await lane.start(second.id, WORKER, "2") == (("PENDING", 0), ())
    assert lane.sent == []  # the finish's reply was read with this start's
    assert (await store.get(first.id)).result == 1  # type: ignore[union-attr]
    assert await lane.drain() == ()


async def _is(redis: Redis, task_id: str, state: str) -> bool:
    return await _state(redis, task_id) == state


async def test_a_final_write_redis_refuses_is_handed_back_to_be_done_again(
        lane: Lane, store: RecordStore, redis: Redis) -> None:
    first, second = await new_record(store), await new_record(store)
    await lane.start(first.id, WORKER, "1")
    await redis.set(OWNED_KEY.format(WORKER), "not a set")  # WRONGTYPE
    await lane.finish(first.id, TaskState.SUCCESS, SUCCESS)
    found, undone = await lane.start(second.id, "host:2", "2")
    assert found == ("PENDING", 0)
    assert [(w.task_id, w.state, w.outcome["result"]) for w in undone] == [
        (first.id, TaskState.SUCCESS, 1)]
    assert await _state(redis, first.id) == "STARTED"
    # Left idle, the refusal is found by a drain instead of a start.
    await lane.finish(second.id, TaskState.FAILURE, {"error": {"type": "E", "message": ""},
                                                     "worker": WORKER})
    assert [w.task_id for w in await lane.drain()] == [second.id]


async def test_a_broken_lane_hands_back_every_write_not_confirmed(
        lane: Lane, store: RecordStore, redis: Redis) -> None:
    first, second = await new_record(store), await new_record(store)
    await lane.start(first.id, WORKER, "1")
    await redis.client_kill_filter(_id=await _lane_id(lane))  # before the finish is sent
    # The send itself may fail, or only the read of its reply: either way the write
    # comes back, once.
    undone = [*await lane.finish(first.id, TaskState.SUCCESS, SUCCESS)]
    if not undone:
        found, undone = await lane.start(second.id, WORKER, "2")
        assert found is None
    assert [w.task_id for w in undone] == [first.id]
    assert lane.sent == [] and not lane.loaded
    assert await _state(redis, first.id) == "STARTED"  # Redis never ran it
    # The lane connects again, loads its scripts, and goes on.
    assert (await lane.start(second.id, WORKER, "3"))[0] == ("PENDING", 0)


async def test_a_lane_whose_scripts_redis_lost_hands_back_and_loads_them_again(
        lane: Lane, store: RecordStore, redis: Redis) -> None:
    """SCRIPT FLUSH (or a Redis restarted under a connection kept open): the finish
    sent is refused as NOSCRIPT and handed back by the start that read it, though that
    start is refused too (the runner then starts the slow way); the lane loads its
    scripts again."""
    first, second = await new_record(store), await new_record(store)
    await lane.start(first.id, WORKER, "1")
    await redis.script_flush()
    await lane.finish(first.id, TaskState.SUCCESS, SUCCESS)
    found, undone = await lane.start(second.id, WORKER, "2")
    assert found is None  # the runner starts it the slow way
    assert [(w.task_id, w.state) for w in undone] == [(first.id, TaskState.SUCCESS)]
    assert lane.sent == [] and not lane.loaded
    assert await _state(redis, first.id) == "STARTED"
    assert await lane.start(second.id, WORKER, "3") == (("PENDING", 0), ())
    await lane.finish(second.id, TaskState.SUCCESS, {"result": 2, "worker": WORKER})
    assert await lane.drain() == ()
    assert (await store.get(second.id)).result == 2  # type: ignore[union-attr]


async def test_the_drain_thread_hands_an_idle_lanes_refused_write_to_its_redo(
        settings: Settings, store: RecordStore, redis: Redis) -> None:
    """A worker thread's lane left idle after a finish: no start reads the reply, so
    the process's drain thread does, and hands what Redis refused to the redo given
    with that lane."""
    client = SyncRedis.from_url(settings.redis_url)
    lane = new_lane(RecordStore(client, history=False, lease=5))
    handed: list[Sent] = []
    done = threading.Event()

    def redo(undone: Sequence[Sent]) -> None:
        handed.extend(undone)
        done.set()

    record = await new_record(store)
    try:
        await lane.start(record.id, WORKER, "1")
        await redis.set(OWNED_KEY.format(WORKER), "not a set")  # WRONGTYPE
        await lane.finish(record.id, TaskState.SUCCESS, SUCCESS)
        ThreadDrain().add(lane, redo)
        assert done.wait(DRAIN_AFTER * 20)
        assert [(w.task_id, w.state) for w in handed] == [(record.id, TaskState.SUCCESS)]
        assert lane.sent == []
    finally:
        await lane.close()
        client.close()
