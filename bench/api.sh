#!/usr/bin/env bash
# Load benchmark of the HTTP API on this machine, load generator included:
#   1. the most accepted text sends per second (SQLite, 64 connections);
#   2. latency at a steady 2,000 sends per second;
#   3. the server's peak resident memory over both;
#   4. list-page latency at the end of a million records (first page, a deep
#      offset, and following a next link), after seeding a million sends.
# Usage: bench/api.sh [--records N] [--duration SECONDS]
# Needs: a release build (built here), oha (installed here with cargo if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

records=1000000
duration=20
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

export PATH="$PWD/bench/.tools/bin:$PATH"
if ! command -v oha >/dev/null; then
  cargo install oha --locked --root bench/.tools
fi
# BENCH_BIN: an already built binary to measure instead of building one.
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p otpgate --locked
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/otpgate}"

work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
db="sqlite://$work/bench.db"
key=$("$bin" accounts create bench --sms-credits 100000000 --phone-credits 0 --json --database-url "$db" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
# Every send goes to one number from one key: per-number, per-account and
# per-key limits off for the benchmark.
OTPGATE_LIMITS__PER_NUMBER_MAX=0 OTPGATE_LIMITS__PER_NUMBER_COOLDOWN_SECONDS=0 \
OTPGATE_VERIFY__RESEND_SAME_CODE=false \
OTPGATE_LIMITS__PER_ACCOUNT_RPS=0 OTPGATE_LIMITS__PER_KEY_RPS=0 \
OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT=false OTPGATE_LOG__LEVEL=warn \
OTPGATE_DELIVERY__LOG_PATH="$work/deliveries.jsonl" \
  "$bin" serve --listen 127.0.0.1:18080 --database-url "$db" > "$work/server.out" 2>&1 &
server=$!
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.2; done

url=http://127.0.0.1:18080/api/v1/auths/send/otp/
body='{"number":"9851023212","message":"Your code is {otp}","sms_send_options":"text"}'
oha_json() { oha --no-tui --output-format json "$@"; }
summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin); s = r["summary"]; p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
rps, p50, p99 = s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000
print(f"{sys.argv[1]}: {rps:.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, statuses {codes}")
' "$1"
}

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%FT%TZ)"
echo "== 1. maximum send rate, 64 connections, ${duration}s"
oha_json -z "${duration}s" -c 64 -m POST -H "Authorization: Bearer $key" -T application/json -d "$body" "$url" \
  | summary "max sends"
echo "== 2. steady 2,000 sends/s, ${duration}s"
oha_json -z "${duration}s" -c 64 -q 2000 -m POST -H "Authorization: Bearer $key" -T application/json -d "$body" "$url" \
  | summary "2000/s sends"
echo "== 3. peak resident memory of the server so far: $(awk '/VmHWM/{print $2/1024 " MiB"}' /proc/$server/status)"

have=$(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:18080/api/v1/auths/list/send-otps/?limit=1" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
if [ "$have" -lt "$records" ]; then
  echo "== seeding $((records - have)) more sends through the API"
  oha_json -n "$((records - have))" -c 64 -m POST -H "Authorization: Bearer $key" -T application/json -d "$body" "$url" \
    | summary "seeding sends"
fi
list=http://127.0.0.1:18080/api/v1/auths/list/send-otps/
next=$(curl -s -H "Authorization: Bearer $key" "$list?limit=20&offset=$((records - 40))" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')
echo "== 4. list pages with $records records (1 connection, 2,000 requests each)"
oha_json -n 2000 -c 1 -H "Authorization: Bearer $key" "$list?limit=20" | summary "first page"
oha_json -n 2000 -c 1 -H "Authorization: Bearer $key" "$list?limit=20&offset=$((records - 20))" | summary "last page by offset"
oha_json -n 2000 -c 1 -H "Authorization: Bearer $key" "$next" | summary "last page by next link"
oha_json -n 2000 -c 1 -H "Authorization: Bearer $key" "$list?limit=20&phone_number=9851023212&offset=$((records - 20))" \
  | summary "filtered, deep offset"
echo "== peak resident memory of the server: $(awk '/VmHWM/{print $2/1024 " MiB"}' /proc/$server/status)"
