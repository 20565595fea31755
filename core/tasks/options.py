"""Per-task options: declared as defaults on a task, overridable per submission."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

from core.tasks.policy import DEFAULT_BACKOFF, Policy


def _aware(value: datetime | float | None) -> datetime | float | None:
    """A time without a zone is UTC, as the API's own times are."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value

def json_number(value: Any) -> Any:
    """What JSON calls a number, nothing pydantic would read as one besides (true for
    1, "5" for 5): the schema says number, and a client that sent a string erred."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("a JSON number")
    return value


def json_time(value: Any) -> Any:
    """A date-time as the schema says it, ISO 8601 text: pydantic would read a number
    as a Unix time (and `expires` means seconds by a number)."""
    if isinstance(value, int | float):
        raise ValueError("an ISO 8601 date-time such as 2026-01-01T00:00:00Z")
    return value


QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
# The longest delay, expiry, time limit or backoff a submission may ask for: past it a
# number is a mistake, and a library computes times from it that overflow.
MAX_SECONDS = 366 * 86_400
# The largest database id a client may name: JSON's largest exact integer (a larger
# number reaches a parser as a float, or the driver's integer overflows).
MAX_ID = 2**53 - 1
# Strict: a float is an int or a float (not true, not "5"). The int types take 3.0,
# which JSON Schema calls an integer; their bounds stand before the validator, so
# they reach the schema.
Seconds = Annotated[float, Strict(), Field(ge=0, le=MAX_SECONDS)]
Retries = Annotated[int, Field(ge=0, le=100), BeforeValidator(json_number)]
Priority = Annotated[int, Field(ge=0, le=9), BeforeValidator(json_number)]
Time = Annotated[datetime, BeforeValidator(json_time)]


class TaskOptions(BaseModel):
    # countdown and eta exclude each other (`_one_delay`), said in the schema too.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              json_schema_extra={"not": {
                                  "required": ["countdown", "eta"],
                                  "properties": {"countdown": {"type": "number"},
                                                 "eta": {"type": "string"}}}})

    countdown: Seconds | None = Field(None,
                                      description="seconds to wait before the task may start")
    eta: Annotated[Time | None, AfterValidator(_aware)] = Field(
        None, description="the task does not start before this time")
    expires: Annotated[Seconds | Time | None, AfterValidator(_aware)] = Field(
        None, description="seconds from submission, or a time; not started by then: EXPIRED"
    )
    max_retries: Retries | None = None
    retry_backoff: Seconds | None = Field(None,
                                        description="base seconds of exponential backoff")
    time_limit: Annotated[float, Strict(), Field(gt=0, le=MAX_SECONDS)] | None = Field(
        None,
                                     description="seconds a run may take (default: "
                                     "DEFAULT_TIME_LIMIT)")
    queue: QueueName | None = None
    priority: Priority | None = Field(None, description="0 (lowest) to 9 (highest)")
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
