"""Stopping a task while it runs: DELETE of a running task, and a sync task's time
limit, where the library cannot.

Celery's threads pool can neither stop a running task nor enforce a time limit (its
soft and hard limits work in prefork only), and Dramatiq and taskiq (taskiq#305)
cannot cancel a running task at all. Core does both, the same way, for every runner
that runs tasks on worker threads (core/worker/runner.py ThreadLoops: Celery's pools,
Dramatiq's threads), and stops the thread of a sync task that arq or taskiq runs in a
thread (OffloadRunner):

- `TaskBackend.cancel` (core/backend.py), once a running task's record is REVOKED,
  announces it on CANCEL_CHANNEL. In every worker process one daemon thread, started
  by the first task, listens and stops the task if this process runs it: an async
  task by cancelling its asyncio task on its thread's loop, a sync task by raising
  an exception in its thread (PyThreadState_SetAsyncExc, as Dramatiq's TimeLimit
  does). The announcement has a channel of its own rather than `qb:events`: on that
  one every worker process would parse every transition of every task, a cost that
  grows with the whole cluster's rate rather than its own. The listener also reads
  the state of the tasks this process runs after each subscription and every
  RESYNC_EVERY seconds, so a task revoked while Redis was away, or by anything but
  `cancel`, still stops.
- A sync task's time limit: a watchdog thread raises OverTime in it at its deadline.

An exception raised in a thread is delivered when the thread next runs Python code:
a sync task blocked in one long C call (time.sleep, a socket read) stops when that
call returns. It is raised only while the thread is inside the task's function, and
one raised but not delivered yet when the function returns is withdrawn, so it never
lands in the runner's own bookkeeping (the record's Redis calls). A stopped task's
record stays REVOKED (core/store/records.py: the first final state wins), and what the task
would have done after the stop, it does not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import RedisError

from core.states import TaskState
from core.store.keys import CANCEL_CHANNEL, TASK_KEY

log = logging.getLogger("queuebench.interrupt")

# Seconds between reads of the states of the tasks a process runs (a missed announcement).
RESYNC_EVERY = 2.0


class Interrupt(BaseException):
    """Raised in a task's thread to stop it: a BaseException, so that a task's own
    `except Exception` does not swallow it (Dramatiq's Interrupt is one too)."""


class Revoked(Interrupt):
    """The task was cancelled (DELETE) while it ran."""


class OverTime(Interrupt):
    """The task ran over its time limit."""


IDLE, ASYNC, SYNC = "idle", "async", "sync"


@dataclass(eq=False)
class Run:
    """One run of a task in this process, as the stopper sees it."""

    task_id: str
    loop: asyncio.AbstractEventLoop | None = None
    thread_id: int = field(default_factory=threading.get_ident)
    phase: str = IDLE  # ASYNC: awaited on `loop`; SYNC: inside the function, in its thread
    task: asyncio.Task[Any] | None = None
    deadline: float | None = None  # time.monotonic() a sync run must end by
    stopped: type[Interrupt] | None = None  # why it was stopped; set once
    raised: bool = False  # an exception was raised in its thread
    cancelled: bool = False  # its asyncio task was cancelled by the stopper


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in that thread at its next bytecode; None withdraws one pending."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


class Stopper:
    """This process's runs, the listener that stops a revoked one and the watchdog of
    sync time limits. One per process (`process_stopper`)."""

    def __init__(self, redis_url: str | None) -> None:
        self.url = redis_url  # None: no listener (the runs are stopped by their caller)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._runs: set[Run] = set()
        self._deadline_set = threading.Condition(self._lock)
        self._listener: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    # -- the runs -----------------------------------------------------------------------
    @contextlib.contextmanager
    def watch(self, task_id: str, loop: asyncio.AbstractEventLoop | None = None
              ) -> Iterator[Run]:
        """Register a run from before its record says STARTED to its end: a revoke in
        between is seen either by the start script or by the listener."""
        run = Run(task_id, loop=loop)
        with self._lock:
            self._runs.add(run)
        self._listen()
        try:
            yield run
        finally:
            with self._lock:
                self._runs.discard(run)

    def running(self) -> set[str]:
        """The ids of the tasks this process runs now (from any thread)."""
        with self._lock:
            return {run.task_id for run in self._runs}

    @contextlib.contextmanager
    def awaiting(self, run: Run) -> Iterator[None]:
        """The run's async task is awaited now, on its loop (call it on that loop)."""
        with self._lock:
            if run.stopped is not None:
                raise run.stopped()
            run.phase, run.task = ASYNC, asyncio.current_task()
        try:
            yield
        finally:
            with self._lock:
                run.phase, run.task = IDLE, None

    def call_sync(self, run: Run, fn: Callable[..., Any], arguments: dict[str, Any],
                  time_limit: float | None = None) -> Any:
        """Call a sync task in this thread, where `stop` (or its time limit) may raise
        in it. Raises the Interrupt that stopped it."""
        with self._lock:
            if run.stopped is not None:
                raise run.stopped()
            run.phase, run.thread_id = SYNC, threading.get_ident()
            if time_limit is not None:
                run.deadline = time.monotonic() + time_limit
                self._watch_deadlines()
        try:
            result = fn(**arguments)
        finally:
            with self._lock:
                run.phase, run.deadline = IDLE, None
                if run.raised:  # maybe not delivered yet: never outside the function
                    _raise_in(run.thread_id, None)
        if run.raised and run.stopped is not None:  # the task swallowed it
            raise run.stopped()
        return result

    def stop(self, run: Run, why: type[Interrupt]) -> bool:
        """Stop `run` (from any thread); whether this stopped it (not already stopped)."""
        with self._lock:
            return self._stop(run, why)

    def _stop(self, run: Run, why: type[Interrupt]) -> bool:  # holding the lock
        if run.stopped is not None:
            return False
        run.stopped = why
        if run.phase == SYNC:
            _raise_in(run.thread_id, why)
            run.raised = True
        elif run.phase == ASYNC and run.loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs
                run.loop.call_soon_threadsafe(self._cancel, run)
        # IDLE: it has not begun, or has ended; `awaiting` and `call_sync` refuse it
        return True

    @staticmethod
    def _cancel(run: Run) -> None:
        """On the run's loop: cancel its asyncio task if it still awaits the task."""
        if run.phase == ASYNC and run.task is not None and not run.task.done():
            run.cancelled = True
            run.task.cancel()

    def revoked(self, task_id: str) -> int:
        """Stop this process's runs of `task_id`; how many."""
        with self._lock:
            return sum(self._stop(run, Revoked) for run in list(self._runs)
                       if run.task_id == task_id)

    # -- sync time limits -----------------------------------------------------------------
    def _watch_deadlines(self) -> None:  # holding the lock
        if self._watchdog is None or not self._watchdog.is_alive():
            self._watchdog = threading.Thread(target=self._deadlines, daemon=True,
                                              name="qb-time-limits")
            self._watchdog.start()
        self._deadline_set.notify()

    def _deadlines(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                upcoming = []
                for run in list(self._runs):
                    if run.phase != SYNC or run.deadline is None or run.stopped is not None:
                        continue
                    if run.deadline <= now:
                        log.warning("task %s ran over its time limit: stopping it", run.task_id)
                        self._stop(run, OverTime)
                    else:
                        upcoming.append(run.deadline)
                self._deadline_set.wait(min(upcoming) - now if upcoming else None)

    # -- the listener ---------------------------------------------------------------------
    def _listen(self) -> None:
        if self.url is None or (self._listener is not None and self._listener.is_alive()):
            return
        with self._lock:
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(target=self._listen_forever, daemon=True,
                                                  name="qb-cancel-listener")
                self._listener.start()

    def _listen_forever(self) -> None:
        pause = 0.5
        while True:
            try:
                self._listen_once()
            except (RedisError, OSError) as exc:
                log.warning("cancel listener: %s; listening again in %.1fs", exc, pause)
            except Exception:  # never let the thread end: cancels would go unheard
                log.exception("cancel listener failed")
            time.sleep(pause)
            pause = min(pause * 2, 10.0)

    def _listen_once(self) -> None:
        assert self.url is not None
        client = redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=30,
                                      socket_keepalive=True)
        try:
            with client.pubsub() as pubsub:
                pubsub.subscribe(CANCEL_CHANNEL)
                deadline = time.monotonic() + 10
                while (message := pubsub.get_message(timeout=1)) is None or \
                        message["type"] != "subscribe":
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no subscription to {CANCEL_CHANNEL} confirmed")
                # Subscribed: no announcement is missed from here on, and the resync
                # finds what was revoked before.
                resync = 0.0
                while True:
                    if time.monotonic() >= resync:
                        self._resync(client)
                        resync = time.monotonic() + RESYNC_EVERY
                    message = pubsub.get_message(timeout=RESYNC_EVERY)
                    if message is not None and message["type"] == "message":
                        self._announced(message["data"])
        finally:
            client.close()

    def _announced(self, data: bytes) -> None:
        try:
            event = json.loads(data)
            task_id, state = str(event["id"]), event.get("state")
        except (ValueError, KeyError, TypeError):
            log.warning("cancel listener: not an announcement: %r", data[:200])
            return
        if state == TaskState.REVOKED:
            self.revoked(task_id)

    def _resync(self, client: redis.Redis) -> None:
        """Stop the runs whose record is REVOKED (an announcement this missed)."""
        with self._lock:
            ids = sorted({run.task_id for run in self._runs
                          if run.stopped is None and run.loop is not None})
        if not ids:
            return
        with client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hget(TASK_KEY.format(task_id), "state")
            states = pipe.execute()
        for task_id, state in zip(ids, states, strict=True):
            if state is not None and state.decode() == TaskState.REVOKED:
                self.revoked(task_id)

    # -- a sync task in another thread (arq) ------------------------------------------------
    async def offload(self, run: Run, fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
        """Run a sync task in the loop's default executor, as asyncio.to_thread does,
        but stop its thread too when the awaiting task is cancelled (arq's abort, the
        time limit's timeout, a shutdown): the thread does not run on unseen."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        future = loop.run_in_executor(None, context.run, self.call_sync, run, fn, arguments)
        try:
            return await future
        except asyncio.CancelledError:
            self.stop(run, Revoked)
            raise


_lock = threading.Lock()
_process_stopper: Stopper | None = None


def process_stopper(redis_url: str | None) -> Stopper:
    """This process's one stopper, made on first use; a forked child (a Celery prefork
    or Dramatiq worker process) gets its own, as its threads are not the parent's."""
    global _process_stopper
    with _lock:
        if _process_stopper is None or _process_stopper.pid != os.getpid():
            _process_stopper = Stopper(redis_url)
        elif _process_stopper.url is None and redis_url is not None:
            _process_stopper.url = redis_url
        return _process_stopper
