"""bench/peers.py end to end on a tiny run: the public comparison's workload through raw
mode, for the backend under test's configurations. Structure only, no timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.peers import CONFIGS, main, order
from tests.conftest import redis_database

PEERS_DB = 15  # flushed by each configuration's run, as test_bench's sessions do


def test_every_configuration_finishes_every_job(backend_name: str, tmp_path: Path) -> None:
    url = redis_database(PEERS_DB, flush=False)
    main(["--jobs", "50", "--workers", "2", "--only", backend_name, "--redis", url,
          "--out", str(tmp_path), "--quiet", "30"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["failures"] == []
    runs = data["runs"]
    assert [r["name"] for r in runs] == [c.name for c in CONFIGS if c.backend == backend_name]
    for run in runs:
        assert (run["jobs"], run["finished"], run["workers"]) == (50, 50, 2), run
        for key in ("enqueue_s", "finish_s", "first_job_s", "their_enqueue_s",
                    "their_finish_s", "enqueue_x", "finish_x", "version", "setup"):
            assert run[key], (key, run)
        assert 0 < run["first_job_s"] <= run["finish_s"]
        assert len(run["load_avg"]["before"]) == len(run["load_avg"]["after"]) == 3
    assert min(r["finish_x"] for r in runs) == 1.0
    md = (tmp_path / "peers.md").read_text()
    assert all(f"| {r['name']} (" in md for r in runs) and "- finish, ours: " in md


def test_order_ties_and_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [{"name": "b", "t": 2.0}, {"name": "a", "t": 1.0}, {"name": "c", "t": 2.0}]
    assert order(runs, "t") == "a < b = c"
    with pytest.raises(SystemExit):
        main(["--only", "rq"])
    assert "unknown configuration rq" in capsys.readouterr().err
