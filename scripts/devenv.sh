#!/usr/bin/env bash
# Runs a command next to a throwaway PostgreSQL cluster and a mock Kafka
# cluster, and always tears both down (on success, failure, Ctrl-C, SIGTERM).
#
#   scripts/devenv.sh [--bin PATH] [--keep] [--durable] -- COMMAND [ARGS...]
#
# PostgreSQL: initdb + pg_ctl from the Debian postgresql package, run as the
# unprivileged user `postgres` when invoked as root (PostgreSQL refuses to run
# as root), listening only on a unix socket in a fresh temp directory.
# Kafka: `understudy mock-kafka` in its own process.
#
# The command sees:
#   UNDERSTUDY_BIN, UNDERSTUDY_TEST_PG_CTL (pg_ctl for this cluster: start|stop), UNDERSTUDY_TEST_PG_ADMIN (superuser conninfo),
#   UNDERSTUDY_TEST_PG_HOST / _PORT / _USER, UNDERSTUDY_TEST_BOOTSTRAP,
#   UNDERSTUDY_TEST_TMP, and for the daemon itself UNDERSTUDY_PG_DSN (database
#   "understudy") and UNDERSTUDY_KAFKA_BROKERS.
#
# --keep leaves the directory (data, logs) in place; --durable keeps fsync on
# (benchmarks); by default fsync is off because the data is thrown away.
# synchronous_commit is always on, so a COMMIT that was acknowledged survives
# a PostgreSQL crash (pg_ctl stop -m immediate), as the crash tests need.
set -euo pipefail

bin=build/understudy
keep=0
durable=0
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bin=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --durable) durable=1; shift ;;
    --) shift; break ;;
    *) echo "usage: scripts/devenv.sh [--bin PATH] [--keep] [--durable] -- COMMAND [ARGS...]" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "devenv: no command given" >&2; exit 2; }
[ -x "$bin" ] || { echo "devenv: $bin is not built (run make)" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || {
    echo "devenv: initdb not found under /usr/lib/postgresql/*/bin (scripts/deps.sh installs postgresql)" >&2
    exit 2
}

dir=$(mktemp -d /tmp/understudy-env.XXXXXX)
chmod 755 "$dir"
mkdir -p "$dir/pg" "$dir/sock" "$dir/tmp"
chmod 1777 "$dir/tmp"
touch "$dir/pg.log"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$dir/pg" "$dir/sock" "$dir/pg.log"
    as_pg=(runuser -u postgres --)
fi
chmod 700 "$dir/pg"
port=54329
mkpid=""

log() { printf 'devenv: %s\n' "$*" >&2; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$mkpid" ] && kill -0 "$mkpid" 2>/dev/null; then
        kill -TERM "$mkpid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$mkpid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$mkpid" 2>/dev/null || true
        wait "$mkpid" 2>/dev/null || true
    fi
    if [ -f "$dir/pg/postmaster.pid" ]; then
        (cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -m fast -w -t 30 stop >/dev/null 2>&1) ||
            (cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1) || true
    fi
    if [ "$rc" -ne 0 ]; then
        mkdir -p build/test-logs 2>/dev/null && cp -f "$dir/pg.log" "$dir/mock-kafka.log" build/test-logs/ 2>/dev/null || true
        log "exit $rc; PostgreSQL and mock Kafka logs copied to build/test-logs/"
    fi
    if [ "$keep" -eq 1 ]; then
        log "kept $dir"
    else
        rm -rf "$dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

fsync=off
[ "$durable" -eq 1 ] && fsync=on
(cd / && "${as_pg[@]}" "$pgbin/initdb" -D "$dir/pg" -U understudy -A trust -E UTF8 --locale=C \
    --no-sync >"$dir/initdb.log" 2>&1) || { cat "$dir/initdb.log" >&2; log "initdb failed"; exit 1; }
pgopts="-k $dir/sock -c listen_addresses= -p $port -c max_connections=200"
# synchronous_commit stays on: the crash tests stop PostgreSQL with
# `-m immediate`, and an acknowledged COMMIT must survive that.  fsync=off
# only gives up durability against an operating-system crash.
pgopts="$pgopts -c fsync=$fsync -c full_page_writes=$fsync -c synchronous_commit=on"
(cd / && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -t 60 -o "$pgopts" \
    start >/dev/null) || { tail -n 20 "$dir/pg.log" >&2; log "PostgreSQL did not start"; exit 1; }

# A pg_ctl wrapper for tests that stop and restart the cluster (outages).
cat >"$dir/pgctl" <<EOS
#!/bin/sh
# Usage: pgctl start | stop [-m fast|immediate]
cd / && exec ${as_pg[*]} "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -t 60 -o "$pgopts" "\$@"
EOS
chmod 755 "$dir/pgctl"
export UNDERSTUDY_TEST_PG_CTL=$dir/pgctl

export UNDERSTUDY_BIN=$bin
export UNDERSTUDY_TEST_PG_HOST=$dir/sock
export UNDERSTUDY_TEST_PG_PORT=$port
export UNDERSTUDY_TEST_PG_USER=understudy
export UNDERSTUDY_TEST_PG_ADMIN="host=$dir/sock port=$port user=understudy dbname=postgres"
export UNDERSTUDY_TEST_TMP=$dir/tmp
export UNDERSTUDY_PG_DSN="host=$dir/sock port=$port user=understudy dbname=understudy"
"$pgbin/psql" -X -q -v ON_ERROR_STOP=1 "$UNDERSTUDY_TEST_PG_ADMIN" -c 'CREATE DATABASE understudy' >/dev/null

"$bin" mock-kafka --partitions 3 --bootstrap-file "$dir/bootstrap" >"$dir/mock-kafka.out" 2>"$dir/mock-kafka.log" &
mkpid=$!
for _ in $(seq 100); do
    [ -s "$dir/bootstrap" ] && break
    kill -0 "$mkpid" 2>/dev/null || { cat "$dir/mock-kafka.log" >&2; log "mock-kafka exited"; exit 1; }
    sleep 0.1
done
[ -s "$dir/bootstrap" ] || { log "mock-kafka did not write its bootstrap file in 10 s"; exit 1; }
brokers=$(sed -n 's/^bootstrap.servers=//p' "$dir/bootstrap")
export UNDERSTUDY_TEST_BOOTSTRAP=$brokers
export UNDERSTUDY_KAFKA_BROKERS=$brokers
log "PostgreSQL on $dir/sock:$port, mock Kafka on $brokers"

set +e
"$@"
rc=$?
set -e
exit "$rc"
