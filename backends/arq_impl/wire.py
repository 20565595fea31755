"""arq's job in its own wire format, as Redis commands (the native producer).

What `ArqRedis.enqueue_job` writes, built with arq's own serializer: the job under
`arq:job:<id>` (expiring `expires_extra_ms` after its start time) and its id in the
queue's sorted set, scored by that time. arq first checks that no job or result of
the id exists (WATCH, EXISTS, MULTI): queuebench's delivery ids are new uuids, so
that round trip is left out. tests/test_wire.py compares the two, field by field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_ms, to_unix_ms

from core.store.records import Command

# ArqRedis's default: a job not started within a day of its time is dropped.
EXPIRES_EXTRA_MS = ArqRedis(host="localhost").expires_extra_ms


def job_commands(function: str, args: tuple[Any, ...], job_id: str, *,
                 queue_name: str = default_queue_name, defer_by: float | None = None,
                 defer_until: datetime | None = None,
                 now_ms: int | None = None) -> list[Command]:
    enqueue_time_ms = timestamp_ms() if now_ms is None else now_ms
    if defer_until is not None:
        score = to_unix_ms(defer_until)
    elif defer_by:
        score = enqueue_time_ms + (to_ms(defer_by) or 0)
    else:
        score = enqueue_time_ms
    expires_ms = score - enqueue_time_ms + EXPIRES_EXTRA_MS
    job = serialize_job(function, args, {}, None, enqueue_time_ms)
    return [("PSETEX", job_key_prefix + job_id, expires_ms, job),
            ("ZADD", queue_name, score, job_id)]
