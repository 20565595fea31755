"""The soak, short: `queuebench soak` for two minutes on each backend, run once per
backend and judged by the tests below (marked `soak`: left out of `./run test`, run
by CI's soak step: `pytest tests/test_soak.py -m soak --backend B`).

Two minutes at 10 submissions a second (1,200 tasks: noop, sleep, cpu, flaky, fail),
the library's default worker, history on (SQLite), RECORDS_KEPT=300. What two minutes
can honestly say:
- none of the 1,200 accepted tasks is lost, and each ends as its task says (fail
  FAILURE, flaky SUCCESS after exactly one retry, the rest SUCCESS): exact;
- Redis's memory does not grow: the records reach their bound (300) within the 40 s
  warm-up, so from there the used_memory slope's 95% interval must reach down to
  0.1 MB/min or below. Unbounded (the trim's delete taken out), Redis grew 0.45
  MB/min here (0.41 .. 0.48), which this detects;
- the API's and the worker's RSS (children included) do not grow faster than 1 MB/min
  (about 1.7 KB a task): a gross leak. Warm-up (imports, pools, the allocator's
  arenas, the history table's first pages) is left out, but not the dashboard's live
  window (core/api/dashboard/live.py keeps 300 s of activity in the API), which fills
  for five minutes: the API's RSS rises about 0.35 MB/min here. A slower leak hides
  in 80 s of samples of an RSS that moves in steps of pages and arenas: the
  10-minute run (`queuebench soak --minutes 10`) is the figure for that.
Latency is reported, never asserted (speed is not a test's business).
"""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from bench.soak import parse, run, table
from tests.conftest import redis_database

pytestmark = pytest.mark.soak

# A Redis database of the soak's own: its used_memory is the instance's, and nothing
# else of the suite runs while it does.
SOAK_DB = 15


@pytest.fixture(scope="module")
def soak(backend_name: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = redis_database(SOAK_DB, flush=True)
    out = tmp_path_factory.mktemp(f"soak-{backend_name}")
    args = parse(["--backend", backend_name, "--minutes", "2", "--rate", "10",
                  "--redis", url, "--records-kept", "300", "--warmup", "40",
                  "--interval", "20", "--out", str(out)])
    console = Console(width=120)
    result, _ = run(args, console)
    console.print(*table(result))  # shown when a test fails (or with -s)
    return result


def test_soak_loses_no_task(soak: dict[str, Any]) -> None:
    outcome = soak["outcome"]
    assert outcome["accepted"] == outcome["submitted"] == 1200, outcome["error_samples"]
    assert outcome["lost"] == 0, outcome["lost_tasks"]


def test_soak_every_task_ends_as_its_task_says(soak: dict[str, Any]) -> None:
    assert soak["outcome"]["errors"] == 0, soak["outcome"]["error_samples"]


def flat(soak: dict[str, Any], series: str) -> None:
    fit = soak["memory"][series]
    assert fit is not None and fit["samples"] >= 20, (series, fit)
    assert fit["verdict"] == "flat", (series, fit)


def test_soak_redis_memory_is_flat_once_records_reach_their_bound(soak: dict[str, Any]) -> None:
    flat(soak, "redis used_memory")


def test_soak_api_rss_is_flat(soak: dict[str, Any]) -> None:
    flat(soak, "api RSS")


def test_soak_worker_rss_is_flat(soak: dict[str, Any], backend_name: str,
                                 request: pytest.FixtureRequest) -> None:
    if backend_name == "celery":
        # Measured (2,000 `fail` tasks through the API, 2 prefork children): each child
        # grows about 130 KB a failed task, 81 -> 215 MB over its first ~500
        # failures, then stays flat. Bounded, but two minutes see only the climb.
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="Celery's prefork child grows ~130 KB per failed task "
            "for its first ~500 failures (then flat): a climb, not yet a plateau"))
    flat(soak, "worker RSS")
