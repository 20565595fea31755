"""The feature matrix (tests/matrix.py) on JUnit reports written as pytest writes them:
an xfail is a `<skipped type="pytest.xfail">`; an xpass (not strict) is written as a
pass, so tests/conftest.py records it as a property, which the last test checks with
a real pytest run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.cli.procs import ROOT
from tests.matrix import ICON, icon, read_reports, render, summary, verdict

REASON = "kombu's Redis transport can lose a message taken"


def _report(tmp_path: Path, *cases: str) -> Path:
    """A JUnit report of celery cases, each (test, feature, what follows its properties)."""
    path = tmp_path / "junit.xml"
    path.write_text("<testsuites><testsuite>" + "".join(cases) + "</testsuite></testsuites>")
    return path


def _case(test: str, feature: str, inside: str = "", extra: str = "") -> str:
    return (f"<testcase classname='tests.test_faults' name='{test}[celery]'><properties>"
            f"<property name='feature' value='{feature}'/>"
            f"<property name='support' value='in core'/>{extra}</properties>{inside}"
            "</testcase>")


XFAIL = f"<skipped type='pytest.xfail' message=\"{REASON}\"/>"
XPASS = f"<property name='xpass' value=\"{REASON}\"/>"


def test_an_xfail_is_no_green_and_its_cell_says_xfail_and_why(tmp_path: Path) -> None:
    cells = read_reports([_report(tmp_path, _case("test_kill", "durable_redis", XFAIL),
                                  _case("test_other", "durable_redis"))])
    results = cells[("durable_redis", "celery")]
    assert (verdict(results), icon(results)) == ("xfail", ICON["xfail"])
    assert ICON["xfail"] not in (ICON["passed"], ICON["skipped"])
    assert f"| durable_redis | {ICON['xfail']} **in core** (1 passed, 1 xfail) |" in summary(
        cells)
    assert f"1 passed, 1 xfail: {REASON}" in render(cells)


def test_an_xpass_is_no_green_and_its_cell_says_xpass_and_why(tmp_path: Path) -> None:
    cells = read_reports([_report(tmp_path, _case("test_kill", "durable_redis", extra=XPASS))])
    results = cells[("durable_redis", "celery")]
    assert (verdict(results), icon(results)) == ("xpass", ICON["xpass"])
    assert ICON["xpass"] not in (ICON["passed"], ICON["xfail"], ICON["skipped"])
    assert f"| durable_redis | {ICON['xpass']} **in core** (1 xpass) |" in summary(cells)
    assert f"1 xpass: {REASON}" in render(cells)


def test_a_cell_shows_its_worst_outcome_failed_then_xfail_then_xpass_then_skipped(
        tmp_path: Path) -> None:
    skip = "<skipped type='pytest.skip' message='no'/>"
    cells = read_reports([_report(
        tmp_path,
        _case("test_a", "retries", "<failure message='x'/>"), _case("test_b", "retries", XFAIL),
        _case("test_a", "delay", XFAIL), _case("test_b", "delay", extra=XPASS),
        _case("test_a", "expiry", extra=XPASS), _case("test_b", "expiry", skip),
        _case("test_a", "queues", skip), _case("test_b", "queues"))])
    assert [verdict(cells[(f, "celery")]) for f in ("retries", "delay", "expiry", "queues")] == [
        "failed", "xfail", "xpass", "skipped"]


def test_pytest_run_records_an_xpass_the_matrix_reads(tmp_path: Path) -> None:
    """What pytest itself writes: an xpass (not strict) is a bare pass in JUnit, told
    apart only by the property tests/conftest.py adds."""
    tests = tmp_path / "test_marked.py"
    tests.write_text(f'''
import pytest

@pytest.mark.xfail(strict=False, reason="{REASON}")
def test_lucky(backend_name, request):
    request.node.user_properties += [("feature", "durable_redis"), ("support", "in core")]

@pytest.mark.xfail(strict=False, reason="{REASON}")
def test_unlucky(backend_name, request):
    request.node.user_properties += [("feature", "retries"), ("support", "native")]
    raise AssertionError("lost")

def test_plain(backend_name, request):
    request.node.user_properties += [("feature", "delay"), ("support", "native")]
''')
    report = tmp_path / "junit.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", str(tests), "-p", "tests.conftest",
                           "--backend", "celery", "--junitxml", str(report), "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    cells = read_reports([report])
    assert {f: verdict(cells[(f, "celery")]) for f in ("durable_redis", "retries", "delay")} == {
        "durable_redis": "xpass", "retries": "xfail", "delay": "passed"}
    assert REASON in render(cells)
