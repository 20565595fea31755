from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from core.options import TaskOptions
from core.records import finite
from core.registry import TaskSpec
from core.states import TaskState


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
        `dumps`), before any other check, so an error's echo of the input is JSON too."""
        return finite(body)


class TaskSubmit(RequestBody):
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: TaskOptions = Field(default_factory=TaskOptions)


def submit_model(spec: TaskSpec) -> type[TaskSubmit]:
    """A submit body whose `kwargs` documents the task's parameters (all optional
    here, since they may come positionally; the task's signature decides)."""
    partial = {
        name: (f.annotation, None) for name, f in spec.params.model_fields.items()
    }
    kwargs_model = create_model(f"{spec.params.__name__}Kwargs",
                                __config__=ConfigDict(extra="forbid"), **partial)
    title = "".join(p.title() for p in spec.name.split("_"))
    return create_model(f"{title}Submit", __base__=TaskSubmit,
                        kwargs=(kwargs_model, Field(default_factory=kwargs_model)))


class BatchAccepted(BaseModel):
    ids: list[str] = Field(description="the tasks' ids, in the items' order")


MAX_BATCH = 1000


def batch_model(spec: TaskSpec) -> type[BaseModel]:
    """A batch body: 1 to MAX_BATCH items, each the args and kwargs of one task (the
    task's own kwargs schema), and one options object for all."""
    single = submit_model(spec)
    item = create_model(f"{single.__name__}Item", __config__=ConfigDict(extra="forbid"),
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
