"""The benchmark harness end to end: a tiny run of every mode for the backend under
test, through `queuebench bench` itself, writes the results folder with nothing lost.
(Speed is the benchmark's business: nothing here asserts a figure's size.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import workloads
from bench.cli import MODES
from bench.cli import main as bench_main
from core.settings import BACKENDS
from core.tasks import get_task
from tests.conftest import redis_database

BENCH_DB = 15  # flushed by every session: no test worker may live there
KINDS = ("submit", "queue_wait", "end_to_end")


@pytest.fixture(scope="module")
def bench_redis() -> str:
    return redis_database(BENCH_DB, flush=False)


@pytest.fixture(scope="module")
def results(backend_name: str, bench_redis: str, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[dict, Path]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("bench") / "out"
    # Batches of 15 end with a short one; two uvicorn processes for the API and ceiling.
    bench_main(["--backends", backend_name, "--tasks", "40", "--rates", "20", "--seconds",
                "1", "--users", "4", "--submitters", "4", "--batch-size", "15",
                "--server-workers", "2", "--redis", bench_redis, "--out", str(out)])
    return json.loads((out / "results.json").read_text()), out


def test_every_mode_runs_both_phases(results: tuple[dict, Path], backend_name: str) -> None:
    data, _ = results
    assert data["failures"] == []
    mine = {(r["mode"], r["phase"]) for r in data["runs"] if r["backend"] == backend_name}
    assert mine == {(m, p) for m in MODES for p in ("burst", "sustained")} | {("batch", "burst")}
    assert [r["mode"] for r in data["runs"] if r["backend"] == "ceiling"] == ["ceiling"]


def test_nothing_is_lost_and_nothing_fails(results: tuple[dict, Path], backend_name: str
                                           ) -> None:
    runs = [r for r in results[0]["runs"] if r["backend"] == backend_name]
    for run in runs:
        assert (run["lost"], run["errors"]) == (0, 0), run
        assert run["tasks"] == (40 if run["phase"] == "burst" else 20), run
    [batch] = [r for r in runs if r["mode"] == "batch"]
    assert batch["batch_size"] == 15 and batch["latency_ms"]["submit"]["count"] == 3


def test_runs_carry_the_documented_fields(results: tuple[dict, Path], backend_name: str
                                          ) -> None:
    for run in results[0]["runs"]:
        for field in ("backend", "workload", "mode", "phase", "throughput_tasks_per_s",
                      "submit_rps", "latency_ms", "lost", "errors", "tasks"):
            assert field in run, (field, run)
        assert run["submit_rps"] > 0
        if run["backend"] == "ceiling":
            continue
        assert run["throughput_tasks_per_s"] > 0
        for kind in KINDS:
            figures = run["latency_ms"][kind]
            assert figures["count"] > 0
            assert 0 <= figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]
        assert len(run["latency_cdf_ms"]["end_to_end"]) == 101


def test_summary_ratios_and_meta(results: tuple[dict, Path], backend_name: str) -> None:
    data, _ = results
    modes = {row["mode"] for row in data["summary"] if row["backend"] == backend_name}
    assert modes == {*MODES, "batch"}
    [ratio] = [r for r in data["ratios"] if r["backend"] == backend_name]
    assert ratio["direct_vs_raw"] > 0 and ratio["http_vs_raw"] > 0
    assert ratio["http_submit_vs_ceiling"] > 0
    [overhead] = [r for r in data["overhead"] if r["backend"] == backend_name]
    assert overhead["batch_submit_rps"] > 0 and overhead["batch_submit_vs_raw"] > 0
    assert overhead["direct_e2e_p50_ms"] > 0 and overhead["sustained_rate"] == 20
    assert all(met is not None for met in overhead["met"].values())
    meta = data["meta"]
    assert meta["settings"]["server_workers"] == 2 and meta["settings"]["batch_size"] == 15
    assert backend_name in meta["versions"] and backend_name in meta["mapping"]
    mine = [r for r in meta["settings_table"] if r["backend"] == backend_name]
    assert {(r["mode"], r["config"]) for r in mine} == {("raw", "safe"), ("direct", "safe")}
    assert all(r["log level"] == "WARNING" and r["acks"] and r["prefetch"] for r in mine)
    assert meta["machine"]["cpus"] and meta["machine"]["redis"]


def test_the_report_folder_is_written(results: tuple[dict, Path]) -> None:
    _, out = results
    for name in ("results.json", "report.md", "report.html", "throughput.png",
                 "latency.png", "cdf.png"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    # the answers come first, computed from the run: the decision guide, then the charts
    md = (out / "report.md").read_text()
    assert md.index("## Decision guide") < md.index("![throughput]") < md.index("| ")
    assert "Short tasks at a high rate (noop, drain), the library alone (raw): " in md
    assert html.index('id="decision-guide"') < html.index("<table")
    assert "drain, the library alone" in md  # the findings, below the charts
    assert "## Configuration per backend, mode and config" in md


def test_raw_mode_does_the_shared_tasks_work() -> None:
    assert workloads.cpu(500) == get_task("cpu").fn(500)
    assert workloads.noop({"a": [1]}) == {"a": [1]}
    assert workloads.sleep_sync(0.0) == 0.0


def test_bad_arguments_and_a_down_redis_are_one_clear_line(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--backends", "rabbit"])
    assert exit_info.value.code == 2
    assert "unknown backend 'rabbit'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--redis", "redis://127.0.0.1:1/0"])
    assert str(exit_info.value.code).startswith("queuebench bench: error: Redis at")


def test_sustained_runs_are_open_loop_and_say_what_the_generator_managed(
        results: tuple[dict, Path], backend_name: str) -> None:
    sustained = [r for r in results[0]["runs"]
                 if r["backend"] == backend_name and r["phase"] == "sustained"]
    assert sustained
    for run in sustained:
        generator = run["generator"]
        assert generator["offered_rate"] == 20 and generator["arrivals"] == "constant"
        assert generator["achieved_rate"] > 0 and generator["late"] >= 0
        assert generator["lag_ms"]["count"] == run["tasks"]
        assert "limited_by" in run
        assert run["history"] is run["mode"].endswith("+history")


def test_modes_and_backends_rotate_between_rounds(results: tuple[dict, Path]) -> None:
    from bench.cli import parse, plan

    specs = plan(parse(["--repeats", "3", "--workloads", "noop", "--modes", "raw,direct,http"]),
                 "sqlite://")
    rounds = [[(s.mode, s.backend) for s in specs if s.round == r] for r in range(3)]
    firsts = [r[0] for r in rounds]
    assert len({mode for mode, _ in firsts}) == 3, firsts  # each round starts elsewhere
    assert len({backend for _, backend in firsts}) == 3, firsts
    assert all(sorted(r) == sorted(rounds[0]) for r in rounds)  # the same sessions
    order = results[0]["meta"]["order"]  # one entry per session, as it ran
    sessions = {(r["backend"], r["mode"]) for r in results[0]["runs"] if r["mode"] != "batch"}
    assert sorted(order) == sorted(f"1:{b}:{m}:noop" for b, m in sessions)


def test_the_full_profile_runs_both_configs_and_the_long_one_kills_workers() -> None:
    from bench.cli import parse, plan

    full = plan(parse(["--profile", "full"]), "sqlite://")
    defaults = {(s.mode, s.workload, s.round) for s in full if s.config == "defaults"}
    assert {m for m, _, _ in defaults} == {"raw", "direct"}  # a worker's own settings
    assert {(w, r) for _, w, r in defaults} == {("noop", 0)}
    assert {s.mode for s in full if s.history} == {"direct+history", "http+history"}
    assert {s.round for s in full} == {0, 1, 2} and not any(s.kill for s in full)
    kills = [s for s in plan(parse(["--profile", "long"]), "sqlite://") if s.kill]
    assert {(s.backend, s.mode, s.config) for s in kills} == {
        (b, m, c) for b in BACKENDS for m in ("raw", "direct") for c in ("safe", "defaults")}


def test_the_full_profile_runs_celery_dramatiq_and_taskiq_on_rabbitmq_too_the_quick_one_not(
        ) -> None:
    from bench.cli import parse, plan

    full = plan(parse(["--profile", "full"]), "sqlite://")
    amqp = {(s.backend, s.mode, s.config, s.workload, s.round) for s in full
            if s.broker == "rabbitmq"}
    assert {(b, m, c) for b, m, c, _, _ in amqp} == {
        (b, m, "safe") for b in ("celery", "dramatiq", "taskiq") for m in ("raw", "direct", "http")}
    assert {(w, r) for *_, w, r in amqp} == {(w, r) for w in ("noop", "sleep", "cpu")
                                             for r in range(3)}
    # every RabbitMQ session has its Redis twin, for the column to compare against
    assert all(any(t.broker == "redis" and (t.backend, t.mode, t.workload, t.round)
                   == (s.backend, s.mode, s.workload, s.round) for t in full)
               for s in full if s.broker == "rabbitmq")
    quick = plan(parse(["--profile", "quick"]), "sqlite://")
    assert {s.broker for s in quick} == {"redis"}
    only = plan(parse(["--brokers", "rabbitmq", "--modes", "raw,http"]), "sqlite://")
    assert {(s.backend, s.broker) for s in only} == {
        ("celery", "rabbitmq"), ("dramatiq", "rabbitmq"), ("taskiq", "rabbitmq"),
        ("ceiling", "redis")}


def test_every_profile_has_a_configuration_row_per_backend_broker_mode_and_config() -> None:
    """The report's configuration table, made before any session runs: the full
    profile's (every backend on Redis, arq not on RabbitMQ) once failed to build."""
    from bench.cli import parse, plan, settings_table

    for profile in ("quick", "full", "long"):
        args = parse(["--profile", profile])
        rows = {(r["backend"], r["broker"], r["mode"], r["config"]) for r in settings_table(args)}
        wanted = {(s.backend, s.broker, "raw" if s.mode == "raw" else "direct", s.config)
                  for s in plan(args, "sqlite://") if s.backend in BACKENDS}
        assert wanted <= rows, (profile, wanted - rows)


def test_a_tiny_run_on_rabbitmq_loses_nothing_and_reports_the_broker(
        request: pytest.FixtureRequest, backend_name: str, bench_redis: str,
        tmp_path: Path) -> None:
    """raw, direct and http on RabbitMQ through `queuebench bench` (with --broker
    rabbitmq: it needs the broker and rabbitmqctl)."""
    if request.config.getoption("--broker") != "rabbitmq":
        pytest.skip("the benchmark's RabbitMQ sessions run with --broker rabbitmq")
    if backend_name == "arq":
        with pytest.raises(SystemExit):  # arq has no RabbitMQ session: nothing runs
            bench_main(["--backends", "arq", "--brokers", "rabbitmq", "--modes", "raw",
                        "--redis", bench_redis, "--out", str(tmp_path)])
        return
    from tests.conftest import amqp_base

    bench_main(["--backends", backend_name, "--brokers", "rabbitmq", "--modes",
                "raw,direct,http", "--tasks", "40", "--rates", "20", "--seconds", "1",
                "--users", "4", "--submitters", "4", "--batch-size", "0",
                "--amqp", amqp_base(), "--redis", bench_redis, "--out", str(tmp_path)])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["failures"] == []
    mine = [r for r in data["runs"] if r["backend"] == backend_name]
    assert {(r["broker"], r["mode"], r["phase"]) for r in mine} == {
        ("rabbitmq", m, p) for m in ("raw", "direct", "http") for p in ("burst", "sustained")}
    assert all((r["lost"], r["errors"]) == (0, 0) for r in mine), mine
    assert "| rabbitmq |" in (tmp_path / "report.md").read_text()
