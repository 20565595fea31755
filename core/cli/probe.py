"""Container health checks (the Dockerfile's HEALTHCHECK, docker-compose.yml):
`python -m core.cli.probe api|worker|redis`; exit 0 healthy, 1 not, with one line why.

- api: `GET /health` answers and says Redis and the database are up. Workers being
  down makes `/health` a 503 but is not this container's fault: it stays healthy.
- worker: a `queuebench worker` process on this host (container) beat within three
  heartbeats (core/worker/heartbeat.py).
- redis: REDIS_URL answers (the scheduler's one dependency).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import redis

from core.settings import Settings
from core.store.keys import WORKERS_KEY

TIMEOUT = 4.0


def api(url: str) -> str | None:
    """Why the API at `url` is unhealthy, or None."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=TIMEOUT) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as exc:  # 503: read which part is down
        if exc.code != 503:
            return f"{url}/health answered {exc.code}"
        body = json.load(exc)
    except (OSError, ValueError) as exc:
        return f"{url}/health: {exc}"
    down = [part for part in ("redis", "database") if body.get(part) is not True]
    return f"down: {', '.join(down)}" if down else None


def worker(settings: Settings) -> str | None:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=TIMEOUT,
                                  socket_connect_timeout=TIMEOUT)
    try:
        beats = client.hgetall(WORKERS_KEY)
    except redis.RedisError as exc:
        return f"REDIS_URL: {exc}"
    finally:
        client.close()
    host, fresh = socket.gethostname(), time.time() - 3 * settings.worker_heartbeat
    for raw in beats.values():
        info = json.loads(raw)
        if (info.get("host"), info.get("role")) == (host, "worker") \
                and info.get("seen_at", 0) >= fresh:
            return None
    return f"no queuebench worker on {host} beat in the last {3 * settings.worker_heartbeat}s"


def redis_up(settings: Settings) -> str | None:
    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=TIMEOUT).ping()
    except redis.RedisError as exc:
        return f"REDIS_URL: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.cli.probe", description=__doc__)
    p.add_argument("role", choices=("api", "worker", "redis"))
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the API (role api)")
    args = p.parse_args(argv)
    if args.role == "api":
        problem = api(args.url.rstrip("/"))
    else:
        settings = Settings()
        problem = worker(settings) if args.role == "worker" else redis_up(settings)
    print(f"{args.role}: {problem or 'healthy'}")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
