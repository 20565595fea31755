"""The `queuebench` command (docs/deployment.md: serve, worker, scheduler, db, bench)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from core.backend import DEFAULT_QUEUE, backend_class
from core.errors import ConfigError
from core.settings import BACKENDS, Settings
from core.tasks.features import Support


def load_settings(backend: str | None) -> Settings:
    if backend:
        os.environ["QUEUE_BACKEND"] = backend  # worker children read it too
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{field}: {first['msg']}") from None


def check_redis(settings: Settings) -> None:
    from redis import Redis
    from redis.exceptions import RedisError

    from core.brokers import amqp

    if amqp.is_amqp(settings.broker):
        if "amqp" not in backend_class(settings.queue_backend).brokers:
            raise ConfigError(f"BROKER_URL={amqp.shown(settings.broker)}: "
                              f"{settings.queue_backend} needs "
                              "Redis as its broker (redis://...); RabbitMQ serves celery, "
                              "dramatiq and taskiq")
        reason = amqp.check(settings.broker)
        if reason:
            raise ConfigError(f"BROKER_URL={amqp.shown(settings.broker)}: RabbitMQ does not "
                              f"answer ({reason})")
    for name, url in (("REDIS_URL", settings.redis_url), ("BROKER_URL", settings.broker)):
        if not url.startswith(("redis://", "rediss://", "unix://")):
            continue
        try:
            Redis.from_url(url, socket_connect_timeout=3).ping()
        except (RedisError, ValueError) as exc:
            raise ConfigError(f"{name}={url}: Redis does not answer ({exc})") from None


def check_database(settings: Settings) -> None:
    from core.db.migrate import check_migrated

    check_migrated(settings.database_url)


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from core.api import create_app
    from core.schedule.entries import schedule_for

    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    settings = load_settings(args.backend)
    backend = backend_class(settings.queue_backend)
    schedule_for(settings.schedule_file, backend.support(), settings.queue_backend)
    check_redis(settings)
    check_database(settings)
    if args.workers == 1:
        uvicorn.run(create_app(settings), host=args.host, port=args.port,
                    log_level=args.log_level, access_log=args.access_log)
        return
    # Each uvicorn process builds its own app from the environment, which
    # load_settings has given QUEUE_BACKEND.
    uvicorn.run("core.api.app:create_app", factory=True, workers=args.workers,
                host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log)


def cmd_worker(args: argparse.Namespace) -> None:
    settings = load_settings(args.backend)
    backend = backend_class(settings.queue_backend)
    check_redis(settings)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] or [DEFAULT_QUEUE]
    if args.concurrency is None:  # what the library's own worker runs by default
        args.concurrency = backend.default_concurrency(os.cpu_count() or 2)
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.processes is not None and args.processes < 1:
        raise ConfigError("--processes must be at least 1")
    backend.run_worker(settings, args.concurrency, queues, args.processes)


def cmd_scheduler(args: argparse.Namespace) -> None:
    from core.schedule.entries import schedule_for

    settings = load_settings(args.backend)
    backend = backend_class(settings.queue_backend)
    schedule = schedule_for(settings.schedule_file, backend.support(), settings.queue_backend)
    check_redis(settings)
    if not args.native:
        from core.schedule.scheduler import run_scheduler

        run_scheduler(settings, backend, schedule)
        return
    if backend.support()["periodic"] is not Support.NATIVE:
        raise ConfigError(f"--native: {settings.queue_backend} has no scheduler of its own; "
                          "run `queuebench scheduler` without --native (core's scheduler)")
    backend.run_native_scheduler(settings, schedule)


def cmd_db(args: argparse.Namespace) -> None:
    from core.db import migrate, safe_url

    url = load_settings(None).database_url
    if args.action == "current":
        at = migrate.current(url)
        heads = migrate.heads()
        print(", ".join(f"{rev}{' (head)' if rev in heads else ''}" for rev in sorted(at))
              or f"{safe_url(url)}: not migrated")
    elif args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    else:
        migrate.downgrade(url, args.revision)


def cmd_history(args: argparse.Namespace) -> None:
    import asyncio

    from core.history.writer import run_standalone

    settings = load_settings(None)
    check_redis(settings)
    check_database(settings)
    asyncio.run(run_standalone(settings))


def cmd_demo(args: argparse.Namespace) -> None:
    from core.cli.demo import main as demo_main

    demo_main(_rest(args))


def _rest(args: argparse.Namespace) -> list[str]:
    rest = list(args.rest)
    return rest[1:] if rest[:1] == ["--"] else rest


def cmd_bench(args: argparse.Namespace) -> None:
    rest = _rest(args)
    if rest[:1] == ["compare"]:  # `queuebench bench compare A B`: exit 1 on a regression
        from bench.compare import main as compare_main

        sys.exit(compare_main(rest[1:]))
    from bench.cli import main as bench_main

    bench_main(rest)


def cmd_soak(args: argparse.Namespace) -> None:
    from bench.soak import main as soak_main

    soak_main(_rest(args))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="queuebench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API under uvicorn")
    serve.add_argument("--backend", choices=BACKENDS)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.add_argument("--workers", type=int, default=1,
                       help="uvicorn processes, each with its own app and Redis pool")
    serve.set_defaults(run=cmd_serve)

    worker = sub.add_parser("worker", help="run the backend's own worker on the shared tasks")
    worker.add_argument("--backend", choices=BACKENDS)
    worker.add_argument("--concurrency", type=int, default=None,
                        help="tasks in flight at once in this worker, over all its queues "
                        "and processes (processes, threads, max_jobs or async tasks); "
                        "default: the library's own (Celery one per CPU, Dramatiq 8 per "
                        "CPU, arq 10, taskiq 2 processes x 100)")
    worker.add_argument("--queues", default=DEFAULT_QUEUE, help="comma-separated queue names")
    worker.add_argument("--processes", type=int, default=None,
                        help="OS processes the concurrency is spread over (default: Celery "
                        "prefork, one per slot; Dramatiq the largest divisor of the "
                        "concurrency not above the CPUs, taskiq not above 2; arq 1); 1 "
                        "gives Celery's threads pool and one Dramatiq or taskiq process; "
                        "it must divide the concurrency")
    worker.set_defaults(run=cmd_worker)

    scheduler = sub.add_parser("scheduler", help="fire the periodic schedule (SCHEDULE_FILE), "
                               "once per tick however many schedulers run")
    scheduler.add_argument("--backend", choices=BACKENDS)
    scheduler.add_argument("--native", action="store_true",
                           help="the library's own scheduler from the same schedule: Celery "
                           "beat, arq cron jobs, taskiq's scheduler (Dramatiq has "
                           "none)")
    scheduler.set_defaults(run=cmd_scheduler)

    db = sub.add_parser("db", help="database migrations (Alembic) for DATABASE_URL")
    db_sub = db.add_subparsers(dest="action", required=True)
    upgrade = db_sub.add_parser("upgrade", help="migrate up to REVISION (default: head)")
    upgrade.add_argument("revision", nargs="?")
    downgrade = db_sub.add_parser("downgrade", help="migrate down to REVISION ('base': empty)")
    downgrade.add_argument("revision")
    db_sub.add_parser("current", help="the revision the database is at")
    db.set_defaults(run=cmd_db)

    history = sub.add_parser("history", help="run the task history writer on its own")
    history.set_defaults(run=cmd_history)

    demo = sub.add_parser("demo", help="each backend's worker and API, a few tasks, a table",
                          add_help=False)
    demo.add_argument("rest", nargs=argparse.REMAINDER)
    demo.set_defaults(run=cmd_demo)

    bench = sub.add_parser("bench", help="the side-by-side benchmark", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(run=cmd_bench)

    soak = sub.add_parser("soak", help="sustained mixed load through the API: lost tasks, "
                          "latency and memory over time", add_help=False)
    soak.add_argument("rest", nargs=argparse.REMAINDER)
    soak.set_defaults(run=cmd_soak)
    return p


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("bench", "demo", "soak"):
        # Their own parsers take every argument (argparse's REMAINDER drops a leading
        # option such as `bench --profile full`).
        argv = [argv[0], "--", *argv[1:]]
    args = parser().parse_args(argv)
    level = os.environ.get("LOG_LEVEL", "INFO").upper()  # Settings.log_level, read early
    logging.basicConfig(level=level if level in _LEVELS else "INFO",
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Alembic announces its plugins at INFO whenever it is imported.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        args.run(args)
    except ConfigError as exc:
        print(f"queuebench: error: {exc.detail}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
