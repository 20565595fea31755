"""One round trip per task on the worker's path (issue 9).

A task's record moves twice in its worker: the start script before it runs (whose
answer says whether to run it: LOST, BUSY, REVOKED, EXPIRED, a redelivery of a
finished task) and the finish script after. The start's answer is needed before the
run; the finish's is not. So a runner sends a final write (SUCCESS, FAILURE) on a
connection of its own, a lane, and goes on without waiting: Redis runs it as it
arrives, and its reply is read together with the next start's on that lane. The
worker then waits on Redis once per task, as the libraries' own bookkeeping does,
and each transition costs a send and a read on the lane instead of a redis-py
command call, which on the asyncio client is most of the CPU it costs.

What can go wrong with a write sent but not confirmed, and what is done:
- Redis answers it with an error (WRONGTYPE, NOSCRIPT after a restart, OOM): the
  reply is read at the next start, or by the drain once the lane is idle for
  DRAIN_AFTER seconds, and the write is done again the slow way (core/worker/runner.py
  `_finish`: tried again, then handed to the heartbeat thread).
- The lane's connection fails (Redis away, a timeout): every write on it not yet
  confirmed is done again the slow way. The finish script is idempotent for a final
  state (the first final state wins), so one that Redis did run is not harmed.
- The process dies: what it sent is in the socket, and Redis runs it. A write that
  Redis would have refused is then never done again, so the record stays STARTED
  under a dead owner and the reaper sends the task again: it runs once more.
A RETRY is not final (the next run moves the record on), so doing it again late
could undo that run's STARTED: it is never deferred.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError, RedisError, ResponseError

from core.states import TaskState
from core.store.records import RecordStore, _reply, started

log = logging.getLogger("queuebench.lane")

# Seconds a lane's unread replies wait for the next start before a drain reads them.
DRAIN_AFTER = 0.2
DEFERRED = (TaskState.SUCCESS, TaskState.FAILURE)


@dataclass
class Sent:
    """A final write sent on a lane; its reply not read yet."""

    task_id: str
    state: TaskState
    outcome: dict[str, Any]


class LaneBroken(RedisError):
    """The lane's connection failed: `unconfirmed` are the writes to do again."""

    def __init__(self, cause: BaseException, unconfirmed: list[Sent]) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.unconfirmed = unconfirmed


@dataclass(eq=False)
class Lane:
    """One connection (redis-py's, blocking or asyncio) used for nothing but a
    worker's record transitions, by one task at a time."""

    store: RecordStore
    connection: Any
    sent: list[Sent] = field(default_factory=list)
    since: float = 0.0  # time.monotonic() of the oldest write sent and not read
    loaded: bool = False  # the scripts are in this connection's Redis
    lock: threading.Lock = field(default_factory=threading.Lock)  # against the drain thread

    async def start(self, task_id: str, worker: str, run: str,
                    ) -> tuple[tuple[str | None, int] | None, list[Sent]]:
        """The start script, and the replies of the writes sent before it: one round
        trip. Its answer (as RecordStore.start's; None when Redis refused the start
        itself: start the slow way) and the writes Redis refused. Raises LaneBroken."""
        keys, args = self.store.start_call(task_id, worker, run)
        refused: list[Sent] = []
        try:
            await self._send(self.store.lane_scripts["start"], keys, args)
            refused = await self._read_sent()
            reply = await _reply(self.connection.read_response())
        except ResponseError as exc:  # read whole (or not sent): the stream is in step
            log.warning("task %s: Redis refused its start on a lane (%s)", task_id, exc)
            self.loaded = self.loaded and not isinstance(exc, NoScriptError)
            return None, refused
        except (RedisError, OSError) as exc:
            raise await self._broken(exc) from exc
        return started(reply), refused

    async def finish(self, task_id: str, state: TaskState, **outcome: Any) -> None:
        """Send a final write (one of DEFERRED); its reply is read later."""
        keys, args = self.store.finish_call(task_id, state, **outcome)
        write = Sent(task_id, state, outcome)
        try:
            await self._send(self.store.lane_scripts["finish"], keys, args)
        except (RedisError, OSError) as exc:
            raise await self._broken(exc, write) from exc
        if not self.sent:
            self.since = time.monotonic()
        self.sent.append(write)

    async def drain(self) -> list[Sent]:
        """Read the replies of the writes sent; those Redis refused."""
        try:
            return await self._read_sent()
        except (RedisError, OSError) as exc:
            raise await self._broken(exc) from exc

    def idle_for(self, seconds: float) -> bool:
        return bool(self.sent) and time.monotonic() - self.since >= seconds

    async def _send(self, script: Any, keys: list[str], args: list[Any]) -> None:
        if not self.loaded:  # a new connection, maybe a new Redis: load the scripts first
            await self._load()
        await _reply(self.connection.send_command("EVALSHA", script.sha, len(keys), *keys,
                                                  *args))

    async def _load(self) -> None:
        """Load the scripts. `loaded` turns False only with every reply read (or with
        the connection), so no write waits here; each reply is read, an error one too,
        so the stream stays in step."""
        scripts = list(self.store.lane_scripts.values())
        for each in scripts:
            await _reply(self.connection.send_command("SCRIPT", "LOAD", each.script))
        failed: ResponseError | None = None
        for _ in scripts:
            try:
                await _reply(self.connection.read_response())
            except ResponseError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        self.loaded = True

    async def _read_sent(self) -> list[Sent]:
        refused = []
        while self.sent:
            write = self.sent[0]
            try:
                await _reply(self.connection.read_response())
            except ResponseError as exc:  # read whole: the stream is still in step
                log.warning("task %s: Redis refused its %s (%s)", write.task_id,
                            write.state.value, exc)
                self.loaded = self.loaded and not isinstance(exc, NoScriptError)
                refused.append(write)
            self.sent.pop(0)
        return refused

    async def close(self) -> None:
        """Disconnect (a blocking or an asyncio connection); it connects again on use."""
        await _reply(self.connection.disconnect())

    async def _broken(self, cause: BaseException, *also: Sent) -> LaneBroken:
        unconfirmed, self.sent, self.loaded = [*self.sent, *also], [], False
        with contextlib.suppress(Exception):  # it is broken already
            await self.close()
        return LaneBroken(cause, unconfirmed)


def new_lane(store: RecordStore) -> Lane:
    """A lane on a connection of its own, made like those of the store's client."""
    pool = store.redis.connection_pool
    return Lane(store, pool.connection_class(**pool.connection_kwargs))


class ThreadDrain:
    """The lanes of a process's worker threads (core/worker/runner.py ThreadLoops), each used
    by its thread between tasks, read by one daemon thread once they have been idle
    for DRAIN_AFTER seconds. A refused write is handed to `redo` (in that thread)."""

    def __init__(self, redo: Callable[[Sent], None]) -> None:
        self.redo = redo
        self.pid = os.getpid()
        self._lanes: list[Lane] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, lane: Lane) -> None:
        with self._lock:
            self._lanes.append(lane)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain_forever, daemon=True,
                                                name="qb-lane-drain")
                self._thread.start()

    def _drain_forever(self) -> None:
        while True:
            time.sleep(DRAIN_AFTER / 2)
            with self._lock:
                lanes = list(self._lanes)
            for lane in lanes:
                if not lane.idle_for(DRAIN_AFTER) or not lane.lock.acquire(blocking=False):
                    continue
                try:
                    refused = _sync(lane.drain())
                except LaneBroken as exc:
                    refused = exc.unconfirmed
                finally:
                    lane.lock.release()
                for write in refused:
                    self.redo(write)


def _sync(coroutine: Any) -> Any:
    """Run a lane's coroutine whose connection is a blocking one: it never suspends."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a blocking lane suspended")
