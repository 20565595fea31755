"""What a running task may know about its run (its id, attempt, Redis, settings)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from core.settings import Settings


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    name: str
    attempt: int
    settings: Settings
    redis: Redis


_current: ContextVar[TaskContext] = ContextVar("queuebench_task")


def current_task() -> TaskContext:
    """The context of the task running now; only valid inside a task."""
    return _current.get()


def set_current(ctx: TaskContext) -> object:
    return _current.set(ctx)


def reset_current(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
