"""The owned audit: a task that Redis says this live process runs, and which it does not
run, is sent again.

Redis can roll a record back under a live owner. With `appendfsync everysec` a crash
loses up to the last second of writes: a task that finished in that second comes back
STARTED, in the owned set (`qb:owned:<worker>`) of a process that reconnected and beats
on. Its owner is alive, so the reaper's dead-worker pass never takes it, and no message
of it is left: without this audit it stays STARTED for ever. (A run cancelled while
Redis refused its orphan write is left the same way.)

After each heartbeat the process compares its owned set with its runs: the stopper's
(core/worker/interrupt.py), where every run is registered before the start script
makes it owned, and stays until its final write is sent. The runs are read before and
after the owned set, so a run that starts or ends between the reads counts as running.
A task owned here, not running here, and STARTED by this process more than GRACE ago
is a suspect; one that is still all that at a look GRACE after the first (with no
failed beat between) moves to the orphans (`qb:orphans`), which the reaper sends
again (`Reaper._orphans`: the reclaim script, then the adapter).

The grace covers a final write sent but not confirmed yet (core/worker/lane.py): the
run has left the stopper, its record still says STARTED and owned. Such a write is
done within seconds (the lane's drain, the runner's tries), or by the heartbeat before
its beat, and so before this audit. A false positive on a task that did finish is
harmless: the reclaim script drops a task whose record is final, and a redelivery of a
finished task is refused by the start script.
"""

from __future__ import annotations

import logging
import time

import redis

from core.states import TaskState
from core.store.keys import ORPHANS_KEY, OWNED_KEY, TASK_KEY
from core.worker.interrupt import Stopper

log = logging.getLogger("queuebench.audit")

# Heartbeats a task must be owned and not run before it is sent again, and the least
# seconds: longer than a final write takes to be confirmed or done again.
GRACE_BEATS = 3
GRACE_MIN = 5.0


class OwnedAudit:
    def __init__(self, client: redis.Redis, worker: str, stopper: Stopper,
                 interval: float) -> None:
        self.client = client
        self.worker = worker
        self.owned = OWNED_KEY.format(worker)
        self.stopper = stopper
        self.grace = max(GRACE_BEATS * interval, GRACE_MIN)
        self._suspects: dict[str, float] = {}  # task id -> time.monotonic() first seen
        self._looked = time.monotonic()

    def check(self) -> int:
        """One look (from the heartbeat thread); how many tasks were sent again."""
        now = time.monotonic()
        if now - self._looked > self.grace:  # a failed beat between: start again
            self._suspects = {}
        self._looked = now
        before = self.stopper.running()
        owned = {member.decode() for member in self.client.smembers(self.owned)}
        idle = sorted(owned - before - self.stopper.running())
        suspects = {task_id: self._suspects.get(task_id, now)
                    for task_id in self._stale(idle)}
        sent = 0
        for task_id, since in list(suspects.items()):
            if now - since < self.grace:
                continue
            del suspects[task_id]
            if self.client.smove(self.owned, ORPHANS_KEY, task_id):
                log.warning("task %s sent again: STARTED by this worker (%s), which does "
                            "not run it (Redis lost its end?)", task_id, self.worker)
                sent += 1
        self._suspects = suspects
        return sent

    def _stale(self, task_ids: list[str]) -> list[str]:
        """Those of `task_ids` whose record is STARTED by this worker more than the
        grace ago."""
        if not task_ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(TASK_KEY.format(task_id), "state", "worker", "started_at")
            fields = pipe.execute()
        before = time.time() - self.grace
        return [task_id for task_id, (state, worker, started) in zip(task_ids, fields, strict=True)
                if state == TaskState.STARTED.value.encode() and worker == self.worker.encode()
                and started is not None and float(started) < before]
