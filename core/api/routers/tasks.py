from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic_core import to_json

from core.api.deps import BackendDep
from core.api.openapi import answers
from core.api.schemas import (
    MAX_BATCH,
    BatchAccepted,
    DateTimeQuery,
    TaskPublic,
    TaskSubmit,
    batch_model,
    submit_model,
)
from core.errors import UnknownTask
from core.states import TaskState
from core.store.records import TaskRecord
from core.tasks import all_tasks
from core.tasks.registry import TaskSpec

router = APIRouter(prefix="/tasks", tags=["tasks"])
JSON = "application/json"


def _kwargs(kwargs: Any) -> dict[str, Any]:
    """The kwargs a client gave (the documented model holds every parameter, unset
    ones as None: only the set ones are the task's)."""
    return kwargs if isinstance(kwargs, dict) else kwargs.model_dump(exclude_unset=True)


def task_response(record: TaskRecord, status: int = 200, **headers: str) -> Response:
    """The task body, encoded once (pydantic-core, in Rust), not validated again
    against TaskPublic: core made it. TaskPublic still documents it in /docs."""
    return Response(to_json(record.body()), status_code=status, headers=headers,
                    media_type="application/json")


async def _submit(backend: BackendDep, name: str, body: TaskSubmit) -> Response:
    record = await backend.submit(name, body.args, _kwargs(body.kwargs), body.options)
    return task_response(record, 202, Location=f"/tasks/{record.id}")


class SubmitRoute(APIRoute):
    """`POST /tasks/{name}`, the API's hot path. A JSON body that the task's model
    takes as it is goes straight to the submit: parsed and validated as FastAPI would
    (json.loads, the model's validator), without FastAPI's per-request dependency
    solving around it, which costs more CPU than the rest of the route (the submit
    itself aside; docs/benchmark.md has the measurements).
    Anything else (another content type, bad JSON, a body the model refuses) goes to
    FastAPI's own handler, which answers it as it always has: a 422 names the field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()
        name, validate = self.endpoint.task  # type: ignore[attr-defined]

        async def handler(request: Request) -> Response:
            if request.headers.get("content-type", "").split(";")[0].strip() != JSON:
                return await full(request)
            raw = await request.body()  # (a body over MAX_BODY_BYTES raises its 413 here)
            try:
                body = validate(json.loads(raw))
            except Exception:  # FastAPI's handler, reading the same body, says what is wrong
                return await full(request)
            return await _submit(request.app.state.backend, name, body)

        return handler


def _route_for(spec: TaskSpec) -> None:
    model = submit_model(spec)

    async def submit(body: TaskSubmit, backend: BackendDep) -> Response:
        return await _submit(backend, spec.name, body)

    submit.__annotations__["body"] = model  # the task's own schema, for validation and /docs
    submit.task = (spec.name, model.model_validate)  # type: ignore[attr-defined]

    router.add_api_route(f"/{spec.name}", submit, methods=["POST"], status_code=202,
                         response_model=TaskPublic, summary=f"Submit {spec.name}",
                         description=spec.doc, operation_id=f"submit_{spec.name}",
                         route_class_override=SubmitRoute)

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
    since: Annotated[DateTimeQuery | None, Query(description="submitted at or after")] = None,
    until: Annotated[DateTimeQuery | None, Query(description="submitted before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    schedule: Annotated[str | None, Query(description="fired by this periodic entry")] = None,
) -> list[dict[str, Any]]:
    found = await backend.list(state=state, name=name, backend=backend_name, since=since,
                               until=until, limit=limit, offset=offset, schedule=schedule)
    return [r.body() for r in found]


@router.get("/{task_id}", response_model=TaskPublic, responses=answers(404))
async def get_task(task_id: str, backend: BackendDep) -> Response:
    return task_response(await backend.get(task_id))


@router.get("/{task_id}/wait", response_model=TaskPublic, responses=answers(404))
async def wait_task(task_id: str, backend: BackendDep,
                    timeout: Annotated[float, Query(ge=0, le=300)] = 30) -> Response:
    return task_response(await backend.wait(task_id, timeout))


@router.delete("/{task_id}", status_code=202, response_model=TaskPublic,
               responses=answers(404, 409))
async def cancel_task(task_id: str, backend: BackendDep) -> dict[str, Any]:
    return (await backend.cancel(task_id)).body()
