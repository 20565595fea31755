"""taskiq's broker, made from the settings, with the shared tasks registered on it.

On Redis, taskiq-redis's `RedisStreamBroker`: the at-least-once one of its three
brokers. A stream entry read by a consumer group stays in the group's pending list
until the worker acks it, after the run (taskiq's default, `when_saved`), and a dead
worker's entries are claimed again (XAUTOCLAIM) once idle for VISIBILITY_TIMEOUT.
`ListQueueBroker` pops the message (a worker killed mid-run loses it: at most once)
and `PubSubBroker` hands each message to every worker. Two settings differ from
taskiq's defaults, both so that nothing is lost:

- the group starts at the stream's first entry (`consumer_id="0"`), not at its end
  ("$"): a task submitted before any worker ever ran is read, not skipped;
- an acked entry is deleted from the stream (`_StreamBroker`): taskiq-redis keeps
  it for ever, or trims by length (`maxlen`), which may drop entries not yet read.

taskiq-redis's brokers ignore the `delay` label (taskiq's delay on Redis is a
schedule source read by the single `taskiq scheduler` process, by the minute): a
delayed message waits in a sorted set per queue, scored by its due time, and every
worker moves the due ones onto their streams (`pump`, one script: each moves once).

On RabbitMQ, taskiq-aio-pika's `AioPikaBroker`: persistent messages on durable
quorum queues, acked after the run. Its delay does not do: a message waits in one
delay queue with its `expiration` the delay, and RabbitMQ expires a queue's head
only, so a countdown would wait behind every longer one sent before it. A delayed
message goes up core's delay ladder instead (core/brokers/delays.py: TTL queues, one
per bit of the delay, no consumer), which lets it into its queue when due; a retry
due at once goes straight to its queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import AsyncBroker, BrokerMessage, TaskiqEvents, TaskiqState
from taskiq.middlewares import SmartRetryMiddleware
from taskiq_redis import RedisStreamBroker

from core.brokers import delays
from core.brokers.amqp import PERSISTENT, closing_connection, is_amqp, pika_url
from core.errors import RetryTask
from core.settings import Settings
from core.store.records import connect
from core.tasks import all_tasks
from core.tasks.registry import TaskSpec
from core.worker.runner import OffloadRunner

log = logging.getLogger("queuebench.taskiq")

GROUP = "taskiq"  # taskiq-redis's default consumer group
EXCHANGE = "taskiq"  # taskiq-aio-pika's default exchange
# Seconds between a worker's looks for due delayed messages (a countdown, an eta, a
# retry's backoff): arq polls its queue every 50 ms in queuebench's adapter.
PUMP_EVERY = 0.05
PUMP_BATCH = 500
# taskiq retries up to its count, default 3: core's policy decides instead.
NO_LIMIT = 2**31


def stream(queue: str) -> str:
    """The Redis stream of queuebench's `queue` (taskiq's own default is "taskiq")."""
    return f"taskiq:{queue}"


def delayed(queue: str) -> str:
    """The sorted set of `queue`'s delayed messages (by due time, epoch seconds)."""
    return f"taskiq:{queue}:delayed"


def amqp_queue(queue: str) -> str:
    """`queue` on RabbitMQ: `taskiq.<queue>`, apart from Celery's and Dramatiq's
    queues of the same names on one vhost (declared with other arguments)."""
    return f"taskiq.{queue}"


def queue_label(settings: Settings, queue: str) -> str:
    """The `queue_name` label taskiq's brokers route a message by."""
    return amqp_queue(queue) if is_amqp(settings.broker) else stream(queue)


# -- Redis ---------------------------------------------------------------------------
# Moves the due members of KEYS[i] (delayed(queue)) onto stream KEYS[i + n/2]:
# ARGV[1] now (epoch seconds), ARGV[2] at most this many per set. Returns how many.
PUMP = """
local moved, half = 0, #KEYS / 2
for i = 1, half do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
  for _, body in ipairs(due) do
    redis.call('XADD', KEYS[i + half], '*', 'data', body)
    redis.call('ZREM', KEYS[i], body)
    moved = moved + 1
  end
end
return moved
"""


class _StreamBroker(RedisStreamBroker):
    """RedisStreamBroker whose `delay` label delays (a sorted set per queue) and whose
    ack deletes the entry it acks (XACK and XDEL in one round trip)."""

    async def kick(self, message: BrokerMessage) -> None:
        delay = float(message.labels.get("delay") or 0)
        if delay <= 0:
            return await super().kick(message)
        queue = message.labels.get("queue_name") or self.queue_name
        async with Redis(connection_pool=self.connection_pool) as redis:
            await redis.zadd(delayed(queue.removeprefix("taskiq:")),
                             {message.message: time.time() + delay})
        return None

    async def listen(self) -> Any:
        """RedisStreamBroker's listen, read again after a Redis error. taskiq's receiver
        ends at the first one, and its process with it, taking the tasks it runs
        (their records see them again only after REDELIVERY_AFTER): the tasks go on
        meanwhile, and the entries already read stay pending on this consumer. The
        consumer group is declared again first: a Redis restarted without its data
        lost it (XREADGROUP: NOGROUP), and the producer's XADD does not make one."""
        while True:
            try:
                await self._declare_consumer_group()
                async for message in super().listen():
                    yield message
            except (RedisError, OSError) as exc:
                log.warning("taskiq stream %s: %s; reading again in 1 s", self.queue_name, exc)
                await asyncio.sleep(1)

    def _ack_generator(self, id: str, queue_name: str) -> Any:
        async def ack() -> None:
            async with (Redis(connection_pool=self.connection_pool) as redis,
                        redis.pipeline(transaction=False) as pipe):
                pipe.xack(queue_name, self.consumer_group_name, id)
                pipe.xdel(queue_name, id)
                await pipe.execute()

        return ack


async def pump(redis: Redis, queues: list[str], stop: asyncio.Event) -> None:
    """Move the due delayed messages of `queues` onto their streams until `stop`."""
    script = redis.register_script(PUMP)
    keys = [delayed(q) for q in queues] + [stream(q) for q in queues]
    while not stop.is_set():
        try:
            if await script(keys=keys, args=[time.time(), PUMP_BATCH]) >= PUMP_BATCH:
                continue
        except Exception as exc:  # Redis away: the messages wait in their sets
            log.warning("taskiq delayed messages: %s", exc)
        await asyncio.sleep(PUMP_EVERY)


# -- RabbitMQ ------------------------------------------------------------------------
def _amqp_broker(settings: Settings, queues: list[str], slots: int) -> AsyncBroker:
    from aio_pika import Message
    from taskiq_aio_pika import AioPikaBroker, Queue

    class _AmqpBroker(AioPikaBroker):
        """AioPikaBroker whose delayed messages go up core's delay ladder, and whose
        queues are declared before their first message and bound at the ladder's foot."""

        _qb_ladder = False  # the ladder declared in the vhost (by this broker, or the one asking)

        async def _declare_queues(self, channel: Any) -> Any:
            declared = await super()._declare_queues(channel)
            if not self._qb_ladder:
                await delays.declare(channel)
                self._qb_ladder = True
            for queue, _ in declared:
                await delays.bind(queue)
            return declared

        async def kick(self, message: BrokerMessage) -> None:
            name = message.labels.get("queue_name") or self._task_queues[0].name
            assert self.write_channel is not None, "startup() first"
            if all(q.name != name for q in self._task_queues):
                # Declared by a broker of that one queue, on this channel: the same
                # arguments as a worker's, and nothing of this broker changes while
                # it waits (a kick meanwhile routes by this broker's own queues).
                await of_one(name)._declare_queues(self.write_channel)
                if all(q.name != name for q in self._task_queues):
                    # Two queues or more: AioPikaBroker routes by the label.
                    self._task_queues.append(Queue(name=name))
            delay = float(message.labels.get("delay") or 0)
            if delay <= 0:
                # Not delayed, or a retry at once (taskiq's retry middleware labels
                # every retry with its delay): AioPikaBroker's own kick.
                message.labels.pop("delay", None)
                return await super().kick(message)
            # AioPikaBroker's message (kick), up the ladder instead of its delay queue.
            exchange = await self.write_channel.get_exchange(delays.ENTRY, ensure=False)
            await exchange.publish(Message(
                body=message.message, delivery_mode=PERSISTENT,
                headers={"task_id": message.task_id, "task_name": message.task_name,
                         **message.labels}), routing_key=delays.routing_key(delay, name))

    def of_one(name: str) -> _AmqpBroker:
        """The broker of the one queue `name`: what a worker of that queue declares."""
        made = _AmqpBroker(url=url, task_queues=[Queue(name=name)])
        made._qb_ladder = True
        return made

    url = pika_url(settings.broker)
    # A first connect that fails closes its connection (a client or a declare run off
    # the loop would leave it to aio-pika's __del__, to warn at some random moment).
    return _AmqpBroker(url=url, qos=slots, task_queues=[Queue(name=amqp_queue(q)) for q in queues],
                       connection_class=closing_connection())


# -- the broker and its tasks ---------------------------------------------------------
class _CoreRetries(SmartRetryMiddleware):
    """taskiq's retry middleware, retrying exactly when core's policy says so (the
    runner raises RetryTask) after the policy's delay, never by taskiq's own count."""

    def __init__(self) -> None:
        super().__init__(default_retry_count=NO_LIMIT, default_retry_label=True,
                         types_of_exceptions=(RetryTask,))

    async def on_error(self, message: Any, result: Any, exception: BaseException) -> None:
        if isinstance(exception, RetryTask):  # make_delay reads the `delay` label
            message.labels["delay"] = max(0.0, exception.delay)
        await super().on_error(message, result, exception)


def _register(broker: AsyncBroker, spec: TaskSpec, runners: dict[str, OffloadRunner]) -> None:
    async def run(arguments, meta=None):  # type: ignore[no-untyped-def]
        # Unannotated: taskiq's receiver would validate typed parameters on every call.
        return await runners["runner"].run((meta or {}).get("task_id", ""), spec.name,
                                           arguments, meta)

    run.__name__ = run.__qualname__ = spec.name
    broker.register_task(run, task_name=spec.name)


def make_broker(settings: Settings, queues: list[str] | None = None,
                slots: int = 100) -> AsyncBroker:
    """The broker a worker of `queues` (`slots` tasks in flight a process) or a client
    (queues None: the default queue; it declares others as it sends to them) uses."""
    from core.backend import DEFAULT_QUEUE

    queues = queues or [DEFAULT_QUEUE]
    broker: AsyncBroker
    if is_amqp(settings.broker):
        broker = _amqp_broker(settings, queues, slots)
    else:
        broker = _StreamBroker(
            url=settings.broker, queue_name=stream(queues[0]),
            additional_streams={stream(q): ">" for q in queues[1:]},
            consumer_group_name=GROUP, consumer_id="0",
            idle_timeout=settings.visibility_timeout * 1000,
            # A worker reads no more entries at once than it runs (each one read is
            # pending on it until acked; the reaper counts a dead worker's as lost).
            xread_count=slots, unacknowledged_batch_size=slots,
            unacknowledged_lock_timeout=max(1.0, settings.worker_heartbeat * 5),
            max_connection_pool_size=slots + 8,
        )
    broker.add_middlewares(_CoreRetries())
    runners: dict[str, OffloadRunner] = {}
    for spec in all_tasks().values():
        _register(broker, spec, runners)

    stop = asyncio.Event()
    pumping: list[asyncio.Task[None]] = []

    @broker.on_event(TaskiqEvents.WORKER_STARTUP)
    async def startup(state: TaskiqState) -> None:
        # Records live in REDIS_URL, which need not be taskiq's broker (BROKER_URL).
        records = connect(settings.redis_url, settings.redis_max_connections)
        # A sync task runs in a thread, which a DELETE or its time limit stops too.
        runners["runner"] = OffloadRunner(settings, records)
        if isinstance(broker, _StreamBroker):
            pumping.append(asyncio.create_task(
                pump(Redis(connection_pool=broker.connection_pool), queues, stop)))

    @broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
    async def shutdown(state: TaskiqState) -> None:
        stop.set()
        await asyncio.gather(*pumping, return_exceptions=True)

    return broker


__all__ = ["amqp_queue", "delayed", "make_broker", "queue_label", "stream"]
