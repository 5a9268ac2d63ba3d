#!/usr/bin/env bash
# Soak/load test: builds a release phip, serves a fresh data directory on SQLite or on a
# throwaway PostgreSQL cluster, and runs `phip bench load` against it (mixed 60 % reads,
# 25 % searches, 15 % writes), sampling the server's RSS. Prints the report and keeps a JSON
# copy in tools/perf/results/.
#
#   tools/perf/load.sh [sqlite|postgres] [seconds=180] [workers=16] [patients=2000]
#
# Needs: cargo (or PHIP_BIN=path/to/release/phip); for postgres, initdb/pg_ctl on PATH (run as root, the cluster runs as user
# `postgres`). Uses CARGO_TARGET_DIR when set.
set -euo pipefail
backend=${1:-sqlite}
seconds=${2:-180}
workers=${3:-16}
patients=${4:-2000}
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}

# PHIP_BIN: use an existing release binary instead of building one.
if [ -n "${PHIP_BIN:-}" ]; then
    phip=$PHIP_BIN
else
    cargo build --release -p phip --locked
    phip=$target/release/phip
fi

work=$(mktemp -d /tmp/phip-load.XXXXXX)
chmod 755 "$work"
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    if [ -d "$work/pg" ]; then
        as_pg pg_ctl -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port=$(free_port)
base=http://127.0.0.1:$port/fhir
db_args=()
if [ "$backend" = postgres ]; then
    pg_port=$(free_port)
    mkdir -p "$work/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$work/pg"
    as_pg initdb -D "$work/pg" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    # Durable defaults (fsync on, synchronous_commit on), as in production; more memory than
    # the tiny default so that the working set is cached.
    as_pg pg_ctl -D "$work/pg" -l "$work/pg/log" -w \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work/pg -c shared_buffers=256MB -c max_connections=100" start >/dev/null
    as_pg psql -h 127.0.0.1 -p "$pg_port" -U postgres -c 'CREATE DATABASE phip' >/dev/null
    db_args=(--database-url "postgres://postgres@127.0.0.1:$pg_port/phip")
elif [ "$backend" != sqlite ]; then
    echo "backend must be sqlite or postgres" >&2
    exit 2
fi

RUST_LOG=warn "$phip" serve --data-dir "$work/data" "${db_args[@]}" --listen "127.0.0.1:$port" \
    --base-url "$base" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.2
done
token=$("$phip" token --data-dir "$work/data" --base-url "$base" --scope 'system/*.cruds' --subject load-test --ttl 2h)

mkdir -p tools/perf/results
out=tools/perf/results/load-$backend-$(date -u +%Y%m%dT%H%M%SZ).json
echo "== load test: $backend, $seconds s, $workers workers, $(nproc) cores"
"$phip" bench load --url "$base" --token "$token" --duration "$seconds" --workers "$workers" \
    --patients "$patients" --pid "$server_pid" --json-out "$out"
echo "== report: $out"
