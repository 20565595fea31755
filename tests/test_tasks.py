"""Unit tests of core/tasks/: the registry and the shared tasks' signatures, the options
a submit takes, the retry policy, and which options each feature allows. No Redis, no
worker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.errors import InvalidArguments, UnknownTask
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
