"""The task registry: shared tasks are plain typed functions, registered once.

A `Registry` is a value: core/tasks/shared.py builds the one of the shared tasks, and
`core.tasks.get_task` / `all_tasks` read it. Nothing registers itself as a side effect
of importing another module."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from core.errors import InvalidArguments, UnknownTask
from core.tasks.options import TaskOptions


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: Callable[..., Any]
    defaults: TaskOptions
    params: type[BaseModel]
    doc: str = ""
    is_async: bool = field(init=False)
    signature: inspect.Signature = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.fn))
        # Once: inspect.signature costs more than the rest of a bind.
        object.__setattr__(self, "signature", inspect.signature(self.fn))

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check args against the signature; the validated arguments, by name."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments([{"loc": ["body", "args"], "msg": str(exc),
                                     "type": "arguments"}]) from None
        try:
            model = self.params.model_validate(bound.arguments)
        except ValidationError as exc:
            raise InvalidArguments(
                [{"loc": ["body", "kwargs", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                 for e in exc.errors()]
            ) from None
        return model.model_dump()

    async def call(self, arguments: dict[str, Any], *, offload_sync: bool) -> Any:
        if self.is_async:
            return await self.fn(**arguments)
        if offload_sync:
            return await asyncio.to_thread(self.fn, **arguments)
        return self.fn(**arguments)


class Registry(Mapping[str, TaskSpec]):
    """Tasks by name; `@registry.task(**defaults)` adds a function under its name."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def task(self, **defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a shared task under its function name, with default options."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            if fn.__name__ in self._specs:
                raise ValueError(f"task {fn.__name__!r} is registered twice")
            self._specs[fn.__name__] = TaskSpec(
                name=fn.__name__, fn=fn, defaults=TaskOptions(**defaults),
                params=_params_model(fn), doc=inspect.getdoc(fn) or "")
            return fn

        return register

    def __getitem__(self, name: str) -> TaskSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTask(f"unknown task {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def _params_model(fn: Callable[..., Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    # eval_str: the annotations are strings here (`from __future__ import annotations`),
    # and their constraints (Annotated[..., Field(le=...)]) must reach the model.
    for p in inspect.signature(fn, eval_str=True).parameters.values():
        annotation = Any if p.annotation is inspect.Parameter.empty else p.annotation
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
    name = "".join(part.title() for part in fn.__name__.split("_")) + "Args"
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
