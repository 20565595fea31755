"""The benchmark's faults dimension (bench/faults.py): a real cell on Redis, a worker
SIGKILLed mid-burst and not restarted, for the library alone and for queuebench, must
give a row whose counts add up (finished + lost == tasks), and queuebench, whose reaper
redelivers a dead worker's tasks after REDELIVERY_AFTER (30 s, inside the deadline),
must lose none. The row's maths and the delivery table are checked on hand-made data.

Each cell has its own redis-server and worker containers (PID and UTS namespaces):
the suite's shared services are not touched.
"""

from __future__ import annotations

import shutil
import subprocess

import jsonschema
import pytest

from bench import faults, report, schema
from tests.conftest import service_down

pytestmark = pytest.mark.faults


def _can_run_cells() -> None:
    probe = ["unshare", "--pid", "--fork", "--kill-child", "--uts", "--mount-proc", "true"]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
        service_down("the workers run in PID and UTS namespaces: unshare, as root")
    if shutil.which("redis-server") is None:
        service_down("redis-server is not on PATH (./run services redis)")


@pytest.mark.parametrize("mode", ["raw-safe", "queuebench"])
def test_a_worker_killed_mid_burst_gives_a_row_that_adds_up(backend_name: str,
                                                              mode: str) -> None:
    _can_run_cells()
    cell = faults.Cell(backend_name, "redis", mode, "worker_kill", tasks=36, index=7)
    row = faults.run_cell(cell)
    assert "error" not in row, row
    assert row["tasks"] == 36
    assert row["finished"] + row["lost"] == row["tasks"], row
    assert 0 <= row["run_twice"] <= row["finished"], row
    assert (row["recovery_s"] is None) == (row["lost"] > 0), row
    assert "qbw1 SIGKILLed" in row["note"], row
    row_schema = {"$defs": schema.json_schema()["$defs"], "$ref": "#/$defs/fault_row"}
    jsonschema.validate(row, row_schema, cls=jsonschema.Draft202012Validator)
    if mode == "queuebench":
        assert row["lost"] == 0, row


def test_the_row_counts_finished_lost_twice_and_the_last_finish() -> None:
    fault_at = 100.0
    row = faults.tally([101.0, 131.5, 102.0, None], [1, 2, 1, 0], since=fault_at)
    assert row == {"tasks": 4, "finished": 3, "lost": 1, "run_twice": 1, "recovery_s": None}
    row = faults.tally([99.0, 131.5, 102.0], [1, 2, 1], since=fault_at)
    assert row == {"tasks": 3, "finished": 3, "lost": 0, "run_twice": 1, "recovery_s": 31.5}
    # every task done before the fault: recovered at once
    assert faults.tally([90.0], [1], since=fault_at)["recovery_s"] == 0.0


def test_arq_has_no_rabbitmq_cell_and_taskiq_alone_no_countdown() -> None:
    cells = faults.plan(["arq", "taskiq"], ["redis", "rabbitmq"], faults.FAULTS)
    keys = {(c.backend, c.broker, c.mode, c.fault) for c in cells}
    assert not any(b == "arq" and k == "rabbitmq" for b, k, _, _ in keys)
    assert ("taskiq", "redis", "raw-safe", "eta_past_visibility") not in keys
    assert ("taskiq", "redis", "queuebench", "eta_past_visibility") in keys
    assert ("taskiq", "rabbitmq", "raw-defaults", "broker_restart") in keys
    assert ("taskiq", "rabbitmq", "queuebench", "net_cut") not in keys  # NET_CUT_AMQP
    assert ("taskiq", "redis", "queuebench", "net_cut") in keys
    assert len({c.index for c in cells}) == len(cells)


def test_the_delivery_table_has_a_line_per_backend_broker_and_mode() -> None:
    base = {"tasks": 10, "deadline_s": 45.0, "note": "", "settings": ""}
    rows = [
        {**base, "backend": "celery", "broker": "redis", "mode": "raw-defaults",
         "fault": "worker_kill", "finished": 7, "lost": 3, "run_twice": 0, "recovery_s": None},
        {**base, "backend": "celery", "broker": "redis", "mode": "queuebench",
         "fault": "worker_kill", "finished": 10, "lost": 0, "run_twice": 2, "recovery_s": 31.0},
        {**base, "backend": "celery", "broker": "redis", "mode": "queuebench",
         "fault": "broker_restart", "finished": 10, "lost": 0, "run_twice": 0,
         "recovery_s": 2.0},
        {**base, "backend": "arq", "broker": "redis", "mode": "raw-safe",
         "fault": "worker_kill", "finished": None, "lost": None, "run_twice": None,
         "recovery_s": None, "error": "boom"},
    ]
    table = report.delivery_table(rows)
    assert table.headers == ["backend", "broker", "mode", "worker_kill", "broker_restart"]
    assert [r[:3] for r in table.rows] == [["arq", "redis", "raw-safe"],
                                           ["celery", "redis", "raw-defaults"],
                                           ["celery", "redis", "queuebench"]]
    assert table.rows[0][3] == ("error", "bad")
    assert table.rows[1][3:] == [(f"3 / 0 / {report.DASH}", "bad"), ""]
    assert table.rows[2][3:] == [("0 / 2 / 31.0 s", "warn"), "0 / 0 / 2.0 s"]
    cells = report.delivery_cells_table(rows)  # and cell by cell, each with its error or note
    assert [r[:4] for r in cells.rows] == [["arq", "redis", "raw-safe", "worker_kill"],
                                           ["celery", "redis", "raw-defaults", "worker_kill"],
                                           ["celery", "redis", "queuebench", "worker_kill"],
                                           ["celery", "redis", "queuebench", "broker_restart"]]
    assert cells.rows[0][-1] == ("error: boom", "bad")


def test_a_cell_whose_fault_met_no_task_is_an_error_not_a_survivor() -> None:
    row = {"backend": "taskiq", "broker": "redis", "mode": "raw-defaults",
           "fault": "net_cut", "tasks": 120, "finished": 120, "lost": 0, "run_twice": 0,
           "recovery_s": 0.0, "deadline_s": 45.0,
           "note": "qbw1 cut off 35 s; done when it began 120, when it ended 120"}
    assert faults.judged(row)["error"].startswith("nothing left to fault: all 120 tasks")
    touched = {**row, "note": "qbw1 cut off 35 s; done when it began 40, when it ended 120"}
    assert "error" not in faults.judged(touched)
