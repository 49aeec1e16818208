#!/usr/bin/env bash
# Load benchmark of the HTTP API on this machine, load generator included:
#   1. the most accepted text sends per second (64 connections per node), then,
#      right after and loaded the same way, the yardstick (bench/yardstick: a bare
#      axum endpoint parsing the same body and answering the same shape), and the
#      ratio of the two; with PostgreSQL, the database's CPU over the stage;
#   2. latency at a steady 2,000 sends per second (node 1);
#   3. the server's peak resident memory over both;
#   4. list-page latency at the end of a million records (first page, a deep
#      offset, and following a next link), after seeding a million sends
#      (skipped with --no-list).
# Usage: bench/api.sh [--records N] [--duration SECONDS] [--store sqlite|postgres]
#                     [--nodes N] [--no-list]
# --store postgres makes a fresh database on BENCH_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) and drops it at the end;
# --nodes N (PostgreSQL only) runs N servers on that one database, each loaded
# by its own oha with 64 connections at once, and prints each node's rate and
# the sum. BENCH_LOG_PATH sends the log driver's deliveries there (say
# /dev/null, to see what writing them costs) instead of a file per node.
# Needs: a release build (built here), oha (installed here with cargo if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

records=1000000
duration=20
store=sqlite
nodes=1
list=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --store) store="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --no-list) list=no; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$store" in sqlite | postgres) ;; *) echo "--store: sqlite or postgres" >&2; exit 2 ;; esac
if [ "$store" = sqlite ] && [ "$nodes" != 1 ]; then
  echo "--nodes needs --store postgres (SQLite is one node)" >&2; exit 2
fi

export PATH="$PWD/bench/.tools/bin:$PATH"
if ! command -v oha >/dev/null; then
  cargo install oha --locked --root bench/.tools
fi
# BENCH_BIN / BENCH_YARDSTICK: already built binaries to measure instead of
# building them.
if [ -z "${BENCH_BIN:-}" ] || [ -z "${BENCH_YARDSTICK:-}" ]; then
  cargo build --release -p otpgate -p yardstick --locked
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/otpgate}"
yardstick="${BENCH_YARDSTICK:-${CARGO_TARGET_DIR:-target}/release/yardstick}"

work=$(mktemp -d)
servers=()
pg_admin="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_name="otpgate_bench_$$"
cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$store" = postgres ]; then
    psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $pg_name" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
if [ "$store" = postgres ]; then
  psql -q "$pg_admin" -c "CREATE DATABASE $pg_name" >/dev/null
  db="${pg_admin%/*}/$pg_name"
else
  db="sqlite://$work/bench.db"
fi
key=$("$bin" accounts create bench --sms-credits 1000000000 --phone-credits 0 --json --database-url "$db" \
    2> "$work/create.err" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
# Every send goes to one number from one key: per-number, per-account and
# per-key limits off for the benchmark.
for n in $(seq 1 "$nodes"); do
  OTPGATE_LIMITS__PER_NUMBER_MAX=0 OTPGATE_LIMITS__PER_NUMBER_COOLDOWN_SECONDS=0 \
  OTPGATE_VERIFY__RESEND_SAME_CODE=false \
  OTPGATE_LIMITS__PER_ACCOUNT_RPS=0 OTPGATE_LIMITS__PER_KEY_RPS=0 \
  OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT=false OTPGATE_LOG__LEVEL=warn \
  OTPGATE_NODE_ID="bench-$n" \
  OTPGATE_DELIVERY__LOG_PATH="${BENCH_LOG_PATH:-$work/deliveries-$n.jsonl}" \
    "$bin" serve --listen "127.0.0.1:$((18079 + n))" --database-url "$db" > "$work/server-$n.out" 2>&1 &
  servers+=("$!")
done
server=${servers[0]}
for n in $(seq 1 "$nodes"); do
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$((18079 + n))/healthz" >/dev/null && break; sleep 0.2; done
done

path=/api/v1/auths/send/otp/
url="http://127.0.0.1:18080$path"
body='{"number":"9851023212","message":"Your code is {otp}","sms_send_options":"text"}'
oha_json() { oha --no-tui --output-format json "$@"; }
# Prints one line for an oha report on stdin, and writes its rate to $2 if given.
summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin); s = r["summary"]; p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
rps, p50, p99 = s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000
print(f"{sys.argv[1]}: {rps:.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, statuses {codes}")
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write(f"{rps}\n")
' "$@"
}
# The bench database's commits, per table the sequential scans and rows they
# read, and the updates of otps rows and how many of them were HOT.
pg_stats() {
  psql -qAt "$db" -c "SELECT '#commits', xact_commit FROM pg_stat_database WHERE datname = current_database()" \
    -c "SELECT relname, seq_scan, seq_tup_read FROM pg_stat_user_tables" \
    -c "SELECT '#otps updates', n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'otps'"
}
# CPU seconds used so far by every PostgreSQL process of this machine.
pg_cpu() {
  python3 -c '
import os
hz, total = os.sysconf("SC_CLK_TCK"), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    if name.startswith("postgres"):
        total += int(rest[11]) + int(rest[12])
print(total / hz)
'
}
# CPU seconds a process has used so far (user and system).
cpu_of() {
  python3 -c '
import os, sys
stat = open(f"/proc/{sys.argv[1]}/stat").read()
rest = stat[stat.rindex(")") + 2:].split()
print((int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK"))
' "$1"
}
# Microseconds of CPU per request: CPU seconds before, after, and requests.
per_request() {
  python3 -c 'import sys; b, a, n = map(float, sys.argv[1:]); print(f"{(a - b) / n * 1e6:.0f}")' "$@"
}
requests_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["statusCodeDistribution"].get("200", 0))' "$1"; }
rss() { awk '/VmHWM/{print $2/1024 " MiB"}' "/proc/$1/status"; }

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%FT%TZ); store $store, $nodes node(s)"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== 1. maximum send rate, 64 connections per node, ${duration}s"
cpu_before=$([ "$store" = postgres ] && pg_cpu || echo 0)
[ "$store" = postgres ] && pg_stats > "$work/pg-before"
node_cpu_before=$(cpu_of "$server")
loads=()
for n in $(seq 1 "$nodes"); do
  oha_json -z "${duration}s" -c 64 -m POST -H "Authorization: Bearer $key" -T application/json -d "$body" \
    "http://127.0.0.1:$((18079 + n))$path" > "$work/max-$n.json" &
  loads+=("$!")
done
for pid in "${loads[@]}"; do wait "$pid"; done
cpu_after=$([ "$store" = postgres ] && pg_cpu || echo 0)
[ "$store" = postgres ] && pg_stats > "$work/pg-after"
node_cpu_after=$(cpu_of "$server")
for n in $(seq 1 "$nodes"); do
  summary "max sends, node $n" "$work/rate-$n" < "$work/max-$n.json"
done
otpgate_rate=$(cat "$work"/rate-* | python3 -c 'import sys; print(sum(float(l) for l in sys.stdin))')
printf 'otpgate, all nodes: %.0f sends/s\n' "$otpgate_rate"
otpgate_us=$(per_request "$node_cpu_before" "$node_cpu_after" "$(requests_of "$work/max-1.json")")
echo "otpgate CPU per accepted send (node 1): $otpgate_us us"
if [ "$store" = postgres ]; then
  python3 -c 'import sys; b, a, d = map(float, sys.argv[1:]); print(f"PostgreSQL CPU over the stage: {(a - b) / d:.2f} cores")' \
    "$cpu_before" "$cpu_after" "$duration"
  # Commits over the stage (sends per commit is the mean batch, the log
  # driver's claims and finishes included) and the tables read by sequential
  # scans, from the server's own statistics of the bench database.
  python3 - "$work/pg-before" "$work/pg-after" "$(cat "$work"/rate-* | python3 -c 'import sys; print(sum(float(l) for l in sys.stdin))')" "$duration" <<'PY'
import sys
def load(path):
    rows = {}
    for line in open(path):
        name, *values = line.strip().split("|")
        rows[name] = [int(v or 0) for v in values]
    return rows
before, after = load(sys.argv[1]), load(sys.argv[2])
rate, duration = float(sys.argv[3]), float(sys.argv[4])
delta = {k: [a - b for a, b in zip(v, before.get(k, [0] * len(v)))] for k, v in after.items()}
commits = delta.get("#commits", [0])[0]
print(f"PostgreSQL commits over the stage: {commits} ({commits / duration:.0f}/s, "
      f"{rate * duration / max(commits, 1):.1f} sends per commit)")
updates, hot = (delta.get("#otps updates", [0, 0]) + [0, 0])[:2]
print(f"PostgreSQL updates of otps rows over the stage: {updates}, of them HOT (no index touched): {hot}")
scans = sorted(((v[1], v[0], k) for k, v in delta.items() if not k.startswith("#") and v[0]), reverse=True)
print("PostgreSQL sequential scans over the stage (rows read, scans, table): "
      + ("; ".join(f"{k} {rows} rows in {n}" for rows, n, k in scans[:5]) or "none"))
PY
fi
"$yardstick" 127.0.0.1:18090 &
yard=$!
servers+=("$yard")
for _ in $(seq 1 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer x' -H 'Content-Type: application/json' \
    -d "$body" "http://127.0.0.1:18090$path" || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
yard_cpu_before=$(cpu_of "$yard")
oha_json -z "${duration}s" -c 64 -m POST -H "Authorization: Bearer $key" -T application/json -d "$body" \
  "http://127.0.0.1:18090$path" > "$work/yardstick.json"
yard_cpu_after=$(cpu_of "$yard")
summary "yardstick (bare axum, same body and reply shape)" "$work/yardstick-rate" < "$work/yardstick.json"
yard_us=$(per_request "$yard_cpu_before" "$yard_cpu_after" "$(requests_of "$work/yardstick.json")")
echo "yardstick CPU per request: $yard_us us; CPU ratio yardstick / otpgate: $(python3 -c "print(f'{$yard_us / $otpgate_us:.3f}')")"
kill "$yard"
python3 -c 'import sys; o, y = map(float, sys.argv[1:]); print(f"ratio otpgate / yardstick: {o / y:.3f} (target >= 0.3, and >= 20,000 sends/s)")' \
  "$otpgate_rate" "$(cat "$work/yardstick-rate")"
echo "== 2. steady 2,000 sends/s, ${duration}s (node 1)"
oha_json -z "${duration}s" -c 64 -q 2000 -m POST -H "Authorization: Bearer $key" -T application/json -d "$body" "$url" \
  | summary "2000/s sends"
for n in $(seq 1 "$nodes"); do
  echo "== 3. peak resident memory of server $n so far: $(rss "${servers[$((n - 1))]}")"
done

if [ "$list" = yes ]; then
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
  echo "== peak resident memory of the server: $(rss "$server")"
fi
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
