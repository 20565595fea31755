"""Unit tests of core/store/'s task record: how it is written to its Redis hash and read
back, JSON that stays valid with non-finite floats. No Redis."""

from __future__ import annotations

import json
import math
from datetime import UTC

from core.states import TaskState
from core.store.records import TaskRecord, dumps


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
