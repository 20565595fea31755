"""Delayed messages on RabbitMQ with no head-of-line wait: a ladder of TTL queues.

RabbitMQ has no delayed delivery of its own: the delayed-message-exchange plugin is
not bundled and keeps its messages on one node. A message's own TTL (`expiration`)
on a delay queue, taskiq-aio-pika's way, holds a countdown behind every longer one
sent before it, as RabbitMQ expires a queue's head only. A queue's TTL
(`x-message-ttl`) is the same for all its messages, so they leave in the order they
came, each on time.

So a delay of d milliseconds is written in binary, and the message passes through one
rung per bit set: rung k holds every message 2^k ms, then dead-letters it to the rung
below. The bits travel in the routing key (`1.0.1.….0.<queue>`, the highest first);
rung k's topic exchange routes a message to its queue if bit k is 1, past it to rung
k-1's exchange if 0; below rung 0, DUE routes it to `<queue>`, bound there by its name
(`bind`). The ladder is the same LEVELS rungs for every queue of a vhost (the design
NServiceBus uses on RabbitMQ) and needs no consumer: a stock worker of `<queue>`
receives the message when it is due, in `<queue>` as any other.

Every rung is a durable quorum queue that dead-letters at least once (a message leaves
a rung once the next has taken it; a rung whose next cannot route it keeps it), and
messages are persistent: a delayed message outlives a node restart, as in its own
queue. A rung's TTL stays below RabbitMQ's timer bound (2^32 ms): the rungs past
2^31 ms are chains of 2^31 ms queues. A message arrives at most a millisecond late
for the rounding, plus one dead-letter hop per bit set (a few ms each).
"""

from __future__ import annotations

import math
from typing import Any

# 2^35 ms is about 397 days: any delay a submission may ask for (MAX_SECONDS, 366 days).
LEVELS = 35
PREFIX = "qb.delay"
ENTRY = f"{PREFIX}.{LEVELS - 1}"  # the exchange a delayed message is published to
DUE = f"{PREFIX}.due"  # the exchange below the ladder: to the queue by its name
LONGEST_TTL = 2**31  # ms: the rungs past it are chains of queues of this TTL
QUORUM = {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
          "x-overflow": "reject-publish"}  # at-least-once dead-lettering requires it


def millis(delay: float) -> int:
    """`delay` seconds in whole milliseconds, never fewer (rounding 1.1 s, a float of
    1100.0000000000002 ms, to 1100 first)."""
    return math.ceil(round(delay * 1000, 6))


def routing_key(delay: float, queue: str) -> str:
    """The routing key of a message for `queue` delayed by `delay` seconds (> 0)."""
    ms = millis(delay)
    if not 0 < ms < 2**LEVELS:
        raise ValueError(f"a delay of {delay!r} s is not within the ladder's range")
    return ".".join(str(ms >> k & 1) for k in reversed(range(LEVELS))) + f".{queue}"


def rung(k: int) -> list[tuple[str, int]]:
    """Rung k's queues in the order a message passes them, with their TTL in ms."""
    if 2**k <= LONGEST_TTL:
        return [(f"{PREFIX}.{k}", 2**k)]
    return [(f"{PREFIX}.{k}.{i}", LONGEST_TTL) for i in range(2**k // LONGEST_TTL)]


def first_queue(delay: float) -> str:
    """The queue a message delayed by `delay` seconds waits in first (its top bit's)."""
    return rung(millis(delay).bit_length() - 1)[0][0]


def _pattern(k: int, bit: int) -> str:
    return "*." * (LEVELS - 1 - k) + f"{bit}.#"


async def declare(channel: Any) -> None:
    """The ladder in `channel`'s vhost (aio-pika): idempotent, as any declare."""
    from aio_pika import ExchangeType

    async def exchange(name: str, kind: ExchangeType) -> Any:
        return await channel.declare_exchange(name, kind, durable=True)

    below = await exchange(DUE, ExchangeType.TOPIC)
    for k in range(LEVELS):
        step = await exchange(f"{PREFIX}.{k}", ExchangeType.TOPIC)
        await below.bind(step, _pattern(k, 0))  # bit k is 0: past the rung
        onward = below.name
        for i, (name, ttl) in reversed(list(enumerate(rung(k)))):
            queue = await channel.declare_queue(name, durable=True, arguments={
                **QUORUM, "x-message-ttl": ttl, "x-dead-letter-exchange": onward})
            if i:  # within a chain: the queue before dead-letters to this one
                link = await exchange(name, ExchangeType.FANOUT)
                await queue.bind(link)
                onward = link.name
            else:
                await queue.bind(step, _pattern(k, 1))
        below = step


async def bind(queue: Any) -> None:
    """`queue` (aio-pika's, declared after the ladder) receives its delayed messages
    from the ladder's foot."""
    await queue.bind(DUE, "*." * LEVELS + queue.name)
