from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.states import TaskState
from core.store.records import finite
from core.tasks.options import TaskOptions, json_time
from core.tasks.registry import TaskSpec


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
        are not JSON: they become the strings the API answers with (core/store/records.py,
        `dumps`), before any other check, so an error's echo of the input is JSON too.
        A body nested deeper than MAX_DEPTH is refused here, before any recursion that
        a deeper one would overflow (validation, serialisation, a library's encoder).
        So is a string anywhere in it (an object's key too) holding a lone UTF-16
        surrogate: JSON can spell one (an escaped U+D800 with no pair) and the parser
        reads it, but it is not Unicode text, so no record or message could encode it
        (UTF-8, msgpack, Redis); each such string is a 422 at its own location."""
        try:
            return _checked(body, 0)
        except _NotText:
            raise ValidationError.from_exception_data(cls.__name__, [
                InitErrorDetails(type=NOT_TEXT, loc=loc, input=text)
                for loc, text in _lone_surrogates(body, ())]) from None


# Levels of nesting a request body may have; the JSON parser itself refuses about
# 1,000 (a 400), and the parts behind it a few hundred.
MAX_DEPTH = 64

# pydantic's own error type for a str field given such a string.
NOT_TEXT = PydanticCustomError(
    "string_unicode",
    "Input should be Unicode text, without a lone UTF-16 surrogate (\\ud800-\\udfff unpaired)")


class _NotText(Exception):
    """A string of the body holds a lone surrogate (found again, located, by
    _lone_surrogates)."""


def _is_text(value: str) -> bool:
    """No lone surrogate in it, the one thing UTF-8 cannot encode (the parser reads a
    pair, such as U+D83D U+DE00, as the one character it stands for). Encoding is
    the quickest test: a fifth of a regex search over non-ASCII text."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(value: str) -> str:
    if not _is_text(value):
        raise _NotText
    return value


def _checked(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"the body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [_checked(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_text(k): _checked(v, depth + 1) for k, v in value.items()}
    return finite(value)


def _lone_surrogates(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(location, string) of each string in `value` that holds a lone surrogate. A key
    is located at its object (as pydantic locates a bad key of a model), and what is
    under it is not looked at: no location holds such a string. No deeper than
    MAX_DEPTH: _checked found one there, and deeper is refused anyway."""
    if isinstance(value, str) and not _is_text(value):
        yield loc, value
    elif len(loc) < MAX_DEPTH and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _lone_surrogates(item, (*loc, index))
    elif len(loc) < MAX_DEPTH and isinstance(value, dict):
        for key, item in value.items():
            if not _is_text(key):
                yield loc, key
            else:
                yield from _lone_surrogates(item, (*loc, key))


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
