# shellcheck shell=bash
# Sourced by every faults/*.sh script: a work directory, the otpgate binary, the
# SMSC peer, configurations, accounts and the verdict line.
#
# Environment (none starts with OTPGATE_, which otpgate reads as configuration):
#   FAULT_BIN        an otpgate release binary to use (default: build one with
#                    `cargo build --release -p otpgate` into CARGO_TARGET_DIR)
#   FAULT_RATE       sends per second of the load (default 1000)
#   FAULT_SECONDS    seconds of load (default per script, 20-40)
#   FAULT_PG_URL     PostgreSQL server for the PostgreSQL variants
#                    (default postgres://postgres@127.0.0.1:5432)
#   FAULT_KEEP=1     keep the work directory (logs, records) even on PASS
#   FAULT_LOG_LEVEL  otpgate's log level (default warn)
#   FAULT_CONNECTIONS  concurrent HTTP connections of the load (default 64)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=peers/smsc/start.sh
. "$ROOT/peers/smsc/start.sh"

FAULT_RATE=${FAULT_RATE:-1000}
FAULT_PG_URL=${FAULT_PG_URL:-postgres://postgres@127.0.0.1:5432}
FAULT_LOG_LEVEL=${FAULT_LOG_LEVEL:-warn}
FAULT_NAME=""
WORK=""
CLEANUPS=()
FAULT_VERDICT=""

log() { echo "[$FAULT_NAME $(date +%T)] $*" >&2; }

# fault_init NAME: work directory, cleanup on exit, binary in $BIN, peers ready.
fault_init() {
  FAULT_NAME="$1"
  WORK=$(mktemp -d "/tmp/fault-$FAULT_NAME.XXXXXX")
  trap fault_cleanup EXIT
  [ -d "$ROOT/peers/smsc/node_modules/smpp" ] || "$ROOT/peers/smsc/install.sh" >&2
  if [ -z "${FAULT_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -p otpgate --locked >&2)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/otpgate"
  else
    BIN="$FAULT_BIN"
  fi
  [ -x "$BIN" ] || { echo "no otpgate binary at $BIN" >&2; exit 2; }
  log "work directory $WORK, binary $BIN, commit $(git -C "$ROOT" rev-parse --short HEAD)"
}

fault_cleanup() {
  local f
  for f in "$WORK"/*.pid; do
    if [ -f "$f" ]; then kill -9 "$(cat "$f")" 2>/dev/null || true; fi
  done
  for f in "${CLEANUPS[@]}"; do eval "$f" || true; done
  if [ "$FAULT_VERDICT" != FAIL ] && [ -n "$FAULT_VERDICT" ] && [ "${FAULT_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    echo "[$FAULT_NAME] logs and records kept in $WORK" >&2
  fi
}

# stop NAME [SIGNAL]: signals the process whose pid is in $WORK/NAME.pid and
# waits until it is gone.
stop() {
  local pid
  pid=$(cat "$WORK/$1.pid")
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$WORK/$1.pid"
}

# smsc NAME [smsc.js flags]: starts the SMSC peer, recording every submit_sm to
# $WORK/BASE.rec where BASE is NAME up to its first '-' (so `smsc` and its
# restart `smsc-2` append to one record); prints its port.
smsc() {
  local name="$1"
  shift
  smsc_start "$WORK" "$name" --quiet --receipts delivered --stats-interval-ms 1000 \
    --system-id otpgate --password secret --record "$WORK/${name%%-*}.rec" "$@"
}

# pg_database: creates an empty database for this run (dropped on exit); prints its URL.
pg_database() {
  local db="fault_${FAULT_NAME//-/_}_$$_$RANDOM"
  psql "$FAULT_PG_URL/postgres" -Xqc "CREATE DATABASE $db" >/dev/null
  CLEANUPS+=("psql '$FAULT_PG_URL/postgres' -Xqc 'DROP DATABASE IF EXISTS $db WITH (FORCE)' >/dev/null 2>&1")
  echo "$FAULT_PG_URL/$db"
}

# config FILE DATABASE_URL HTTP_PORT SMSC_PORT: an otpgate configuration with one
# SMPP route to the peer. Per-number limits are off unless LIMIT_MAX /
# LIMIT_COOLDOWN say otherwise (the loads use a new number per send anyway);
# LEASE_SECONDS (default 10) bounds how long a killed node keeps its jobs;
# SMPP_EXTRA adds lines to the route's [routes.smpp] table.
config() {
  cat > "$1" <<TOML
listen = "127.0.0.1:$3"
database_url = "$2"
[log]
level = "$FAULT_LOG_LEVEL"
[limits]
per_number_max = ${LIMIT_MAX:-0}
per_number_cooldown_seconds = ${LIMIT_COOLDOWN:-0}
$(rate_limits)
[demo]
create_default_account = false
$(guard_off)
$(new_codes)
[delivery]
lease_seconds = ${LEASE_SECONDS:-10}
[[routes]]
name = "smsc"
channel = "text"
driver = "smpp"
[routes.smpp]
port = $4
system_id = "otpgate"
password = "secret"
binds = 2
window = 50
${SMPP_EXTRA:-}
TOML
}

# knows NAME SETTINGS: whether the binary under test takes SETTINGS (TOML, with
# printf escapes); an older binary refuses a setting it does not know.
knows() {
  printf '%b' "$2" > "$WORK/probe-$1.toml"
  "$BIN" migrate --config "$WORK/probe-$1.toml" --database-url "sqlite://$WORK/probe-$1.db" >/dev/null 2>&1
}

# The per-account and per-key request rates (off unless LIMIT_ACCOUNT_RPS /
# LIMIT_KEY_RPS say otherwise), for binaries that have them.
rate_limits() {
  knows rates '[limits]\nper_account_rps = 0\n' || return 0
  printf 'per_account_rps = %s\nper_key_rps = %s\n' "${LIMIT_ACCOUNT_RPS:-0}" "${LIMIT_KEY_RPS:-0}"
}

# The SMS-pumping guard off, for binaries that have it, so the faults' figures
# measure durability and not the guard (tests/api/guard.rs and bench/pumping.sh
# cover it). FAULT_GUARD=on keeps it on with its defaults, to see that the
# loads (thousands of codes a minute from a new account to new numbers, never
# verified) and the outages are not taken for pumping.
guard_off() {
  [ "${FAULT_GUARD:-off}" = on ] && return 0
  knows guard '[guard]\nenabled = false\n' || return 0
  printf '[guard]\nenabled = false\n'
}

# A new code for every send, for binaries that have the setting: with
# verify.resend_same_code (the default) a send to a number with a live code
# sends that code again, and the checks, which take the same number and text
# at the SMSC twice for one OTP delivered twice, would count a resend as a
# duplicate (three-nodes' ten sends to one number did, 2026-12-04).
new_codes() {
  knows codes '[verify]\nresend_same_code = false\n' || return 0
  printf '[verify]\nresend_same_code = false\n'
}

# account CONFIG NAME CREDITS: creates an account; prints its API key.
account() {
  "$BIN" accounts create "$2" --sms-credits "$3" --json --config "$1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])'
}

# serve NAME CONFIG: starts otpgate (log in $WORK/NAME.log, appended across
# restarts) and waits until /readyz answers.
serve() {
  local port
  port=$(python3 -c 'import re,sys; print(re.search(r"127.0.0.1:(\d+)", open(sys.argv[1]).read()).group(1))' "$2")
  "$BIN" serve --config "$2" >> "$WORK/$1.log" 2>&1 &
  echo $! > "$WORK/$1.pid"
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    kill -0 "$(cat "$WORK/$1.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "otpgate $1 did not become ready: $(tail -5 "$WORK/$1.log")" >&2
  return 1
}

# free_port: a TCP port nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rss_mib() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }

# load OUT [load.py flags]: the open-loop send load (see faults/load.py).
load() {
  local out="$1"
  shift
  python3 "$ROOT/faults/load.py" --connections "${FAULT_CONNECTIONS:-64}" --out "$out" "$@"
}

# verdict PASS|FAIL FIGURES: the script's last line, read by faults/run-all.sh.
verdict() {
  FAULT_VERDICT="$1"
  echo "VERDICT $FAULT_NAME $1 $2"
  [ "$1" = PASS ]
}
