#!/usr/bin/env bash
# Create or refresh one virtualenv per queue backend: .venv/celery, .venv/arq, .venv/dramatiq,
# .venv/taskiq.
#
#   scripts/envs.sh [celery] [arq] [dramatiq] [taskiq]     (default: all four)
#
# Each is `uv pip install -e ".[<backend>,dev,bench]"`, so every library is at its newest
# release that fits that backend (arq caps redis-py below 6, kombu needs 6.1+: one shared
# environment cannot hold both). An env whose stamp matches pyproject.toml is left alone,
# so a second run is a quick no-op. Without uv (and when `python3 -m pip install uv` fails)
# it falls back to `python3 -m venv` and pip.
#
# Environment: PYTHON (interpreter to build the envs from, default python3, needs >= 3.11),
#              QB_ENVS_FORCE=1 (reinstall even if the stamp matches).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ALL=(celery arq dramatiq taskiq)
STAMP_NAME=.queuebench-stamp
LOG_DIR="$ROOT/.venv/.logs"

say() { printf 'envs: %s\n' "$*"; }
die() { printf 'envs: ERROR: %s\n' "$*" >&2; exit 1; }

backends=()
for arg in "$@"; do
    case "$arg" in
        celery|arq|dramatiq|taskiq) backends+=("$arg") ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown backend '$arg': choose from ${ALL[*]}" ;;
    esac
done
[ "${#backends[@]}" -eq 0 ] && backends=("${ALL[@]}")

mkdir -p "$LOG_DIR"
# One envs.sh at a time (./run test and ./run bench may start together).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$ROOT/.venv/.lock"
    flock 9
fi

# What an env's stamp must say to count as current: pyproject.toml, the extras, the interpreter.
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "no $PY on PATH: install Python 3.11 or newer (or set PYTHON)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); queuebench needs 3.11 or newer (set PYTHON)"
PY_VERSION="$("$PY" -c 'import platform; print(platform.python_version())')"
PY_EXE="$("$PY" -c 'import sys; print(sys.executable)')"   # the real one, not a pyenv shim
PYPROJECT_HASH="$(sha256sum pyproject.toml | cut -d' ' -f1)"

stamp_for() { printf 'pyproject=%s extras=%s,dev,bench python=%s\n' "$PYPROJECT_HASH" "$1" "$PY_VERSION"; }

# uv: on PATH, as a module of $PY, or installed into $PY with pip; else empty (pip fallback).
UV=()
find_uv() {
    if uv --version >/dev/null 2>&1; then UV=(uv); return; fi
    if "$PY" -m uv --version >/dev/null 2>&1; then UV=("$PY" -m uv); return; fi
    say "installing uv ($PY -m pip install uv)"
    if "$PY" -m pip install -q uv >>"$LOG_DIR/uv-install.log" 2>&1 \
        && "$PY" -m uv --version >/dev/null 2>&1; then
        UV=("$PY" -m uv)
    else
        say "uv could not be installed (see $LOG_DIR/uv-install.log): using python -m venv and pip"
    fi
}

describe() {  # the versions that matter in an env, for the one-line report
    "$1/bin/python" - "$2" <<'PY' 2>/dev/null || echo "?"
import sys
from importlib.metadata import PackageNotFoundError, version
wanted = {"celery": ["celery", "kombu", "redis"], "arq": ["arq", "redis"],
          "dramatiq": ["dramatiq", "redis"],
          "taskiq": ["taskiq", "taskiq-redis", "taskiq-aio-pika", "redis"]}[sys.argv[1]]
out = []
for name in wanted:
    try:
        out.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        out.append(f"{name} missing")
print(", ".join(out))
PY
}

build() {  # build BACKEND : (re)create .venv/BACKEND and install the project into it
    local b="$1" venv=".venv/$1" log="$LOG_DIR/$1.log"
    : >"$log"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        rm -rf "$venv"
        if [ "${#UV[@]}" -gt 0 ]; then
            "${UV[@]}" venv -q --python "$PY_EXE" "$venv" >>"$log" 2>&1
        else
            "$PY_EXE" -m venv "$venv" >>"$log" 2>&1
        fi
    fi
    # --compile-bytecode: every worker, server and test process starts from .pyc files even
    # where PYTHONDONTWRITEBYTECODE is set (else each one compiles SQLAlchemy & co. again).
    if [ "${#UV[@]}" -gt 0 ]; then
        "${UV[@]}" pip install --compile-bytecode --python "$venv/bin/python" -e ".[$b,dev,bench]" >>"$log" 2>&1
    else
        { "$venv/bin/python" -m pip install -q --upgrade pip \
            && "$venv/bin/python" -m pip install -q -e ".[$b,dev,bench]"; } >>"$log" 2>&1
    fi
}

for b in "${backends[@]}"; do
    venv=".venv/$b"
    want="$(stamp_for "$b")"
    if [ "${QB_ENVS_FORCE:-0}" != 1 ] && [ -x "$venv/bin/queuebench" ] \
        && [ "$(cat "$venv/$STAMP_NAME" 2>/dev/null)" = "$want" ] \
        && "$venv/bin/python" -c '' >/dev/null 2>&1; then
        say "$b: up to date ($venv: $(describe "$venv" "$b"))"
        continue
    fi
    [ "${#UV[@]}" -gt 0 ] || [ -n "${UV_CHECKED:-}" ] || { find_uv; UV_CHECKED=1; }
    start=$SECONDS
    if ! build "$b"; then
        tail -n 20 "$LOG_DIR/$b.log" >&2 || true
        die "$b: installing $venv failed (full log: $LOG_DIR/$b.log)"
    fi
    printf '%s\n' "$want" >"$venv/$STAMP_NAME"
    say "$b: installed in $((SECONDS - start))s ($venv: $(describe "$venv" "$b"))"
done
