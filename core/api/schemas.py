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


class TaskSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: TaskOptions = Field(default_factory=TaskOptions)

    @model_validator(mode="before")
    @classmethod
    def non_finite_as_strings(cls, body: Any) -> Any:
        """The request parser reads the bare words NaN, Infinity and -Infinity, which
        are not JSON: they become the strings the API answers with (core/records.py,
        `dumps`), before any other check, so an error's echo of the input is JSON too."""
        return finite(body)


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
