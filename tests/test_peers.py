"""bench/peers.py end to end on a tiny run: each public comparison's workload through raw
mode, for the backend under test's configurations. Structure only, no timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.peers import PEERS, main, order
from tests.conftest import redis_database

PEERS_DB = 15  # flushed by each configuration's run, as test_bench's sessions do


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_every_configuration_finishes_every_job(backend_name: str, peer: str,
                                                tmp_path: Path) -> None:
    mine = [c.name for c in PEERS[peer].configs if c.backend == backend_name]
    if not mine:
        pytest.skip(f"{peer}'s comparison has no {backend_name}")
    url = redis_database(PEERS_DB, flush=False)
    # the peer's own worker counts (10, or 1 and 10) cut down to 1 and 2
    main(["--peer", peer, "--jobs", "50", "--workers", "1,2", "--only", backend_name,
          "--redis", url, "--out", str(tmp_path), "--quiet", "30"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["failures"] == []
    runs = data["runs"]
    assert [(r["name"], r["workers"]) for r in runs] == [(n, w) for w in (1, 2) for n in mine]
    for run in runs:
        assert (run["jobs"], run["finished"]) == (50, 50), run
        for key in ("enqueue_s", "finish_s", "first_job_s", "their_enqueue_s", "enqueue_x",
                    "finish_x", "version", "setup"):
            assert run[key], (key, run)
        assert 0 < run["first_job_s"] <= run["finish_s"]
        assert len(run["load_avg"]["before"]) == len(run["load_avg"]["after"]) == 3
    for workers in (1, 2):  # each worker count is its own column of ratios
        assert min(r["finish_x"] for r in runs if r["workers"] == workers) == 1.0
    md = (tmp_path / "peers.md").read_text()
    assert all(f"| {r['name']} (" in md for r in runs)
    assert "- finish (1 worker), ours: " in md and "- finish (2 workers), ours: " in md
    assert f"- {mine[0]}, finish with 1 worker over with 2 workers: " in md


def test_order_ties_and_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [{"name": "b", "t": 2.0}, {"name": "a", "t": 1.0}, {"name": "c", "t": 2.0}]
    assert order(runs, "t") == "a < b = c"
    with pytest.raises(SystemExit):
        main(["--only", "rq"])
    assert "unknown configuration rq of steventen" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # streaq's comparison has no Celery
        main(["--peer", "streaq", "--only", "celery"])
    assert "unknown configuration celery of streaq" in capsys.readouterr().err
