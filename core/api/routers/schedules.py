"""The periodic schedule over HTTP: list, fire now, pause and resume (docs/api.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from core.api.deps import BackendDep
from core.api.openapi import answers
from core.api.routers.tasks import task_response
from core.api.schemas import SchedulePublic, TaskPublic
from core.errors import QueuebenchError
from core.schedule.entries import Entry, Schedule
from core.schedule.scheduler import EntryState, ScheduleState, fire

router = APIRouter(prefix="/schedules", tags=["schedules"])


class UnknownEntry(QueuebenchError):
    status = 404


async def get_schedule(request: Request) -> Schedule:
    schedule: Schedule = request.app.state.schedule
    return schedule


ScheduleDep = Annotated[Schedule, Depends(get_schedule)]


def _time(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _body(entry: Entry, state: EntryState, now: float) -> dict[str, Any]:
    return {**entry.public(), "paused": state.paused,
            "next_run_at": None if state.paused else _time(entry.next_after(now)),
            "last_run_at": _time(state.last_run_at), "last_task_id": state.last_task_id}


def _entry(schedule: Schedule, name: str) -> Entry:
    try:
        return schedule[name]
    except KeyError:
        raise UnknownEntry(f"no schedule entry {name!r}; known: "
                           f"{', '.join(schedule) or 'none'}") from None


async def _one(backend: BackendDep, entry: Entry) -> dict[str, Any]:
    state = (await ScheduleState(backend.redis).read([entry.name]))[entry.name]
    return _body(entry, state, time.time())


@router.get("", response_model=list[SchedulePublic])
async def list_schedules(backend: BackendDep, schedule: ScheduleDep) -> list[dict[str, Any]]:
    """The entries, with when each fires next and what it fired last."""
    states = await ScheduleState(backend.redis).read(list(schedule))
    now = time.time()
    return [_body(entry, states[name], now) for name, entry in schedule.items()]


@router.get("/{name}", response_model=SchedulePublic, responses=answers(404))
async def get_schedule_entry(name: str, backend: BackendDep,
                             schedule: ScheduleDep) -> dict[str, Any]:
    return await _one(backend, _entry(schedule, name))


@router.post("/{name}/run", status_code=202, response_model=TaskPublic,
             responses=answers(404))
async def run_now(name: str, backend: BackendDep, schedule: ScheduleDep) -> Response:
    """Fire the entry now, outside its ticks (paused or not)."""
    record = await fire(backend, _entry(schedule, name), None)
    return task_response(record, 202, Location=f"/tasks/{record.id}")


@router.post("/{name}/pause", response_model=SchedulePublic, responses=answers(404))
async def pause(name: str, backend: BackendDep, schedule: ScheduleDep) -> dict[str, Any]:
    """Its ticks are skipped (not caught up later) until it is resumed."""
    entry = _entry(schedule, name)
    await ScheduleState(backend.redis).pause(name, True)
    return await _one(backend, entry)


@router.post("/{name}/resume", response_model=SchedulePublic, responses=answers(404))
async def resume(name: str, backend: BackendDep, schedule: ScheduleDep) -> dict[str, Any]:
    entry = _entry(schedule, name)
    await ScheduleState(backend.redis).pause(name, False)
    return await _one(backend, entry)
