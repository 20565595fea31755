"""`/dashboard`: server-rendered pages (Jinja2) and one event stream; every asset is
served from the package (static/), with no build step and no CDN."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic_core import to_jsonable_python

from core.api.dashboard import data
from core.api.dashboard.live import LiveHub
from core.api.deps import BackendDep
from core.api.metrics import read_counts
from core.errors import TaskNotFound
from core.states import TaskState
from core.tasks import all_tasks

HERE = Path(__file__).parent
STATIC = HERE / "static"
router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
# The time filter's choices: label, seconds back (None: all).
SINCE = {"5m": 300, "1h": 3_600, "24h": 86_400, "all": None}


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def _day(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _pager(params: Any, cursor: int) -> str:
    """The query string of the same filters at another cursor."""
    kept = {k: v for k, v in params.items() if k not in ("cursor", "fragment")}
    return urlencode({**kept, **({"cursor": cursor} if cursor else {})})


templates.env.filters.update(when=_when, day=_day, seconds=_seconds, short=data.short,
                             pager=_pager)
templates.env.globals.update(runtime=data.runtime, states=[s.value for s in TaskState])


def hub(request: Request) -> LiveHub:
    """The process's one live hub, made on first use (see live.py)."""
    made: LiveHub | None = getattr(request.app.state, "dashboard_hub", None)
    if made is None:
        made = request.app.state.dashboard_hub = LiveHub(request.app.state.backend.redis)
    made.start()
    return made


def page(request: Request, template: str, backend: Any, **context: Any) -> HTMLResponse:
    """A page, or only its live part when the script asks (`?fragment=1`)."""
    fragment = request.query_params.get("fragment") == "1"
    return templates.TemplateResponse(request, template, {
        "backend": backend.name, "fragment": fragment, "now": time.time(), **context})


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, backend: BackendDep) -> HTMLResponse:
    counts = await read_counts(backend.redis)
    latest = await data.task_page(backend.store, data.TaskQuery(size=10))
    return page(request, "overview.html", backend, chart=hub(request).chart(), found=latest,
                submitted=sum(counts.submitted.values()), finished=counts.by_state(),
                depths=await backend.queue_depths(),
                workers=await data.worker_views(backend.redis, _alive(backend)))


@router.get("/tasks", response_class=HTMLResponse)
async def tasks(request: Request, backend: BackendDep, state: TaskState | None = None,
                name: str | None = None, since: str = "all",
                cursor: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    back = SINCE.get(since)
    query = data.TaskQuery(state=state.value if state else None, name=name or None,
                           since=None if back is None else time.time() - back, cursor=cursor)
    found = await data.task_page(backend.store, query)
    return page(request, "tasks.html", backend, found=found, query=query, since=since,
                names=sorted(all_tasks()), since_choices=list(SINCE))


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task(request: Request, task_id: str, backend: BackendDep) -> HTMLResponse:
    try:
        record = await backend.get(task_id)
    except TaskNotFound:
        return HTMLResponse(f"no task {task_id!r}", status_code=404)
    return page(request, "task.html", backend, task=record, body=to_jsonable_python(record.body()),
                timeline=data.timeline(record))


@router.get("/workers", response_class=HTMLResponse)
async def workers(request: Request, backend: BackendDep) -> HTMLResponse:
    return page(request, "workers.html", backend,
                workers=await data.worker_views(backend.redis, _alive(backend)))


@router.get("/queues", response_class=HTMLResponse)
async def queues(request: Request, backend: BackendDep) -> HTMLResponse:
    return page(request, "queues.html", backend, depths=await backend.queue_depths())


@router.get("/events")
async def events(request: Request) -> StreamingResponse:
    return StreamingResponse(await hub(request).stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _alive(backend: Any) -> float:
    return float(backend.settings.worker_heartbeat) * 3
