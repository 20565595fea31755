"""A worker's record transitions on a connection of its own: one wait on Redis a task.

A task's record moves twice in its worker: the start script before it runs (whose
answer says whether to run it: LOST, BUSY, REVOKED, EXPIRED, a redelivery of a
finished task) and the finish script after. The start's answer is needed before the
run; the finish's is not. So a final write (SUCCESS, FAILURE) is sent on a lane and
not waited for: Redis runs it as it arrives, and its reply is read together with the
next start's on that lane. The worker then waits on Redis once per task, as the
libraries' own bookkeeping does, and each transition costs a send and a read on the
lane instead of a redis-py command call, which on the asyncio client is most of the
CPU it costs.

The lane is a transport, used by the runner alone (core/worker/runner.py): each call
returns the final writes it could not confirm, and the runner writes them again
(`Runner._redo`). What can go wrong with a write sent but not confirmed:
- Redis answers it with an error (WRONGTYPE, NOSCRIPT after a restart, OOM): the
  reply is read at the next start, or by a drain once the lane has been idle for
  DRAIN_AFTER seconds, and the write is handed back to be done again.
- The lane's connection fails (Redis away, a timeout): every write on it not yet
  confirmed is handed back. The finish script is idempotent for a final state (the
  first final state wins), so one that Redis did run is not harmed.
- The process dies: what it sent is in the socket, and Redis runs it. A write that
  Redis would have refused is then never done again, so the record stays STARTED
  under a dead owner and the reaper sends the task again: it runs once more.
A RETRY is not final (the next run moves the record on), so doing it again late
could undo that run's STARTED: it never goes on a lane.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError, RedisError, ResponseError

from core.states import TaskState
from core.store.records import RecordStore, answer, started

log = logging.getLogger("queuebench.lane")

# Seconds a lane's unread replies wait for the next start before a drain reads them.
DRAIN_AFTER = 0.2
# The states a lane sends: final ones.
FINAL = (TaskState.SUCCESS, TaskState.FAILURE)


@dataclass
class Sent:
    """A final write sent on a lane; its reply not read yet."""

    task_id: str
    state: TaskState
    outcome: dict[str, Any]


# What a call returns when every write it read was confirmed.
CONFIRMED: tuple[Sent, ...] = ()


@dataclass(eq=False)
class Lane:
    """One connection (redis-py's, blocking or asyncio) used for nothing but a
    worker's record transitions, by one task at a time. Each call returns the final
    writes it could not confirm (Redis refused them, or the connection failed before
    their replies were read): the caller writes them again."""

    store: RecordStore
    connection: Any
    sent: list[Sent] = field(default_factory=list)
    since: float = 0.0  # time.monotonic() of the oldest write sent and not read
    loaded: bool = False  # the scripts are in this connection's Redis
    lock: threading.Lock = field(default_factory=threading.Lock)  # against the drain thread

    async def start(self, task_id: str, worker: str, run: str,
                    ) -> tuple[tuple[str | None, int] | None, Sequence[Sent]]:
        """The start script, and the replies of the writes sent before it: one round
        trip. Its answer (as RecordStore.start's; None when the lane got none: Redis
        refused the start itself, or the connection failed; start the slow way) and
        the writes not confirmed."""
        command = self.store.start_command(task_id, worker, run)
        refused: Sequence[Sent] = CONFIRMED
        try:
            await self._send(command)
            refused = await self._read_sent()
            reply = await answer(self.connection.read_response())
        except ResponseError as exc:  # read whole (or not sent): the stream is in step
            log.warning("task %s: Redis refused its start on a lane (%s)", task_id, exc)
            self.loaded = self.loaded and not isinstance(exc, NoScriptError)
            return None, refused
        except (RedisError, OSError) as exc:
            return None, await self._broken(exc)
        return started(reply), refused

    async def finish(self, task_id: str, state: TaskState, outcome: dict[str, Any],
                     ) -> Sequence[Sent]:
        """Send a final write (one of FINAL); its reply is read later. The writes not
        confirmed: none, unless the connection failed (this one among them)."""
        command = self.store.finish_command(task_id, state, outcome)
        write = Sent(task_id, state, outcome)
        if not self.sent:
            self.since = time.monotonic()
        self.sent.append(write)
        try:
            await self._send(command)
        except (RedisError, OSError) as exc:
            return await self._broken(exc)
        return CONFIRMED

    async def drain(self) -> Sequence[Sent]:
        """Read the replies of the writes sent; the writes not confirmed."""
        try:
            return await self._read_sent()
        except (RedisError, OSError) as exc:
            return await self._broken(exc)

    def idle_for(self, seconds: float) -> bool:
        return bool(self.sent) and time.monotonic() - self.since >= seconds

    async def _send(self, command: list[Any]) -> None:
        if not self.loaded:  # a new connection, maybe a new Redis: load the scripts first
            await self._load()
        await answer(self.connection.send_command(*command))

    async def _load(self) -> None:
        """Load the scripts. `loaded` turns False only with every reply read (or with
        the connection), so no write waits here; each reply is read, an error one too,
        so the stream stays in step."""
        scripts = self.store.command_scripts()
        for each in scripts:
            await answer(self.connection.send_command("SCRIPT", "LOAD", each))
        failed: ResponseError | None = None
        for _ in scripts:
            try:
                await answer(self.connection.read_response())
            except ResponseError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        self.loaded = True

    async def _read_sent(self) -> Sequence[Sent]:
        refused: Sequence[Sent] = CONFIRMED
        while self.sent:
            write = self.sent[0]
            try:
                await answer(self.connection.read_response())
            except ResponseError as exc:  # read whole: the stream is still in step
                log.warning("task %s: Redis refused its %s (%s)", write.task_id,
                            write.state.value, exc)
                self.loaded = self.loaded and not isinstance(exc, NoScriptError)
                refused = (*refused, write)
            self.sent.pop(0)
        return refused

    async def close(self) -> None:
        """Disconnect (a blocking or an asyncio connection); it connects again on use."""
        await answer(self.connection.disconnect())

    async def _broken(self, cause: BaseException) -> Sequence[Sent]:
        """The connection failed: every write on it not confirmed, handed back."""
        log.warning("a lane's connection failed (%s): %d write(s) to do again", cause,
                    len(self.sent))
        unconfirmed, self.sent, self.loaded = self.sent, [], False
        with contextlib.suppress(Exception):  # it is broken already
            await self.close()
        return unconfirmed


def new_lane(store: RecordStore) -> Lane:
    """A lane on a connection of its own, made like those of the store's client."""
    pool = store.redis.connection_pool
    return Lane(store, pool.connection_class(**pool.connection_kwargs))


class ThreadDrain:
    """The lanes of a process's worker threads (core/worker/runner.py ThreadLoops), each
    used by its thread between tasks, read by one daemon thread once they have been
    idle for DRAIN_AFTER seconds. What a lane could not confirm goes to the `redo`
    given with it, called in that thread."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lanes: list[tuple[Lane, Callable[[Sequence[Sent]], None]]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, lane: Lane, redo: Callable[[Sequence[Sent]], None]) -> None:
        with self._lock:
            self._lanes.append((lane, redo))
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain_forever, daemon=True,
                                                name="qb-lane-drain")
                self._thread.start()

    def _drain_forever(self) -> None:
        while True:
            time.sleep(DRAIN_AFTER / 2)
            with self._lock:
                lanes = list(self._lanes)
            for lane, redo in lanes:
                if not lane.idle_for(DRAIN_AFTER) or not lane.lock.acquire(blocking=False):
                    continue
                try:
                    undone = _sync(lane.drain())
                finally:
                    lane.lock.release()
                if undone:
                    try:
                        redo(undone)
                    except Exception:  # never let the thread end: idle lanes go unread
                        log.exception("writing again what a lane could not confirm failed")


_drain_lock = threading.Lock()
_drain: ThreadDrain | None = None


def thread_drain() -> ThreadDrain:
    """This process's drain thread of its worker threads' lanes (a forked child has
    its own)."""
    global _drain
    with _drain_lock:
        if _drain is None or _drain.pid != os.getpid():
            _drain = ThreadDrain()
        return _drain


def _sync(coroutine: Any) -> Any:
    """Run a lane's coroutine whose connection is a blocking one: it never suspends."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a blocking lane suspended")
