"""Task records in Redis: the one state model of every backend.

The API writes a record on submit; the worker-side runner (core/worker/runner.py) moves it
through STARTED to a final state. Transitions are Lua scripts, so a record that is
already final (REVOKED, EXPIRED, or finished by an earlier delivery) is never
overwritten, and the runner learns it must not run the task. Every transition is
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
from core.store.scripts import DirectScripts

TASK_KEY = "qb:task:{}"
INDEX_KEY = "qb:tasks"
IDEMPOTENCY_KEY = "qb:idem:{}:{}"  # task name, client's key
EVENTS_CHANNEL = "qb:events"
# Ids of tasks that reached a final state, for the history writer (core/history/store.py).
HISTORY_STREAM = "qb:history"
HISTORY_MAXLEN = 1_000_000
# Task ids with an `expires`, scored by it: the reaper expires those no worker took.
EXPIRING_KEY = "qb:expiring"
# Task ids a worker process runs now (its lease is its heartbeat, core/worker/heartbeat.py).
OWNED_KEY = "qb:owned:{}"
# Task ids whose run was interrupted in a live process (cancelled): the reaper runs
# them again as it does a dead worker's.
ORPHANS_KEY = "qb:orphans"
# Task ids that no worker runs and that are not final (PENDING, RETRY), scored by when
# their message is due to the workers: its countdown or eta, a retry's backoff. Kept by
# the scripts below, in the same step as each state change. A task still here
# REDELIVERY_AFTER past its time, whose message waits nowhere in its broker, is sent
# again by the reaper (core/worker/reaper.py): so every accepted task is final, running under
# a live owner, or queued where its library will deliver it.
DUE_KEY = "qb:due"
# Every worker process's last heartbeat (core/worker/heartbeat.py), a sorted set by time.
WORKERS_SEEN_KEY = "qb:workers:seen"
# The counters and histograms of /metrics (core/api/metrics.py), one hash kept by the
# scripts below as records move: exact, whichever process moved them, and it
# survives any process's restart. Fields: `s|task|backend` submitted,
# `f|task|backend|state` finished, `r|...` run time and `w|...` queue wait
# histograms (`|i`: the count in bucket i of METRIC_BOUNDS, i = len + 1: above the
# last; `|sum`: seconds).
METRICS_KEY = "qb:metrics"
METRIC_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 300.0)
# Runs and failed runs per worker process (`id|run`, `id|failed`), for the dashboard.
WORKER_TASKS_KEY = "qb:workers:tasks"
# Queue names tasks were submitted to, beside DEFAULT_QUEUE (queue depths).
QUEUES_KEY = "qb:queues"

# Index entries a submit trims at most (beyond RECORDS_KEPT, after the setting was
# lowered): a few each, so no script call holds Redis for long.
TRIM_STEP = 100

# Lua helpers shared by the scripts. A record without a name is no record: Redis lost
# it (TTL, FLUSHDB, eviction), and no script ever writes a partial one back.
_LIB = """
local function is_final(s)
  return s == 'SUCCESS' or s == 'FAILURE' or s == 'REVOKED' or s == 'EXPIRED'
end
local function task_id(key) return string.sub(key, 9) end
local BOUNDS = {""" + ", ".join(map(repr, METRIC_BOUNDS)) + """}
-- One observation of a histogram of qb:metrics: its bucket and its sum.
local function observe(kind, label, seconds)
  local i = #BOUNDS + 1
  for b = 1, #BOUNDS do
    if seconds <= BOUNDS[b] then i = b; break end
  end
  redis.call('HINCRBY', 'qb:metrics', kind .. '|' .. label .. '|' .. i, 1)
  redis.call('HINCRBYFLOAT', 'qb:metrics', kind .. '|' .. label .. '|sum', seconds)
end
-- A final state is counted and streamed, and its event carries what a live chart
-- needs (the task's name and its end-to-end seconds), so no listener reads records.
local function announce(key, state, maxlen, channel, now)
  local event = {id=task_id(key), state=state}
  if is_final(state) then
    redis.call('ZREM', 'qb:expiring', task_id(key))
    redis.call('ZREM', 'qb:due', task_id(key))
    if maxlen ~= '0' then
      redis.call('XADD', 'qb:history', 'MAXLEN', '~', maxlen, '*', 'id', task_id(key))
    else  -- no history to wait for: the index's trim may delete it (see trim)
      redis.call('HSET', key, 'released', '1')
    end
    local f = redis.call('HMGET', key, 'name', 'backend', 'submitted_at')
    redis.call('HINCRBY', 'qb:metrics', 'f|' .. f[1] .. '|' .. (f[2] or '') .. '|' .. state, 1)
    event.name = f[1]
    local submitted = tonumber(f[3] or '')
    if submitted and now then event.latency = tonumber(now) - submitted end
  end
  redis.call('PUBLISH', channel, cjson.encode(event))
end
-- Bounded records (RECORDS_KEPT): every record is in the index, and the ids the index
-- drops beyond `kept` (the oldest, at most TRIM_STEP a call) are deleted with their
-- records when those are final and `released` (the history has them, or there is no
-- history). A record still running, queued or not yet stored keeps its TTL; the
-- history writer deletes it once stored (RecordStore.release). So Redis holds about
-- `kept` records however high the rate, not rate x RECORD_TTL.
local function trim(index, kept)
  local excess = redis.call('ZCARD', index) - kept
  if excess <= 0 then return end
  local old = redis.call('ZRANGE', index, 0, math.min(excess, """ + str(TRIM_STEP) + """) - 1)
  for _, id in ipairs(old) do
    local f = redis.call('HMGET', 'qb:task:' .. id, 'state', 'released')
    if is_final(f[1]) and f[2] == '1' then redis.call('DEL', 'qb:task:' .. id) end
  end
  redis.call('ZREM', index, unpack(old))
end
"""

# KEYS: record, index, idempotency key. ARGV: ttl, kept, channel, submitted,
# idempotent (0/1), expires_at ('' for none), metric label (task|backend), queue ('':
# the default), the record's field/value items and the commands that queue the task's
# message (each a list of words), both packed with MessagePack (two arguments instead
# of fifty, which redis-py packs word by word in Python: most of a submit's CPU), and
# the time its message is due (its countdown or eta).
# Claim, create and queue are one step: a second submit with the key finds the first
# record (and queues nothing), never a key bound to nothing, and no record is left
# without its message. A record that names a periodic entry (`schedule`) joins that
# entry's index and state in the same step (core/schedule/scheduler.py). Returns the id of the
# task that stands. A record that exists already is left as it is, with nothing queued.
_CREATE = _LIB + """
local id = task_id(KEYS[1])
-- The same create again (a client's retry after it lost the reply): the task stands,
-- and may have run already; writing it again would make it PENDING and queue it twice.
if redis.call('HEXISTS', KEYS[1], 'name') == 1 then return id end
if ARGV[5] == '1' then
  local first = redis.call('GET', KEYS[3])
  if first and redis.call('HEXISTS', 'qb:task:' .. first, 'name') == 1 then return first end
  redis.call('SET', KEYS[3], id, 'EX', ARGV[1])
end
redis.call('HSET', KEYS[1], unpack(cmsgpack.unpack(ARGV[9])))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('HINCRBY', 'qb:metrics', 's|' .. ARGV[7], 1)
if ARGV[8] ~= '' then redis.call('SADD', 'qb:queues', ARGV[8]) end
for _, command in ipairs(cmsgpack.unpack(ARGV[10])) do  -- the library's message
  redis.call(unpack(command))
end
redis.call('ZADD', KEYS[2], ARGV[4], id)
redis.call('ZADD', 'qb:due', ARGV[11], id)
trim(KEYS[2], tonumber(ARGV[2]))
if ARGV[6] ~= '' then redis.call('ZADD', 'qb:expiring', ARGV[6], id) end
local entry = redis.call('HGET', KEYS[1], 'schedule')
if entry then  -- fired by a periodic entry (core/schedule/scheduler.py): its index and its state
  local tasks = 'qb:schedule:' .. entry .. ':tasks'
  redis.call('ZADD', tasks, ARGV[4], id)
  redis.call('ZREMRANGEBYRANK', tasks, 0, -tonumber(ARGV[2]) - 1)
  redis.call('HSET', 'qb:schedule:' .. entry, 'last_run_at', ARGV[4], 'last_task_id', id)
end
redis.call('PUBLISH', ARGV[3], cjson.encode({id=id, state='PENDING'}))
return id
"""

# KEYS: record, owned set of this worker, workers' heartbeats.
# ARGV: now, channel, worker, history maxlen (0: off), lease seconds, run (this
# delivery's token in its worker: a try again of a start whose reply was lost finds
# its own run, not a BUSY one).
# Returns {state found, retries so far}; 'LOST' (no record: do not run) or 'BUSY'
# (STARTED by a worker whose heartbeat is fresh, this one included: do not run).
# A STARTED record whose owner's heartbeat lapsed is taken over: that delivery died.
# Core counts retries itself (a run after RETRY is the next retry), so a redelivery
# after a worker died is not a retry on any backend.
_START = _LIB + """
local id = task_id(KEYS[1])
local f = redis.call('HMGET', KEYS[1], 'state', 'retries', 'expires_at', 'worker', 'name',
                    'backend', 'submitted_at', 'run')
if not f[5] then return {'LOST', 0} end
local found = f[1]
local retries = tonumber(f[2] or '0') or 0
if is_final(found) then return {found, retries} end
local now = tonumber(ARGV[1])
if found == 'STARTED' and f[4] == ARGV[3] and ARGV[6] ~= '' and f[8] == ARGV[6] then
  return {'', retries}  -- this very run started it: its first try's reply was lost
end
if found == 'STARTED' and f[4] then
  local seen = redis.call('ZSCORE', KEYS[3], f[4])
  if seen and tonumber(seen) >= now - tonumber(ARGV[5]) then return {'BUSY', retries} end
  redis.call('SREM', 'qb:owned:' .. f[4], id)
end
redis.call('SREM', 'qb:orphans', id)
if found == 'RETRY' then retries = retries + 1 end
local expires = tonumber(f[3] or '')
if expires and expires < now then
  redis.call('HSET', KEYS[1], 'state', 'EXPIRED', 'finished_at', ARGV[1])
  announce(KEYS[1], 'EXPIRED', ARGV[4], ARGV[2], ARGV[1])
  return {'EXPIRED', retries}
end
redis.call('HSET', KEYS[1], 'state', 'STARTED', 'started_at', ARGV[1], 'retries', retries,
           'worker', ARGV[3], 'run', ARGV[6])
redis.call('SADD', KEYS[2], id)
redis.call('ZREM', 'qb:due', id)
-- Queue wait: submitted to started, for a run from PENDING (not a retry's, which
-- waited on its backoff; a redelivered task's counts again).
if (not found or found == 'PENDING') and f[7] then
  observe('w', f[5] .. '|' .. (f[6] or ''), math.max(0, now - tonumber(f[7])))
end
announce(KEYS[1], 'STARTED', ARGV[4], ARGV[2])
return {found or '', retries}
"""

# KEYS: record, owned set of this worker. ARGV: state, now, result json, error
# json, retries, ttl, channel, history maxlen (0: off), when a RETRY's next run is due.
# The first final state wins: a REVOKED or EXPIRED record stays so (a cancel that could
# not stop a run wins), and a second delivery cannot overwrite a finished one.
_FINISH = _LIB + """
redis.call('SREM', KEYS[2], task_id(KEYS[1]))
local f = redis.call('HMGET', KEYS[1], 'state', 'name', 'backend', 'started_at')
if not f[2] then return 'LOST' end
if is_final(f[1]) then return f[1] end
local worker = string.sub(KEYS[2], 10)
if f[1] == 'STARTED' and f[4] and worker ~= '' then  -- a run of this worker ended
  observe('r', f[2] .. '|' .. (f[3] or ''), math.max(0, tonumber(ARGV[2]) - tonumber(f[4])))
  redis.call('HINCRBY', 'qb:workers:tasks', worker .. '|run', 1)
  if ARGV[1] ~= 'SUCCESS' then redis.call('HINCRBY', 'qb:workers:tasks', worker .. '|failed', 1) end
end
local fields = {'state', ARGV[1], 'result', ARGV[3], 'error', ARGV[4], 'retries', ARGV[5]}
if ARGV[1] ~= 'RETRY' then
  table.insert(fields, 'finished_at'); table.insert(fields, ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[1] == 'RETRY' then redis.call('ZADD', 'qb:due', ARGV[9], task_id(KEYS[1])) end
announce(KEYS[1], ARGV[1], ARGV[8], ARGV[7], ARGV[2])
return f[1] or false
"""

# KEYS: record. ARGV: now, channel, running_too, history maxlen (0: off).
# Cancel unless final (or running and running_too is 0); returns the state found.
_REVOKE = _LIB + """
local f = redis.call('HMGET', KEYS[1], 'state', 'name')
if not f[2] then return false end
if is_final(f[1]) then return f[1] end
if f[1] == 'STARTED' and ARGV[3] == '0' then return f[1] end
redis.call('HSET', KEYS[1], 'state', 'REVOKED', 'finished_at', ARGV[1])
announce(KEYS[1], 'REVOKED', ARGV[4], ARGV[2], ARGV[1])
return f[1]
"""

# KEYS: record. ARGV: now, channel, history maxlen. A PENDING or RETRY task
# past its `expires` ends EXPIRED (no worker took it in time); returns the state.
_EXPIRE = _LIB + """
local f = redis.call('HMGET', KEYS[1], 'state', 'expires_at', 'name')
if not f[3] then redis.call('ZREM', 'qb:expiring', task_id(KEYS[1])); return false end
local expires = tonumber(f[2] or '')
if (f[1] == 'PENDING' or f[1] == 'RETRY') and expires and expires < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'EXPIRED', 'finished_at', ARGV[1])
  announce(KEYS[1], 'EXPIRED', ARGV[3], ARGV[2], ARGV[1])
  return 'EXPIRED'
end
if is_final(f[1]) then redis.call('ZREM', 'qb:expiring', task_id(KEYS[1])) end
return f[1]
"""

# KEYS: record, the set it is owned in (a dead worker's, or the orphans). ARGV: the
# owner ('' for an orphan), channel, now. A STARTED record of that owner goes back to
# PENDING, its deliveries counted, for one more delivery; returns the record, or
# nothing to redo. It stays in the set until the caller has sent it (`_again` in
# core/worker/reaper.py), so a failed send is tried again; a PENDING one still in the set
# is such a retry.
_RECLAIM = _LIB + """
local id = task_id(KEYS[1])
if redis.call('SISMEMBER', KEYS[2], id) == 0 then return false end
local f = redis.call('HMGET', KEYS[1], 'state', 'worker', 'name')
if not f[3] or (f[1] ~= 'STARTED' and f[1] ~= 'PENDING')
   or (ARGV[1] ~= '' and f[2] ~= ARGV[1]) then
  redis.call('SREM', KEYS[2], id)
  return false
end
if f[1] == 'STARTED' then
  redis.call('HSET', KEYS[1], 'state', 'PENDING')
  redis.call('HDEL', KEYS[1], 'started_at')
  redis.call('PUBLISH', ARGV[2], cjson.encode({id=id, state='PENDING'}))
end
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('ZADD', 'qb:due', ARGV[3], id)
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: record. ARGV: its deliveries as the reaper read them, the latest due time it
# may have (REDELIVERY_AFTER ago), now. A PENDING or RETRY task that nobody took since
# the reaper looked is counted one more delivery and due again now, for the reaper to
# send it again; returns the record, or nothing (another reaper did it, or a worker
# took it meanwhile). One of several reapers wins.
_RESEND = _LIB + """
local id = task_id(KEYS[1])
local due = redis.call('ZSCORE', 'qb:due', id)
if not due or tonumber(due) > tonumber(ARGV[2]) then return false end
local f = redis.call('HMGET', KEYS[1], 'state', 'deliveries', 'name')
if not f[3] or (f[1] ~= 'PENDING' and f[1] ~= 'RETRY') then
  redis.call('ZREM', 'qb:due', id)
  return false
end
if (tonumber(f[2] or '0') or 0) ~= tonumber(ARGV[1]) then return false end
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('ZADD', 'qb:due', ARGV[3], id)
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: an idempotency key. ARGV: a task id. The key is let go if it names that task.
_UNBIND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

# KEYS: records the history has just stored. ARGV: the index. Each is `released`: the
# index's trim may delete it; one the index has dropped already is deleted now.
_RELEASE = _LIB + """
for _, key in ipairs(KEYS) do
  if redis.call('HEXISTS', key, 'name') == 1 then
    if redis.call('ZSCORE', ARGV[1], task_id(key)) then
      redis.call('HSET', key, 'released', '1')
    else
      redis.call('DEL', key)
    end
  end
end
"""

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
        self._create = redis.register_script(_CREATE)
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)
        self._revoke = redis.register_script(_REVOKE)
        self._expire = redis.register_script(_EXPIRE)
        self._reclaim = redis.register_script(_RECLAIM)
        self._resend = redis.register_script(_RESEND)
        self._release = redis.register_script(_RELEASE)
        self._unbind = redis.register_script(_UNBIND)
        # The submit's script call, on the asyncio client (core/store/scripts.py).
        self._direct = DirectScripts(redis) if isinstance(redis, Redis) else None

    async def create(self, record: TaskRecord, *, idempotency_key: str | None = None,
                     not_before: float | None = None, push: list[Command] | None = None,
                     ) -> str:
        """Store a new PENDING record, and run `push` (the commands that queue its
        message) with it; the id of the task that stands: `record.id`, or the first
        task's when `idempotency_key` (scoped by task name) is bound already (then
        nothing is queued). A task that may not start before `not_before` keeps its
        record that much longer."""
        call = self._create_call(record, idempotency_key, not_before, push)
        if self._direct is not None:
            return _str(await self._direct.call(self._create, call["keys"], call["args"]))
        return _str(await _reply(self._create(**call)))

    async def aclose(self) -> None:
        """Close what the store opened itself (not its client)."""
        if self._direct is not None:
            await self._direct.aclose()

    async def create_many(self, batch: Sequence[tuple[TaskRecord, str | None, float | None,
                                                      list[Command] | None]]) -> list[str]:
        """`create` for each (record, idempotency key, not before, push): one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for record, key, not_before, push in batch:
                await _reply(self._create(**self._create_call(record, key, not_before, push),
                                          client=pipe))
            return [_str(found) for found in await _reply(pipe.execute())]

    def _create_call(self, record: TaskRecord, idempotency_key: str | None,
                     not_before: float | None, push: list[Command] | None) -> dict[str, Any]:
        submitted = record.submitted_at or time.time()
        ttl = self.ttl + max(0, math.ceil((not_before or submitted) - submitted))
        key = IDEMPOTENCY_KEY.format(record.name, idempotency_key or "")
        pairs = [item for pair in record.to_hash().items() for item in pair]
        return {"keys": [TASK_KEY.format(record.id), INDEX_KEY, key],
                "args": [ttl, self.kept, EVENTS_CHANNEL, submitted, int(bool(idempotency_key)),
                         "" if record.expires_at is None else record.expires_at,
                         f"{record.name}|{record.backend}", record.queue or "",
                         _pack(pairs), _pack([[_word(w) for w in c] for c in push or ()]),
                         not_before or submitted]}

    async def get(self, task_id: str) -> TaskRecord | None:
        data = _text(await _reply(self.redis.hgetall(TASK_KEY.format(task_id))))
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
        return await self.get_many([_str(task_id) for task_id in ids])

    async def heads(self, count: int) -> list[TaskRecord]:
        """The newest `count` records of the index with only the fields a listing
        filters on (HMGET, not whole records): what `GET /tasks` scans."""
        ids = [_str(i) for i in await self.redis.zrevrange(INDEX_KEY, 0, count - 1)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(TASK_KEY.format(task_id), HEAD_FIELDS)
            found = await pipe.execute()
        heads = (_text(dict(zip(HEAD_FIELDS, values, strict=True))) for values in found)
        return [TaskRecord.from_hash(d) for d in heads if is_whole(d)]

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
        return started(await _reply(self._start(keys=keys, args=args)))

    def start_call(self, task_id: str, worker: str, run: str) -> tuple[list[str], list[Any]]:
        """The start script's keys and arguments."""
        return ([TASK_KEY.format(task_id), OWNED_KEY.format(worker), WORKERS_SEEN_KEY],
                [time.time(), EVENTS_CHANNEL, worker, self.history_maxlen, self.lease, run])

    def start_command(self, task_id: str, worker: str, run: str) -> list[Any]:
        """`start` as the words of one EVALSHA, for a caller that sends it on a
        connection of its own (core/worker/lane.py); `started` reads its reply."""
        keys, args = self.start_call(task_id, worker, run)
        return ["EVALSHA", self._start.sha, len(keys), *keys, *args]

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
        await _reply(self._finish(keys=keys, args=args))

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
        return ["EVALSHA", self._finish.sha, len(keys), *keys, *args]

    def command_scripts(self) -> list[str]:
        """The Lua of the scripts `start_command` and `finish_command` call: a new
        connection (maybe to a new Redis) loads them first (SCRIPT LOAD)."""
        return [self._start.script, self._finish.script]

    async def not_queued(self, record: TaskRecord, error: dict[str, str],
                         idempotency_key: str | None = None) -> None:
        """End a task whose message never reached its queue: FAILURE with `error`, and
        its idempotency key (scoped by task name), if bound to it, let go."""
        await self.finish(record.id, TaskState.FAILURE, error=error)
        if idempotency_key:
            await _reply(self._unbind(keys=[IDEMPOTENCY_KEY.format(record.name, idempotency_key)],
                                      args=[record.id]))

    async def revoke(self, task_id: str, *, running_too: bool = True) -> TaskState | None:
        found = await _reply(self._revoke(
            keys=[TASK_KEY.format(task_id)],
            args=[time.time(), EVENTS_CHANNEL, int(running_too), self.history_maxlen]))
        return TaskState(_str(found)) if found else None

    async def expire(self, task_id: str) -> bool:
        """EXPIRED if it is PENDING or RETRY past its `expires`; whether it is now."""
        found = await _reply(self._expire(keys=[TASK_KEY.format(task_id)],
                                          args=[time.time(), EVENTS_CHANNEL,
                                                self.history_maxlen]))
        return bool(found) and _str(found) == TaskState.EXPIRED

    async def expiring(self, limit: int = 500) -> list[str]:
        """Tasks whose `expires` has passed and that may not have run."""
        ids = await _reply(self.redis.zrangebyscore(EXPIRING_KEY, 0, time.time(),
                                                    start=0, num=limit))
        return [_str(i) for i in ids]

    async def reclaim(self, task_id: str, owner: str, owned_in: str) -> TaskRecord | None:
        """Take `task_id` from `owner` (dead, or whose run was cancelled) for one more
        delivery: the record, back to PENDING; None when there is nothing to redo."""
        return _record(await _reply(self._reclaim(keys=[TASK_KEY.format(task_id), owned_in],
                                                  args=[owner, EVENTS_CHANNEL, time.time()])))

    async def overdue(self, before: float, limit: int) -> list[TaskRecord]:
        """Up to `limit` tasks, oldest first, that nobody runs and whose message was
        due before `before`, each with the fields a look into its broker needs (id,
        name, state, queue, deliveries). Ids whose record is gone, final or running
        are dropped from the due set on the way."""
        ids = [_str(i) for i in await self.redis.zrangebyscore(DUE_KEY, "-inf", before,
                                                               start=0, num=limit)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(TASK_KEY.format(task_id), DUE_FIELDS)
            found = [_text(dict(zip(DUE_FIELDS, values, strict=True)))
                     for values in await pipe.execute()]
        records = [TaskRecord.from_hash(d) for d in found if is_whole(d)]
        done = set(ids) - {r.id for r in records if r.state in WAITING}
        if done:
            await self.redis.zrem(DUE_KEY, *done)
        return [r for r in records if r.state in WAITING]

    async def still_due(self, task_ids: Sequence[str], at: float) -> None:
        """These tasks' messages wait in their broker: due again at `at`, so that each is
        looked for again a lease later, and the next pass reaches the ones after them
        (only raised, never lowered; only those still in the due set)."""
        if task_ids:
            await self.redis.zadd(DUE_KEY, dict.fromkeys(task_ids, at), xx=True, gt=True)

    async def resend(self, record: TaskRecord, before: float) -> TaskRecord | None:
        """Take `record` (as `overdue` read it) for one more delivery, unless a worker
        took it or another reaper sent it meanwhile: the whole record, or None."""
        return _record(await _reply(self._resend(keys=[TASK_KEY.format(record.id)],
                                                 args=[record.deliveries, before,
                                                       time.time()])))

    async def release(self, task_ids: Sequence[str]) -> None:
        """The history has stored these final records: Redis's copies may go."""
        if task_ids:
            await _reply(self._release(keys=[TASK_KEY.format(i) for i in task_ids],
                                       args=[INDEX_KEY]))

    async def orphan(self, task_id: str, worker: str) -> None:
        """This process stopped running `task_id` without an outcome (cancelled):
        the reaper sends it again."""
        await _reply(self.redis.smove(OWNED_KEY.format(worker), ORPHANS_KEY, task_id))


def _record(data: list[Any] | None) -> TaskRecord | None:
    """A record from a script's HGETALL reply (nothing: None)."""
    if not data:
        return None
    flat = [_str(v) for v in data]
    return TaskRecord.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


async def _reply(reply: Any) -> Any:
    """A script's reply from an asyncio client (awaited) or a blocking one (as is)."""
    return await reply if inspect.isawaitable(reply) else reply


def started(reply: Sequence[Any]) -> tuple[str | None, int]:
    """The start script's reply: the state found (None: PENDING) and the retries."""
    found, retries = reply
    return _str(found) or None, int(retries)


def _pack(value: Any) -> bytes:
    # Redis's Lua cmsgpack predates MessagePack's bin type: bytes go as raw strings.
    return msgpack.packb(value, use_bin_type=False)


def _word(value: str | bytes | int | float) -> str | bytes:
    """A command's word as redis-py would send it (a Lua number would lose digits)."""
    if isinstance(value, (str, bytes)):
        return value
    return repr(value) if isinstance(value, float) else str(value)


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(data: dict[Any, Any]) -> dict[str, str]:
    return {_str(k): _str(v) for k, v in data.items() if v is not None}
