"""RabbitMQ as the broker (`BROKER_URL=amqp://...`): the native producer's publisher.

With PRODUCER=native, Celery's, Dramatiq's and taskiq's adapters build their library's
message (body, headers, properties, the exchange) and publish it here, from the event
loop, with aio-pika: one connection and one channel per process, publisher confirms
on, `mandatory` (a message no queue takes is an error, not a silent drop). Task
records stay in Redis: the record is created first, then the message is published; a
publish that fails ends the record FAILURE (TaskBackend._enqueue), never PENDING for
ever.

A queue is declared before its first message, once per process, by the library
itself (`declare`, run off the event loop): the producer and the library's workers
then agree on its arguments (`x-max-priority`, dead-lettering) by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.errors import Unavailable

log = logging.getLogger("queuebench.amqp")

SCHEMES = ("amqp://", "amqps://", "pyamqp://")
# Seconds a publish (its confirm included) may take before the submit fails.
PUBLISH_TIMEOUT = 10.0
# The AMQP delivery mode of a message that outlives a broker restart (on a durable
# queue): what kombu, pika and aio-pika send for every library's message.
PERSISTENT = 2


def is_amqp(url: str) -> bool:
    return url.startswith(SCHEMES)


def pika_url(url: str) -> str:
    """The URL as pika and aio-pika read it: kombu's `pyamqp://` names its transport
    (`amqp://` here), and kombu's `//` is the vhost "/" (pika would read "")."""
    if url.startswith("pyamqp://"):
        url = "amqp://" + url.removeprefix("pyamqp://")
    parts = urlsplit(url)
    return parts._replace(path="/%2F").geturl() if parts.path == "//" else url


def shown(url: str) -> str:
    """The URL without its password, for a message."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


@dataclass(frozen=True)
class Outgoing:
    """One message as the library's own producer sends it, to `exchange` ("": the
    default one, where the queue's name is the routing key), with the queue it lands
    in (to declare first, with what the exchange routes to it)."""

    queue: str
    routing_key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    exchange: str = ""


class _Channel:
    """One robust connection and one channel on it, each opened at first use, the
    channel again once closed (by an error on it) or dropped."""

    def __init__(self, url: str, timeout: float, **options: Any) -> None:
        self.url, self._timeout, self._options = url, timeout, options
        self._connection: Any = None
        self._channel: Any = None

    async def get(self) -> Any:
        import aio_pika

        if self._connection is None:
            self._connection = await aio_pika.connect_robust(
                self.url, timeout=self._timeout, connection_class=closing_connection())
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(**self._options)
        return self._channel

    def drop(self) -> None:
        """The next `get` opens another channel (this one the broker closes)."""
        self._channel = None

    async def aclose(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()


class Publisher:
    def __init__(self, url: str, declare: Callable[[str], None]) -> None:
        self.url = pika_url(url)
        self._declare = declare
        self._declared: set[str] = set()
        # A message returned unroutable (`mandatory`) raises only with on_return_raises:
        # aio-pika's default confirms it like a taken one.
        self._channel = _Channel(self.url, 5, publisher_confirms=True, on_return_raises=True)
        self._lock = asyncio.Lock()

    async def _ready(self, queue: str) -> Any:
        async with self._lock:
            channel = await self._channel.get()
            if queue not in self._declared:
                await asyncio.to_thread(self._declare, queue)
                self._declared.add(queue)
            return channel

    async def publish(self, message: Outgoing) -> None:
        """Publish and wait for the broker's confirm; Unavailable (503) when it does
        not take the message."""
        import aio_pika

        try:
            channel = await self._ready(message.queue)
            exchange = (await channel.get_exchange(message.exchange, ensure=False)
                        if message.exchange else channel.default_exchange)
            await exchange.publish(
                aio_pika.Message(message.body, headers=message.headers or None,
                                 **message.properties),
                routing_key=message.routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT)
        except (asyncio.CancelledError, Unavailable):
            raise
        except Exception as exc:  # refused, returned, unroutable, connection lost
            self._declared.discard(message.queue)  # deleted meanwhile? declared again next
            raise Unavailable(f"broker did not take the message: "
                              f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._channel.aclose()


class Depths:
    """How many messages are ready in RabbitMQ queues: a passive declare of each, the
    `messages_ready` of `rabbitmqctl list_queues` (not those a consumer holds unacked).
    One connection of its own, opened at the first read; a queue never declared
    counts 0 (its 404 closes the channel, which the next declare opens again). A
    broker that does not answer within READ_TIMEOUT makes the depths unknown (empty),
    not the page or the scrape that asked fail."""

    READ_TIMEOUT = 2.0

    def __init__(self, url: str) -> None:
        self.url = pika_url(url)
        self._channel = _Channel(self.url, self.READ_TIMEOUT)
        self._lock = asyncio.Lock()

    async def read(self, named: dict[str, list[str]]) -> dict[str, int]:
        """Per queuebench queue, the ready messages of the broker queues named for it."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.READ_TIMEOUT):
                    return {queue: sum([await self._ready(n) for n in names])
                            for queue, names in named.items()}
            except Exception as exc:  # down, refused, timed out: depth unknown
                log.warning("queue depths on %s: %s: %s", shown(self.url),
                            type(exc).__name__, exc)
                with contextlib.suppress(Exception):
                    await self._channel.aclose()
                return {}

    async def _ready(self, queue: str) -> int:
        from aiormq.exceptions import ChannelNotFoundEntity

        try:
            declared = await (await self._channel.get()).declare_queue(queue, passive=True)
        except ChannelNotFoundEntity:
            self._channel.drop()
            return 0
        return int(declared.declaration_result.message_count)

    async def aclose(self) -> None:
        await self._channel.aclose()


@functools.cache
def closing_connection() -> type:
    """aio-pika's RobustConnection, closed when its first connect fails. aio-pika leaves
    such a connection to its `__del__`, which makes a close() coroutine and schedules
    it on the loop: collected where no loop runs, that coroutine is never awaited, and
    Python warns at some later, random moment (an error under `-W error`)."""
    import aio_pika

    class ClosingConnection(aio_pika.RobustConnection):
        async def connect(self, timeout: Any = None) -> None:
            try:
                await super().connect(timeout)
            except BaseException:
                await self.close()
                raise

    return ClosingConnection


def check(url: str, timeout: float = 3.0) -> str | None:
    """None when RabbitMQ at `url` answers (credentials and vhost too), else why not."""
    import aio_pika

    async def probe() -> None:
        connection = await aio_pika.connect(pika_url(url), timeout=timeout)
        await connection.close()

    # aiormq logs the failure too: the caller's one line says it.
    quiet = logging.getLogger("aiormq.connection")
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        asyncio.run(probe())
    except Exception as exc:  # refused, auth, unknown vhost: the reason goes in the line
        return f"{type(exc).__name__}: {exc}"
    finally:
        quiet.setLevel(level)
    return None


@contextmanager
def scratch_vhost(base: str, prefix: str) -> Iterator[str]:
    """A fresh RabbitMQ virtual host beside `base` (amqp://user:pass@host:port), made
    with `rabbitmqctl` (the broker's own host, as root or its user) and deleted after:
    the URL of it. Nothing of an earlier run (queues, messages) meets this one."""
    user = urlsplit(base).username or "guest"
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield f"{base.rstrip('/')}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, *args], check=True, capture_output=True, text=True, timeout=60)
