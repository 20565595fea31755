"""Errors that the API turns into 4xx answers and the CLI into one clear line."""

from __future__ import annotations

from typing import Any


class QueuebenchError(Exception):
    status = 400

    def __init__(self, detail: Any) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail


class UnknownTask(QueuebenchError):
    status = 404


class TaskNotFound(QueuebenchError):
    status = 404


class InvalidArguments(QueuebenchError):
    status = 422


class UnsupportedOption(QueuebenchError):
    status = 422


class AlreadyFinished(QueuebenchError):
    status = 409


class Unavailable(QueuebenchError):
    """A service did not answer in time: 503."""

    status = 503


class ConfigError(QueuebenchError):
    """A setting that stops the process from starting; printed as one line."""


class TimeLimitExceeded(Exception):
    """A run took longer than its task's `time_limit`."""


class RetryTask(Exception):  # an instruction, named as Celery's Retry and arq's Retry
    """Raised by the runner to an adapter: run the task again after `delay` seconds."""

    def __init__(self, delay: float, cause: BaseException) -> None:
        super().__init__(f"retry in {delay:.2f}s after {type(cause).__name__}: {cause}")
        self.delay = delay
        self.cause = cause
