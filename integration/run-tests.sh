#!/usr/bin/env bash
# Runs every xpod test on a fresh machine: installs what is missing (PostgreSQL, curl),
# starts a throwaway PostgreSQL cluster on a free port for the PostgreSQL half of the suite,
# runs the whole workspace's tests, and stops the cluster again.
#
#   bash integration/run-tests.sh            # everything
#   bash integration/run-tests.sh -p xpod-storage   # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

find_pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; fi
}

need_apt=()
[ -n "$(find_pg_bin)" ] || need_apt+=(postgresql)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -z "${XPOD_TEST_PG_URL:-}" ]; then
  PG_BIN=$(find_pg_bin)
  [ -n "$PG_BIN" ] || { echo "PostgreSQL binaries not found after install" >&2; exit 1; }
  PG_DIR=$(mktemp -d)
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chmod 755 "$PG_DIR" && chown postgres: "$PG_DIR"
  stop_pg() {
    run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  }
  trap stop_pg EXIT
  say "starting a throwaway PostgreSQL on 127.0.0.1:$PG_PORT"
  run_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >/dev/null
  run_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  export XPOD_TEST_PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
fi

say "building"
cargo build --workspace --bins --tests --locked
say "running every test (PostgreSQL at ${XPOD_TEST_PG_URL%%@*}@…)"
cargo test --workspace --locked --no-fail-fast "$@"
say "all tests passed"
