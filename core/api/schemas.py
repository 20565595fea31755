from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)

from core.options import TaskOptions, json_time
from core.records import finite
from core.registry import TaskSpec
from core.states import TaskState


def _not_a_number(value: Any) -> Any:
    """A query's text that is a number: pydantic would read it as a Unix time."""
    try:
        float(value)
    except (TypeError, ValueError):
        return value
    return json_time(float(value))


DateTimeQuery = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


class Problem(BaseModel):
    detail: str


class TaskError(BaseModel):
    type: str
    message: str


class TaskPublic(BaseModel):
    id: str
    name: str
    backend: str
    state: TaskState
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any = None
    error: TaskError | None = None
    retries: int = 0
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def non_finite_as_strings(cls, body: Any) -> Any:
        """The request parser reads the bare words NaN, Infinity and -Infinity, which
        are not JSON: they become the strings the API answers with (core/records.py,
        `dumps`), before any other check, so an error's echo of the input is JSON too.
        A body nested deeper than MAX_DEPTH is refused here, before any recursion that
        a deeper one would overflow (validation, serialisation, a library's encoder)."""
        return _checked(body, 0)


# Levels of nesting a request body may have; the JSON parser itself refuses about
# 1,000 (a 400), and the parts behind it a few hundred.
MAX_DEPTH = 64


def _checked(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"the body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [_checked(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _checked(v, depth + 1) for k, v in value.items()}
    return finite(value)


class TaskSubmit(RequestBody):
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: TaskOptions = Field(default_factory=TaskOptions)


def submit_model(spec: TaskSpec) -> type[TaskSubmit]:
    """A submit body whose `kwargs` documents the task's parameters (all optional
    here, since they may come positionally; the task's signature decides)."""
    partial = {
        name: (f.rebuild_annotation(), None) for name, f in spec.params.model_fields.items()
    }
    kwargs_model = create_model(f"{spec.params.__name__}Kwargs",
                                __config__=ConfigDict(extra="forbid"), **partial)
    title = "".join(p.title() for p in spec.name.split("_"))
    model = create_model(f"{title}Submit", __base__=TaskSubmit,
                         kwargs=(kwargs_model, Field(default_factory=kwargs_model)))
    model.model_config = {**model.model_config, "json_schema_extra": binding_schema(spec)}
    return model


def binding_schema(spec: TaskSpec) -> dict[str, Any]:
    """How `args` and `kwargs` together fill the task's parameters, for the schema:
    one branch per count k of positional arguments (the first k parameters), the rest
    by name, the required ones present. What the signature's bind checks (a 422 else)."""
    params = spec.params.model_json_schema()["properties"]
    names = list(params)
    required = {n for n, f in spec.params.model_fields.items() if f.is_required()}
    branches = []
    for k in range(len(names) + 1):
        rest = names[k:]
        need = [n for n in rest if n in required]
        args: dict[str, Any] = {"type": "array", "minItems": k, "maxItems": k}
        if k:
            args["prefixItems"] = [{key: v for key, v in params[n].items()
                                    if key not in ("title", "default")} for n in names[:k]]
        kwargs: dict[str, Any] = ({"propertyNames": {"enum": rest}, "required": need} if rest
                                  else {"maxProperties": 0})
        branch: dict[str, Any] = {"properties": {"args": args, "kwargs": kwargs}}
        present = (["args"] if k else []) + (["kwargs"] if need else [])
        if present:
            branch["required"] = present
        branches.append(branch)
    return {"anyOf": branches}


class BatchAccepted(BaseModel):
    ids: list[str] = Field(description="the tasks' ids, in the items' order")


MAX_BATCH = 1000


def batch_model(spec: TaskSpec) -> type[BaseModel]:
    """A batch body: 1 to MAX_BATCH items, each the args and kwargs of one task (the
    task's own kwargs schema), and one options object for all."""
    single = submit_model(spec)
    item = create_model(f"{single.__name__}Item",
                        __config__=ConfigDict(extra="forbid",
                                              json_schema_extra=binding_schema(spec)),
                        args=(list[Any], Field(default_factory=list)),
                        kwargs=(single.model_fields["kwargs"].annotation,
                                Field(default_factory=dict)))
    return create_model(f"{single.__name__}Batch", __base__=RequestBody,
                        items=(list[item], Field(min_length=1, max_length=MAX_BATCH)),  # type: ignore[valid-type]
                        options=(TaskOptions, Field(default_factory=TaskOptions)))


class SchedulePublic(BaseModel):
    name: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    every: float | None = Field(None, description="seconds between ticks")
    cron: str | None = Field(None, description="minute hour day month weekday")
    timezone: str
    catch_up: bool
    paused: bool
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_task_id: str | None = None
