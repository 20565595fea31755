"""Results for the report's chart tests: the committed full-profile run
(docs/bench/results.json) and hand-made delivery-under-faults rows, since that run has
none. The rows vary on purpose: every verdict, an error, a cell not run."""

from __future__ import annotations

import json
from typing import Any

from core.cli.procs import ROOT

DOCS_RESULTS = ROOT / "docs" / "bench" / "results.json"
QUEUES = (("celery", "redis"), ("celery", "rabbitmq"), ("arq", "redis"),
          ("dramatiq", "redis"), ("dramatiq", "rabbitmq"))
FAULTS = ("worker_kill", "worker_restart", "broker_restart", "broker_crash_everysec",
          "eta_past_visibility", "net_cut")


def fault_rows() -> list[dict[str, Any]]:
    """Raw with its defaults loses tasks on half the faults, raw-safe runs some twice,
    queuebench neither; arq never ran eta_past_visibility; one run failed to start."""
    rows = []
    for backend, broker in QUEUES:
        for mode in ("raw-defaults", "raw-safe", "queuebench"):
            for index, fault in enumerate(FAULTS):
                if (backend, fault) == ("arq", "eta_past_visibility"):
                    continue
                lost = 3 * index if mode == "raw-defaults" and index % 2 else 0
                twice = index if mode == "raw-safe" and index % 2 == 0 else 0
                rows.append({"backend": backend, "broker": broker, "mode": mode,
                             "fault": fault, "tasks": 200, "finished": 200 - lost,
                             "lost": lost, "run_twice": twice,
                             "recovery_s": None if lost else 2.0 + index, "deadline_s": 120,
                             "note": ""})
    rows[7]["error"] = "worker did not start"
    return rows


def docs_results(faults: bool = True) -> dict[str, Any]:
    results = json.loads(DOCS_RESULTS.read_text(encoding="utf-8"))
    if faults:
        results["faults"] = fault_rows()
    return results
