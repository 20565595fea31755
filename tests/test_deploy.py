"""The deployment files: Dockerfile, docker-compose.yml, .env.example, .dockerignore.

No Docker daemon runs here (nor `docker compose`), so the files are checked the
way compose would read them: the compose file against the Compose Specification's
JSON schema (the copy check-jsonschema ships), every command through queuebench's
own parser, ports, settings and extras against the code. The health-check commands
run for real against a server and a worker of the backend under test.

Only the health checks depend on the backend; the rest runs once per pytest run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from dotenv import dotenv_values

from core.cli.main import parser as cli_parser
from core.cli.procs import ROOT, Proc, Server, free_port
from core.settings import BACKENDS, Settings

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
APP_IMAGE = "queuebench:"
# Variables Compose itself reads from .env (not interpolated in the file).
COMPOSE_OWN = {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"}
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}` / `${VAR:-default}` substitution (`$$` is a literal `$`)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    parts = value.split("$$")
    return "$".join(_VAR.sub(lambda m: env.get(m[1]) or m[2] or "", p) for p in parts)


def env_example() -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    return interpolate(raw, env_example() if env is None else env)


def app_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the queuebench image."""
    return {name: s for name, s in doc["services"].items()
            if str(s.get("image", "")).startswith(APP_IMAGE)}


def extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["optional-dependencies"])


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


# -- docker-compose.yml ---------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid_once_interpolated_from_the_env_example() -> None:
    from importlib.resources import files

    import jsonschema

    schema = yaml.safe_load(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
        .read_text())
    for backend in BACKENDS:
        doc = compose({**env_example(), "QUEUE_BACKEND": backend})
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
        assert errors == [], (backend, errors)
        assert {s["image"] for s in app_services(doc).values()} == {f"queuebench:{backend}"}


def test_the_stack_has_every_role_of_the_classic_one() -> None:
    doc = compose()
    assert {"api", "worker", "scheduler", "migrate", "db", "redis", "rabbitmq",
            "flower"} <= set(doc["services"])
    assert doc["services"]["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert doc["services"]["flower"]["profiles"] == ["flower"]
    defaults = {n for n, s in doc["services"].items() if not s.get("profiles")}
    assert defaults == {"api", "worker", "scheduler", "migrate", "db", "redis"}


def test_every_app_service_runs_a_queuebench_command_that_parses() -> None:
    commands = {}
    for name, service in app_services(compose()).items():
        command = service["command"]
        if command[0] == "celery":
            continue  # Flower: the next test
        assert command[0] == "queuebench", (name, command)
        try:
            args = cli_parser().parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{shlex.join(command)}` does not parse")
        commands[name] = (args.command, getattr(args, "action", None))
    assert commands == {"api": ("serve", None), "worker": ("worker", None),
                        "scheduler": ("scheduler", None), "migrate": ("db", "upgrade")}


def test_flower_runs_on_queuebenchs_celery_app_with_flowers_own_options() -> None:
    command = compose()["services"]["flower"]["command"]
    assert command[:4] == ["celery", "-A", "backends.celery_impl.cli", "flower"]
    celery_python = ROOT / ".venv" / "celery" / "bin" / "python"
    options = [arg.removeprefix("--").split("=")[0] for arg in command[4:]]
    check = ("import sys; from backends.celery_impl.cli import app; import flower.options as o; "
             "print(app.main); sys.exit(len(set(sys.argv[1:]) - set(o.options._options)))")
    result = subprocess.run([str(celery_python), "-c", check, *options], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"not Flower options of {options}: {result.stderr}"


def test_the_api_listens_on_all_interfaces_on_the_published_port() -> None:
    doc = compose()
    api = doc["services"]["api"]
    args = cli_parser().parse_args(api["command"][1:])
    assert args.host == "0.0.0.0"  # 127.0.0.1 is unreachable from outside the container
    published, target = api["ports"][0].rsplit(":", 1)
    assert (int(target), int(published)) == (args.port, int(env_example()["API_PORT"]))
    probe_url = api["healthcheck"]["test"][api["healthcheck"]["test"].index("--url") + 1]
    assert urlsplit(probe_url).port == args.port
    exposed = [i["value"] for i in DockerfileParser(str(DOCKERFILE)).structure
               if i["instruction"] == "EXPOSE"]
    assert exposed == [str(args.port)]


def test_app_environment_names_are_settings_and_point_at_the_stacks_services() -> None:
    doc = compose()
    names = setting_names()
    for name, service in app_services(doc).items():
        env = service["environment"]
        assert set(env) <= names, (name, set(env) - names)
        redis_url = urlsplit(env["REDIS_URL"])
        assert (redis_url.hostname, redis_url.port or 6379) == ("redis", 6379)
        database = urlsplit(env["DATABASE_URL"])
        db_env = doc["services"]["db"]["environment"]
        assert database.scheme == "postgresql+asyncpg"
        assert (database.hostname, database.port) == ("db", 5432)
        assert (database.username, database.password, database.path) == (
            db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], f"/{db_env['POSTGRES_DB']}")
        assert env["QUEUE_BACKEND"] == env_example()["QUEUE_BACKEND"]
        Settings(**{k.lower(): v for k, v in env.items()})  # values a Settings accepts


def test_env_example_names_only_settings_and_compose_variables() -> None:
    text = ENV_EXAMPLE.read_text()
    # Commented examples count too: uncommenting one must work.
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    used_by_compose = {m[0] for m in _VAR.findall(COMPOSE.read_text())}
    unknown = named - setting_names() - used_by_compose - COMPOSE_OWN
    assert unknown == set()
    settings = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in named & setting_names() & set(env_example()):
        field = name.lower()  # the example shows the defaults
        assert getattr(settings, field) == getattr(defaults, field), name


def test_the_rabbitmq_broker_url_of_the_env_example_reaches_the_rabbitmq_service() -> None:
    line = re.search(r"^#\s*BROKER_URL=(\S+)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert line, ".env.example shows no BROKER_URL for the rabbitmq profile"
    url = urlsplit(line[1])
    rabbit = compose()["services"]["rabbitmq"]
    assert (url.scheme, url.hostname, url.port) == ("amqp", "rabbitmq", 5672)
    assert (url.username, url.password) == (rabbit["environment"]["RABBITMQ_DEFAULT_USER"],
                                            rabbit["environment"]["RABBITMQ_DEFAULT_PASS"])
    assert re.search(r"^#\s*COMPOSE_PROFILES=rabbitmq$", ENV_EXAMPLE.read_text(), re.MULTILINE)


def test_dependencies_wait_for_health_or_completion_and_migrations_run_first() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            target = services[dep]
            if how["condition"] == "service_healthy":
                check = target.get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (name, dep)
            elif how["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", (name, dep)  # a one-shot job
            if target.get("profiles"):  # not started by default: an optional dependency
                assert how.get("required") is False, (name, dep)
    assert services["api"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker", "scheduler"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_a_stopping_worker_gets_the_time_its_tasks_are_given() -> None:
    grace = compose()["services"]["worker"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > Settings().shutdown_timeout


# -- Dockerfile, .dockerignore ----------------------------------------------------------


def test_dockerfile_builds_a_slim_311_image_as_a_non_root_user() -> None:
    dockerfile = DockerfileParser(str(DOCKERFILE))
    assert dockerfile.baseimage == "python:3.11-slim"
    users = [i["value"] for i in dockerfile.structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert dockerfile.cmd == '["queuebench", "serve", "--host", "0.0.0.0", "--port", "8000"]'


def test_the_backend_build_argument_installs_an_extra_of_pyproject() -> None:
    dockerfile = DockerfileParser(str(DOCKERFILE))
    default = dockerfile.args["BACKEND"]
    run = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] == "RUN")
    assert 'pip install ".[${BACKEND}]"' in run
    accepted = re.search(r"case \"\$BACKEND\" in\s+([\w|]+)\)", run)
    assert accepted, "the Dockerfile does not check BACKEND"
    assert set(accepted[1].split("|")) == set(BACKENDS) <= extras()
    assert default in BACKENDS
    build_arg = yaml.safe_load(COMPOSE.read_text())["x-app"]["build"]["args"]["BACKEND"]
    assert build_arg == "${QUEUE_BACKEND:-" + Settings.model_fields["queue_backend"].default + "}"


def test_the_images_healthcheck_is_the_api_services() -> None:
    dockerfile = DockerfileParser(str(DOCKERFILE))
    check = next(i["value"] for i in dockerfile.structure if i["instruction"] == "HEALTHCHECK")
    test = compose()["services"]["api"]["healthcheck"]["test"]
    assert check.split("CMD", 1)[1].strip() == "[" + ", ".join(f'"{a}"' for a in test[1:]) + "]"


def test_dockerignore_keeps_secrets_envs_and_tests_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".git", "tests"} <= ignored
    copied = [path for i in DockerfileParser(str(DOCKERFILE)).structure
              if i["instruction"] == "COPY" for path in i["value"].split()[:-1]]
    assert copied and not set(copied) & ignored, copied


# -- the health checks, for real --------------------------------------------------------


def healthcheck(service: str) -> list[str]:
    test = compose()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    return [sys.executable, *test[2:]]


def run_check(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=30)


def test_the_api_healthcheck_passes_on_a_live_api_and_fails_without_one(
        server: Server, worker: Proc, base_env: dict[str, str]) -> None:
    command = healthcheck("api")
    url_at = command.index("--url") + 1
    live = run_check([*command[:url_at], server.url], base_env)
    assert live.returncode == 0, live.stdout + live.stderr
    gone = run_check([*command[:url_at], f"http://127.0.0.1:{free_port()}"], base_env)
    assert gone.returncode == 1 and "/health" in gone.stdout


def test_the_worker_healthcheck_sees_this_hosts_worker_and_fails_without_one(
        worker: Proc, base_env: dict[str, str], spare_redis_url: str) -> None:
    live = run_check(healthcheck("worker"), base_env)
    assert live.returncode == 0, live.stdout + live.stderr
    none = run_check(healthcheck("worker"), {**base_env, "REDIS_URL": spare_redis_url})
    assert none.returncode == 1 and "no queuebench worker" in none.stdout


def test_the_scheduler_healthcheck_needs_redis(base_env: dict[str, str]) -> None:
    assert run_check(healthcheck("scheduler"), base_env).returncode == 0
    down = run_check(healthcheck("scheduler"),
                     {**base_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.returncode == 1 and "REDIS_URL" in down.stdout
