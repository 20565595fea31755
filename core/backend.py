"""The backend-agnostic task interface, and the contract an adapter fulfils.

An adapter (backends/<lib>_impl/__init__.py, its class `Backend`) subclasses
`TaskBackend`: how its library sends a task (`enqueue`, and the native producers'
`commands` and `outgoing`), runs a worker (`run_worker`, `default_concurrency`),
looks into its broker (`depth_commands`, `waiting_in`), drops a queued task
(`revoke`) and, where it has one, runs its own scheduler (`run_native_scheduler`).
Submit, get, list, cancel, wait and health are the same for every backend, built on
the record store. `backend_class` is the one way from core to an adapter.
docs/adapters.md walks through the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.brokers.amqp import Depths, Outgoing, is_amqp
from core.brokers.producer import choose
from core.db import ping
from core.errors import (
    AlreadyFinished,
    ConfigError,
    InvalidArguments,
    QueuebenchError,
    TaskNotFound,
    Unavailable,
    UnsupportedOption,
)
from core.history.store import SCAN_LIMIT, HistoryStore, TaskFilter, recent
from core.settings import BACKENDS, Settings
from core.states import FINISHED, TaskState
from core.store.events import EventHub, announce
from core.store.keys import QUEUES_KEY, SCHEDULE_TASKS_KEY, WORKERS_KEY
from core.store.records import Command, RecordStore, TaskRecord, as_str, connect, new_task_id
from core.store.workers import live_workers
from core.tasks import get_task
from core.tasks.features import CORE_FEATURES, Support, supported_options
from core.tasks.options import TaskOptions
from core.tasks.registry import TaskSpec

if TYPE_CHECKING:
    from core.schedule.entries import Schedule

DEFAULT_QUEUE = "default"
# The options a redelivery sends again (the delay, expiry and key have done their work).
REDELIVERED = {"max_retries", "retry_backoff", "time_limit", "queue", "priority"}
# Seconds a read may take when the answer is owed now (the end of /wait).
READ_TIMEOUT = 2.0
# Messages of one queue the reaper reads at most to find which overdue tasks still wait
# there (`waiting_in`): a longer backlog is taken to hold them.
WAITING_SCAN_MAX = 10_000


class TaskBackend(ABC):
    name: ClassVar[str]
    #: what the adapter gives, natively or through core (see core/tasks/features.py);
    #: a feature missing here is not supported, and its options are a 422
    features: ClassVar[dict[str, Support]] = {}
    #: the brokers the adapter speaks: Redis, and RabbitMQ (`amqp`) where it implements
    #: `declare` and `outgoing` (core/brokers/amqp.py publishes what it builds)
    brokers: ClassVar[tuple[str, ...]] = ("redis",)

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis or connect(settings.redis_url, settings.redis_max_connections)
        self.store = RecordStore(self.redis, ttl=settings.record_ttl, kept=settings.records_kept,
                                 history=settings.history_enabled,
                                 lease=settings.redelivery_after)
        self.events = EventHub(self.redis)
        # Where finished tasks are found after Redis has let them go (core/history/store.py).
        self.history = HistoryStore(settings.database_url) if settings.history_enabled else None
        self._broker_redis: Redis | None = None
        self._depths: Depths | None = None  # RabbitMQ's queue depths, at the first read
        # How submits are sent, decided here once (core/brokers/producer.py).
        self.producer = choose(self)
        self._defaults: dict[str, TaskOptions] = {}

    # -- what an adapter implements: running its library (no instance yet) -----------
    # Every adapter registered in core/settings.py BACKENDS gives `default_concurrency`
    # and `run_worker` (tests/test_backend.py checks): they are not abstract only so
    # that a TaskBackend used as a client alone (a test's) needs no worker.
    @classmethod
    def default_concurrency(cls, cpus: int) -> int:
        """`queuebench worker` without --concurrency: the tasks in flight the library's
        own worker runs by default on a machine of `cpus` CPUs."""
        raise NotImplementedError(f"{cls.name} has no worker")

    @classmethod
    def run_worker(cls, settings: Settings, concurrency: int, queues: list[str],
                   processes: int | None = None) -> None:
        """`queuebench worker`: the library's own worker, until it exits, running every
        registered task through core's runner (core/worker/runner.py), consuming
        `queues`, `concurrency` tasks in flight in all over `processes` OS processes
        (None: the library's way); inside `worker_services(cls, ...)`
        (core/worker/reaper.py), which beats the heartbeat and runs the reaper. A
        `processes` it cannot honour is a ConfigError (one line from the CLI)."""
        raise NotImplementedError(f"{cls.name} has no worker")

    @classmethod
    def run_native_scheduler(cls, settings: Settings, schedule: Schedule) -> None:
        """`queuebench scheduler --native`: the library's own scheduler, until it exits,
        firing `schedule`'s entries through core/schedule/scheduler.py's `fire` (once
        per tick however many run). Only where `features["periodic"]` is NATIVE: the
        CLI refuses --native in one line for the others, and never calls this."""
        raise NotImplementedError(f"{cls.name} has no scheduler of its own")

    # -- what an adapter implements: sending a task ------------------------------------
    @abstractmethod
    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        """Hand the task to the library's own client (PRODUCER=library, and wherever
        no native producer applies: core/brokers/producer.py); must not block the
        event loop. The message's id is `record.delivery_id`; beside the arguments it
        carries `meta(...)`."""

    def commands(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> list[Command] | None:
        """The same message as Redis commands in the library's own wire format, run in
        the script that creates the record (the `script` producer: one round trip per
        submit). None (the default): the adapter has no wire of its own, `enqueue`
        sends it."""
        return None

    def outgoing(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> Outgoing:
        """The same message as the library publishes it to RabbitMQ (the `amqp`
        producer, for an adapter whose `brokers` holds "amqp")."""
        raise NotImplementedError(f"{self.name} does not publish to RabbitMQ")

    async def redeliver(self, record: TaskRecord) -> None:
        """Send a task again whose run was lost (core/worker/reaper.py): its record's
        arguments and options, under a new delivery id."""
        spec = get_task(record.name)
        options = TaskOptions.model_validate(record.options or {})
        await self.producer.send(record, spec.bind(record.args, record.kwargs), options)

    async def revoke(self, record: TaskRecord) -> None:  # noqa: B027 (optional hook)
        """Tell the library to drop or stop `record`'s task. The record is already
        REVOKED, and the runner will not start it; this is for what runs already."""

    def declare(self, queue: str) -> None:
        """Declare `queue` on RabbitMQ as the library's workers do (blocking; run off
        the event loop once per queue, before the native producer's first message)."""
        raise NotImplementedError(f"{self.name} does not publish to RabbitMQ")

    def depth_commands(self, queue: str) -> list[Command]:
        """Redis commands whose replies, summed, are how many messages wait in
        `queue`, read from the library's own structures (none: depth unknown)."""
        return []

    def amqp_queues(self, queue: str) -> list[str]:
        """On RabbitMQ, the library's queues where `queue`'s messages wait (their ready
        messages, summed, are its depth; none: depth unknown)."""
        return []

    async def waiting(self, records: Sequence[TaskRecord]) -> set[str]:
        """The ids, among `records` (tasks nobody runs, overdue by REDELIVERY_AFTER),
        of those whose message waits in the broker for a consumer: queued or delayed,
        not taken. The reaper sends the others again (core/worker/reaper.py). A message a
        consumer took counts as lost here: each library's consumer starts what it takes
        at once, or holds it only until its countdown, which the due time includes; one
        not started a lease after that was taken by a consumer that died.

        By queue, from `waiting_in`. A queue it cannot tell about (RabbitMQ) counts as
        holding its PENDING tasks, whose messages the broker confirmed and keeps; not its
        RETRY ones. A retry's message is published by the worker as the task fails, and
        one published while the broker restarts may never have gone (the library's retry
        logs it and moves on: the chaos harness lost such a task on Celery and taskiq).
        Sent again, a retry costs at worst a spare message, which the start script
        refuses once either copy has run."""
        queues: dict[str, list[TaskRecord]] = {}
        for record in records:
            queues.setdefault(record.queue or DEFAULT_QUEUE, []).append(record)
        found: set[str] = set()
        for queue, group in queues.items():
            there = await self.waiting_in(queue)
            if there is None:
                found.update(r.id for r in group if r.state is not TaskState.RETRY)
            else:
                found.update(r.id for r in group if r.id in there)
        return found

    async def waiting_in(self, queue: str) -> set[str] | None:
        """The ids of the tasks whose messages wait in `queue`, read from the library's
        own structures; None: it cannot tell. The default, for a broker core does not
        look into (RabbitMQ, which hands a dead consumer's messages out again itself and
        keeps a confirmed message through a restart)."""
        return None

    async def listed(self, keys: Sequence[str]) -> list[bytes] | None:
        """The entries of the broker's Redis lists `keys`, read whole; None when the
        broker is not Redis, or they hold more than WAITING_SCAN_MAX in all (a backlog
        that long is looked into once it is shorter)."""
        broker = self._broker()
        if broker is None:
            return None
        async with broker.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            if sum(await pipe.execute()) > WAITING_SCAN_MAX:
                return None
            for key in keys:
                pipe.lrange(key, 0, -1)
            return [entry for entries in await pipe.execute() for entry in entries]

    async def aclose(self) -> None:
        await self.events.aclose()
        await self.store.aclose()
        await self.redis.aclose()
        if self._broker_redis is not None:
            await self._broker_redis.aclose()
        if self._depths is not None:
            await self._depths.aclose()
        await self.producer.aclose()

    # -- the same for every backend ---------------------------------------------------
    @classmethod
    def support(cls) -> dict[str, Support]:
        return {**CORE_FEATURES, **cls.features}

    def check_options(self, options: TaskOptions) -> None:
        unsupported = sorted(options.in_use() - supported_options(self.support()))
        if unsupported:
            raise UnsupportedOption(
                f"backend {self.name!r} cannot honour option(s): {', '.join(unsupported)}"
            )

    def task_defaults(self, spec: TaskSpec) -> TaskOptions:
        """The options a submission of `spec` starts from: the task's declared ones,
        with DEFAULT_TIME_LIMIT where it declares no limit (once per task)."""
        made = self._defaults.get(spec.name)
        if made is None:
            made = spec.defaults
            if made.time_limit is None and self.settings.default_time_limit:
                made = made.model_copy(update={"time_limit": self.settings.default_time_limit})
            self._defaults[spec.name] = made
        return made

    def meta(self, record: TaskRecord, options: TaskOptions) -> dict[str, Any]:
        """What a message carries beside the task's arguments: the task's id (the
        message's own id changes on a redelivery) and its policy (core/worker/runner.py)."""
        return {"task_id": record.id, **_wire_policy(options, self.settings.retry_backoff_max)}

    def prepare(self, name: str, args: list[Any] | None, kwargs: dict[str, Any] | None,
                options: TaskOptions | None, submitted: float, schedule: str | None = None,
                ) -> tuple[TaskRecord, dict[str, Any], TaskOptions]:
        """Check a submission; its record (not yet stored), bound arguments and
        options. Raises the 4xx errors (core/errors.py)."""
        spec = get_task(name)
        args, kwargs = list(args or []), dict(kwargs or {})
        arguments = spec.bind(args, kwargs)
        if options is None or not options.model_fields_set:  # none asked: the task's own
            opts = self.task_defaults(spec)
        else:
            self.check_options(options)
            opts = _past_eta_dropped(options.merged_over(self.task_defaults(spec)), submitted)
        record = TaskRecord(id=new_task_id(), name=name, backend=self.name, args=args,
                            kwargs=kwargs, submitted_at=submitted, queue=opts.queue,
                            expires_at=_expires_at(opts.expires, submitted),
                            options=dict(_redelivered(opts)), schedule=schedule)
        return record, arguments, opts

    async def submit(self, name: str, args: list[Any] | None = None,
                     kwargs: dict[str, Any] | None = None,
                     options: TaskOptions | None = None, *,
                     schedule: str | None = None) -> TaskRecord:
        """Create the task's record and queue it; `schedule` names the periodic
        entry that fires it (core/schedule/scheduler.py)."""
        record, arguments, opts = self.prepare(name, args, kwargs, options, time.time(),
                                               schedule)
        build = self.producer.commands
        push = build(record, arguments, opts) if build else None
        create = self.store.create(record, idempotency_key=opts.idempotency_key,
                                   not_before=_not_before(opts, record.submitted_at),
                                   push=push)
        key = opts.idempotency_key
        stands = await (create if push else self._unqueued_if_cancelled(create, [(record, key)]))
        if stands != record.id:  # the idempotency key is bound to an earlier task
            return await self.get(stands)
        if push is None:
            await self._enqueue([(record, arguments, opts, key)])
        return record

    async def submit_many(self, name: str, items: Sequence[tuple[list[Any], dict[str, Any]]],
                          options: TaskOptions | None = None) -> list[str]:
        """Submit `items` (args, kwargs) of one task with one options object; their
        ids in order. Every item is checked first: a bad one raises InvalidArguments
        naming its index, and none is queued. An idempotency key K stands for K:0,
        K:1, ... (a batch sent again gives the same ids)."""
        submitted = time.time()
        prepared, errors = [], []
        for index, (args, kwargs) in enumerate(items):
            try:
                prepared.append(self.prepare(name, args, kwargs, options, submitted))
            except InvalidArguments as exc:
                errors += [{**e, "loc": ["body", "items", index, *e["loc"][1:]]}
                           for e in exc.detail]
        if errors:
            raise InvalidArguments(errors)
        build = self.producer.commands
        pushes = [build(*p) if build else None for p in prepared]
        keys = [opts.idempotency_key and f"{opts.idempotency_key}:{index}"
                for index, (_, _, opts) in enumerate(prepared)]
        create = self.store.create_many([
            (record, key, _not_before(opts, submitted), push)
            for (record, _, opts), key, push in zip(prepared, keys, pushes, strict=True)])
        if all(pushes):  # every message is in its creating script
            return await create
        made = [(record, key) for (record, _, _), key in zip(prepared, keys, strict=True)]
        stands = await self._unqueued_if_cancelled(create, made)
        await self._enqueue([(*p, key) for p, key, push, stood
                             in zip(prepared, keys, pushes, stands, strict=True)
                             if push is None and stood == p[0].id])
        return stands

    async def _unqueued_if_cancelled(self, create: Awaitable[Any],
                                     made: list[tuple[TaskRecord, str | None]]) -> Any:
        """Create records whose messages the library's producer sends next. Cancelled
        meanwhile (the client went away), the creation still runs to its end and its
        records end FAILURE NotQueued, as in `_enqueue`: never PENDING for ever with
        no message. (With native producers the message is in the creating script.)"""
        creating = asyncio.ensure_future(create)
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait([creating])
                for record, key in made:  # one bound to an earlier task has no record
                    await self._not_queued(record, key, exc)
            raise

    async def _enqueue(self, batch: Sequence[tuple[TaskRecord, dict[str, Any], TaskOptions,
                                                   str | None]]) -> None:
        """Hand created tasks (record, arguments, options, idempotency key) to the
        producer, in order. When one fails, it and every one after it end
        FAILURE NotQueued, a cancelled request included: never a silent drop, nor a
        record left PENDING for ever with no message. A library's error is raised as
        Unavailable (a 503: the broker did not take it)."""
        send = self.producer.send
        for index, (record, arguments, opts, _) in enumerate(batch):
            try:
                await send(record, arguments, opts)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    for left, _, _, key in batch[index:]:
                        await self._not_queued(left, key, exc)
                if isinstance(exc, (QueuebenchError, RedisError)) or not isinstance(
                        exc, Exception):
                    raise
                raise Unavailable(f"broker did not take the message: "
                                  f"{type(exc).__name__}: {exc}") from exc

    async def _not_queued(self, record: TaskRecord, idempotency_key: str | None,
                          cause: BaseException) -> None:
        """End a task that never reached its queue FAILURE NotQueued, even while
        cancelled. Its idempotency key is let go: the client's retry with that key,
        after the 503, submits it anew rather than being handed the failed task."""
        await asyncio.shield(self.store.not_queued(record, _not_queued(cause),
                                                   idempotency_key))

    async def get(self, task_id: str) -> TaskRecord:
        record = await self.store.get(task_id)
        if record is None and self.history is not None:
            record = await self.history.get(task_id)
        if record is None:
            raise TaskNotFound(f"no task {task_id!r}")
        return record

    async def list(self, *, state: TaskState | None = None, name: str | None = None,
                   backend: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, limit: int = 50,
                   offset: int = 0, schedule: str | None = None) -> list[TaskRecord]:
        """Newest first, from Redis and the history table (see core/history/store.py);
        with `schedule`, the tasks that periodic entry fired."""
        where = TaskFilter(state=state, name=name, backend=backend, since=since, until=until)
        if schedule is not None:
            return await _fired_by(self, schedule, where, limit, offset)
        return await recent(self.store, self.history, where, limit, offset)

    async def cancel(self, task_id: str) -> TaskRecord:
        can_stop = self.support().get("cancel_running", Support.NONE) is not Support.NONE
        found = await self.store.revoke(task_id, running_too=can_stop)
        if found is None:  # Redis has no record: the history may have it, finished
            found = (await self.get(task_id)).state
        if found in FINISHED:
            raise AlreadyFinished(f"task {task_id!r} has already finished: {found.value}")
        if found is TaskState.STARTED and not can_stop:
            raise AlreadyFinished(f"task {task_id!r} is running, and backend {self.name!r} "
                                  "cannot stop a running task")
        if found is TaskState.STARTED:
            # The worker process that runs it stops it (core/worker/interrupt.py).
            await announce(self.redis, task_id)
        record = await self.get(task_id)
        await self.revoke(record)
        return record

    async def queues(self) -> list[str]:
        """The queues tasks were submitted to and workers consume, DEFAULT_QUEUE first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(QUEUES_KEY)
            pipe.hvals(WORKERS_KEY)
            submitted, infos = await pipe.execute()
        named = {as_str(q) for q in submitted}
        for info in infos:
            named.update(json.loads(info).get("queues") or ())
        return [DEFAULT_QUEUE, *sorted(named - {DEFAULT_QUEUE})]

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting per queue, as the library keeps them in its broker (empty
        when the adapter cannot tell)."""
        if is_amqp(self.settings.broker):
            return await self._amqp_depths()
        broker = self._broker()
        if broker is None:
            return {}
        queues = await self.queues()
        commands = {queue: self.depth_commands(queue) for queue in queues}
        if not any(commands.values()):
            return {}
        async with broker.pipeline(transaction=False) as pipe:
            for queue in queues:
                for command in commands[queue]:
                    pipe.execute_command(*command)
            replies = iter(await pipe.execute())
        return {queue: sum(int(next(replies)) for _ in commands[queue]) for queue in queues}

    async def _amqp_depths(self) -> dict[str, int]:
        queues = await self.queues()
        names = {queue: self.amqp_queues(queue) for queue in queues}
        if not any(names.values()):
            return {}
        if self._depths is None:
            self._depths = Depths(self.settings.broker)
        return await self._depths.read(names)

    def _broker(self) -> Redis | None:
        if self.settings.broker == self.settings.redis_url:
            return self.redis
        if not self.settings.broker.startswith(("redis://", "rediss://", "unix://")):
            return None
        if self._broker_redis is None:
            self._broker_redis = connect(self.settings.broker, 4)
        return self._broker_redis

    async def wait(self, task_id: str, timeout: float) -> TaskRecord:
        """The record once final, or after `timeout` seconds: never later than that
        plus one read bounded by READ_TIMEOUT, whatever Redis does meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.events.watch(task_id, within=timeout) as finished:
            record = await self._read(task_id)
            left = deadline - loop.time()
            if finished is None or record.state in FINISHED or left <= 0:
                return record
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), left)
        return await self._read(task_id)

    async def _read(self, task_id: str) -> TaskRecord:
        """`get`, or Unavailable after READ_TIMEOUT. Not by cancelling the read when
        time is up (redis-py 8 can swallow that cancellation and wait on for Redis):
        the read is left to end on its own."""
        reading = asyncio.ensure_future(self.get(task_id))
        done, _ = await asyncio.wait({reading}, timeout=READ_TIMEOUT)
        if not done:
            reading.cancel()
            reading.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise Unavailable(f"redis did not answer within {READ_TIMEOUT}s")
        return reading.result()

    async def health(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"backend": self.name}
        try:
            await self.redis.ping()
            checks["redis"] = True
            workers = await live_workers(self.redis, self.name, self.settings.worker_heartbeat)
            checks["workers"] = len(workers)
        except Exception:  # a down service is a 503, not a traceback
            checks["redis"], checks["workers"] = False, 0
        checks["database"] = await ping(self.settings.database_url)
        return checks


async def _fired_by(backend: TaskBackend, schedule: str, where: TaskFilter, limit: int,
                    offset: int) -> list[TaskRecord]:
    """An entry's tasks from its index (core/store/records.py keeps it), each read from
    Redis or, once Redis has let it go, from the history table: the index's page
    itself, or with a filter, the matches among its newest SCAN_LIMIT (bounded reads)."""
    unfiltered = where == TaskFilter()
    start, stop = (offset, offset + limit - 1) if unfiltered else (0, SCAN_LIMIT - 1)
    ids = [as_str(i) for i in await backend.redis.zrevrange(SCHEDULE_TASKS_KEY.format(schedule),
                                                           start, stop)]
    live = {r.id: r for r in await backend.store.get_many(ids)}
    gone = [i for i in ids if i not in live]
    if gone and backend.history is not None:
        live.update((r.id, r) for r in await backend.history.get_many(gone))
    found = [live[i] for i in ids if i in live and where.matches(live[i])]
    return found if unfiltered else found[offset:offset + limit]


# Options repeat from one submit to the next (most often a task's defaults): what a
# record and a message carry of them is worked out once per distinct options object.
@functools.lru_cache(maxsize=512)
def _redelivered(opts: TaskOptions) -> dict[str, Any]:
    return opts.model_dump(mode="json", include=REDELIVERED, exclude_none=True)


@functools.lru_cache(maxsize=512)
def _wire_policy(opts: TaskOptions, backoff_cap: float) -> dict[str, Any]:
    return opts.policy(backoff_cap).to_wire()


def _not_queued(cause: BaseException) -> dict[str, str]:
    if isinstance(cause, Exception):
        return {"type": "NotQueued",
                "message": f"the broker did not take it: {type(cause).__name__}: {cause}"}
    return {"type": "NotQueued", "message": f"submission interrupted ({type(cause).__name__})"}


def _past_eta_dropped(options: TaskOptions, submitted: float) -> TaskOptions:
    """An `eta` already past is none: start now (a library computes its message's
    expiry from the eta, arq a negative one)."""
    if options.eta is not None and options.eta.timestamp() < submitted:
        return options.model_copy(update={"eta": None})
    return options


def _not_before(options: TaskOptions, submitted: float) -> float:
    start = submitted + (options.countdown or 0)
    return max(start, options.eta.timestamp()) if options.eta else start


def delay_of(record: TaskRecord, options: TaskOptions) -> float | None:
    """Seconds from the submit until the task may start (its countdown or eta), as
    the libraries' producers take a delay; None: at once."""
    submitted = record.submitted_at or 0
    delay = _not_before(options, submitted) - submitted
    return delay if delay > 0 else None


def _expires_at(expires: float | datetime | None, submitted: float) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return expires.timestamp()
    return submitted + expires


def backend_class(name: str) -> type[TaskBackend]:
    """The adapter of backend `name`: backends/<name>_impl's `Backend`, imported here
    and nowhere else in core. A name not in BACKENDS, or whose library is not
    installed, is a ConfigError of one line."""
    if name not in BACKENDS:
        raise ConfigError(f"QUEUE_BACKEND={name!r} is not one of: {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(f"backends.{name}_impl")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("backends"):
            raise
        raise ConfigError(
            f"QUEUE_BACKEND={name}: its library is not installed here ({exc.name}); "
            f"install it with: pip install 'queuebench[{name}]'"
        ) from None
    backend: type[TaskBackend] = module.Backend
    return backend


__all__ = ["DEFAULT_QUEUE", "QueuebenchError", "TaskBackend", "backend_class", "delay_of"]
