"""Every Redis key, channel and stream queuebench itself uses: the one place their names
are written. Python code imports them from here. The Lua scripts (core/store/lua/)
write none: their callers pass the keys that depend on the call as KEYS, and the fixed
names are filled into them at load as `$NAME` (core/store/scripts.py).

`{}` in a name is filled with `.format(...)`. The queue libraries' own keys (arq:*,
celery, dramatiq:*, taskiq:*) are theirs and not here.
"""

from __future__ import annotations

# -- task records (core/store/records.py) --------------------------------------------
# hash: one task's record (fields: TaskRecord's), by task id.
TASK_KEY = "qb:task:{}"
# sorted set: every record's task id, scored by its submit time (bounded by RECORDS_KEPT).
INDEX_KEY = "qb:tasks"
# string: the task id a client's idempotency key is bound to, by task name and key.
IDEMPOTENCY_KEY = "qb:idem:{}:{}"
# channel: JSON {"id", "state"[, "name", "latency"]}, every record's every transition.
EVENTS_CHANNEL = "qb:events"
# stream: ids of tasks that reached a final state, for the history writer (core/history/).
HISTORY_STREAM = "qb:history"
# stream: entries the history's database refused, with the error (core/history/writer.py).
REJECTED_STREAM = "qb:history:rejected"
# sorted set: task ids with an `expires`, scored by it: the reaper expires those no
# worker took.
EXPIRING_KEY = "qb:expiring"
# sorted set: task ids that no worker runs and that are not final (PENDING, RETRY),
# scored by when their message is due to the workers (countdown or eta, a retry's
# backoff). Kept by the scripts in the same step as each state change. A task still
# here REDELIVERY_AFTER past its time, whose message waits nowhere in its broker, is
# sent again by the reaper (core/worker/reaper.py): so every accepted task is final,
# running under a live owner, or queued where its library will deliver it.
DUE_KEY = "qb:due"
# set: task ids a worker process runs now, by worker id (its lease is its heartbeat).
OWNED_KEY = "qb:owned:{}"
# set: task ids whose run was interrupted in a live process (cancelled): the reaper
# runs them again as it does a dead worker's.
ORPHANS_KEY = "qb:orphans"
# set: queue names tasks were submitted to, beside DEFAULT_QUEUE (queue depths).
QUEUES_KEY = "qb:queues"

# -- metrics (core/api/metrics.py) ---------------------------------------------------
# hash: the counters and histograms of /metrics, kept by the scripts as records move:
# exact, whichever process moved them, and it survives any process's restart. Fields:
# `s|task|backend` submitted, `f|task|backend|state` finished, `r|...` run time and
# `w|...` queue wait histograms (`|i`: the count in bucket i of METRIC_BOUNDS,
# i = len + 1: above the last; `|sum`: seconds).
METRICS_KEY = "qb:metrics"
METRIC_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 300.0)

# -- workers (core/worker/) ----------------------------------------------------------
# hash: worker id -> JSON info of each worker process (host, pid, backend, seen_at...).
WORKERS_KEY = "qb:workers"
# sorted set: worker id, scored by its last heartbeat.
WORKERS_SEEN_KEY = "qb:workers:seen"
# hash: runs and failed runs per worker process (`id|run`, `id|failed`), for the dashboard.
WORKER_TASKS_KEY = "qb:workers:tasks"
# string (SET NX EX): the reaper holding a dead worker's tasks (by its id), or the
# overdue pass (`overdue`): one reaper at a time.
REAPING_KEY = "qb:reaping:{}"
# channel: JSON {"id", "state": "REVOKED"}: a running task was revoked.
CANCEL_CHANNEL = "qb:cancel"

# -- the periodic schedule (core/schedule/scheduler.py) ------------------------------
# hash: an entry's state (paused, last_tick, last_run_at, last_task_id), by entry name.
SCHEDULE_KEY = "qb:schedule:{}"
# sorted set: the task ids an entry fired, scored by submit time, by entry name.
SCHEDULE_TASKS_KEY = "qb:schedule:{}:tasks"

# -- the shared tasks' side effects (core/tasks/shared.py) ---------------------------
# string (counter, 1 h TTL): runs of `sleep` with a key that got to the end, by key.
SLEPT_KEY = "qb:slept:{}"
# string (counter, 1 h TTL): attempts of `flaky`, by key.
FLAKY_KEY = "qb:flaky:{}"

# The prefixes of the keys a script builds from an id it reads (a record from the
# index, the owned set of a record's worker).
TASK_PREFIX = TASK_KEY.format("")
OWNED_PREFIX = OWNED_KEY.format("")
