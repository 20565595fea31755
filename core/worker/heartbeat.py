"""Worker heartbeats: which worker processes are alive, for the API's health, the
record leases (core/store/records.py) and the reaper (core/worker/reaper.py).

Every process that runs tasks beats: `queuebench worker`'s own process (role
`worker`, the one `/health` counts) and, where the library runs tasks in child
processes (Celery prefork, Dramatiq, taskiq), each child (role `runner`). A beat is one
pipeline: the process's info in the hash `qb:workers`, and the time in the sorted
set `qb:workers:seen`, so finding the live ones (or the dead ones) is one range
query, never a SCAN of the keyspace.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from core.store.keys import OWNED_KEY, WORKER_TASKS_KEY, WORKERS_KEY, WORKERS_SEEN_KEY

log = logging.getLogger("queuebench.workers")


def worker_id() -> str:
    """This process incarnation as a task's owner: host:pid:incarnation. Host and pid
    alone repeat: a container started again (a restart policy, an OOM kill) has the
    same hostname and, in its fresh PID namespace, the same pid, and its tasks of the
    last life would look owned by a live worker for ever. The random part makes each
    start a new owner, so the dead one's lease lapses and the reaper runs its tasks."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def host_and_pid(wid: str) -> tuple[str, int]:
    """The host and pid of a worker id (`worker_id`)."""
    host, pid, _ = wid.rsplit(":", 2)
    return host, int(pid)


class Heartbeat:
    """A daemon thread that says, every `interval` seconds, that this process lives.

    Before each beat it runs the writes that could not reach Redis when a task ended
    (`defer`): while they wait, the process keeps beating, so it keeps its tasks, and
    nobody runs them again."""

    def __init__(self, redis_url: str, backend: str, interval: float, role: str = "worker",
                 **info: Any) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_timeout=10,
                                           socket_connect_timeout=5)
        self.id = worker_id()
        self.interval = interval
        self.pid = os.getpid()
        self.info = {"id": self.id, "backend": backend, "role": role,
                     "host": socket.gethostname(), "pid": os.getpid(),
                     "parent": os.getppid(), "started_at": time.time(), **info}
        self._deferred: collections.deque[Callable[[], Any]] = collections.deque()
        self._checks: dict[str, Callable[[], Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="qb-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        try:
            self._beat_once()
        except redis.RedisError as exc:  # the thread goes on trying
            log.warning("heartbeat: %s", exc)
        self._thread.start()
        return self

    def defer(self, write: Callable[[], Any]) -> None:
        """Run `write` (blocking Redis calls) from the heartbeat thread until it works."""
        self._deferred.append(write)

    def every_beat(self, name: str, check: Callable[[], Any]) -> None:
        """Run `check` (blocking Redis calls) from the heartbeat thread after each beat
        that reached Redis, once the deferred writes are done. One check by `name`: the
        first one given stays."""
        self._checks.setdefault(name, check)

    def _beat_once(self) -> None:
        while self._deferred:
            self._deferred[0]()
            self._deferred.popleft()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(WORKERS_KEY, self.id, json.dumps({**self.info, "seen_at": time.time()}))
            pipe.zadd(WORKERS_SEEN_KEY, {self.id: time.time()})
            pipe.execute()
        for check in list(self._checks.values()):
            check()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat_once()
            except Exception as exc:  # Redis away: the lease lapses, health says so
                log.warning("heartbeat: %s", exc)

    def stop(self) -> None:
        """Leave the registry; a process that still owns tasks is marked dead at once,
        so that the reaper runs them again now rather than after the lease."""
        self._stop.set()
        try:
            if self.client.scard(OWNED_KEY.format(self.id)):
                self.client.zadd(WORKERS_SEEN_KEY, {self.id: 0})
            else:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.hdel(WORKERS_KEY, self.id)
                    pipe.zrem(WORKERS_SEEN_KEY, self.id)
                    pipe.hdel(WORKER_TASKS_KEY, f"{self.id}|run", f"{self.id}|failed")
                    pipe.execute()
        except redis.RedisError as exc:
            log.warning("heartbeat: could not leave the registry: %s", exc)
        finally:
            self.client.close()


_lock = threading.Lock()
_process_beat: Heartbeat | None = None


def process_heartbeat(redis_url: str, backend: str, interval: float, role: str = "runner",
                      **info: Any) -> Heartbeat:
    """This process's one heartbeat, started on first use. A forked child (a Celery
    prefork or Dramatiq worker process) gets its own: the parent's thread is not there."""
    global _process_beat
    with _lock:
        if _process_beat is None or _process_beat.pid != os.getpid():
            _process_beat = Heartbeat(redis_url, backend, interval, role, **info).start()
        return _process_beat
