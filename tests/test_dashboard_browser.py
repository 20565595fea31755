"""The dashboard in a real browser, on each backend: Debian's chromium driven by
Playwright (scripts/browser.sh installs it). Tasks appear and finish in the table
without a reload, a task page opens, its cancel button revokes a running task; a
screenshot of the overview is saved to build/dashboard-<backend>.png."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from core.cli.procs import ROOT, Server
from tests.conformance.support import finished, submit
from tests.conftest import IN_CI

CHROMIUM = os.environ.get("QB_CHROMIUM", "/usr/bin/chromium")
BUILD = ROOT / "build"
TIMEOUT_MS = 20_000

playwright_api = pytest.importorskip("playwright.async_api")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"no chromium at {CHROMIUM}: run scripts/browser.sh"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: object) -> AsyncIterator[object]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    made = await context.new_page()
    made.set_default_timeout(TIMEOUT_MS)
    yield made
    await context.close()


async def test_tasks_appear_and_finish_live_and_cancel_revokes(
        page: object, client: httpx.AsyncClient, server: Server, backend_name: str) -> None:
    p = page  # playwright's Page
    await p.goto(f"{server.url}/dashboard/tasks")  # type: ignore[attr-defined]
    assert await p.text_content("#backend") == f"backend: {backend_name}"  # type: ignore[attr-defined]
    await p.wait_for_selector("#live-status.ok")  # type: ignore[attr-defined]
    await p.evaluate("window.__notReloaded = true")  # type: ignore[attr-defined]

    tasks = [await submit(client, "sleep", 0.3) for _ in range(3)]
    tasks.append(await submit(client, "divide", 1, 0))
    for task, state in zip(tasks, ["SUCCESS"] * 3 + ["FAILURE"], strict=True):
        await p.wait_for_selector(  # type: ignore[attr-defined]
            f'tr[data-id="{task["id"]}"] td.state:text-is("{state}")')
    assert await p.evaluate("window.__notReloaded === true")  # type: ignore[attr-defined]

    await p.click(f'tr[data-id="{tasks[3]["id"]}"] a')  # type: ignore[attr-defined]
    await p.wait_for_selector("#state:text-is('FAILURE')")  # type: ignore[attr-defined]
    assert "ZeroDivisionError" in await p.text_content("pre")  # type: ignore[attr-defined]
    assert "started" in await p.text_content("table.timeline")  # type: ignore[attr-defined]

    sleeper = await submit(client, "sleep", 30)
    await p.goto(f"{server.url}/dashboard/tasks/{sleeper['id']}")  # type: ignore[attr-defined]
    await p.wait_for_selector("#live-status.ok")  # type: ignore[attr-defined]
    await p.wait_for_selector("#state:text-is('STARTED')")  # type: ignore[attr-defined]
    await p.click("#cancel")  # type: ignore[attr-defined]
    await p.wait_for_selector("#state:text-is('REVOKED')")  # type: ignore[attr-defined]
    assert (await finished(client, sleeper["id"]))["state"] == "REVOKED"

    await p.goto(f"{server.url}/dashboard")  # type: ignore[attr-defined]
    await p.wait_for_selector("#rates polyline")  # type: ignore[attr-defined]
    BUILD.mkdir(exist_ok=True)
    await p.screenshot(path=str(BUILD / f"dashboard-{backend_name}.png"),  # type: ignore[attr-defined]
                       full_page=True)
