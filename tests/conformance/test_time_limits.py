"""Time limits: a run over its `time_limit` ends FAILURE with TimeLimitExceeded, async
or sync, in every worker set-up, and its slot serves the next task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core.cli.procs import Proc
from core.tasks.features import Support
from tests.conformance.support import CPU_FOREVER, WORKER_SETUPS, Declare, expect_unsupported, run


@pytest.mark.parametrize(("name", "args"), [("sleep", [30]), ("cpu", [10_000_000])])
async def test_time_limit_fails_with_time_limit_exceeded_and_worker_goes_on(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, name: str,
        args: list[Any]) -> None:
    if feature("time_limit") is Support.NONE:
        return await expect_unsupported(client, backend_name, name, args, {"time_limit": 0.5})
    body = await run(client, name, *args, options={"time_limit": 0.5})
    assert body["state"] == "FAILURE"
    assert body["error"]["type"] == "TimeLimitExceeded"
    assert (await run(client, "divide", 6, 3))["result"] == 2


@WORKER_SETUPS
async def test_time_limit_stops_a_sync_task_in_every_worker_setup(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, queue_name: str,
        start_worker: Callable[..., Proc], processes: int | None) -> None:
    options = {"time_limit": 1.0, "queue": queue_name}
    if feature("time_limit") is Support.NONE:
        return await expect_unsupported(client, backend_name, "cpu", [CPU_FOREVER], options)
    own = start_worker(concurrency=1, queues=queue_name, processes=processes)
    try:
        body = await run(client, "cpu", CPU_FOREVER, options=options)
        assert (body["state"], body["result"]) == ("FAILURE", None)
        assert body["error"]["type"] == "TimeLimitExceeded"
        # its one slot is free again: the run was stopped, not left to burn on
        assert (await run(client, "add", 1, 2, options={"queue": queue_name}))["result"] == 3
    finally:
        own.stop()
