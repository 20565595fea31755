#!/usr/bin/env bash
# queuebench across network hosts made on this machine with `ip netns` (needs root):
# Redis on one host, the API on another, a worker on each of two more, a client on a
# fifth, all plugged into a bridge in a switch namespace of its own (nothing is added
# to this machine's own network namespace):
#
#   qbmh-redis 10.77.0.2   redis-server (its own, inside the namespace)
#   qbmh-api   10.77.0.3   queuebench db upgrade; queuebench serve :8000 (SQLite on the host)
#   qbmh-w1    10.77.0.11  queuebench worker
#   qbmh-w2    10.77.0.12  queuebench worker
#   qbmh-client 10.77.0.100  python -m bench.multihost (the check)
#
# Each host also has its own hostname (a UTS namespace), so a task's record names the
# host that ran it (worker = host:pid).
#
#   scripts/multihost.sh up BACKEND      make the hosts and start the stack
#   scripts/multihost.sh check BACKEND   submit tasks, cut w1 off mid-run, print JSON figures
#   scripts/multihost.sh cut HOST        set HOST's link down (at the switch)
#   scripts/multihost.sh down            kill every process in the hosts, delete them
#   scripts/multihost.sh run BACKEND     up, check, down (down also on failure or ^C)
#
# Environment: REDELIVERY_AFTER (default 30, the setting's), QB_MH_TASKS (40),
# QB_MH_STATE (logs and the API's database; default /tmp/qbmh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/multihost.sh"
P=qbmh
NET=10.77.0
STATE="${QB_MH_STATE:-/tmp/$P}"
declare -A ADDR=([redis]=2 [api]=3 [w1]=11 [w2]=12 [client]=100)
HOSTS=(redis api w1 w2 client)

# One multi-host run at a time on a machine: a second waits (its `up` would tear the
# first one's hosts down). Started processes do not inherit the lock (9>&-).
lock() {
    exec 9>"/run/lock/$P.lock"
    flock -w 600 9 || die "another multi-host run holds /run/lock/$P.lock"
}

say() { printf 'multihost: %s\n' "$*" >&2; }
die() { printf 'multihost: ERROR: %s\n' "$*" >&2; exit 1; }

preflight() {
    [ "$(id -u)" -eq 0 ] || die "needs root (ip netns)"
    local tool
    for tool in ip unshare setsid flock redis-server; do
        command -v "$tool" >/dev/null 2>&1 || die "no '$tool' on PATH"
    done
}

python_of() {
    case "${1:-}" in celery|arq|dramatiq|taskiq) ;; *) die "backend must be celery, arq, dramatiq or taskiq, not '${1:-}'" ;; esac
    local py="$ROOT/.venv/$1/bin/python"
    [ -x "$py" ] || die "no $py: run ./run envs $1"
    echo "$py"
}

# start HOST NAME COMMAND...: run COMMAND on HOST (its network and hostname), in a
# session of its own, output to $STATE/NAME.log.
start() {
    local host="$1" name="$2"; shift 2
    setsid ip netns exec "$P-$host" unshare --uts -- \
        sh -c 'hostname "$0" && exec "$@"' "$P-$host" "$@" \
        >"$STATE/$name.log" 2>&1 </dev/null 9>&- &
    echo "$!" >"$STATE/$name.pid"
    disown "$!"  # down kills it; no "Killed" notice from this shell
}

on() { local host="$1"; shift; ip netns exec "$P-$host" "$@"; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local until=$((SECONDS + $1)) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$until" ] || die "$what not up within the time; logs in $STATE"
        sleep 0.2
    done
}

cmd_up() {
    preflight
    local py; py="$(python_of "${1:-}")"
    cmd_down 2>/dev/null || true
    rm -rf "$STATE"; mkdir -p "$STATE"
    ip netns add "$P-sw"
    ip -n "$P-sw" link add br0 type bridge
    ip -n "$P-sw" link set br0 up
    local h
    for h in "${HOSTS[@]}"; do
        ip netns add "$P-$h"
        ip -n "$P-sw" link add "$h" type veth peer name eth0 netns "$P-$h"
        ip -n "$P-sw" link set "$h" master br0 up
        ip -n "$P-$h" addr add "$NET.${ADDR[$h]}/24" dev eth0
        ip -n "$P-$h" link set eth0 up
        ip -n "$P-$h" link set lo up
    done
    say "hosts up: $(for h in "${HOSTS[@]}"; do printf '%s=%s.%s ' "$h" "$NET" "${ADDR[$h]}"; done)"

    local redis_url="redis://$NET.${ADDR[redis]}:6379/0"
    start redis redis redis-server --bind "$NET.${ADDR[redis]}" --port 6379 --save "" \
        --appendonly no --protected-mode no
    wait_for 20 "redis on $P-redis" on client redis-cli -h "$NET.${ADDR[redis]}" ping

    export PYTHONPATH="$ROOT" PYTHONUNBUFFERED=1 QUEUE_BACKEND="$1" REDIS_URL="$redis_url"
    export DATABASE_URL="sqlite+aiosqlite:///$STATE/api.db"
    export REDELIVERY_AFTER="${REDELIVERY_AFTER:-30}"
    (cd "$STATE" && on api "$py" -m core.cli.main db upgrade) >"$STATE/migrate.log" 2>&1 \
        || die "migrations failed: $(tail -3 "$STATE/migrate.log")"
    start api api "$py" -m core.cli.main serve --host "$NET.${ADDR[api]}" --port 8000 \
        --no-access-log --log-level warning
    start w1 w1 "$py" -m core.cli.main worker --concurrency 4
    start w2 w2 "$py" -m core.cli.main worker --concurrency 4
    wait_for 60 "the API on $P-api" on client "$py" -c \
        "import urllib.request; urllib.request.urlopen('http://$NET.${ADDR[api]}:8000/openapi.json', timeout=2)"
    say "stack up ($1, REDELIVERY_AFTER=$REDELIVERY_AFTER): API http://$NET.${ADDR[api]}:8000, $redis_url"
}

cmd_check() {
    preflight
    local py; py="$(python_of "${1:-}")"
    PYTHONPATH="$ROOT" REDELIVERY_AFTER="${REDELIVERY_AFTER:-30}" on client "$py" -m bench.multihost \
        --api "http://$NET.${ADDR[api]}:8000" --redis "redis://$NET.${ADDR[redis]}:6379/0" \
        --hosts "$P-w1,$P-w2" --cut "$SELF cut w1" --tasks "${QB_MH_TASKS:-40}" 9>&-
}

cmd_cut() {
    [ -n "${ADDR[${1:-}]:-}" ] || die "cut: no host '${1:-}' (${HOSTS[*]})"
    ip -n "$P-sw" link set "$1" down
    say "cut $P-$1 off (its switch port down) at $(date +%T.%N | cut -c1-12)"
}

# Every process in each host (by its pid: `ip netns pids`), then the namespaces.
cmd_down() {
    local ns pids left=() n
    for ns in "${HOSTS[@]/#/$P-}" "$P-sw"; do
        [ -e "/run/netns/$ns" ] || continue
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        [ -n "$pids" ] && kill -TERM $pids 2>/dev/null || true
        left+=("$ns")
    done
    for n in $(seq 50); do
        pids=""
        for ns in "${left[@]}"; do pids+="$(ip netns pids "$ns" 2>/dev/null || true) "; done
        [ -z "${pids// /}" ] && break
        [ "$n" -ge 25 ] && kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done
    for ns in "${left[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    [ "${#left[@]}" -eq 0 ] || say "down: deleted ${left[*]}; logs in $STATE"
}

cmd_run() {
    trap cmd_down EXIT
    trap 'exit 130' INT TERM
    cmd_up "$@"
    cmd_check "$@"
}

[ "$#" -gt 0 ] || { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
command="$1"; shift
case "$command" in
    up|run) preflight; lock; "cmd_$command" "$@" ;;
    check) cmd_check "$@" ;;
    cut) cmd_cut "$@" ;;
    down) preflight; lock; cmd_down ;;
    -h|--help|help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$command' (up, check, cut, down, run)" ;;
esac
