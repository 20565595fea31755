"""What each backend can do, and how: the one table behind option checks (422 for an
option a backend cannot honour) and the generated feature matrix (docs/features.md)."""

from __future__ import annotations

from enum import StrEnum


class Support(StrEnum):
    NATIVE = "native"
    CORE = "in core"
    NONE = "not supported"


# feature -> what it means for an API client
FEATURES: dict[str, str] = {
    "retries": "`max_retries` with exponential `retry_backoff` (jitter, cap); RETRY between runs",
    "time_limit": "`time_limit`: a run over it ends FAILURE with TimeLimitExceeded",
    "delay": "`countdown` and `eta`: the task does not start before",
    "expiry": "`expires`: not started by then, the task ends EXPIRED without running",
    "cancel_pending": "DELETE revokes a pending task: it never runs",
    "cancel_running": "DELETE stops a running task",
    "queues": "`queue` routes to a named queue (`worker --queues`)",
    "priority": "`priority` 0-9: higher runs first",
    "idempotency": "`idempotency_key`: a second submit returns the first task; work runs once",
    "redelivery": "a task whose worker is killed (SIGKILL) runs again on another worker, "
                  "once, within REDELIVERY_AFTER (default 30 s) and a reaper's pass",
    "graceful_shutdown": "SIGTERM: tasks in flight finish before the worker exits",
    "redis_outage": "Redis killed under load: requests answer 503 at once, workers stay up "
                    "and idle, and all resume by themselves once it is back",
    "durable_redis": "with `appendonly yes` (`appendfsync always`) a Redis killed and "
                     "restarted loses no accepted task and runs none twice",
    "database_outage": "the database cut: submits go on (202) and tasks run; the history "
                       "stores them all once it is back",
    "periodic": "a schedule (`SCHEDULE_FILE`) fires each tick once, however many "
                "`queuebench scheduler` processes run; **native**: `--native` also runs the "
                "library's own scheduler (Celery beat, arq cron, taskiq's scheduler) from the "
                "same schedule",
}

# option -> the feature it needs
OPTION_FEATURE: dict[str, str] = {
    "countdown": "delay",
    "eta": "delay",
    "expires": "expiry",
    "max_retries": "retries",
    "retry_backoff": "retries",
    "time_limit": "time_limit",
    "queue": "queues",
    "priority": "priority",
    "idempotency_key": "idempotency",
}

# Implemented once in core for every backend (core/store/records.py, core/backend.py).
CORE_FEATURES: dict[str, Support] = {
    "expiry": Support.CORE,
    "idempotency": Support.CORE,
    "cancel_pending": Support.CORE,
    "redelivery": Support.CORE,  # core/worker/reaper.py; the library's own stays behind it
    "periodic": Support.CORE,  # core/schedule/scheduler.py; an adapter with its own says native
    # Core's records and their timeouts, the runner's start retried until Redis answers,
    # each library's own reconnect (tests/test_faults.py)
    "redis_outage": Support.CORE,
    "durable_redis": Support.CORE,
    "database_outage": Support.CORE,  # the history writer keeps its stream entries
}


def supported_options(features: dict[str, Support]) -> frozenset[str]:
    return frozenset(opt for opt, feature in OPTION_FEATURE.items()
                     if features.get(feature, Support.NONE) is not Support.NONE)
