#!/usr/bin/env bash
# Runs every xpod test on a fresh machine: installs what is missing (PostgreSQL, curl, dig,
# Pebble for the ACME tests, BIND 9 for the AXFR/RFC 2136 tests, bubblewrap for sandboxes,
# slirp4netns and nftables for sandboxes with network, a Python venv with moto, the
# S3-compatible server of the S3 tests, standardwebhooks, an independent verifier of webhook
# signatures, prometheus-client, Prometheus' parser of /metrics, and schemathesis, the API
# fuzzer; Node.js with the Community Solid Server and Inrupt's Solid clients from npm for the
# Solid-OIDC tests; Chromium and playwright-core for the dashboard test, Vite to rebuild the
# dashboard), starts a throwaway PostgreSQL cluster on a free port for the PostgreSQL half of
# the suite, runs the whole workspace's tests, and stops the cluster again.
# (The S3 tests start their own moto servers: integration/src/s3.rs.)
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

# moto (PyPI), a real S3-compatible server, lives in a venv under target/, made once and reused
# while it works. XPOD_TEST_MOTO_SERVER (or XPOD_MOTO_SERVER) names another moto_server instead.
MOTO_VENV="$PWD/target/s3venv"
MOTO_PKGS=('moto[s3]>=5,<6' 'flask>=3,<4' 'flask-cors')
[ -n "${XPOD_TEST_MOTO_SERVER:-}" ] || XPOD_TEST_MOTO_SERVER="${XPOD_MOTO_SERVER:-}"
moto_works() {
  [ -x "$MOTO_VENV/bin/moto_server" ] && "$MOTO_VENV/bin/python" -c \
    'import moto, moto.server, flask, flask_cors; assert moto.__version__.split(".")[0] == "5"' >/dev/null 2>&1
}
venv_python() {  # a python3 that can make a venv with pip (Debian's needs python3-venv)
  local p
  for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import venv, ensurepip' >/dev/null 2>&1; then
      command -v "$p"; return 0
    fi
  done
  return 0
}
make_moto_venv=
if [ -z "$XPOD_TEST_MOTO_SERVER" ] && ! moto_works; then make_moto_venv=1; fi

need_apt=()
[ -n "$(find_pg_bin)" ] || need_apt+=(postgresql)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v pebble >/dev/null 2>&1 || need_apt+=(pebble)
{ [ -x /usr/sbin/named ] || command -v named >/dev/null 2>&1; } || need_apt+=(bind9)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
command -v slirp4netns >/dev/null 2>&1 || need_apt+=(slirp4netns)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need_apt+=(nftables)
{ [ -x /usr/bin/tinyproxy ] || [ -x /usr/sbin/tinyproxy ]; } || need_apt+=(tinyproxy)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || need_apt+=(nodejs npm)
{ [ -z "$make_moto_venv" ] && [ -x "$MOTO_VENV/bin/python" ]; } || [ -n "$(venv_python)" ] || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -n "$XPOD_TEST_MOTO_SERVER" ]; then
  [ -x "$XPOD_TEST_MOTO_SERVER" ] || { echo "XPOD_TEST_MOTO_SERVER=$XPOD_TEST_MOTO_SERVER is not an executable" >&2; exit 1; }
  say "using moto_server $XPOD_TEST_MOTO_SERVER"
else
  if [ -n "$make_moto_venv" ]; then
    PY=$(venv_python)
    [ -n "$PY" ] || { echo "no python3 that can make a venv, even after installing python3-venv" >&2; exit 1; }
    say "creating a Python venv with moto (S3 server for the tests) in target/s3venv"
    rm -rf "$MOTO_VENV"
    mkdir -p "$(dirname "$MOTO_VENV")"
    "$PY" -m venv "$MOTO_VENV"
    say "installing ${MOTO_PKGS[*]} from PyPI (about a minute)"
    "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "${MOTO_PKGS[@]}"
    moto_works || { echo "moto was installed into $MOTO_VENV but does not import" >&2; exit 1; }
  fi
  XPOD_TEST_MOTO_SERVER="$MOTO_VENV/bin/moto_server"
  say "using moto $("$MOTO_VENV/bin/python" -c 'import moto; print(moto.__version__)') from target/s3venv"
fi
export XPOD_TEST_MOTO_SERVER

# standardwebhooks (PyPI): an independent verifier of the webhook signatures,
# prometheus-client (PyPI): Prometheus' own parser of the /metrics exposition, and schemathesis
# (PyPI): the API fuzzer of integration/tests/api_fuzz.rs, SPARQLWrapper (PyPI, with rdflib):
# the SPARQL client of integration/tests/sparql.rs; same venv.
if ! "$MOTO_VENV/bin/python" -c 'import standardwebhooks, prometheus_client, schemathesis, SPARQLWrapper, rdflib' >/dev/null 2>&1; then
  if [ ! -x "$MOTO_VENV/bin/python" ]; then
    PY=$(venv_python)
    [ -n "$PY" ] || { echo "no python3 that can make a venv" >&2; exit 1; }
    "$PY" -m venv "$MOTO_VENV"
  fi
  say "installing standardwebhooks, prometheus-client, schemathesis and SPARQLWrapper from PyPI"
  "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check 'standardwebhooks>=1,<2' \
    'prometheus-client>=0.20,<1' 'schemathesis>=4,<5' 'SPARQLWrapper>=2,<3' 'rdflib>=7,<8'
fi
export XPOD_TEST_WEBHOOKS_PYTHON="$MOTO_VENV/bin/python"

# The Solid peers (npm, versions pinned by integration/js/package-lock.json), installed once
# into integration/js/node_modules and again when the lock changes.
JS_DIR="$PWD/integration/js"
if [ ! -d "$JS_DIR/node_modules/@solid/community-server" ] \
  || [ "$JS_DIR/package-lock.json" -nt "$JS_DIR/node_modules/.package-lock.json" ]; then
  say "installing the Solid peers from npm (Community Solid Server, Inrupt clients; about a minute)"
  npm ci --prefix "$JS_DIR" --no-audit --no-fund --loglevel=error
fi
export XPOD_TEST_JS_DIR="$JS_DIR"
# The dashboard test drives the system's Chromium (playwright-core, above).
XPOD_TEST_CHROMIUM="${XPOD_TEST_CHROMIUM:-$(command -v chromium)}"
export XPOD_TEST_CHROMIUM

# The dashboard's build tool (Vite, pinned by node/dashboard/package-lock.json): a test rebuilds
# the dashboard and checks that the committed node/dashboard/dist matches its sources.
DASH_DIR="$PWD/node/dashboard"
if [ ! -d "$DASH_DIR/node_modules/vite" ] \
  || [ "$DASH_DIR/package-lock.json" -nt "$DASH_DIR/node_modules/.package-lock.json" ]; then
  say "installing the dashboard's build tool from npm (Vite)"
  npm ci --prefix "$DASH_DIR" --no-audit --no-fund --loglevel=error
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
