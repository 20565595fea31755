"""What a worker must know of a task's options: retries, backoff and time limit.

It travels with the task's arguments, so every adapter's worker reads the same thing
and hands it to its library's own mechanism (Celery's retry, Dramatiq's Retries and
TimeLimit, arq's Retry, taskiq's SmartRetryMiddleware)."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_BACKOFF = 1.0


@dataclass(frozen=True)
class Policy:
    max_retries: int = 0
    retry_backoff: float = DEFAULT_BACKOFF
    backoff_cap: float = 600.0
    time_limit: float | None = None

    def will_retry(self, attempt: int) -> bool:
        """Whether a failure of run `attempt` (0 for the first) is followed by another."""
        return attempt < self.max_retries

    def backoff(self, attempt: int) -> float:
        """Seconds before retry `attempt + 1`: exponential, capped, with equal jitter
        (half fixed, half random), so a burst of failures does not retry in step."""
        delay = min(self.backoff_cap, self.retry_backoff * 2**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k in _FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> Policy:
        """From a message's meta, which carries more than the policy (the task id)."""
        return cls(**{k: v for k, v in (data or {}).items() if k in _FIELDS})


_FIELDS = tuple(f.name for f in fields(Policy))
