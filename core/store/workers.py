"""The worker processes' records, as the API, the reaper and the probe read them: who
beat lately (`qb:workers`, `qb:workers:seen`), and forgetting one that is gone.
Written by each process's heartbeat (core/worker/heartbeat.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from core.store.keys import WORKER_TASKS_KEY, WORKERS_KEY, WORKERS_SEEN_KEY


async def workers(client: Redis, *, alive_within: float | None = None,
                  dead_for: float | None = None) -> list[dict[str, Any]]:
    """Registered worker processes seen within `alive_within` seconds, or not seen
    for `dead_for` seconds; each with its info and `seen_at`."""
    now = time.time()
    if dead_for is not None:
        ids = await client.zrangebyscore(WORKERS_SEEN_KEY, "-inf", now - dead_for)
    else:
        ids = await client.zrangebyscore(WORKERS_SEEN_KEY, now - (alive_within or 0), "+inf")
    if not ids:
        return []
    infos = await client.hmget(WORKERS_KEY, ids)
    found = []
    for wid, info in zip(ids, infos, strict=True):
        entry = json.loads(info) if info else {}
        entry["id"] = wid.decode() if isinstance(wid, bytes) else wid
        found.append(entry)
    return found


async def live_workers(client: Redis, backend: str, interval: float) -> list[dict[str, Any]]:
    """`queuebench worker` processes of `backend` that beat within three intervals."""
    return [w for w in await workers(client, alive_within=interval * 3)
            if w.get("backend") == backend and w.get("role") == "worker"]


async def forget(client: Redis, wid: str) -> None:
    async with client.pipeline(transaction=False) as pipe:
        pipe.hdel(WORKERS_KEY, wid)
        pipe.zrem(WORKERS_SEEN_KEY, wid)
        pipe.hdel(WORKER_TASKS_KEY, f"{wid}|run", f"{wid}|failed")
        await pipe.execute()
