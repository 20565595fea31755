"""The documentation says what the code does: docs/api.md has a heading for every
operation of the app's /openapi.json and for nothing else, docs/configuration.md a row
for every field of `Settings` with its default, the README's links resolve, and the
decision guide in it and in docs/benchmark.md is computed from docs/bench/results.json.
No Redis and no worker: the app's schema is built without starting it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from core.api.app import create_app
from core.settings import Settings
from core.tasks import all_tasks

ROOT = Path(__file__).resolve().parent.parent
METHODS = "GET|POST|PUT|PATCH|DELETE"
# `### `GET /tasks/{task_id}``: one operation a heading.
OPERATION = re.compile(rf"^#+ `({METHODS}) (/\S*)`\s*$", re.MULTILINE)
# `| `NAME` | default | meaning |`: one setting a row.
SETTING = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|", re.MULTILINE)


def documented_operations() -> set[tuple[str, str]]:
    return set(OPERATION.findall((ROOT / "docs" / "api.md").read_text()))


def served_operations(backend_name: str) -> set[tuple[str, str]]:
    """The schema's operations; a task's own submit routes (`/tasks/divide`,
    `/tasks/divide/batch`) are documented once, as `/tasks/{name}` and its batch."""
    schema = create_app(Settings(queue_backend=backend_name)).openapi()
    tasks = "|".join(map(re.escape, all_tasks()))
    found = set()
    for path, operations in schema["paths"].items():
        path = re.sub(rf"^/tasks/(?:{tasks})(/batch)?$", r"/tasks/{name}\1", path)
        found.update((method.upper(), path) for method in operations)
    return found


def test_api_md_documents_every_operation_of_the_schema(backend_name: str) -> None:
    documented, served = documented_operations(), served_operations(backend_name)
    assert not served - documented, "served, but no heading in docs/api.md"
    assert not documented - served, "a heading in docs/api.md, but not served"


def test_api_md_lists_every_shared_task() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+)` \| `\(", text, re.MULTILINE))
    assert rows == set(all_tasks())


def _default(value: Any) -> str | None:
    """A default as docs/configuration.md writes it; None: written as `unset`."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))


def test_configuration_md_has_every_setting_with_its_default() -> None:
    rows = dict(SETTING.findall((ROOT / "docs" / "configuration.md").read_text()))
    fields = {name.upper(): field for name, field in Settings.model_fields.items()}
    assert set(rows) == set(fields)
    for name, field in fields.items():
        default = _default(field.default)
        cell = rows[name].strip()
        if default is None:
            assert cell.startswith("unset"), f"{name}: {cell!r}, but it has no default"
        else:
            assert cell == f"`{default}`", f"{name}: {cell!r}, but its default is {default!r}"


@pytest.mark.parametrize("page", ["README.md", "CHANGELOG.md"])
def test_relative_links_resolve(page: str) -> None:
    """docs/ is checked by MkDocs (`./run docs`); the pages beside it here."""
    text = (ROOT / page).read_text()
    links = re.findall(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)", text)
    broken = [link for link in links
              if "://" not in link and not (ROOT / link).exists()]
    assert links or page == "CHANGELOG.md"
    assert not broken


@pytest.mark.parametrize(("page", "base"), [("README.md", "docs/bench/report.md"),
                                          ("docs/benchmark.md", "bench/report.md")])
def test_the_decision_guide_is_computed_from_the_committed_results(page: str,
                                                                   base: str) -> None:
    """No sentence about the results by hand: the guide in the README and in
    docs/benchmark.md is bench/guide.py's on docs/bench/results.json (regenerate it with
    the command in its marker)."""
    from bench import guide, schema

    text = (ROOT / page).read_text()
    block = re.search(r"^<!-- guide: ([^>]*) -->\n(.*?)^<!-- /guide -->$", text,
                      re.MULTILINE | re.DOTALL)
    assert block, f"{page} has no <!-- guide: ... --> block"
    assert f"--base {base}" in block.group(1)
    results = schema.load(ROOT / "docs" / "bench" / "results.json")
    assert block.group(2) == guide.markdown(results, base)
