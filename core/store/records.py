"""Task records in Redis: the one state model of every backend.

The API writes a record on submit; the worker-side runner (core/worker/runner.py) moves it
through STARTED to a final state. Transitions are Lua scripts, so a record that is
already final (REVOKED, EXPIRED, or finished by an earlier delivery) is never
overwritten, and the runner learns it must not run the task (core/store/lua/, called
through core/store/scripts.py; key names in core/store/keys.py). Every transition is
published on one channel, which `/wait` and dashboards listen to.
"""

from __future__ import annotations

import inspect
import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import msgpack
from pydantic_core import to_json
from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis

from core.states import TaskState
from core.store.keys import (
    DUE_KEY,
    EVENTS_CHANNEL,
    EXPIRING_KEY,
    IDEMPOTENCY_KEY,
    INDEX_KEY,
    ORPHANS_KEY,
    OWNED_KEY,
    SCHEDULE_KEY,
    SCHEDULE_TASKS_KEY,
    TASK_KEY,
    WORKERS_SEEN_KEY,
)
from core.store.scripts import Scripts

# Final states streamed for the history writer (core/history/): the stream's MAXLEN.
HISTORY_MAXLEN = 1_000_000

# One Redis command, as words: what a producer in a library's wire format sends.
Command = tuple[str | bytes | int | float, ...]

# Outcomes of `start` that are not states: do not run.
LOST = "LOST"  # no record (Redis lost it): the run is refused, nothing is written
BUSY = "BUSY"  # a live worker runs it already: this delivery is a duplicate


# Seconds to open a connection to Redis, and to wait for a reply on one, before the
# call fails (a 503 from the API): a Redis that is down or frozen (SIGSTOP, a lost
# route: the kernel still accepts connections, nothing answers) never holds a request
# or a worker for longer. No command of core's blocks for longer on purpose.
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0


def connect(url: str, max_connections: int = 200) -> Redis:
    """An asyncio client whose pool waits for a free connection when all are busy: a
    burst of submits then queues up instead of failing (redis-py 6+ caps a plain pool
    at 100 and raises "Too many connections" beyond)."""
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30,
                                           socket_connect_timeout=CONNECT_TIMEOUT,
                                           socket_timeout=SOCKET_TIMEOUT)
    return Redis(connection_pool=pool)


def new_task_id() -> str:
    return str(uuid.uuid4())


def dumps(value: Any) -> str:
    """`value` as JSON text, by pydantic-core (in Rust: a third of the CPU of
    json.dumps over `to_jsonable_python`, and this runs five times a submit).
    Non-finite floats are not JSON: json.dumps would write the bare words Infinity and
    NaN, which FastAPI renders as null (or fails on) and PostgreSQL's json type
    refuses. They are kept as the strings "Infinity", "-Infinity" and "NaN"
    (ECMAScript's names, also pydantic's ser_json_inf_nan="strings"): valid JSON
    everywhere, unlike null they keep which value it was, and float() or a float-typed
    task parameter reads them back."""
    if value is None:
        return "null"
    return to_json(value, inf_nan_mode="strings", fallback=repr).decode()


def finite(value: Any) -> Any:
    """`value` (lists, dicts, scalars) with its non-finite floats as their strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def _iso(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass
class TaskRecord:
    id: str
    name: str
    backend: str
    state: TaskState = TaskState.PENDING
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: dict[str, str] | None = None
    retries: int = 0
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # Not part of the public body: what the runner and cancel need to know.
    expires_at: float | None = None
    queue: str | None = None
    worker: str | None = None  # host:pid of the process that ran it last (its owner)
    # What a redelivery needs to send the task again (core/worker/reaper.py): its options
    # (queue, priority, retries, time limit) and how many times it was sent again.
    options: dict[str, Any] | None = None
    deliveries: int = 0
    schedule: str | None = None  # the periodic entry that fired it (core/schedule/scheduler.py)
    # Final and in the history (or no history): Redis's copy may go (see `trim`). Set
    # by the scripts only, never written from here.
    released: bool = False

    _JSON = ("args", "kwargs", "result", "error", "options")
    _FLOAT = ("submitted_at", "started_at", "finished_at", "expires_at")

    def to_hash(self) -> dict[str, str]:
        out: dict[str, str] = {}
        # Not dataclasses.asdict: its deep copy of args and result costs more than the rest.
        for key in _RECORD_FIELDS:
            value = getattr(self, key)
            if key in self._JSON:
                out[key] = dumps(value)
            elif value is not None:
                out[key] = str(value)
        return out

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> TaskRecord:
        """`data` must hold an id and a name (see `is_whole`)."""
        values: dict[str, Any] = {"id": data["id"], "name": data["name"]}
        values["backend"] = data.get("backend", "")
        values["state"] = TaskState(data.get("state", "PENDING"))
        values["retries"] = int(data.get("retries") or 0)
        values["queue"] = data.get("queue") or None
        values["worker"] = data.get("worker") or None
        values["deliveries"] = int(data.get("deliveries") or 0)
        values["schedule"] = data.get("schedule") or None
        values["released"] = data.get("released") == "1"
        for key in cls._JSON:
            if data.get(key):
                values[key] = json.loads(data[key])
        for key in cls._FLOAT:
            if data.get(key):
                values[key] = float(data[key])
        return cls(**values)

    @property
    def delivery_id(self) -> str:
        """The library's message id for this delivery: the task id, then a new one
        for each redelivery (arq refuses a second job of the same id)."""
        return self.id if not self.deliveries else f"{self.id}~{self.deliveries}"

    def body(self) -> dict[str, Any]:
        """The task body (docs/api.md, "The task body")."""
        return {
            "id": self.id,
            "name": self.name,
            "backend": self.backend,
            "state": self.state.value,
            "args": self.args,
            "kwargs": self.kwargs,
            "result": self.result,
            "error": self.error,
            "retries": self.retries,
            "submitted_at": _iso(self.submitted_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


_RECORD_FIELDS = tuple(f.name for f in fields(TaskRecord) if f.name != "released")
# What a listing filters on (core/history/store.py), read for each record it scans.
HEAD_FIELDS = ("id", "name", "backend", "state", "submitted_at", "released")
# What the reaper reads of an overdue task to look for its message in the broker.
DUE_FIELDS = ("id", "name", "state", "queue", "deliveries")
WAITING = (TaskState.PENDING, TaskState.RETRY)  # the states of a task in the due set


def task_of(delivery_id: str) -> str:
    """The task id of a library's message id (`TaskRecord.delivery_id`)."""
    return delivery_id.split("~", 1)[0]


def error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def is_whole(data: dict[str, str]) -> bool:
    """Whether a hash read from Redis is a record (not a few fields left of one)."""
    return bool(data.get("id") and data.get("name"))


class RecordStore:
    """Reads and moves task records. One per event loop (redis.asyncio is loop-bound)."""

    def __init__(self, redis: Redis | SyncRedis, *, ttl: int = 86_400, kept: int = 100_000,
                 history: bool = True, lease: float = 30.0) -> None:
        self.redis = redis
        self.ttl = ttl
        self.kept = kept
        # Seconds a STARTED record's owner may go without a heartbeat before another
        # delivery of the task may run it (REDELIVERY_AFTER).
        self.lease = lease
        # Final states are streamed for the history writer, inside the same scripts:
        # no extra round trip on the worker's path. 0 tells the scripts not to.
        self.history_maxlen = HISTORY_MAXLEN if history else 0
        self.scripts = Scripts(redis)

    async def create(self, record: TaskRecord, *, idempotency_key: str | None = None,
                     not_before: float | None = None, push: list[Command] | None = None,
                     ) -> str:
        """Store a new PENDING record, and run `push` (the commands that queue its
        message) with it; the id of the task that stands: `record.id`, or the first
        task's when `idempotency_key` (scoped by task name) is bound already (then
        nothing is queued). A task that may not start before `not_before` keeps its
        record that much longer."""
        call = self._create_call(record, idempotency_key, not_before, push)
        return as_str(await answer(self.scripts.create_call(call["keys"], call["args"])))

    async def aclose(self) -> None:
        """Close what the store opened itself (not its client)."""
        await self.scripts.aclose()

    async def create_many(self, batch: Sequence[tuple[TaskRecord, str | None, float | None,
                                                      list[Command] | None]]) -> list[str]:
        """`create` for each (record, idempotency key, not before, push): one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for record, key, not_before, push in batch:
                await answer(self.scripts.create(
                    **self._create_call(record, key, not_before, push), client=pipe))
            return [as_str(found) for found in await answer(pipe.execute())]

    def _create_call(self, record: TaskRecord, idempotency_key: str | None,
                     not_before: float | None, push: list[Command] | None) -> dict[str, Any]:
        submitted = record.submitted_at or time.time()
        ttl = self.ttl + max(0, math.ceil((not_before or submitted) - submitted))
        key = IDEMPOTENCY_KEY.format(record.name, idempotency_key or "")
        pairs = [item for pair in record.to_hash().items() for item in pair]
        keys = [TASK_KEY.format(record.id), INDEX_KEY, key]
        if record.schedule is not None:  # fired by a periodic entry: its index and state
            keys += [SCHEDULE_TASKS_KEY.format(record.schedule),
                     SCHEDULE_KEY.format(record.schedule)]
        return {"keys": keys,
                "args": [ttl, self.kept, EVENTS_CHANNEL, submitted, int(bool(idempotency_key)),
                         "" if record.expires_at is None else record.expires_at,
                         f"{record.name}|{record.backend}", record.queue or "",
                         _pack(pairs), _pack([[_word(w) for w in c] for c in push or ()]),
                         not_before or submitted]}

    async def get(self, task_id: str) -> TaskRecord | None:
        data = _text(await answer(self.redis.hgetall(TASK_KEY.format(task_id))))
        if not is_whole(data):
            return None
        record = TaskRecord.from_hash(data)
        if (record.state in (TaskState.PENDING, TaskState.RETRY) and record.expires_at
                and record.expires_at < time.time() and await self.expire(task_id)):
            return await self.get(task_id)  # no worker took it in time: EXPIRED now
        return record

    async def recent(self, *, offset: int = 0, count: int = 100) -> list[TaskRecord]:
        """Records newest first, as the index holds them (expired ones left out)."""
        ids = await self.redis.zrevrange(INDEX_KEY, offset, offset + count - 1)
        return await self.get_many([as_str(task_id) for task_id in ids])

    async def heads(self, count: int) -> list[TaskRecord]:
        """The newest `count` records of the index with only the fields a listing
        filters on (HMGET, not whole records): what `GET /tasks` scans."""
        ids = [as_str(i) for i in await self.redis.zrevrange(INDEX_KEY, 0, count - 1)]
        if not ids:
            return []
        return [TaskRecord.from_hash(d) for d in await self._fields(ids, HEAD_FIELDS)
                if is_whole(d)]

    async def _fields(self, task_ids: list[str], names: Sequence[str]) -> list[dict[str, str]]:
        """The fields `names` of each record of `task_ids`, in one round trip (HMGET, not
        whole records); a record Redis does not have comes back without its id."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(TASK_KEY.format(task_id), names)
            found = await pipe.execute()
        return [_text(dict(zip(names, values, strict=True))) for values in found]

    async def get_many(self, task_ids: list[str]) -> list[TaskRecord]:
        """The records of `task_ids` that Redis still has, in that order; one round trip."""
        if not task_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(TASK_KEY.format(task_id))
            found = await pipe.execute()
        return [TaskRecord.from_hash(d) for d in map(_text, found) if is_whole(d)]

    async def start(self, task_id: str, worker: str = "", run: str = "",
                    ) -> tuple[str | None, int]:
        """Mark STARTED, owned by `worker`; what was found (None: PENDING from the
        API) and the retries so far. Do not run when it is a final state (EXPIRED is
        set here when `expires` has passed), LOST or BUSY. `run` names this delivery
        in its worker: the same start tried again after a lost reply is not BUSY."""
        keys, args = self.start_call(task_id, worker, run)
        return started(await answer(self.scripts.start(keys=keys, args=args)))

    def start_call(self, task_id: str, worker: str, run: str) -> tuple[list[str], list[Any]]:
        """The start script's keys and arguments."""
        return ([TASK_KEY.format(task_id), OWNED_KEY.format(worker), WORKERS_SEEN_KEY],
                [time.time(), EVENTS_CHANNEL, worker, self.history_maxlen, self.lease, run])

    def start_command(self, task_id: str, worker: str, run: str) -> list[Any]:
        """`start` as the words of one EVALSHA, for a caller that sends it on a
        connection of its own (core/worker/lane.py); `started` reads its reply."""
        keys, args = self.start_call(task_id, worker, run)
        return ["EVALSHA", self.scripts.start.sha, len(keys), *keys, *args]

    async def finish(
        self,
        task_id: str,
        state: TaskState,
        *,
        result: Any = None,
        error: dict[str, str] | None = None,
        retries: int = 0,
        worker: str = "",
        due: float | None = None,
    ) -> None:
        """Write the outcome of a run; a RETRY's next run is `due` then (default: now)."""
        keys, args = self.finish_call(task_id, state, result=result, error=error,
                                      retries=retries, worker=worker, due=due)
        await answer(self.scripts.finish(keys=keys, args=args))

    def finish_call(self, task_id: str, state: TaskState, *, result: Any = None,
                    error: dict[str, str] | None = None, retries: int = 0,
                    worker: str = "", due: float | None = None,
                    ) -> tuple[list[str], list[Any]]:
        """The finish script's keys and arguments."""
        now = time.time()
        return ([TASK_KEY.format(task_id), OWNED_KEY.format(worker)],
                [state.value, now, dumps(result), dumps(error), retries, self.ttl,
                 EVENTS_CHANNEL, self.history_maxlen, now if due is None else due])

    def finish_command(self, task_id: str, state: TaskState, outcome: dict[str, Any],
                       ) -> list[Any]:
        """`finish` as the words of one EVALSHA (as `start_command`)."""
        keys, args = self.finish_call(task_id, state, **outcome)
        return ["EVALSHA", self.scripts.finish.sha, len(keys), *keys, *args]

    def command_scripts(self) -> list[str]:
        """The Lua of the scripts `start_command` and `finish_command` call: a new
        connection (maybe to a new Redis) loads them first (SCRIPT LOAD)."""
        return [self.scripts.start.script, self.scripts.finish.script]

    async def not_queued(self, record: TaskRecord, error: dict[str, str],
                         idempotency_key: str | None = None) -> None:
        """End a task whose message never reached its queue: FAILURE with `error`, and
        its idempotency key (scoped by task name), if bound to it, let go."""
        await self.finish(record.id, TaskState.FAILURE, error=error)
        if idempotency_key:
            await answer(self.scripts.unbind(
                keys=[IDEMPOTENCY_KEY.format(record.name, idempotency_key)], args=[record.id]))

    async def revoke(self, task_id: str, *, running_too: bool = True) -> TaskState | None:
        found = await answer(self.scripts.revoke(
            keys=[TASK_KEY.format(task_id)],
            args=[time.time(), EVENTS_CHANNEL, int(running_too), self.history_maxlen]))
        return TaskState(as_str(found)) if found else None

    async def expire(self, task_id: str) -> bool:
        """EXPIRED if it is PENDING or RETRY past its `expires`; whether it is now."""
        found = await answer(self.scripts.expire(keys=[TASK_KEY.format(task_id)],
                                                 args=[time.time(), EVENTS_CHANNEL,
                                                       self.history_maxlen]))
        return bool(found) and as_str(found) == TaskState.EXPIRED

    async def expiring(self, limit: int = 500) -> list[str]:
        """Tasks whose `expires` has passed and that may not have run."""
        ids = await answer(self.redis.zrangebyscore(EXPIRING_KEY, 0, time.time(),
                                                    start=0, num=limit))
        return [as_str(i) for i in ids]

    async def reclaim(self, task_id: str, owner: str, owned_in: str) -> TaskRecord | None:
        """Take `task_id` from `owner` (dead, or whose run was cancelled) for one more
        delivery: the record, back to PENDING; None when there is nothing to redo."""
        return _record(await answer(self.scripts.reclaim(
            keys=[TASK_KEY.format(task_id), owned_in],
            args=[owner, EVENTS_CHANNEL, time.time()])))

    async def overdue(self, before: float, limit: int) -> list[TaskRecord]:
        """Up to `limit` tasks, oldest first, that nobody runs and whose message was
        due before `before`, each with the fields a look into its broker needs (id,
        name, state, queue, deliveries). Ids whose record is gone, final or running
        are dropped from the due set on the way."""
        ids = [as_str(i) for i in await self.redis.zrangebyscore(DUE_KEY, "-inf", before,
                                                               start=0, num=limit)]
        if not ids:
            return []
        records = [TaskRecord.from_hash(d) for d in await self._fields(ids, DUE_FIELDS)
                   if is_whole(d)]
        waiting = [r for r in records if r.state in WAITING]
        done = set(ids) - {r.id for r in waiting}
        if done:
            await self.redis.zrem(DUE_KEY, *done)
        return waiting

    async def still_due(self, task_ids: Sequence[str], at: float) -> None:
        """These tasks' messages wait in their broker: due again at `at`, so that each is
        looked for again a lease later, and the next pass reaches the ones after them
        (only raised, never lowered; only those still in the due set)."""
        if task_ids:
            await self.redis.zadd(DUE_KEY, dict.fromkeys(task_ids, at), xx=True, gt=True)

    async def resend(self, record: TaskRecord, before: float) -> TaskRecord | None:
        """Take `record` (as `overdue` read it) for one more delivery, unless a worker
        took it or another reaper sent it meanwhile: the whole record, or None."""
        return _record(await answer(self.scripts.resend(
            keys=[TASK_KEY.format(record.id)],
            args=[record.deliveries, before, time.time()])))

    async def release(self, task_ids: Sequence[str]) -> None:
        """The history has stored these final records: Redis's copies may go."""
        if task_ids:
            await answer(self.scripts.release(
                keys=[INDEX_KEY, *(TASK_KEY.format(i) for i in task_ids)], args=[]))

    async def orphan(self, task_id: str, worker: str) -> None:
        """This process stopped running `task_id` without an outcome (cancelled):
        the reaper sends it again."""
        await answer(self.redis.smove(OWNED_KEY.format(worker), ORPHANS_KEY, task_id))


def _record(data: list[Any] | None) -> TaskRecord | None:
    """A record from a script's HGETALL reply (nothing: None)."""
    if not data:
        return None
    flat = [as_str(v) for v in data]
    return TaskRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


async def answer(reply: Any) -> Any:
    """A call's answer from an asyncio client or connection (awaited) or a blocking one
    (as is): the store and the lane run on either."""
    return await reply if inspect.isawaitable(reply) else reply


def started(reply: Sequence[Any]) -> tuple[str | None, int]:
    """The start script's reply: the state found (None: PENDING) and the retries."""
    found, retries = reply
    return as_str(found) or None, int(retries)


def _pack(value: Any) -> bytes:
    # Redis's Lua cmsgpack predates MessagePack's bin type: bytes go as raw strings.
    return msgpack.packb(value, use_bin_type=False)


def _word(value: str | bytes | int | float) -> str | bytes:
    """A command's word as redis-py would send it (a Lua number would lose digits)."""
    if isinstance(value, (str, bytes)):
        return value
    return repr(value) if isinstance(value, float) else str(value)


def as_str(value: str | bytes) -> str:
    """A Redis reply's word as text (core's clients do not decode replies)."""
    return value.decode() if isinstance(value, bytes) else value


def _text(data: dict[Any, Any]) -> dict[str, str]:
    return {as_str(k): as_str(v) for k, v in data.items() if v is not None}
