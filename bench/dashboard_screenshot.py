"""The README's screenshot of the dashboard (docs/dashboard.png), made again:

    .venv/arq/bin/python -m bench.dashboard_screenshot --redis redis://127.0.0.1:6379/15

FLUSHES the Redis database given, starts `queuebench worker` and `queuebench serve`
for `--backend`, submits a mixed load for `--seconds` (successes, failures, retries,
sleeps), and saves the overview page from headless chromium (scripts/browser.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path

import httpx
import redis

from bench.dashboard_timing import stack
from core.cli.procs import ROOT

CHROMIUM = "/usr/bin/chromium"


async def load(base: str, seconds: float) -> None:
    """About 15 tasks a second, of several kinds, for `seconds`."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await http.post("/tasks/add/batch", json={
                "items": [{"args": [random.random(), 1]} for _ in range(8)]})
            await http.post("/tasks/sleep", json={"args": [random.uniform(0.05, 0.6)]})
            await http.post("/tasks/divide", json={"args": [1, random.choice([0, 1, 2, 4])]})
            await http.post("/tasks/flaky", json={"args": [1, f"k{random.random()}"]})
            await asyncio.sleep(0.5)


async def shoot(base: str, out: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(f"{base}/dashboard")
        await page.wait_for_selector("#live-status.ok")
        await page.wait_for_timeout(2500)  # one more live update of the charts
        await page.screenshot(path=str(out))
        await browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", required=True, help="a Redis database URL it may FLUSH")
    parser.add_argument("--backend", default="arq")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args(argv)

    redis.Redis.from_url(args.redis).flushdb()
    with stack(args.redis, args.backend, 4) as url:
        # The page's charts hold what its process saw since its first dashboard client.
        httpx.get(f"{url}/dashboard", timeout=10).raise_for_status()
        asyncio.run(load(url, args.seconds))
        asyncio.run(shoot(url, args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
