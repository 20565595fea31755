"""Unit tests of core's pure parts: no Redis, no worker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.errors import InvalidArguments, UnknownTask
from core.states import TaskState
from core.store.records import TaskRecord
from core.tasks import all_tasks, get_task
from core.tasks.features import CORE_FEATURES, FEATURES, OPTION_FEATURE, Support, supported_options
from core.tasks.options import TaskOptions
from core.tasks.policy import Policy


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    policy = Policy(max_retries=10, retry_backoff=1.0, backoff_cap=8.0)
    for attempt, full in enumerate([1, 2, 4, 8, 8, 8]):
        for _ in range(50):
            assert full / 2 <= policy.backoff(attempt) <= full


def test_will_retry_counts_retries_not_runs() -> None:
    policy = Policy(max_retries=2)
    assert [policy.will_retry(a) for a in range(4)] == [True, True, False, False]


def test_policy_survives_the_wire() -> None:
    policy = Policy(max_retries=3, retry_backoff=0.5, backoff_cap=9, time_limit=2.5)
    assert Policy.from_wire(policy.to_wire()) == policy
    assert Policy.from_wire(None) == Policy()


def test_submitted_options_override_task_defaults() -> None:
    defaults = get_task("flaky").defaults
    merged = TaskOptions(max_retries=0).merged_over(defaults)
    assert merged.max_retries == 0
    assert merged.retry_backoff == defaults.retry_backoff


def test_naive_eta_is_utc() -> None:
    eta = TaskOptions(eta=datetime(2030, 1, 1, 12, 0)).eta
    assert eta == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", [{"countdown": -1}, {"priority": 10}, {"queue": "a b"},
                                 {"time_limit": 0}, {"unknown": 1}])
def test_bad_options_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TaskOptions(**bad)  # type: ignore[arg-type]


def test_bind_validates_against_the_signature() -> None:
    divide = get_task("divide")
    assert divide.bind([1, 2], {}) == {"x": 1.0, "y": 2.0}
    assert divide.bind([], {"y": 2, "x": 3}) == {"x": 3.0, "y": 2.0}
    # JSON's numbers only, as the schema says: not "3" for 3, nor true for 1.
    for args, kwargs in [([1], {}), ([1, 2, 3], {}), ([1, "x"], {}), ([1], {"z": 2}),
                         ([], {"y": 2, "x": "3"}), ([True, 2], {})]:
        with pytest.raises(InvalidArguments):
            divide.bind(args, kwargs)


def test_unknown_task() -> None:
    with pytest.raises(UnknownTask):
        get_task("nope")


def test_shared_tasks_of_the_contract_are_registered() -> None:
    assert {"divide", "add", "noop", "sleep", "cpu", "flaky", "fail"} <= set(all_tasks())


def test_every_option_maps_to_a_known_feature() -> None:
    assert set(OPTION_FEATURE) == set(TaskOptions.model_fields)
    assert set(OPTION_FEATURE.values()) <= set(FEATURES)
    assert set(CORE_FEATURES) <= set(FEATURES)


def test_unsupported_feature_takes_its_options_away() -> None:
    options = supported_options({**CORE_FEATURES, "delay": Support.NATIVE})
    assert {"countdown", "eta", "expires", "idempotency_key"} <= options
    assert "priority" not in options and "max_retries" not in options


def test_record_round_trips_through_its_redis_hash() -> None:
    record = TaskRecord(id="i", name="noop", backend="arq", state=TaskState.FAILURE,
                        args=[{"a": [1, None]}], kwargs={"k": "é"},
                        error={"type": "E", "message": "m"}, retries=2,
                        submitted_at=1.5, started_at=2.5, finished_at=3.5, queue="q")
    assert TaskRecord.from_hash(record.to_hash()) == record
    body = record.body()
    assert body["state"] == "FAILURE" and body["submitted_at"].tzinfo is UTC
    assert "queue" not in body and "worker" not in body


def test_non_finite_floats_are_kept_as_strings_in_valid_json() -> None:
    import json
    import math

    from core.store.records import dumps

    def refuse(word: str) -> None:
        raise AssertionError(f"{word} is not JSON")

    value = {"a": [math.inf, (1.5, -math.inf)], "b": {"c": math.nan}, "d": "NaN"}
    loaded = json.loads(dumps(value), parse_constant=refuse)
    assert loaded == {"a": ["Infinity", [1.5, "-Infinity"]], "b": {"c": "NaN"}, "d": "NaN"}
    record = TaskRecord(id="t", name="noop", backend="arq", args=[math.nan],
                        kwargs={"x": -math.inf}, result=math.inf)
    stored = record.to_hash()
    assert [json.loads(stored[k], parse_constant=refuse) for k in ("args", "kwargs", "result")] \
        == [["NaN"], {"x": "-Infinity"}, "Infinity"]
    assert dumps([1, 0.5, "x", None]) == '[1,0.5,"x",null]'  # finite values as before


# -- the feature matrix (tests/matrix.py), issue 8 ----------------------------------------

from pathlib import Path  # noqa: E402


def _junit(tmp_path: Path, cases: list[tuple[str, str, str, str]]) -> Path:
    """A JUnit report of (test[params], feature, support, outcome) cases."""
    body = []
    for name, feature, support, outcome in cases:
        mark = {"failed": "<failure message='x'/>", "skipped": "<skipped message='x'/>",
                "passed": ""}[outcome]
        body.append(f"<testcase classname='tests.test_conformance' name='{name}'>"
                    f"<properties><property name='feature' value='{feature}'/>"
                    f"<property name='support' value='{support}'/></properties>{mark}"
                    "</testcase>")
    path = tmp_path / "junit.xml"
    path.write_text(f"<testsuites><testsuite>{''.join(body)}</testsuite></testsuites>")
    return path


def test_matrix_cell_is_green_only_when_every_test_passed(tmp_path: Path) -> None:
    from tests.matrix import icon, read_reports, summary, verdict

    cells = read_reports([_junit(tmp_path, [
        ("test_a[celery]", "retries", "native", "passed"),
        ("test_b[celery]", "retries", "native", "passed"),
        ("test_a[arq]", "retries", "native", "passed"),
        ("test_b[arq]", "retries", "native", "skipped"),  # a skip hides nothing now
        ("test_a[dramatiq]", "retries", "native", "failed"),
        ("test_b[dramatiq]", "retries", "native", "passed"),
    ])])
    assert [verdict(cells[("retries", b)]) for b in ("celery", "arq", "dramatiq")] == [
        "passed", "skipped", "failed"]
    assert [icon(cells[("retries", b)]) for b in ("celery", "arq", "dramatiq")] == [
        "✅", "⏭️", "❌"]
    assert "| retries | ✅ **native** | ⏭️ **native** (1 passed, 1 skipped) |" in summary(cells)


def test_matrix_label_is_what_the_tests_exercised(tmp_path: Path) -> None:
    from tests.matrix import icon, label, read_reports

    cells = read_reports([_junit(tmp_path, [
        ("test_stop[celery-sleep-default]", "cancel_running", "native", "passed"),
        ("test_stop[celery-sleep-one-process]", "cancel_running", "in core", "passed"),
        ("test_prio[arq]", "priority", "not supported", "passed"),
        ("test_prio[dramatiq]", "priority", "not supported", "failed"),
    ])])
    assert label(cells[("cancel_running", "celery")]) == "native + in core"
    assert (label(cells[("priority", "arq")]), icon(cells[("priority", "arq")])) == (
        "refused", "🚫")  # a refusal the test proved
    assert (label(cells[("priority", "dramatiq")]), icon(cells[("priority", "dramatiq")])) == (
        "not supported", "❌")  # claimed, not proved


def test_matrix_puts_a_rabbitmq_run_in_a_column_of_its_own(tmp_path: Path) -> None:
    from tests.matrix import columns, read_reports, render

    redis_run = _junit(tmp_path, [("test_prio[celery]", "priority", "native", "passed")])
    amqp_run = tmp_path / "junit-amqp.xml"  # the same test, failed, with --broker rabbitmq
    amqp_run.write_text(redis_run.read_text().replace(
        "</properties>", "<property name='broker' value='rabbitmq'/></properties>"
                         "<failure message='x'/>"))
    cells = read_reports([redis_run, amqp_run])
    assert columns(cells) == ["celery", "celery on rabbitmq"]
    assert [r.outcome for r in cells[("priority", "celery")]] == ["passed"]
    assert [r.outcome for r in cells[("priority", "celery on rabbitmq")]] == ["failed"]
    assert "| feature | what it means | celery | celery on rabbitmq |" in render(cells)
