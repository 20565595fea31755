"""Task records in Redis: the one state model of every backend.

The API writes a record on submit; the worker-side runner (core/runner.py) moves it
through STARTED to a final state. Transitions are Lua scripts, so a record that is
already final (REVOKED, EXPIRED, or finished by an earlier delivery) is never
overwritten, and the runner learns it must not run the task. Every transition is
published on one channel, which `/wait` and dashboards listen to.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_jsonable_python
from redis import Redis as SyncRedis
from redis.asyncio import BlockingConnectionPool, Redis

from core.states import TaskState

TASK_KEY = "qb:task:{}"
INDEX_KEY = "qb:tasks"
IDEMPOTENCY_KEY = "qb:idem:{}"
EVENTS_CHANNEL = "qb:events"
# Ids of tasks that reached a final state, for the history writer (core/history.py).
HISTORY_STREAM = "qb:history"
HISTORY_MAXLEN = 1_000_000

# KEYS[1] record, KEYS[2] history stream; ARGV: now, channel, worker, history maxlen
# (0: history off). Returns {state found, retries so far}.
# Core counts retries itself (a run after RETRY is the next retry), so a redelivery
# after a worker died is not a retry on any backend.
_START = """
local fields = redis.call('HMGET', KEYS[1], 'state', 'retries', 'expires_at')
local found = fields[1]
local retries = tonumber(fields[2] or '0') or 0
if found == 'REVOKED' or found == 'EXPIRED' or found == 'SUCCESS' or found == 'FAILURE' then
  return {found, retries}
end
if found == 'RETRY' then retries = retries + 1 end
local expires = tonumber(fields[3] or '')
local state = 'STARTED'
if expires and expires < tonumber(ARGV[1]) then state = 'EXPIRED' end
if state == 'EXPIRED' then
  redis.call('HSET', KEYS[1], 'state', state, 'finished_at', ARGV[1])
  if ARGV[4] ~= '0' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'id', string.sub(KEYS[1], 9))
  end
else
  redis.call('HSET', KEYS[1], 'state', state, 'started_at', ARGV[1], 'retries', retries,
             'worker', ARGV[3])
end
redis.call('PUBLISH', ARGV[2], cjson.encode({id=string.sub(KEYS[1], 9), state=state}))
if state == 'EXPIRED' then return {state, retries} end
return {found or '', retries}
"""

# KEYS[1] record, KEYS[2] history stream; ARGV: state, now, result json, error json,
# retries, ttl, channel, history maxlen (0: history off).
# A REVOKED or EXPIRED record stays so: a cancel that could not stop a run wins.
_FINISH = """
local found = redis.call('HGET', KEYS[1], 'state')
if found == 'REVOKED' or found == 'EXPIRED' then return found end
local fields = {'state', ARGV[1], 'result', ARGV[3], 'error', ARGV[4], 'retries', ARGV[5]}
if ARGV[1] ~= 'RETRY' then
  table.insert(fields, 'finished_at'); table.insert(fields, ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[1] ~= 'RETRY' and ARGV[8] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'id', string.sub(KEYS[1], 9))
end
redis.call('PUBLISH', ARGV[7], cjson.encode({id=string.sub(KEYS[1], 9), state=ARGV[1]}))
return found or false
"""

# KEYS[1] record, KEYS[2] history stream; ARGV: now, channel, running_too, history
# maxlen (0: history off). Cancel unless final (or running and running_too is 0);
# returns the state found.
_REVOKE = """
local found = redis.call('HGET', KEYS[1], 'state')
if not found then return false end
if found == 'SUCCESS' or found == 'FAILURE' or found == 'REVOKED' or found == 'EXPIRED' then
  return found
end
if found == 'STARTED' and ARGV[3] == '0' then return found end
redis.call('HSET', KEYS[1], 'state', 'REVOKED', 'finished_at', ARGV[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({id=string.sub(KEYS[1], 9), state='REVOKED'}))
if ARGV[4] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'id', string.sub(KEYS[1], 9))
end
return found
"""


def connect(url: str, max_connections: int = 200) -> Redis:
    """An asyncio client whose pool waits for a free connection when all are busy: a
    burst of submits then queues up instead of failing (redis-py 6+ caps a plain pool
    at 100 and raises "Too many connections" beyond)."""
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30)
    return Redis(connection_pool=pool)


def new_task_id() -> str:
    return str(uuid.uuid4())


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable_python(value, fallback=repr), separators=(",", ":"))


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
    worker: str | None = None  # host:pid of the process that ran it last

    _JSON = ("args", "kwargs", "result", "error")
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
        values: dict[str, Any] = {"id": data["id"], "name": data["name"]}
        values["backend"] = data.get("backend", "")
        values["state"] = TaskState(data.get("state", "PENDING"))
        values["retries"] = int(data.get("retries") or 0)
        values["queue"] = data.get("queue") or None
        values["worker"] = data.get("worker") or None
        for key in cls._JSON:
            if data.get(key):
                values[key] = json.loads(data[key])
        for key in cls._FLOAT:
            if data.get(key):
                values[key] = float(data[key])
        return cls(**values)

    def body(self) -> dict[str, Any]:
        """The task body of shared/API.md."""
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


_RECORD_FIELDS = tuple(f.name for f in fields(TaskRecord))


def error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


class RecordStore:
    """Reads and moves task records. One per event loop (redis.asyncio is loop-bound)."""

    def __init__(self, redis: Redis | SyncRedis, *, ttl: int = 86_400, kept: int = 100_000,
                 history: bool = True) -> None:
        self.redis = redis
        self.ttl = ttl
        self.kept = kept
        # Final states are streamed for the history writer, inside the same scripts:
        # no extra round trip on the worker's path. 0 tells the scripts not to.
        self.history_maxlen = HISTORY_MAXLEN if history else 0
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)
        self._revoke = redis.register_script(_REVOKE)

    async def create(self, record: TaskRecord) -> None:
        key = TASK_KEY.format(record.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=record.to_hash())
            pipe.expire(key, self.ttl)
            pipe.zadd(INDEX_KEY, {record.id: record.submitted_at or time.time()})
            pipe.zremrangebyrank(INDEX_KEY, 0, -self.kept - 1)
            pipe.publish(EVENTS_CHANNEL, dumps({"id": record.id, "state": record.state}))
            await pipe.execute()

    async def get(self, task_id: str) -> TaskRecord | None:
        data = await self.redis.hgetall(TASK_KEY.format(task_id))
        return TaskRecord.from_hash(_text(data)) if data else None

    async def recent(self, *, offset: int = 0, count: int = 100) -> list[TaskRecord]:
        """Records newest first, as the index holds them (expired ones left out)."""
        ids = await self.redis.zrevrange(INDEX_KEY, offset, offset + count - 1)
        return await self.get_many([_str(task_id) for task_id in ids])

    async def get_many(self, task_ids: list[str]) -> list[TaskRecord]:
        """The records of `task_ids` that Redis still has, in that order; one round trip."""
        if not task_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(TASK_KEY.format(task_id))
            found = await pipe.execute()
        return [TaskRecord.from_hash(_text(d)) for d in found if d]

    async def start(self, task_id: str, worker: str = "") -> tuple[TaskState | None, int]:
        """Mark STARTED; the state found before (None: no record) and the retries
        so far. A final state found means: do not run. EXPIRED is set here when
        `expires` has passed."""
        found, retries = await _reply(self._start(
            keys=[TASK_KEY.format(task_id), HISTORY_STREAM],
            args=[time.time(), EVENTS_CHANNEL, worker, self.history_maxlen],
        ))
        found = _str(found)
        return (TaskState(found) if found else None), int(retries)

    async def finish(
        self,
        task_id: str,
        state: TaskState,
        *,
        result: Any = None,
        error: dict[str, str] | None = None,
        retries: int = 0,
    ) -> None:
        await _reply(self._finish(
            keys=[TASK_KEY.format(task_id), HISTORY_STREAM],
            args=[state.value, time.time(), dumps(result), dumps(error), retries, self.ttl,
                  EVENTS_CHANNEL, self.history_maxlen],
        ))

    async def revoke(self, task_id: str, *, running_too: bool = True) -> TaskState | None:
        found = await self._revoke(keys=[TASK_KEY.format(task_id), HISTORY_STREAM],
                                   args=[time.time(), EVENTS_CHANNEL, int(running_too),
                                         self.history_maxlen])
        return TaskState(_str(found)) if found else None

    async def claim_idempotency(self, key: str, task_id: str) -> str | None:
        """Bind `key` to `task_id`; the id already bound to it, if any."""
        redis_key = IDEMPOTENCY_KEY.format(key)
        if await self.redis.set(redis_key, task_id, nx=True, ex=self.ttl):
            return None
        existing = await self.redis.get(redis_key)
        return _str(existing) if existing else None


async def _reply(reply: Any) -> Any:
    """A script's reply from an asyncio client (awaited) or a blocking one (as is)."""
    return await reply if inspect.isawaitable(reply) else reply


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(data: dict[Any, Any]) -> dict[str, str]:
    return {_str(k): _str(v) for k, v in data.items()}
