"""`queuebench bench compare A B` run as a user runs it (a subprocess of the arq
environment) on hand-made results.json files and on the committed full run; and
results.json's JSON Schema (bench/results.schema.json) against both versions. No
services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bench import compare, schema
from tests.support_results import fault, results, row, runs

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "bench" / "results.json"
V1 = ROOT / "tests" / "data" / "results-v1.json"


def run_compare(a: Path, b: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli.main", "bench", "compare",
                           str(a), str(b), *extra], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"},
                          timeout=120, check=False)


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def compare_files(tmp_path: Path, a: dict[str, Any], b: dict[str, Any], *extra: str
                  ) -> subprocess.CompletedProcess[str]:
    """A and B written to tmp_path (a.json, b.json) and compared, as Markdown unless
    told otherwise."""
    return run_compare(write(tmp_path, "a.json", a), write(tmp_path, "b.json", b),
                       *(extra or ("--markdown",)))


BASE = [row("arq", drain=(3000.0, 2900.0, 3100.0), submit=(6000.0, 5900.0, 6100.0)),
        row("celery", drain=(1500.0, 1400.0, 1600.0), submit=(1300.0, 1250.0, 1350.0))]


def test_an_improvement_exits_0(tmp_path: Path) -> None:
    better = [row("arq", drain=(3600.0, 3500.0, 3700.0), submit=(6000.0, 5900.0, 6100.0)),
              BASE[1]]
    done = compare_files(tmp_path, results(BASE), results(better))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| arq | redis | noop | raw | burst | safe |  | 1.20 (apart) | 1.00 |" in done.stdout
    assert done.stdout.endswith("no regression past 10% with separate ranges.\n")


def test_a_regression_past_the_threshold_with_separate_ranges_exits_1(tmp_path: Path) -> None:
    worse = [row("arq", drain=(2400.0, 2300.0, 2500.0), submit=(6000.0, 5900.0, 6100.0)),
             BASE[1]]
    done = compare_files(tmp_path, results(BASE), results(worse))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "| arq | redis | noop | raw | burst | safe |  | **0.80 regressed** | 1.00 |" \
        in done.stdout
    assert "| celery | redis | noop | raw | burst | safe |  | 1.00 | 1.00 |" in done.stdout
    assert done.stdout.endswith("1 regression past 10%.\n")
    # the rich table says the same on a terminal's stdout
    table = run_compare(tmp_path / "a.json", tmp_path / "b.json")
    assert table.returncode == 1
    assert "0.80 regressed" in table.stdout


def test_a_change_within_overlapping_ranges_is_not_flagged(tmp_path: Path) -> None:
    noisy = [row("arq", drain=(2500.0, 2000.0, 3000.0), submit=(6000.0, 5900.0, 6100.0)),
             BASE[1]]
    done = compare_files(tmp_path, results(BASE), results(noisy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| arq | redis | noop | raw | burst | safe |  | 0.83 | 1.00 |" in done.stdout


def test_a_single_repeat_regresses_past_the_threshold_alone(tmp_path: Path) -> None:
    one = [row("arq", drain=(3000.0, 3000.0, 3000.0), repeats=1)]
    lower = [row("arq", drain=(2800.0, 2800.0, 2800.0), repeats=1)]
    a, b = write(tmp_path, "a.json", results(one)), write(tmp_path, "b.json", results(lower))
    assert run_compare(a, b).returncode == 0            # 0.93: within 10%
    assert run_compare(a, b, "--threshold", "0.05").returncode == 1


def test_latency_higher_in_b_is_the_regression(tmp_path: Path) -> None:
    a_row = row("arq", phase="sustained", rate=250.0, e2e_p50=2.0)
    b_row = row("arq", phase="sustained", rate=250.0, e2e_p50=3.0)
    a = results([a_row], run_rows=runs(a_row, [1.9, 2.0, 2.1]))
    b = results([b_row], run_rows=runs(b_row, [2.9, 3.0, 3.2]))
    comparison = compare.compare(a, b, figures=["e2e_p50"])
    [change] = comparison.cells[("arq", "redis", "noop", "raw", "sustained", "safe", 250.0)]
    assert (change.ratio, change.separate, change.regressed) == (1.5, True, True)
    assert not compare.compare(b, a, figures=["e2e_p50"]).regressions


def test_cells_in_one_file_only_are_listed_apart(tmp_path: Path) -> None:
    extra = row("dramatiq", broker="rabbitmq", drain=(900.0, 850.0, 950.0))
    done = compare_files(tmp_path, results(BASE), results([*BASE, extra]))
    assert done.returncode == 0
    assert "- only in B: dramatiq rabbitmq noop raw burst safe\n" in done.stdout


def test_a_version_1_mode_suffix_meets_the_version_2_config_field() -> None:
    old = results([row("arq", mode="raw/defaults", drain=(1000.0, 990.0, 1010.0))],
                  version=None)
    new = results([row("arq", config="defaults", drain=(1000.0, 990.0, 1010.0))])
    comparison = compare.compare(old, new)
    assert list(comparison.cells) == [("arq", "redis", "noop", "raw", "burst", "defaults", None)]
    assert not comparison.only_a and not comparison.only_b


def test_more_lost_or_run_twice_under_a_fault_is_a_regression(tmp_path: Path) -> None:
    a = results(BASE, faults=[fault("arq", "worker_kill"), fault("celery", "worker_kill")])
    b = results(BASE, faults=[fault("arq", "worker_kill", run_twice=2),
                              fault("celery", "worker_kill"), fault("celery", "net_cut")])
    done = compare_files(tmp_path, a, b)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "| arq | redis | queuebench | worker_kill | 0 -> 0 | **0 -> 2 regressed** |" \
        in done.stdout
    assert "- only in B: celery redis queuebench net_cut" in done.stdout
    assert run_compare(tmp_path / "b.json", tmp_path / "a.json").returncode == 0


def test_the_committed_run_against_itself_is_all_ones_and_exits_0() -> None:
    done = run_compare(COMMITTED, COMMITTED, "--markdown")
    assert done.returncode == 0, done.stderr
    data = schema.load(COMMITTED)
    comparison = compare.compare(data, data)
    ratios = [c.ratio for changes in comparison.cells.values() for c in changes]
    assert len(comparison.cells) == len(data["summary"])
    assert ratios and all(r == 1.0 for r in ratios)
    assert not comparison.only_a and not comparison.only_b


def test_an_unreadable_file_or_unknown_version_exits_2(tmp_path: Path) -> None:
    future = write(tmp_path, "future.json", results(BASE, version=3))
    done = run_compare(COMMITTED, future)
    assert done.returncode == 2
    assert "schema_version 3; this queuebench reads 1, 2" in done.stderr
    assert run_compare(COMMITTED, tmp_path / "missing.json").returncode == 2


def test_bench_compare_does_not_take_over_the_benchmark_s_own_options() -> None:
    done = subprocess.run([sys.executable, "-m", "core.cli.main", "bench", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0
    assert "--profile" in done.stdout


# -- the schema --------------------------------------------------------------------------

def validate(data: dict[str, Any]) -> None:
    jsonschema.validate(data, schema.json_schema(), cls=jsonschema.Draft202012Validator)


def test_a_version_1_file_fits_the_schema() -> None:
    """tests/data/results-v1.json: the 4 December full run's file (version 1), its runs
    cut to 40."""
    data = json.loads(V1.read_text())
    assert schema.version(data) == 1
    validate(data)


def test_the_committed_file_fits_the_schema() -> None:
    data = json.loads(COMMITTED.read_text())
    assert schema.version(data) in schema.VERSIONS
    validate(data)


def test_a_version_1_file_compares_with_the_committed_one() -> None:
    done = run_compare(V1, COMMITTED, "--markdown")
    assert done.returncode in (0, 1), done.stderr  # 1: a regression, judged as any other
    assert "| backend | broker | workload |" in done.stdout


def test_a_hand_made_version_2_file_fits_the_schema() -> None:
    a = row("arq", phase="sustained", rate=250.0, e2e_p50=2.0, config="safe")
    data = results([a, *BASE], run_rows=runs(a, [1.9, 2.0]),
                   faults=[fault("arq", "worker_kill", mode="raw-defaults", lost=3),
                           fault("celery", "net_cut", error="no namespaces")])
    assert data["schema_version"] == schema.VERSION == 2
    validate(data)


@pytest.mark.parametrize("change", [
    {"schema_version": 3},
    {"surprise": []},
    {"summary": [{**BASE[0], "mode": "turbo"}]},
    {"faults": [{**fault("arq", "worker_kill"), "fault": "meteor"}]},
    {"faults": [{k: v for k, v in fault("arq", "worker_kill").items() if k != "run_twice"}]},
])
def test_the_schema_refuses_what_it_does_not_document(change: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate({**results(BASE), **change})


def test_the_schema_documents_every_top_level_key_and_fault_field() -> None:
    doc = (ROOT / "docs" / "bench-schema.md").read_text()
    defs = schema.json_schema()
    names = [*defs["properties"], *defs["$defs"]["fault_row"]["properties"],
             *defs["$defs"]["summary_row"]["properties"]]
    missing = [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"docs/bench-schema.md does not name {missing}"
