"""Worker heartbeats: how the API (and a dashboard) knows which workers are alive."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import redis
from redis.asyncio import Redis

WORKER_KEY = "qb:worker:{backend}:{host}:{pid}"


class Heartbeat:
    """A daemon thread that keeps a short-lived key per worker process alive."""

    def __init__(self, redis_url: str, backend: str, interval: float, **info: Any) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.key = WORKER_KEY.format(backend=backend, host=socket.gethostname(), pid=os.getpid())
        self.interval = interval
        self.info = {"backend": backend, "host": socket.gethostname(), "pid": os.getpid(),
                     "started_at": time.time(), **info}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="qb-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._beat_once()
        self._thread.start()
        return self

    def _beat_once(self) -> None:
        ttl = max(1, round(self.interval * 3))
        self.client.set(self.key, json.dumps({**self.info, "seen_at": time.time()}), ex=ttl)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat_once()
            except redis.RedisError:
                continue  # Redis away for a moment: the key lapses, health says so

    def stop(self) -> None:
        self._stop.set()
        try:
            self.client.delete(self.key)
        finally:
            self.client.close()


async def live_workers(client: Redis, backend: str) -> list[dict[str, Any]]:
    keys = [k async for k in client.scan_iter(match=WORKER_KEY.format(backend=backend, host="*",
                                                                       pid="*"), count=500)]
    if not keys:
        return []
    return [json.loads(v) for v in await client.mget(keys) if v]
