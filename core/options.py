"""Per-task options: declared as defaults on a task, overridable per submission."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.policy import DEFAULT_BACKOFF, Policy


def _aware(value: datetime | float | None) -> datetime | float | None:
    """A time without a zone is UTC, as the API's own times are."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value

QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class TaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    countdown: float | None = Field(None, ge=0,
                                    description="seconds to wait before the task may start")
    eta: Annotated[datetime | None, AfterValidator(_aware)] = Field(
        None, description="the task does not start before this time")
    expires: Annotated[float | datetime | None, AfterValidator(_aware)] = Field(
        None, description="seconds from submission, or a time; not started by then: EXPIRED"
    )
    max_retries: int | None = Field(None, ge=0, le=100)
    retry_backoff: float | None = Field(None, ge=0,
                                        description="base seconds of exponential backoff")
    time_limit: float | None = Field(None, gt=0, description="seconds a run may take")
    queue: QueueName | None = None
    priority: int | None = Field(None, ge=0, le=9, description="0 (lowest) to 9 (highest)")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    def merged_over(self, defaults: TaskOptions) -> TaskOptions:
        """These options, with the task's declared defaults where unset."""
        return defaults.model_copy(update=self.model_dump(exclude_none=True))

    def policy(self, backoff_cap: float) -> Policy:
        return Policy(
            max_retries=self.max_retries or 0,
            retry_backoff=DEFAULT_BACKOFF if self.retry_backoff is None else self.retry_backoff,
            backoff_cap=backoff_cap,
            time_limit=self.time_limit,
        )

    def in_use(self) -> set[str]:
        return {name for name, value in self.model_dump().items() if value is not None}
