#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite, on 127.0.0.1 and a free port.
#
#   url=$(bash .ci/postgres.sh)        # install if missing, start, create the database, print URL
#   bash .ci/postgres.sh stop          # stop it
#
# Idempotent: a second call reuses the running server and prints the same URL. stdout carries
# only the URL (postgresql+psycopg://sxtwin:<password>@127.0.0.1:<port>/sxtwin_test); progress
# goes to stderr. The cluster lives in $SXTWIN_PG_DIR (default /tmp/sxtwin-postgres), is owned by
# the `postgres` user when run as root (by the caller otherwise), and has a random password made
# at initdb and kept there with mode 0600. Exit status is non-zero when PostgreSQL cannot be
# installed or started; callers then skip the PostgreSQL tests.
set -euo pipefail

PGDIR=${SXTWIN_PG_DIR:-/tmp/sxtwin-postgres}
DATA=$PGDIR/data
DB=sxtwin_test
SUPERUSER=sxtwin

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; fi
}

if [ "$(id -u)" = 0 ]; then
    OWNER=postgres
else
    OWNER=$(id -un)
fi

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$OWNER" -- "$@"
    else
        "$@"
    fi
}

BINDIR=$(find_bindir)

if [ "${1:-start}" = "stop" ]; then
    if [ -n "$BINDIR" ] && [ -f "$DATA/PG_VERSION" ]; then
        as_owner "$BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true
    fi
    exit 0
fi

if [ -z "$BINDIR" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing postgresql with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        BINDIR=$(find_bindir)
    fi
    if [ -z "$BINDIR" ]; then
        log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
        exit 1
    fi
fi
log "using $BINDIR"

mkdir -p "$PGDIR"
chown "$OWNER" "$PGDIR"
chmod 700 "$PGDIR"

MAJOR=$(basename "$(dirname "$BINDIR")")
if [ -f "$DATA/PG_VERSION" ] && [ "$(cat "$DATA/PG_VERSION")" != "$MAJOR" ]; then
    log "cluster in $DATA is PostgreSQL $(cat "$DATA/PG_VERSION"), binaries are $MAJOR: recreating"
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DATA"
fi
if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initdb in $DATA"
    rm -rf "$DATA"
    (umask 077; head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$PGDIR/password")
    chown "$OWNER" "$PGDIR/password"
    as_owner "$BINDIR/initdb" -D "$DATA" -U "$SUPERUSER" --pwfile="$PGDIR/password" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >&2
fi
PASSWORD=$(cat "$PGDIR/password")

if as_owner "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1 && [ -f "$PGDIR/port" ]; then
    PORT=$(cat "$PGDIR/port")
    log "already running on 127.0.0.1:$PORT"
else
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$PORT" > "$PGDIR/port"
    log "starting on 127.0.0.1:$PORT"
    as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$PGDIR/server.log" -w -t 60 \
        -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >&2 || {
        log "pg_ctl start failed; server log:"
        tail -n 20 "$PGDIR/server.log" >&2 || true
        exit 1
    }
fi

export PGPASSWORD=$PASSWORD
if ! "$BINDIR/psql" -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    log "creating database $DB"
    "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" "$DB"
fi

echo "postgresql+psycopg://$SUPERUSER:$PASSWORD@127.0.0.1:$PORT/$DB"
