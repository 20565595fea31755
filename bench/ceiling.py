"""The ceiling: what FastAPI and Redis can do at all on this machine. A bare
`POST /tasks/{name}` that does one LPUSH and answers 202, served as the benchmark serves
the API (the same uvicorn processes, `--server-workers`; no access log), under the same
Locust load.

    REDIS_URL=redis://127.0.0.1:6379/9 uvicorn bench.ceiling:app --port 8001
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from fastapi import Body, FastAPI

from core.store.records import connect  # the API's own Redis client factory: same pool, same limits

redis = connect(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"))
app = FastAPI(title="queuebench ceiling")


@app.post("/tasks/{name}", status_code=202)
async def push(name: str, body: dict[str, Any] = Body(...)) -> dict[str, str]:  # noqa: B008
    task_id = str(uuid.uuid4())
    await redis.lpush(f"ceiling:{name}", json.dumps({"id": task_id, **body}))
    return {"id": task_id, "state": "PENDING"}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"redis": bool(await redis.ping())}
