#!/usr/bin/env bash
# Make sure the services queuebench needs answer: Redis, PostgreSQL, RabbitMQ.
#
#   scripts/services.sh [redis] [postgres] [rabbitmq]     (default: redis postgres)
#
# For each service named:
#   - it already answers                  -> nothing to do;
#   - installed but not running            -> start it;
#   - not installed, root with apt-get     -> apt-get update (once), install, start;
#   - otherwise                            -> one line saying what to do, exit non-zero.
# Only local services on their default port (127.0.0.1/localhost/::1) are managed.
# If REDIS_URL, DATABASE_URL (postgresql://...) or BROKER_URL (amqp://...) point
# anywhere else, the service there is only checked and reported on.
#
# Environment: SERVICES_TIMEOUT (seconds to wait for a service to come up, default 90).
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

TIMEOUT="${SERVICES_TIMEOUT:-90}"
LOG_DIR="${TMPDIR:-/tmp}/queuebench-services"
mkdir -p "$LOG_DIR"
APT_UPDATED=0
FAILED=()

say() { printf 'services: %s\n' "$*"; }
fail() {  # fail SERVICE MESSAGE: one clear line on stderr; go on with the next service
    printf 'services: %s: ERROR: %s\n' "$1" "$2" >&2
    FAILED+=("$1")
}
is_root() { [ "$(id -u)" -eq 0 ]; }
is_local() { case "$1" in ""|localhost|127.0.0.1|::1|"[::1]") return 0 ;; *) return 1 ;; esac; }

# parse_url URL DEFAULT_PORT -> sets U_HOST U_PORT U_PATH (no leading slash) U_USER U_PASS
parse_url() {
    local url="$1" rest hostport
    rest="${url#*://}"
    U_PASS=""
    if [[ "$rest" == *@* ]]; then       # user[:password]@
        local auth="${rest%@*}"
        U_USER="${auth%%:*}"; [[ "$auth" == *:* ]] && U_PASS="${auth#*:}"
        rest="${rest##*@}"
    else
        U_USER=""
    fi
    hostport="${rest%%/*}"
    if [ "$hostport" = "$rest" ]; then U_PATH=""; else U_PATH="${rest#*/}"; U_PATH="${U_PATH%%\?*}"; fi
    if [[ "$hostport" == \[* ]]; then   # [ipv6]:port
        U_HOST="${hostport%%]*}"; U_HOST="${U_HOST#[}"
        U_PORT="${hostport#*]}"; U_PORT="${U_PORT#:}"
    elif [[ "$hostport" == *:* ]]; then
        U_HOST="${hostport%%:*}"; U_PORT="${hostport##*:}"
    else
        U_HOST="$hostport"; U_PORT=""
    fi
    U_PORT="${U_PORT:-$2}"
    U_HOST="${U_HOST:-127.0.0.1}"
}

tcp_open() {  # tcp_open HOST PORT
    # shellcheck disable=SC2016  # $0 and $1 expand in the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# wait_for CHECK-COMMAND... : poll until the check passes or the deadline is reached
wait_for() {
    local deadline=$((SECONDS + TIMEOUT))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
        sleep 0.3
    done
}

apt_install() {  # apt_install PACKAGE... ; log in $LOG_DIR/apt.log
    local log="$LOG_DIR/apt.log"
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update (log: $log)"
        apt-get update -q >>"$log" 2>&1 || return 1
        APT_UPDATED=1
    fi
    say "apt-get install $* (log: $log)"
    apt-get install -y -q "$@" >>"$log" 2>&1
}

can_apt() { is_root && command -v apt-get >/dev/null 2>&1; }

# ---------------------------------------------------------------- Redis
redis_ping() {  # redis_ping URL : PONG from redis-cli, or an open port without redis-cli
    parse_url "$1" 6379
    if command -v redis-cli >/dev/null 2>&1; then
        local tls=()
        [[ "$1" == rediss://* ]] && tls=(--tls)
        [ "$(REDISCLI_AUTH="$U_PASS" timeout 3 redis-cli "${tls[@]}" -h "$U_HOST" -p "$U_PORT" \
            ping 2>/dev/null)" = "PONG" ]
    else
        tcp_open "$U_HOST" "$U_PORT"
    fi
}

redis_start() {
    local dir=/var/lib/redis logdir=/var/log/redis
    mkdir -p "$dir" "$logdir" 2>/dev/null || true
    if [ ! -w "$dir" ] || [ ! -w "$logdir" ]; then   # not root: keep it in a folder of ours
        dir="$LOG_DIR/redis"; logdir="$LOG_DIR/redis"; mkdir -p "$dir"
    fi
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir "$dir" --logfile "$logdir/ci.log" >>"$LOG_DIR/redis-start.log" 2>&1
}

ensure_redis() {
    local url="${REDIS_URL:-redis://localhost:6379/0}"
    parse_url "$url" 6379
    local where="$U_HOST:$U_PORT"
    if redis_ping "$url"; then say "redis: running at $where"; return 0; fi
    if ! is_local "$U_HOST" || [ "$U_PORT" != 6379 ]; then
        fail redis "Redis at $where (REDIS_URL) does not answer: start it there, or unset REDIS_URL to use a local one on 127.0.0.1:6379"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        if ! can_apt; then
            fail redis "Redis is not installed and cannot be installed here (needs root and apt-get): install redis-server, or set REDIS_URL to a running Redis"
            return 0
        fi
        apt_install redis-server redis-tools \
            || { fail redis "apt-get install redis-server failed: see $LOG_DIR/apt.log"; return 0; }
    fi
    if tcp_open 127.0.0.1 6379; then
        fail redis "something listens on 127.0.0.1:6379 but Redis at $where does not answer PING (wrong password or host in REDIS_URL?): check it with redis-cli"
        return 0
    fi
    say "redis: starting on 127.0.0.1:6379"
    redis_start || true
    if wait_for redis_ping "$url"; then
        say "redis: running at $where"
    else
        fail redis "Redis did not answer on $where within ${TIMEOUT}s after starting it: see $LOG_DIR/redis-start.log and /var/log/redis/ci.log"
    fi
}

# ---------------------------------------------------------------- PostgreSQL
PG_HOST=127.0.0.1; PG_PORT=5432; PG_DB="test"; PG_USER="postgres"

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3; }
pg_connect() {  # pg_connect DB : the tests' URL works (user postgres, TCP, no password)
    PGCONNECT_TIMEOUT=3 psql -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$1" -tAc 'select 1' \
        2>/dev/null | grep -qx 1
}
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

pg_start() {
    local ver
    ver="$(pg_version)"
    if [ -z "$ver" ] || [ ! -d "/etc/postgresql/$ver/main" ]; then
        ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)"
        if [ -n "$ver" ]; then
            pg_createcluster "$ver" main >>"$LOG_DIR/postgres-start.log" 2>&1 || true
        fi
    fi
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >>"$LOG_DIR/postgres-start.log" 2>&1
}

pg_trust_local() {  # only after a fresh install: trust on 127.0.0.1 and ::1
    local hba
    hba="/etc/postgresql/$(pg_version)/main/pg_hba.conf"
    [ -f "$hba" ] || return 1
    sed -i -E 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+).*/\1trust/' "$hba"
    grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba" \
        || printf 'host all all 127.0.0.1/32 trust\n' >>"$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload >>"$LOG_DIR/postgres-start.log" 2>&1 || true
}

pg_createdb() {  # pg_createdb DB : over TCP, else as the postgres OS user
    pg_connect "$1" && return 0
    createdb -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$1" >/dev/null 2>&1 && return 0
    is_root && su postgres -c "createdb -p $PG_PORT '$1'" >/dev/null 2>&1
    pg_connect "$1"
}

ensure_postgres() {
    local url="${DATABASE_URL:-}" fresh=0
    case "$url" in
        postgres*://*)
            parse_url "$url" 5432
            PG_HOST="$U_HOST"; PG_PORT="$U_PORT"; PG_DB="${U_PATH:-test}"
            [ -n "$U_USER" ] && PG_USER="$U_USER"
            [ -n "$U_PASS" ] && export PGPASSWORD="$U_PASS"
            ;;
    esac
    [ "$PG_HOST" = localhost ] && PG_HOST=127.0.0.1
    local where="$PG_HOST:$PG_PORT"
    local managed=1
    if ! is_local "$PG_HOST" || [ "$PG_PORT" != 5432 ]; then managed=0; fi

    if [ "$managed" -eq 0 ]; then
        if command -v pg_isready >/dev/null 2>&1 && pg_ready || tcp_open "$PG_HOST" "$PG_PORT"; then
            say "postgres: running at $where (DATABASE_URL, not managed here)"
        else
            fail postgres "PostgreSQL at $where (DATABASE_URL) does not answer: start it there, or point DATABASE_URL at a running server"
        fi
        return 0
    fi

    if ! { command -v pg_isready >/dev/null 2>&1 && pg_ready; }; then
        if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
            if ! can_apt; then
                fail postgres "PostgreSQL is not installed and cannot be installed here (needs root and apt-get): install postgresql, or set DATABASE_URL to a running server"
                return 0
            fi
            apt_install postgresql postgresql-client \
                || { fail postgres "apt-get install postgresql failed: see $LOG_DIR/apt.log"; return 0; }
            fresh=1
        fi
        if ! is_root && [ "$(id -un)" != postgres ]; then
            fail postgres "PostgreSQL is installed but not running, and only root or postgres can start it: run 'sudo pg_ctlcluster $(pg_version) main start'"
            return 0
        fi
        say "postgres: starting on $where"
        pg_start || true
        if ! wait_for pg_ready; then
            fail postgres "PostgreSQL did not answer on $where within ${TIMEOUT}s after starting it: see $LOG_DIR/postgres-start.log"
            return 0
        fi
        if [ "$fresh" -eq 1 ]; then   # a fresh install: trust on 127.0.0.1, then wait for the reload
            pg_trust_local || true
            wait_for pg_connect postgres || true
        fi
    fi

    local db
    for db in test "$PG_DB"; do
        if ! pg_createdb "$db"; then
            fail postgres "PostgreSQL on $where answers but 'psql -h $PG_HOST -U $PG_USER -d $db' does not work without a password: allow trust for 127.0.0.1 in pg_hba.conf and create database $db"
            return 0
        fi
    done
    say "postgres: running at $where (user $PG_USER, database test$([ "$PG_DB" != test ] && echo ", $PG_DB"))"
}

# ---------------------------------------------------------------- RabbitMQ
ensure_rabbitmq() {
    local url="${BROKER_URL:-}" host=127.0.0.1 port=5672
    case "$url" in
        amqp*://*) parse_url "$url" 5672; host="$U_HOST"; port="$U_PORT" ;;
    esac
    [ "$host" = localhost ] && host=127.0.0.1
    local where="$host:$port"
    if tcp_open "$host" "$port"; then say "rabbitmq: running at $where"; return 0; fi
    if ! is_local "$host" || [ "$port" != 5672 ]; then
        fail rabbitmq "RabbitMQ at $where (BROKER_URL) does not answer: start it there, or point BROKER_URL at a running broker"
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        if ! can_apt; then
            fail rabbitmq "RabbitMQ is not installed and cannot be installed here (needs root and apt-get): install rabbitmq-server, or set BROKER_URL to a running broker"
            return 0
        fi
        apt_install rabbitmq-server \
            || { fail rabbitmq "apt-get install rabbitmq-server failed: see $LOG_DIR/apt.log"; return 0; }
    fi
    say "rabbitmq: starting on $where"
    rabbitmq-server -detached >>"$LOG_DIR/rabbitmq-start.log" 2>&1 || true
    if wait_for tcp_open "$host" "$port"; then
        say "rabbitmq: running at $where"
    else
        fail rabbitmq "RabbitMQ did not answer on $where within ${TIMEOUT}s after starting it: see $LOG_DIR/rabbitmq-start.log"
    fi
}

# ---------------------------------------------------------------- main
[ "$#" -eq 0 ] && set -- redis postgres
for svc in "$@"; do
    case "$svc" in
        redis) ensure_redis ;;
        postgres|postgresql|pg) ensure_postgres ;;
        rabbitmq|rabbit|amqp) ensure_rabbitmq ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "$svc" "unknown service '$svc': choose from redis, postgres, rabbitmq" ;;
    esac
done
[ "${#FAILED[@]}" -eq 0 ]
