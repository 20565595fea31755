"""The feature matrix (tests/matrix.py) on JUnit reports written as pytest writes them:
an xfail is a `<skipped type="pytest.xfail">`; an xpass (not strict) is written as a
pass, so tests/conftest.py records it as a property, which a test checks with a real
pytest run. And the suite it reads: every feature declared by a test the matrix finds
and links to."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from core.cli.procs import ROOT
from core.tasks.features import FEATURES
from tests.matrix import (
    ICON,
    TEST_FILES,
    _link_to,
    columns,
    icon,
    label,
    read_reports,
    render,
    summary,
    verdict,
)

REASON = "kombu's Redis transport can lose a message taken"


def _report(tmp_path: Path, *cases: str) -> Path:
    """A JUnit report of celery cases, each (test, feature, what follows its properties)."""
    path = tmp_path / "junit.xml"
    path.write_text("<testsuites><testsuite>" + "".join(cases) + "</testsuite></testsuites>")
    return path


def _case(test: str, feature: str, inside: str = "", extra: str = "", *,
          params: str = "celery", support: str = "in core") -> str:
    """A test case `test[params]` that declared `feature` at level `support`; `inside`
    is its outcome's element (none: passed), `extra` more properties."""
    return (f"<testcase classname='tests.test_faults' name='{test}[{params}]'><properties>"
            f"<property name='feature' value='{feature}'/>"
            f"<property name='support' value='{support}'/>{extra}</properties>{inside}"
            "</testcase>")


FAILED = "<failure message='x'/>"
SKIPPED = "<skipped type='pytest.skip' message='no'/>"
XFAIL = f"<skipped type='pytest.xfail' message=\"{REASON}\"/>"
XPASS = f"<property name='xpass' value=\"{REASON}\"/>"


def test_matrix_cell_is_green_only_when_every_test_passed(tmp_path: Path) -> None:
    cells = read_reports([_report(
        tmp_path,
        _case("test_a", "retries", params="celery", support="native"),
        _case("test_b", "retries", params="celery", support="native"),
        _case("test_a", "retries", params="arq", support="native"),
        _case("test_b", "retries", SKIPPED, params="arq", support="native"),  # hides nothing
        _case("test_a", "retries", FAILED, params="dramatiq", support="native"),
        _case("test_b", "retries", params="dramatiq", support="native"))])
    assert [verdict(cells[("retries", b)]) for b in ("celery", "arq", "dramatiq")] == [
        "passed", "skipped", "failed"]
    assert [icon(cells[("retries", b)]) for b in ("celery", "arq", "dramatiq")] == [
        "✅", "⏭️", "❌"]
    assert "| retries | ✅ **native** | ⏭️ **native** (1 passed, 1 skipped) |" in summary(cells)


def test_matrix_label_is_what_the_tests_exercised(tmp_path: Path) -> None:
    cells = read_reports([_report(
        tmp_path,
        _case("test_stop", "cancel_running", params="celery-sleep-default", support="native"),
        _case("test_stop", "cancel_running", params="celery-sleep-one-process"),
        _case("test_prio", "priority", params="arq", support="not supported"),
        _case("test_prio", "priority", FAILED, params="dramatiq", support="not supported"))])
    assert label(cells[("cancel_running", "celery")]) == "native + in core"
    assert (label(cells[("priority", "arq")]), icon(cells[("priority", "arq")])) == (
        "refused", "🚫")  # a refusal the test proved
    assert (label(cells[("priority", "dramatiq")]), icon(cells[("priority", "dramatiq")])) == (
        "not supported", "❌")  # claimed, not proved


def test_matrix_puts_a_rabbitmq_run_in_a_column_of_its_own(tmp_path: Path) -> None:
    redis_run = _report(tmp_path, _case("test_prio", "priority", support="native"))
    amqp_run = tmp_path / "junit-amqp.xml"  # the same test, failed, with --broker rabbitmq
    amqp_run.write_text(redis_run.read_text().replace(
        "</properties>", f"<property name='broker' value='rabbitmq'/></properties>{FAILED}"))
    cells = read_reports([redis_run, amqp_run])
    assert columns(cells) == ["celery", "celery on rabbitmq"]
    assert [r.outcome for r in cells[("priority", "celery")]] == ["passed"]
    assert [r.outcome for r in cells[("priority", "celery on rabbitmq")]] == ["failed"]
    assert "| feature | what it means | celery | celery on rabbitmq |" in render(cells)


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
    cells = read_reports([_report(
        tmp_path,
        _case("test_a", "retries", FAILED), _case("test_b", "retries", XFAIL),
        _case("test_a", "delay", XFAIL), _case("test_b", "delay", extra=XPASS),
        _case("test_a", "expiry", extra=XPASS), _case("test_b", "expiry", SKIPPED),
        _case("test_a", "queues", SKIPPED), _case("test_b", "queues"))])
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


def test_every_feature_is_declared_by_a_test_the_matrix_links_to() -> None:
    """The matrix knows a test by its bare name (JUnit's `name[params]`) and links it to
    its `def` line in TEST_FILES: every feature must be declared (`feature("...")`) by
    a test in those files, each such test name in one file only, found where it is."""
    declared: dict[str, set[str]] = {}
    where: dict[str, Path] = {}
    for path in TEST_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and node.name.startswith("test_")):
                continue
            names = {call.args[0].value for call in ast.walk(node)
                     if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "feature"
                     and call.args and isinstance(call.args[0], ast.Constant)}
            if not names:
                continue
            assert node.name not in where, f"{node.name} in {where[node.name]} and {path}"
            where[node.name] = path
            declared[node.name] = names
            assert _link_to(node.name) == f"../{path.relative_to(ROOT)}#L{node.lineno}"
    assert set(FEATURES) <= set().union(*declared.values())
