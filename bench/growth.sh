#!/usr/bin/env bash
# Does the cost of an OTP stay flat as the store grows? (issue 15)
# One otpgate (SQLite, one SMPP route to the node-smpp SMSC peer, which sends a
# delivery receipt for every message) measured with an empty store and again after
# the store was grown in bulk by SQL (bench/growth_seed.py, server stopped) to each
# level. At every level, after a short warm-up:
#   1. accept: sends to distinct numbers (each with its own code, `otp_options:
#      personnel`) for D seconds, 64 connections (wrk), accepted sends/s and p99;
#   2. receipts: those sends end to end, first accept -> last receipt recorded
#      (from the database), OTPs/s;
#   3. verify: the right code for each of those numbers once, 64 connections
#      (at most D/2 seconds);
#   4. list: the account's first page (limit 20) and the page its `next` link
#      gives, 1 connection, 3 seconds each (wrk);
#   5. the server's peak resident memory.
# Then a table of each rate against the empty store's.
#
# Usage: bench/growth.sh [--levels "0 1000000 10000000"] [--duration SECONDS]
# With GROWTH_PERF_DIR=DIR, the server's accept stage at each level is also
# recorded by `perf record --call-graph dwarf` into DIR/level-<OTPs>.data (for `perf report`).
# Needs (installed here if missing): a release build (BENCH_BIN to use one),
# wrk, node + peers/smsc. Checks free disk space before growing the store
# (about 0.7 GB per million OTPs, 0.8 asked for).
set -euo pipefail
cd "$(dirname "$0")/.."

levels="0 1000000 10000000"
duration=10
while [ $# -gt 0 ]; do
  case "$1" in
    --levels) levels="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

export PATH="$PWD/bench/.tools/bin:$PATH"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -d peers/smsc/node_modules/smpp ] || peers/smsc/install.sh
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p otpgate --locked
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/otpgate}"

work=$(mktemp -d "${BENCH_WORK:-/tmp}/otpgate-growth.XXXXXX")
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.5; rm -rf "$work"
}
trap cleanup EXIT

largest=0
for l in $levels; do [ "$l" -gt "$largest" ] && largest=$l; done
need_gb=$(( largest * 8 / 10000000 + 2 ))
free_gb=$(df --output=avail -BG "$work" | tail -1 | tr -dc 0-9)
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "growing the store to $largest OTPs needs about $need_gb GB in $work; $free_gb GB are free" >&2
  exit 1
fi

. peers/smsc/start.sh
port=$(smsc_start "$work" smsc --quiet --receipts delivered --system-id otpgate --password secret)
db="$work/otpgate.db"
cat > "$work/otpgate.toml" <<TOML
listen = "127.0.0.1:18082"
database_url = "sqlite://$db"
[log]
level = "warn"
[limits]
per_number_max = 0
per_number_cooldown_seconds = 0
per_account_rps = 0
per_key_rps = 0
[verify]
per_number_max = 0
per_account_rps = 0
[demo]
create_default_account = false
[guard]
# A new account sending thousands of codes a second that are never verified is
# what the SMS-pumping guard holds; the benchmark measures throughput.
enabled = false
[[routes]]
name = "bench"
channel = "text"
driver = "smpp"
[routes.smpp]
port = $port
system_id = "otpgate"
password = "secret"
binds = 2
window = 50
TOML
key=$("$bin" accounts create bench --sms-credits 1000000000 --json --config "$work/otpgate.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')

start_server() {
  "$bin" serve --config "$work/otpgate.toml" >> "$work/otpgate.out" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:18082/readyz 2>/dev/null | grep -q '"ready"' && return 0
    sleep 0.2
  done
  echo "otpgate did not become ready: $(tail -5 "$work/otpgate.out")" >&2
  exit 1
}
stop_server() {
  kill "$server"; wait "$server" 2>/dev/null || true; server=
}

# wrk scripts: every thread sends to (or verifies) its own run of numbers.
cat > "$work/send.lua" <<'LUA'
local n = 0
function setup(thread) thread:set("tid", n); n = n + 1 end
function init(args) counter = 0; base = tonumber(os.getenv("NUMBERS")) + tid * 1000000 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
function request()
  counter = counter + 1
  return wrk.format(nil, "/api/v1/auths/send/otp/", nil, string.format(
    '{"number":"%d","message":"Your code is {otp}","sms_send_options":"text","otp_options":"personnel","otp":"4821"}',
    base + counter))
end
LUA
cat > "$work/verify.lua" <<'LUA'
local n = 0
function setup(thread) thread:set("tid", n); n = n + 1 end
function init(args)
  numbers = {}
  local i = 0
  for line in io.lines(os.getenv("SENT")) do
    if i % 2 == tid then numbers[#numbers + 1] = line end
    i = i + 1
  end
  counter = 0
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
-- Each number is verified once: the thread stops when its numbers run out.
function request()
  counter = counter + 1
  if counter > #numbers then wrk.thread:stop() end
  local number = numbers[(counter - 1) % #numbers + 1]
  return wrk.format(nil, "/api/v1/auths/verify/otp/", nil,
    string.format('{"number":"%s","otp":"4821"}', number))
end
LUA

# wrk_rate FILE: "<req/s> <p99 ms> <non-2xx>" from `wrk --latency` output.
wrk_rate() {
  python3 - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p99:.2f} {int(bad.group(1)) if bad else 0}")
PY
}
last_id() { sqlite3 "file:$db?mode=ro" "select coalesce(max(id), 0) from otps"; }
# receipts AFTER: waits (5 minutes at most) for every OTP above AFTER to be
# delivered; prints "<OTPs/s first accept -> last receipt> <delivered>/<total>".
receipts() {
  python3 - "$db" "$1" <<'PY'
import sqlite3, sys, time
db, after = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 300
while True:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    n, first, last = c.execute("select count(*), min(created_at), max(delivered_at) from otps "
                               "where id > ? and status = 'delivered'", (after,)).fetchone()
    total = c.execute("select count(*) from otps where id > ?", (after,)).fetchone()[0]
    c.close()
    if n >= total or time.time() > deadline:
        break
    time.sleep(0.5)
print(f"{n / ((last - first) / 1e6):.0f} {n}/{total}")
PY
}
list_ms() { # URL: "<p50 ms> <p99 ms>", 1 connection for 3 s
  wrk -t 1 -c 1 -d 3s --latency -H "Authorization: Bearer $key" "$1" > "$work/list.txt"
  python3 - "$work/list.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
ms = lambda v, u: float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
p50 = ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)\b", t).groups())
p99 = ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)\b", t).groups())
print(f"{p50:.2f} {p99:.2f}")
PY
}

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== binary: $bin; levels: $levels; ${duration}s per stage"
results="$work/results"
stage=0
for level in $levels; do
  stage=$((stage + 1))
  have=$(sqlite3 "file:$db?mode=ro" "select count(*) from otps" 2>/dev/null || echo 0)
  if [ "$level" -gt "$have" ]; then
    [ -n "$server" ] && stop_server
    python3 bench/growth_seed.py "$db" "$level"
  fi
  [ -n "$server" ] || start_server
  stored=$(sqlite3 "file:$db?mode=ro" "select count(*) from otps")
  echo "== level $level: $stored OTPs stored, db $(du -sh "$work" | cut -f1); load $(cut -d' ' -f1-3 /proc/loadavg)"
  # Warm-up (the server's caches after a restart), not measured.
  NUMBERS=$((9840000000 + stage * 4000000 + 2000000)) KEY=$key \
    wrk -t 2 -c 64 -d 3s -s "$work/send.lua" http://127.0.0.1:18082 > /dev/null
  sleep 2
  before=$(last_id)
  perf_pid=
  if [ -n "${GROWTH_PERF_DIR:-}" ]; then
    mkdir -p "$GROWTH_PERF_DIR"
    perf record -q --call-graph dwarf -F 199 -p "$server" -o "$GROWTH_PERF_DIR/level-$level.data" -- sleep "$duration" 2>/dev/null &
    perf_pid=$!
  fi
  NUMBERS=$((9840000000 + stage * 4000000)) KEY=$key \
    wrk -t 2 -c 64 -d "${duration}s" --latency -s "$work/send.lua" http://127.0.0.1:18082 > "$work/send.txt"
  [ -n "$perf_pid" ] && wait "$perf_pid"
  read -r accept accept_p99 accept_bad <<< "$(wrk_rate "$work/send.txt")"
  read -r e2e delivered <<< "$(receipts "$before")"
  sqlite3 "file:$db?mode=ro" "select phone_number from otps where id > $before" > "$work/sent.txt"
  SENT="$work/sent.txt" KEY=$key \
    wrk -t 2 -c 64 -d "$((duration / 2))s" --latency -s "$work/verify.lua" http://127.0.0.1:18082 > "$work/verify.txt"
  read -r verify verify_p99 verify_bad <<< "$(wrk_rate "$work/verify.txt")"
  list="http://127.0.0.1:18082/api/v1/auths/list/send-otps/?limit=20"
  next=$(curl -s -H "Authorization: Bearer $key" "$list" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')
  read -r first_p50 first_p99 <<< "$(list_ms "$list")"
  read -r next_p50 next_p99 <<< "$(list_ms "$next")"
  rss=$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$server/status")
  echo "   accept $accept/s (p99 $accept_p99 ms, non-2xx $accept_bad); to receipts $e2e OTPs/s ($delivered delivered);"
  echo "   verify $verify/s (p99 $verify_p99 ms, non-2xx $verify_bad);"
  echo "   list first page p50 $first_p50 / p99 $first_p99 ms, next page p50 $next_p50 / p99 $next_p99 ms; peak RSS $rss MiB"
  echo "$stored $accept $e2e $verify $first_p50 $next_p50 $rss" >> "$results"
done

echo "== summary (each rate against the first level's; list figures are p50 latencies)"
python3 - "$results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
base = rows[0]
print(f"| OTPs stored | accept/s | to receipts/s | verify/s | list first (ms) | list next (ms) | peak RSS (MiB) |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    rel = lambda i: f"{float(r[i]):,.0f} ({float(r[i]) / float(base[i]):.2f})"
    lat = lambda i: f"{float(r[i]):.2f} ({float(r[i]) / float(base[i]):.2f})"
    print(f"| {int(r[0]):,} | {rel(1)} | {rel(2)} | {rel(3)} | {lat(4)} | {lat(5)} | {r[6]} |")
PY
