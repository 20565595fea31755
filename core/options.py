"""Per-task options: declared as defaults on a task, overridable per submission."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

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

    @model_validator(mode="after")
    def _one_delay(self) -> TaskOptions:
        # Each library resolves both differently (the later, the sum, or an error):
        # one of them, or the client's intent is guessed.
        if self.countdown is not None and self.eta is not None:
            raise ValueError("countdown and eta cannot be used together: give one of them")
        return self

    def merged_over(self, defaults: TaskOptions) -> TaskOptions:
        """These options, with the task's declared defaults where unset. A delay given
        here (countdown or eta) replaces the default's, whichever that is."""
        update = self.model_dump(exclude_none=True)
        if "countdown" in update or "eta" in update:
            update = {"countdown": None, "eta": None, **update}
        return defaults.model_copy(update=update)

    def policy(self, backoff_cap: float) -> Policy:
        return Policy(
            max_retries=self.max_retries or 0,
            retry_backoff=DEFAULT_BACKOFF if self.retry_backoff is None else self.retry_backoff,
            backoff_cap=backoff_cap,
            time_limit=self.time_limit,
        )

    def in_use(self) -> set[str]:
        return {name for name, value in self.model_dump().items() if value is not None}
