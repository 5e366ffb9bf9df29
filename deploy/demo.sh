#!/usr/bin/env bash
# A two-region xpod cluster on this machine, without containers: the same topology as
# deploy/compose.yaml, every piece a plain process on loopback, everything in one temp dir.
#
#   PostgreSQL   a throwaway cluster (initdb on a free port), database `xpod`, shared metadata
#   moto         an S3-compatible server (PyPI moto) holding one bucket per region: xpod-a, xpod-b
#   center-a     region a, holds the cluster CA key: edges join through it
#   center-b     region b; meshed with center-a over QUIC (mutual TLS, cluster CA)
#   edge-1       joined to center-a with a token from `xpod tokens create`, publishes a local
#                `python3 -m http.server` as its service "web"
#
#   bash deploy/demo.sh                 # start, print URLs and examples, run until Ctrl-C
#   bash deploy/demo.sh --check         # start, check end to end, print PASS/FAIL, stop; exit 0/1
#   bash deploy/demo.sh --dir ./demo    # keep state and logs in ./demo (new or empty) after stopping
#   bash deploy/demo.sh --xpod PATH     # the xpod binary (default: xpod on PATH, else
#                                       # target/release/xpod, else target/debug/xpod)
#
# Needs: curl (7.75+, for --aws-sigv4), python3, PostgreSQL's server binaries (Debian:
# apt-get install postgresql; found under /usr/lib/postgresql/*/bin or on PATH) and moto:
# $XPOD_TEST_MOTO_SERVER, else target/s3venv/bin/moto_server (made by integration/run-tests.sh),
# else a venv made in the temp dir with pip install 'moto[s3]>=5,<6' flask flask-cors (about a
# minute, from PyPI). As root, PostgreSQL runs as the `postgres` user.
#
# Not included: HTTPS/ACME. Automatic HTTPS needs the cluster's DNS zone to be what an ACME server
# resolves and a trusted directory (Pebble in the tests, see integration/tests/acme.rs); that is
# not a simple demo, so everything here is plain HTTP on 127.0.0.1.
#
# Ctrl-C or SIGTERM stops every process started here (edge, web, centers, moto, then PostgreSQL)
# and removes the temp dir (kept with --dir, and after an error or a failed check, for its logs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EDGE_DOMAIN=edges.localhost
S3_ACCESS_KEY=xpod-demo
S3_SECRET_KEY=xpod-demo-secret
S3_REGION=us-east-1

say() { printf '==> %s\n' "$*"; }
KEEP=0   # keep the state dir on exit (--dir, or after an error: its logs tell why)
die() {
  KEEP=1
  printf 'demo.sh: error: %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    printf -- '--- last lines of %s:\n' "$2" >&2
    tail -n 20 "$2" >&2 || true
    printf -- '---\n' >&2
  fi
  exit 1
}
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

XPOD=
DIR=
CHECK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --xpod) [ $# -ge 2 ] || die "--xpod needs a path"; XPOD=$2; shift 2 ;;
    --xpod=*) XPOD=${1#--xpod=}; shift ;;
    --dir) [ $# -ge 2 ] || die "--dir needs a directory"; DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#--dir=}; shift ;;
    --check) CHECK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# ------------------------------------------------------------------ what it needs

if [ -z "$XPOD" ]; then
  if command -v xpod >/dev/null 2>&1; then XPOD=$(command -v xpod)
  elif [ -x "$ROOT/target/release/xpod" ]; then XPOD=$ROOT/target/release/xpod
  elif [ -x "$ROOT/target/debug/xpod" ]; then XPOD=$ROOT/target/debug/xpod
  else die "no xpod binary: build one (cargo build --release -p xpod-node) or pass --xpod PATH"
  fi
fi
if [ ! -f "$XPOD" ] || [ ! -x "$XPOD" ]; then die "--xpod $XPOD is not an executable file"; fi
case "$XPOD" in /*) ;; *) XPOD=$PWD/$XPOD ;; esac
command -v curl >/dev/null 2>&1 || die "curl is required (apt-get install curl)"
command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install python3)"

AS_ROOT=0
[ "$(id -u)" = 0 ] && AS_ROOT=1
PG_BIN=
while IFS= read -r d; do
  if [ -x "$d/initdb" ]; then PG_BIN=$d; break; fi
done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
if [ -z "$PG_BIN" ] && command -v initdb >/dev/null 2>&1; then
  PG_BIN=$(dirname "$(command -v initdb)")
fi
[ -n "$PG_BIN" ] || die "PostgreSQL's initdb/pg_ctl not found (Debian: apt-get install postgresql)"
if [ "$AS_ROOT" = 1 ]; then
  id postgres >/dev/null 2>&1 || die "running as root, PostgreSQL needs the 'postgres' user (apt-get install postgresql creates it)"
fi
# Runs PostgreSQL's tools as `postgres` when we are root (initdb refuses root).
pg() { if [ "$AS_ROOT" = 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# xpod refuses XPOD_* variables it does not know; start it with none of the caller's.
UNSET_ENV=()
while IFS= read -r name; do
  case "$name" in XPOD_*|CSS_*) UNSET_ENV+=(-u "$name") ;; esac
done < <(compgen -e)
xpod() { env "${UNSET_ENV[@]}" "$XPOD" "$@"; }

# ------------------------------------------------------------------ state, cleanup

if [ -n "$DIR" ]; then
  mkdir -p "$DIR" || die "cannot create --dir $DIR"
  [ -z "$(ls -A "$DIR")" ] || die "--dir $DIR is not empty (moto keeps buckets in memory only, so an old demo cannot be resumed): pass a new or empty directory"
  DIR=$(cd "$DIR" && pwd)
  KEEP=1
else
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/xpod-demo.XXXXXX")
fi
chmod 755 "$DIR"   # the postgres user must reach $DIR/pg
LOGS=$DIR/logs
mkdir -p "$LOGS"

NAMES=()   # processes we started, in start order ...
PIDS=()    # ... and their ids
PG_STARTED=0
SLEEP_PID=

cleanup() {
  local status=$? i pid deadline left names=()
  set +e
  trap - EXIT INT TERM ERR
  [ -n "$SLEEP_PID" ] && kill "$SLEEP_PID" 2>/dev/null
  if [ ${#PIDS[@]} -gt 0 ]; then
    # Newest first: the edge and the centers drain and mark themselves offline while
    # PostgreSQL is still up.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
      names+=("${NAMES[$i]}")
      kill -TERM "${PIDS[$i]}" 2>/dev/null
    done
    say "stopping ${names[*]}"
    deadline=$((SECONDS + 20))
    while :; do
      left=0
      for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
      [ "$left" = 0 ] && break
      if [ "$SECONDS" -ge "$deadline" ]; then
        for ((i = 0; i < ${#PIDS[@]}; i++)); do
          if kill -0 "${PIDS[$i]}" 2>/dev/null; then
            printf 'demo.sh: %s did not stop within 20 s: killing it\n' "${NAMES[$i]}" >&2
            kill -KILL "${PIDS[$i]}" 2>/dev/null
          fi
        done
        break
      fi
      sleep 0.1
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  fi
  if [ "$PG_STARTED" = 1 ]; then
    say "stopping PostgreSQL"
    pg "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || pg "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -m immediate -w stop >/dev/null 2>&1
  fi
  if [ "$KEEP" = 1 ]; then
    say "state and logs kept in $DIR"
  else
    rm -rf "$DIR"
    say "removed $DIR"
  fi
  return "$status"
}
trap cleanup EXIT
trap 'KEEP=1; printf "demo.sh: error: line %s: %s failed\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'trap - ERR; exit 130' INT
trap 'trap - ERR; exit 143' TERM

# Starts "$@" in the background, its output in $LOGS/NAME.log, and remembers it.
start() {
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  NAMES+=("$name")
  PIDS+=("$!")
}
pid_of() {
  local i
  for ((i = 0; i < ${#NAMES[@]}; i++)); do
    [ "${NAMES[$i]}" = "$1" ] && { echo "${PIDS[$i]}"; return; }
  done
}

# wait_until WHAT LOG SECONDS PID CMD...: polls CMD until it succeeds; fails naming LOG when
# the process PID (if given) exits or the time is up.
wait_until() {
  local what=$1 log=$2 secs=$3 pid=$4 deadline
  shift 4
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      die "$what: the process exited; read $log" "$log"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "$what: not within ${secs} s; read $log" "$log"
    sleep 0.2
  done
}

free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
read -r PG_PORT S3_PORT A_PORT B_PORT EDGE_PORT WEB_PORT <<<"$(free_ports 6)"
A=http://127.0.0.1:$A_PORT
B=http://127.0.0.1:$B_PORT
S3=http://127.0.0.1:$S3_PORT

say "state in $DIR$([ "$KEEP" = 1 ] && echo ' (kept on exit)' || echo ' (removed on exit)')"
say "xpod: $XPOD ($(xpod --version | head -n 1))"
say "ports: $PG_PORT $S3_PORT $A_PORT $B_PORT $EDGE_PORT $WEB_PORT"

# ------------------------------------------------------------------ PostgreSQL

say "starting PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT"
mkdir -p "$DIR/pg"
if [ "$AS_ROOT" = 1 ]; then
  chown postgres: "$DIR/pg"
  runuser -u postgres -- test -w "$DIR/pg" \
    || die "the postgres user cannot write $DIR/pg (a parent directory is private): use a --dir under /tmp"
fi
pg "$PG_BIN/initdb" -D "$DIR/pg/data" -A trust -U postgres --no-sync >"$LOGS/initdb.log" 2>&1 \
  || die "initdb failed; read $LOGS/initdb.log" "$LOGS/initdb.log"
PG_STARTED=1
pg "$PG_BIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/postgres.log" -w -t 30 \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off" start >"$LOGS/pg_ctl.log" 2>&1 \
  || die "PostgreSQL did not start; read $DIR/pg/postgres.log" "$DIR/pg/postgres.log"
pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres xpod >>"$LOGS/pg_ctl.log" 2>&1 \
  || die "createdb xpod failed; read $LOGS/pg_ctl.log" "$LOGS/pg_ctl.log"
DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/xpod

# ------------------------------------------------------------------ moto (S3)

MOTO=${XPOD_TEST_MOTO_SERVER:-${XPOD_MOTO_SERVER:-}}
if [ -n "$MOTO" ]; then
  [ -x "$MOTO" ] || die "XPOD_TEST_MOTO_SERVER=$MOTO is not an executable"
elif [ -x "$ROOT/target/s3venv/bin/moto_server" ]; then
  MOTO=$ROOT/target/s3venv/bin/moto_server
else
  say "no moto_server: installing moto into $DIR/s3venv from PyPI (about a minute)"
  python3 -m venv "$DIR/s3venv" >"$LOGS/pip.log" 2>&1 \
    || die "python3 -m venv failed (Debian: apt-get install python3-venv); read $LOGS/pip.log" "$LOGS/pip.log"
  "$DIR/s3venv/bin/pip" install -q --disable-pip-version-check 'moto[s3]>=5,<6' flask flask-cors \
    >>"$LOGS/pip.log" 2>&1 || die "pip install moto failed; read $LOGS/pip.log" "$LOGS/pip.log"
  MOTO=$DIR/s3venv/bin/moto_server
fi
say "starting moto (S3) on $S3"
start moto "$MOTO" -H 127.0.0.1 -p "$S3_PORT"
# moto answers an unsigned request with 403: any HTTP answer means it is up.
moto_up() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$S3/")" != 000 ]; }
wait_until "moto on $S3" "$LOGS/moto.log" 60 "$(pid_of moto)" moto_up

s3() {  # s3 METHOD PATH: a SigV4-signed request to moto; prints the body
  curl -sS --fail --max-time 10 --aws-sigv4 "aws:amz:$S3_REGION:s3" \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -X "$1" "$S3$2"
}
say "creating the region buckets xpod-a and xpod-b"
s3 PUT /xpod-a >/dev/null || die "creating bucket xpod-a failed; read $LOGS/moto.log" "$LOGS/moto.log"
s3 PUT /xpod-b >/dev/null || die "creating bucket xpod-b failed; read $LOGS/moto.log" "$LOGS/moto.log"

# ------------------------------------------------------------------ the centers

say "creating the cluster CA and the centers' certificates"
xpod ca init --data-dir "$DIR/ca" >"$LOGS/ca.log" 2>&1 || die "xpod ca init failed" "$LOGS/ca.log"
for c in center-a center-b; do
  xpod ca issue --data-dir "$DIR/ca" --node-id "$c" --san 127.0.0.1 --san localhost \
    --out "$DIR/$c" >>"$LOGS/ca.log" 2>&1 || die "xpod ca issue $c failed" "$LOGS/ca.log"
done
# center-a also holds the CA key, so edges can join through it.
install -m 0600 "$DIR/ca/ca.key" "$DIR/center-a/ca.key" || die "copying ca.key to center-a failed" "$LOGS/ca.log"

center_config() {  # center_config ID REGION PORT
  cat <<TOML
# $1: written by deploy/demo.sh. Secrets (database URL, S3 keys) come from the environment.
node_id = "$1"
role = "center"
region = "$2"
data_dir = "$DIR/$1"

[http]
listen = "127.0.0.1:$3"
base_url = "http://127.0.0.1:$3"

[storage]
endpoint = "$S3"

[[storage.region_buckets]]
region = "a"
bucket = "xpod-a"

[[storage.region_buckets]]
region = "b"
bucket = "xpod-b"

[cache]
max_size = "1GB"

[tunnel]
edge_domain = "$EDGE_DOMAIN"

[log]
level = "info"
format = "text"
TOML
}
center_config center-a a "$A_PORT" >"$DIR/center-a.toml"
center_config center-b b "$B_PORT" >"$DIR/center-b.toml"

start_center() {  # start_center ID
  start "$1" env "${UNSET_ENV[@]}" \
    XPOD_DATABASE_URL="$DATABASE_URL" \
    XPOD_STORAGE_ACCESS_KEY="$S3_ACCESS_KEY" XPOD_STORAGE_SECRET_KEY="$S3_SECRET_KEY" \
    "$XPOD" up --config "$DIR/$1.toml"
}
contains() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac; }
healthy() { local b; b=$(curl -sf --max-time 2 "$1/health") && contains "$b" "$2"; }

# center-a first: the first center on an empty database creates the first admin key.
say "starting center-a (region a) on $A"
start_center center-a
wait_until "center-a on $A" "$LOGS/center-a.log" 60 "$(pid_of center-a)" healthy "$A" center-a
say "starting center-b (region b) on $B"
start_center center-b
wait_until "center-b on $B" "$LOGS/center-b.log" 60 "$(pid_of center-b)" healthy "$B" center-b
KEY_FILE=$DIR/center-a/admin.key
[ -s "$KEY_FILE" ] || die "center-a did not save an admin key in $KEY_FILE" "$LOGS/center-a.log"
KEY=$(cat "$KEY_FILE")

# ------------------------------------------------------------------ the edge and its service

mkdir -p "$DIR/web"
printf 'hello from edge-1\n' >"$DIR/web/index.html"
say "starting a web service for the edge on 127.0.0.1:$WEB_PORT (python3 -m http.server)"
start web python3 -m http.server --bind 127.0.0.1 --directory "$DIR/web" "$WEB_PORT"
web_up() {
  local b
  b=$(curl -sf --max-time 2 "http://127.0.0.1:$WEB_PORT/") && contains "$b" 'hello from edge-1'
}
wait_until "the web service on 127.0.0.1:$WEB_PORT" "$LOGS/web.log" 30 "$(pid_of web)" web_up

cat >"$DIR/edge-1.toml" <<TOML
# edge-1: written by deploy/demo.sh.
node_id = "edge-1"
role = "edge"
data_dir = "$DIR/edge-1"

[http]
listen = "127.0.0.1:$EDGE_PORT"

[[tunnel.services]]
name = "web"
local = "127.0.0.1:$WEB_PORT"
kind = "http"

[log]
level = "info"
format = "text"
TOML

say "creating a join token on center-a (xpod tokens create)"
TOKEN=$(xpod tokens create --server "$A" --key "$KEY" --ttl-seconds 600 --description demo-edge-1 \
  2>"$LOGS/token.log" | tail -n 1) || die "xpod tokens create failed" "$LOGS/token.log"
case "$TOKEN" in xpt_*) ;; *) die "xpod tokens create printed no token" "$LOGS/token.log" ;; esac

say "starting edge-1, joining center-a at 127.0.0.1:$A_PORT"
# The token goes in XPOD_JOIN_TOKEN (same as --token), so it is not in the process list.
start edge-1 env "${UNSET_ENV[@]}" XPOD_JOIN_TOKEN="$TOKEN" \
  "$XPOD" edge --config "$DIR/edge-1.toml" --join "127.0.0.1:$A_PORT"
wait_until "edge-1 on 127.0.0.1:$EDGE_PORT" "$LOGS/edge-1.log" 60 "$(pid_of edge-1)" \
  healthy "http://127.0.0.1:$EDGE_PORT" edge-1
edge_online() {
  curl -sf --max-time 2 -H "Authorization: Bearer $KEY" "$A/.cluster/nodes" | python3 -c '
import json, sys
nodes = json.load(sys.stdin).get("nodes", [])
sys.exit(0 if any(n.get("nodeId") == "edge-1" and n.get("status") == "online" for n in nodes) else 1)'
}
wait_until "edge-1 online at center-a" "$LOGS/edge-1.log" 30 "$(pid_of edge-1)" edge_online
say "edge-1 is online, holding a tunnel to center-a"

# ------------------------------------------------------------------ check, or wait

BODY=$DIR/response
# req ARGS...: a curl request; prints the status code, the body goes to $BODY.
req() { curl -sS --max-time 30 -o "$BODY" -w '%{http_code}' "$@" 2>>"$LOGS/curl.log" || true; }

if [ "$CHECK" = 1 ]; then
  say "checking the cluster end to end"
  FAILED=0
  pass() { printf 'PASS: %s\n' "$*"; }
  fail() { printf 'FAIL: %s\n' "$*"; FAILED=1; }

  code=$(req -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"podId":"demo"}' "$A/.cluster/pods")
  if [ "$code" = 201 ]; then pass "pod demo created on center-a with the admin key"
  else fail "creating pod demo on center-a: status $code: $(head -c 300 "$BODY")"; fi

  # Through center-b: forwarded over the QUIC mesh to the owner (the mesh may still be
  # connecting for a few seconds).
  deadline=$((SECONDS + 30))
  while :; do
    code=$(req -D "$DIR/headers" -X PUT -H "Authorization: Bearer $KEY" \
      -H 'Content-Type: text/plain' --data-binary 'written through center-b' "$B/demo/hello.txt")
    if [ "$code" = 201 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.5
  done
  served_by=$(tr -d '\r' <"$DIR/headers" | sed -n 's/^[Xx]-[Xx]pod-[Nn]ode: *//p' | tail -n 1)
  if [ "$code" = 201 ]; then pass "demo/hello.txt written through center-b (served by ${served_by:-?})"
  else fail "writing demo/hello.txt through center-b: status $code: $(head -c 300 "$BODY")"; fi

  code=$(req -H "Authorization: Bearer $KEY" "$A/demo/hello.txt")
  if [ "$code" = 200 ] && [ "$(cat "$BODY")" = 'written through center-b' ]; then
    pass "demo/hello.txt read back through center-a"
  else fail "reading demo/hello.txt through center-a: status $code: $(head -c 300 "$BODY")"; fi

  listing=$(s3 GET "/xpod-a?list-type=2&prefix=blobs/demo/" 2>>"$LOGS/curl.log" || true)
  if contains "$listing" '<Key>blobs/demo/'; then
    pass "its bytes are in region a's bucket xpod-a"
  else fail "no blobs/demo/ object in bucket xpod-a"; fi

  code=$(req -H "Host: web.edge-1.$EDGE_DOMAIN" "$A/")
  if [ "$code" = 200 ] && grep -q 'hello from edge-1' "$BODY"; then
    pass "edge-1's service web fetched through center-a"
  else fail "fetching web.edge-1.$EDGE_DOMAIN through center-a: status $code: $(head -c 300 "$BODY")"; fi

  if [ "$FAILED" = 0 ]; then say "all checks passed"; exit 0; fi
  say "some checks failed; logs: $LOGS"
  KEEP=1   # keep the logs of a failed check
  exit 1
fi

cat <<EOF

xpod demo cluster is running (plain HTTP on 127.0.0.1):
  center-a (region a)  $A      holds the CA key; edges join here
  center-b (region b)  $B
  edge-1               http://127.0.0.1:$EDGE_PORT  joined center-a; service "web" = http://127.0.0.1:$WEB_PORT
  PostgreSQL           $DATABASE_URL
  S3 (moto)            $S3  buckets xpod-a, xpod-b (access key $S3_ACCESS_KEY)
  admin key            $KEY_FILE  (valid on both centers)
  logs                 $LOGS/

Try:
  KEY=\$(cat $KEY_FILE)
  curl -H "Authorization: Bearer \$KEY" -d '{"podId":"alice"}' $A/.cluster/pods
  curl -H "Authorization: Bearer \$KEY" -H 'Content-Type: text/plain' -d hi -X PUT $B/alice/notes.txt
  curl -H "Authorization: Bearer \$KEY" $A/alice/notes.txt
  curl -H "Authorization: Bearer \$KEY" $B/.cluster/nodes
  curl -H 'Host: web.edge-1.$EDGE_DOMAIN' $A/
  $XPOD pods migrate alice --to center-b --wait --server $A --key \$KEY

Ctrl-C stops everything.
EOF

# Wait; a process that dies ends the demo.
while :; do
  for ((i = 0; i < ${#PIDS[@]}; i++)); do
    kill -0 "${PIDS[$i]}" 2>/dev/null \
      || die "${NAMES[$i]} exited; read $LOGS/${NAMES[$i]}.log" "$LOGS/${NAMES[$i]}.log"
  done
  sleep 1 &
  SLEEP_PID=$!
  wait "$SLEEP_PID" || true
  SLEEP_PID=
done
