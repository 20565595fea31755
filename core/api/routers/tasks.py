from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from core.api.deps import BackendDep
from core.api.schemas import (
    MAX_BATCH,
    BatchAccepted,
    TaskPublic,
    TaskSubmit,
    batch_model,
    submit_model,
)
from core.errors import UnknownTask
from core.registry import TaskSpec, all_tasks
from core.states import TaskState

router = APIRouter(prefix="/tasks", tags=["tasks"])


def _kwargs(kwargs: Any) -> dict[str, Any]:
    """The kwargs a client gave (the documented model holds every parameter, unset
    ones as None: only the set ones are the task's)."""
    return kwargs if isinstance(kwargs, dict) else kwargs.model_dump(exclude_unset=True)


async def _submit(backend: BackendDep, name: str, body: TaskSubmit,
                  response: Response) -> dict[str, Any]:
    record = await backend.submit(name, body.args, _kwargs(body.kwargs), body.options)
    response.headers["Location"] = f"/tasks/{record.id}"
    return record.body()


def _route_for(spec: TaskSpec) -> None:
    model = submit_model(spec)

    async def submit(body: TaskSubmit, backend: BackendDep,
                     response: Response) -> dict[str, Any]:
        return await _submit(backend, spec.name, body, response)

    submit.__annotations__["body"] = model  # the task's own schema, for validation and /docs

    router.add_api_route(f"/{spec.name}", submit, methods=["POST"], status_code=202,
                         response_model=TaskPublic, summary=f"Submit {spec.name}",
                         description=spec.doc, operation_id=f"submit_{spec.name}")

    batch = batch_model(spec)

    async def submit_batch(body: Any, backend: BackendDep) -> dict[str, Any]:
        items = [(item.args, _kwargs(item.kwargs)) for item in body.items]
        return {"ids": await backend.submit_many(spec.name, items, body.options)}

    submit_batch.__annotations__["body"] = batch

    router.add_api_route(
        f"/{spec.name}/batch", submit_batch, methods=["POST"], status_code=202,
        response_model=BatchAccepted, summary=f"Submit a batch of {spec.name}",
        description=f"1 to {MAX_BATCH} tasks with one options object; their ids in order. "
        "A bad item is a 422 naming its index (`items`, index, field), and none of the "
        "batch is queued. An `idempotency_key` K stands for K:0, K:1, ... by index.",
        operation_id=f"submit_{spec.name}_batch")


for _spec in all_tasks().values():
    _route_for(_spec)


@router.post("/{name}", status_code=202, response_model=TaskPublic, include_in_schema=False)
@router.post("/{name}/batch", status_code=202, response_model=BatchAccepted,
             include_in_schema=False)
async def submit_unknown(name: str) -> None:
    raise UnknownTask(f"unknown task {name!r}; known: {', '.join(sorted(all_tasks()))}")


@router.get("", response_model=list[TaskPublic])
async def list_tasks(
    backend: BackendDep, state: TaskState | None = None, name: str | None = None,
    backend_name: Annotated[str | None, Query(alias="backend")] = None,
    since: Annotated[AwareDatetime | None, Query(description="submitted at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="submitted before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[dict[str, Any]]:
    found = await backend.list(state=state, name=name, backend=backend_name, since=since,
                               until=until, limit=limit, offset=offset)
    return [r.body() for r in found]


@router.get("/{task_id}", response_model=TaskPublic)
async def get_task(task_id: str, backend: BackendDep) -> dict[str, Any]:
    return (await backend.get(task_id)).body()


@router.get("/{task_id}/wait", response_model=TaskPublic)
async def wait_task(task_id: str, backend: BackendDep,
                    timeout: Annotated[float, Query(ge=0, le=300)] = 30) -> dict[str, Any]:
    return (await backend.wait(task_id, timeout)).body()


@router.delete("/{task_id}", status_code=202, response_model=TaskPublic)
async def cancel_task(task_id: str, backend: BackendDep) -> dict[str, Any]:
    return (await backend.cancel(task_id)).body()
