#!/usr/bin/env bash
# End-to-end SMS benchmark on this machine, everything on the same cores:
#   HTTP send -> submit_sm at a real SMSC (node-smpp, peers/smsc) -> delivery
#   receipt -> the gateway records it,
# for otpgate and, as the yardstick, Kannel (Debian bearerbox + smsbox, HTTP
# sendsms with dlr-mask) against the same SMSC program, in the same run.
#
#   0. the SMSC program's own ceiling with receipts: bench/smsc-ceiling.js, a
#      bare node-smpp client with otpgate's binds and window, N submit_sm to the
#      last receipt (the ratio otpgate / this is printed at the end);
#   1. otpgate: accept -> submit_sm latency at a steady rate (default 2,000
#      sends/s) after a warm-up at that rate (default 2 s), per OTP from the
#      database, and otpgate_accept_to_submit_seconds from /metrics;
#   2. otpgate: N sends as fast as the load generator goes; the end-to-end rate is
#      N / (last receipt recorded - first send accepted), read from the database;
#   3. otpgate: a steady R sends/s for S seconds (default 5,000/s for 60 s): is
#      every OTP delivered, how long after the last send, and each OTP's accept
#      -> receipt lag (from the database);
#   4. Kannel: N sendsms requests with dlr-mask=1; the end-to-end rate is
#      N / (last DLR callback - first request), callbacks counted at an HTTP sink;
#   5. Kannel: the same steady R/s for S seconds, to the last DLR callback.
#
# Usage: bench/smpp.sh [--count N] [--steady-rate R] [--warmup-seconds W]
#                      [--rate-seconds S] [--sustain-rate R] [--sustain-seconds S]
#   (--steady-rate, --warmup-seconds and --rate-seconds are stage 1's;
#    --sustain-seconds 0 skips 3 and 5)
# BENCH_WINDOW (default 50): submits in flight per bind, for both gateways.
# BENCH_SMSC_FLAGS: more flags for every SMSC program of the run (peers/smsc/README.md),
# e.g. --no-delay.
# Needs (installed here if missing): a release build, oha, kannel, node + peers/smsc.
set -euo pipefail
cd "$(dirname "$0")/.."

count=50000
steady_rate=2000
warmup_seconds=2
rate_seconds=20
sustain_rate=5000
sustain_seconds=60
# Submits in flight per bind (otpgate's `window`, Kannel's max-pending-submits).
window="${BENCH_WINDOW:-50}"
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --steady-rate) steady_rate="$2"; shift 2 ;;
    --rate-seconds) rate_seconds="$2"; shift 2 ;;
    --warmup-seconds) warmup_seconds="$2"; shift 2 ;;
    --sustain-rate) sustain_rate="$2"; shift 2 ;;
    --sustain-seconds) sustain_seconds="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

export PATH="$PWD/bench/.tools/bin:$PATH"
command -v oha >/dev/null || cargo install oha --locked --root bench/.tools
command -v bearerbox >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kannel >/dev/null; }
[ -d peers/smsc/node_modules/smpp ] || peers/smsc/install.sh
# BENCH_BIN: an already built binary to measure instead of building one.
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p otpgate --locked
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/otpgate}"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # SMSC peers are started inside $(...), so their pids are kept in files.
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.5; rm -rf "$work"
}
trap cleanup EXIT

# oha_summary FILE LABEL: one line from an `oha --output-format json` report.
oha_summary() {
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); p = r["latencyPercentiles"]
print(f"   {sys.argv[2]}: {r['summary']['requestsPerSec']:.0f} req/s, p50 {p['p50']*1000:.2f} ms, p99 {p['p99']*1000:.2f} ms, statuses {r.get('statusCodeDistribution')}")
PY
}

. peers/smsc/start.sh
start_smsc() { # $1 = name; prints the port
  # shellcheck disable=SC2086 # BENCH_SMSC_FLAGS is a list of flags
  smsc_start "$work" "$1" --quiet --receipts delivered --stats-interval-ms 500 \
    --system-id otpgate --password secret ${BENCH_SMSC_FLAGS:-}
}

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%FT%TZ)"

# ------------------------------------------------------- the peer's ceiling --
# Two binds and the same window as otpgate's route below, on an SMSC of its own.
smsc_c=$(start_smsc ceiling-smsc)
echo "== 0. the SMSC peer's own ceiling: $count submit_sm with receipts, a bare node-smpp client, 2 binds, window $window"
node bench/smsc-ceiling.js "$smsc_c" "$count" 2 "$window" > "$work/ceiling.json"
ceiling_rate=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["rate"])' "$work/ceiling.json")
python3 - "$work/ceiling.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   {r['receipts']}/{r['count']} receipts in {r['seconds']:.2f} s = {r['rate']} OTPs/s (first submit_sm -> last receipt)")
PY
kill "$(cat "$work/ceiling-smsc.pid")" 2>/dev/null || true

# ---------------------------------------------------------------- otpgate --
smsc_a=$(start_smsc otpgate-smsc)
cat > "$work/otpgate.toml" <<TOML
listen = "127.0.0.1:18081"
database_url = "sqlite://$work/otpgate.db"
[log]
level = "warn"
[limits]
# Every send goes to one number from one key: per-number, per-account and
# per-key limits off for the benchmark.
per_number_max = 0
per_number_cooldown_seconds = 0
per_account_rps = 0
per_key_rps = 0
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
port = $smsc_a
system_id = "otpgate"
password = "secret"
binds = 2
window = $window
TOML
key=$("$bin" accounts create bench --sms-credits 100000000 --json --config "$work/otpgate.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
"$bin" serve --config "$work/otpgate.toml" > "$work/otpgate.out" 2>&1 &
server=$!; pids+=($server)
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:18081/readyz | grep -q '"ready"' && break; sleep 0.2; done

url=http://127.0.0.1:18081/api/v1/auths/send/otp/
body='{"number":"9851023212","message":"Your code is {otp}","sms_send_options":"text"}'

# last_otp_id: the newest OTP's id, so that a stage reads only its own rows.
last_otp_id() {
  python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select coalesce(max(id),0) from otps").fetchone()[0])' "$work/otpgate.db"
}
# delivered AFTER burst|steady: waits (10 minutes at most) until every OTP with an
# id above AFTER is delivered, then reports from the database: `burst` the end-to-end
# rate (also written to otpgate.db.rate), `steady` how far the last receipt trailed
# the last send and each OTP's accept -> receipt lag.
delivered() {
  python3 - "$work/otpgate.db" "$1" "$2" <<'PY'
import sqlite3, sys, time
db, before, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 600
while True:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    n, first, last = c.execute(
        "select count(*), min(created_at), max(delivered_at) from otps where id > ? and status = 'delivered'",
        (before,)).fetchone()
    total = c.execute("select count(*) from otps where id > ?", (before,)).fetchone()[0]
    if n >= total or time.time() > deadline:
        break
    c.close()
    time.sleep(0.5)
secs = (last - first) / 1e6
if mode == "burst":
    print(f"   end to end: {n}/{total} delivered in {secs:.2f} s = {n/secs:.0f} OTPs/s (first accept -> last receipt recorded)")
    open(db + ".rate", "w").write(f"{n/secs:.0f}")
else:
    last_accept = c.execute("select max(created_at) from otps where id > ?", (before,)).fetchone()[0]
    lags = [r[0] for r in c.execute(
        "select delivered_at - created_at from otps where id > ? and status = 'delivered' order by 1", (before,))]
    q = lambda f: lags[min(len(lags) - 1, int(f * len(lags)))] / 1000
    print(f"   {n}/{total} delivered; sends spanned {(last_accept - first) / 1e6:.1f} s, the last receipt came "
          f"{(last - last_accept) / 1e6:.2f} s after the last send; {n / secs:.0f} OTPs/s end to end")
    print(f"   accept -> receipt recorded per OTP: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {lags[-1] / 1000:.1f} ms")
PY
}
peak_rss() {
  echo "   peak resident memory of otpgate: $(awk '/VmHWM/{print $2/1024 " MiB"}' /proc/$server/status)"
}

# Stage 1 starts cold: a new otpgate process and database, and an SMSC program
# that has seen no traffic (node compiles its hot paths in the first moments).
# The first few hundred sends wait longer (tens of ms) while that settles. The
# target is about a steady rate, so $warmup_seconds of the same load come first,
# reported apart.
steady() { # $1 = seconds, $2 = oha's report
  oha --no-tui --output-format json -z "${1}s" -c 16 -q "$steady_rate" -m POST \
    -H "Authorization: Bearer $key" -T application/json -d "$body" "$url" > "$2"
}
# accept_to_submit AFTER LABEL: from the database, for each OTP with an id above
# AFTER, the time from its accept (created_at) to its `sent` event, which the
# delivery worker stamps right after the carrier's submit_sm_resp: exact
# quantiles, where the /metrics histogram only places them in buckets.
accept_to_submit() {
  python3 - "$work/otpgate.db" "$1" "$2" <<'PY'
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
lags = [r[0] / 1000 for r in c.execute(
    "select min(e.at) - o.created_at from otps o join otp_events e on e.otp_id = o.id "
    "and e.status = 'sent' where o.id > ? group by o.id order by 1", (int(sys.argv[2]),))]
accepted = c.execute("select count(*) from otps where id > ?", (int(sys.argv[2]),)).fetchone()[0]
q = lambda f: lags[min(len(lags) - 1, int(f * len(lags)))]
print(f"   {sys.argv[3]}: accept -> submit_sm_resp for {len(lags)} of {accepted} sends (per OTP, from the database): "
      f"p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, p99.9 {q(0.999):.1f} ms, max {lags[-1]:.1f} ms")
PY
}
echo "== 1. otpgate at a steady $steady_rate sends/s: ${warmup_seconds}s of warm-up, then ${rate_seconds}s measured"
start=$(last_otp_id)
steady "$warmup_seconds" "$work/warmup.json"
sleep 1
before=$(last_otp_id)
steady "$rate_seconds" "$work/rate.json"
oha_summary "$work/warmup.json" "HTTP, warm-up"
oha_summary "$work/rate.json" "HTTP, measured"
sleep 1
accept_to_submit "$start" "warm-up and measured run together"
accept_to_submit "$before" "measured run"
curl -s http://127.0.0.1:18081/metrics > "$work/metrics.txt"
python3 - "$work/metrics.txt" <<'PY'
import sys, re
buckets = []
for line in open(sys.argv[1]):
    m = re.match(r'otpgate_accept_to_submit_seconds_bucket\{.*le="([^"]+)"\} (\d+)', line)
    if m and m.group(1) != "+Inf":
        buckets.append((float(m.group(1)), int(m.group(2))))
total = max(c for _, c in buckets) if buckets else 0
def q(f):
    want = f * total
    prev_b, prev_c = 0.0, 0
    for b, c in buckets:
        if c >= want:
            return prev_b + (b - prev_b) * ((want - prev_c) / max(c - prev_c, 1))
        prev_b, prev_c = b, c
    return float("inf")
print(f"   /metrics histogram, warm-up included, {total} sends: p50 ~{q(0.5)*1000:.1f} ms, p99 ~{q(0.99)*1000:.1f} ms (interpolated in buckets)")
PY
sleep 2
before=$(last_otp_id)

echo "== 2. otpgate: $count sends, 128 connections, to delivered receipts"
oha --no-tui --output-format json -n "$count" -c 128 -m POST \
  -H "Authorization: Bearer $key" -T application/json -d "$body" "$url" > "$work/burst.json"
oha_summary "$work/burst.json" "HTTP accept"
delivered "$before" burst
otpgate_rate=$(cat "$work/otpgate.db.rate")
peak_rss

if [ "$sustain_seconds" -gt 0 ]; then
  sleep 2
  before=$(last_otp_id)
  echo "== 3. otpgate: a steady $sustain_rate sends/s for ${sustain_seconds}s, 128 connections, to delivered receipts"
  oha --no-tui --output-format json -z "${sustain_seconds}s" -c 128 -q "$sustain_rate" -m POST \
    -H "Authorization: Bearer $key" -T application/json -d "$body" "$url" > "$work/sustain.json"
  oha_summary "$work/sustain.json" "HTTP"
  delivered "$before" steady
  peak_rss
fi

# ----------------------------------------------------------------- Kannel --
smsc_b=$(start_smsc kannel-smsc)
mkdir -p "$work/kannel"
cat > "$work/kannel/kannel.conf" <<CONF
group = core
admin-port = 13000
admin-password = bench
smsbox-port = 13001
log-file = "$work/kannel/bearerbox.log"
log-level = 3
box-allow-ip = 127.0.0.1
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = bench
host = 127.0.0.1
port = $smsc_b
transceiver-mode = true
smsc-username = otpgate
smsc-password = secret
system-type = ""
max-pending-submits = $window
msg-id-type = 0x00
enquire-link-interval = 30

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = 13013
log-file = "$work/kannel/smsbox.log"
log-level = 3

group = sendsms-user
username = bench
password = bench
max-messages = 1
CONF
bearerbox "$work/kannel/kannel.conf" > /dev/null 2>&1 & pids+=($!)
sleep 1
smsbox "$work/kannel/kannel.conf" > /dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do
  curl -s "http://127.0.0.1:13000/status.txt?password=bench" | grep -q "online" && break; sleep 0.2
done
# DLR callbacks go to otpgate's /healthz, counted in its metrics.
healthz_count() { curl -s http://127.0.0.1:18081/metrics | awk -F' ' '/otpgate_http_requests_total\{route="\/healthz"/{s+=$2} END{print s+0}'; }
# wait_callbacks START N: polls every 0.5 s (10 minutes at most) until N callbacks
# arrived since the count START; prints how many did.
wait_callbacks() {
  local got=0
  for _ in $(seq 1 1200); do
    got=$(( $(healthz_count) - $1 ))
    [ "$got" -ge "$2" ] && break
    sleep 0.5
  done
  echo "$got"
}
h0=$(healthz_count)
dlr=$(python3 -c 'import urllib.parse; print(urllib.parse.quote("http://127.0.0.1:18081/healthz", safe=""))')
kurl="http://127.0.0.1:13013/cgi-bin/sendsms?username=bench&password=bench&from=otpgate&to=9779851023212&text=Your+code+is+123456&dlr-mask=1&dlr-url=$dlr"
echo "== 4. Kannel: $count sendsms requests, 128 connections, to DLR callbacks"
t0=$(date +%s.%N)
oha --no-tui --output-format json -n "$count" -c 128 "$kurl" > "$work/kannel.json"
oha_summary "$work/kannel.json" "HTTP accept"
got=$(wait_callbacks "$h0" "$count")
t1=$(date +%s.%N)
kannel_rate=$(python3 -c "print(round($got / ($t1 - $t0)))")
echo "   end to end: $got/$count DLR callbacks in $(python3 -c "print(round($t1 - $t0, 2))") s = $kannel_rate OTPs/s (first request -> last callback, polled every 0.5 s)"

echo "== ratio: otpgate $otpgate_rate / Kannel $kannel_rate = $(python3 -c "print(round($otpgate_rate / max($kannel_rate, 1), 2))")x end to end with receipts (target >= 3x)"
echo "== ratio: otpgate $otpgate_rate / the peer's ceiling $ceiling_rate = $(python3 -c "print(round($otpgate_rate / max($ceiling_rate, 1), 2))") (target >= 0.75, and >= 10,000 OTPs/s)"

if [ "$sustain_seconds" -gt 0 ]; then
  sleep 2
  h0=$(healthz_count)
  echo "== 5. Kannel: a steady $sustain_rate sendsms/s for ${sustain_seconds}s, 128 connections, to DLR callbacks"
  t0=$(date +%s.%N)
  oha --no-tui --output-format json -z "${sustain_seconds}s" -c 128 -q "$sustain_rate" "$kurl" > "$work/kannel-sustain.json"
  t_end=$(date +%s.%N)
  oha_summary "$work/kannel-sustain.json" "HTTP"
  sent=$(python3 -c 'import json,sys; print(sum(json.load(open(sys.argv[1])).get("statusCodeDistribution", {}).values()))' "$work/kannel-sustain.json")
  got=$(wait_callbacks "$h0" "$sent")
  t1=$(date +%s.%N)
  echo "   $got/$sent DLR callbacks; the last came $(python3 -c "print(round($t1 - $t_end, 2))") s after the last request; $(python3 -c "print(round($got / ($t1 - $t0)))") OTPs/s end to end (polled every 0.5 s)"
fi
