"""One pub/sub subscription per process that wakes every waiter on a task."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from core.states import TaskState
from core.store.keys import CANCEL_CHANNEL, EVENTS_CHANNEL


class EventHub:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def watch(self, task_id: str, within: float) -> AsyncIterator[asyncio.Event | None]:
        """An event set once `task_id` reaches a final state. Subscribed before it
        yields, so a caller that reads the record next cannot miss the change; None
        when the subscription is not up within `within` seconds (Redis away)."""
        if self._listener is None or self._listener.done():
            self._ready.clear()
            self._listener = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self._ready.wait(), within)
        except TimeoutError:
            yield None
            return
        event = asyncio.Event()
        self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            self._waiters[task_id].discard(event)
            if not self._waiters[task_id]:
                del self._waiters[task_id]

    async def _listen(self) -> None:
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(EVENTS_CHANNEL)
            self._ready.set()
            while True:
                # Not listen(): redis-py 5 bounds its reads by the client's socket
                # timeout (core/store/records.py), and a quiet channel would end it.
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=1.0)
                if message is None:
                    continue
                event = json.loads(message["data"])
                if TaskState(event["state"]).finished:
                    for waiter in self._waiters.get(event["id"], ()):
                        waiter.set()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener


async def announce(client: Redis, task_id: str) -> None:
    """Tell the worker processes that the running task `task_id` is REVOKED now."""
    await client.publish(CANCEL_CHANNEL, json.dumps({"id": task_id,
                                                     "state": TaskState.REVOKED.value}))
