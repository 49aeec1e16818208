#!/usr/bin/env bash
# Voice OTP benchmark on this machine, every peer on the same cores, 127.0.0.1 only:
#   1. prompt renders through POST /api/v1/auths/voice/preview/ (the same Prompter
#      and cache a call uses): renders per second and p50/p99, as the client sees
#      them (HTTP round trip, WAV in the body);
#        cold   = every request carries a code not asked for before in this run, so
#                 the render cache cannot answer and espeak-ng runs for each one
#                 (its program and voice data are in the OS page cache: each
#                 connection makes one untimed request first);
#        cached = the same request repeated (oha), answered from the cache;
#   2. N voice OTPs (default 50) sent through the API at the same moment to a sipp
#      callee (bench/voice-uas.xml) via a route driver = "sip" with max_calls = N;
#      their prompts are rendered first (through the preview, which warms the cache),
#      so the calls can all start at once. Counts the OTPs that end `sent`, and checks
#      every RTP stream: all packets, in order, PCMU, timestamps +160, marker bit, and
#      the payload byte for byte the G.711 encoding of its own OTP's prompt (each OTP
#      has its own code), so packets = prompt / 20 ms exactly; it also prints how late
#      packets arrived against a 20 ms clock (measured in a Python sink) and the most
#      calls up at once;
#   3. accept -> INVITE at low load: one voice OTP per second (default 20), from the
#      OTP's created_at (the clock otpgate_accept_to_submit_seconds uses for SMS) to
#      the INVITE's arrival in sipp's -trace_msg log; once with codes rendered on the
#      way (the real case: a new code is a cache miss) and once with the prompts
#      rendered beforehand (dispatch and SIP alone).
#
# Usage: bench/voice.sh [--cold N] [--duration SECONDS] [--calls N] [--sends N]
#   --cold N: cold renders at 4 connections (200; N/4 at 1 connection), --duration: each
#   cached oha run (10 s), --calls: part 2 (50), --sends: each part 3 run (20).
# The client side (HTTP, RTP sink, checks) is bench/voice.py.
# Needs (installed here if missing): a release build, oha, espeak-ng, sipp (sip-tester),
# python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."

cold=200
duration=10
ncalls=50
nsends=20
while [ $# -gt 0 ]; do
  case "$1" in
    --cold) cold="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --calls) ncalls="$2"; shift 2 ;;
    --sends) nsends="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

export PATH="$PWD/bench/.tools/bin:$PATH"
command -v oha >/dev/null || cargo install oha --locked --root bench/.tools
if ! command -v espeak-ng >/dev/null || ! command -v sipp >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sip-tester >/dev/null
fi
# BENCH_BIN: an already built binary to measure instead of building one.
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p otpgate --locked
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/otpgate}"
client="$PWD/bench/voice.py"
scenario="$PWD/bench/voice-uas.xml"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT

free_port() { # a port free for both UDP and TCP on 127.0.0.1
  python3 -c '
import socket
for _ in range(100):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        t.close(); u.close()'
}
sip_port=$(free_port)
http_port=18082

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%FT%TZ); load average$(uptime | sed 's/.*load average//')"
echo "== otpgate $("$bin" --version 2>/dev/null | awk '{print $NF}'), $(espeak-ng --version | head -1 | cut -d' ' -f1-4), $(sipp -v 2>&1 | grep -o 'SIPp v[^ -]*'), $(oha --version)"

cat > "$work/otpgate.toml" <<TOML
listen = "127.0.0.1:$http_port"
database_url = "sqlite://$work/voice.db"
[log]
level = "warn,otpgate::delivery::voice::sip=info"
[demo]
create_default_account = false
[limits]
# All calls start at once from one key: the send-rate limits must not shape
# the benchmark.
per_account_rps = 0
per_key_rps = 0
[delivery]
lease_seconds = 180
[[routes]]
name = "bench"
channel = "voice"
driver = "sip"
[routes.sip]
proxy = "127.0.0.1:$sip_port"
local_ip = "127.0.0.1"
max_calls = $ncalls
TOML
key=$("$bin" accounts create bench --sms-credits 0 --phone-credits 1000000 --json --config "$work/otpgate.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
"$bin" serve --config "$work/otpgate.toml" > "$work/otpgate.out" 2>&1 &
server=$!; pids+=($server)
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$http_port/readyz" | grep -q '"ready"' && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$http_port/readyz" | grep -q '"ready"' || { echo "otpgate did not start:"; cat "$work/otpgate.out"; exit 1; }
export VB_PORT=$http_port VB_KEY=$key VB_DB="$work/voice.db"

# sipp as the callee on $sip_port; $1 = calls, $2 = RTP sink port, $3 = name. Sets $sipp.
start_sipp() {
  TZ=UTC sipp -sf "$scenario" -i 127.0.0.1 -mi 127.0.0.1 -t u1 -p "$sip_port" -mp "$(free_port)" \
    -m "$1" -key rtp_sink "$2" -nostdin -timeout 300s -timeout_error \
    -trace_msg -message_file "$work/$3.msg" -trace_err -error_file "$work/$3.err" \
    -trace_screen -screen_file "$work/$3.screen" > "$work/$3.out" 2>&1 &
  sipp=$!; pids+=($sipp)
  for _ in $(seq 1 100); do # listening once its port can no longer be bound
    python3 -c 'import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", int(sys.argv[1])))' \
      "$sip_port" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "sipp did not start: $(cat "$work/$3.out")" >&2; exit 1
}
# Waits for sipp (bounded by its own -timeout) and prints what it counted.
finish_sipp() { # $1 = name
  rc=0; wait "$sipp" || rc=$?
  echo "   sipp: exit $rc; $(grep -E 'Successful call|Failed call' "$work/$1.screen" | tail -2 \
    | awk -F'|' '{gsub(/^ +| +$/,"",$1); gsub(/ /,"",$3); printf "%s%s %s", sep, tolower($1), $3; sep=", "}'); $(grep -o 'Peak was [0-9]* calls' "$work/$1.screen" | tail -1 | sed 's/Peak was/peak/;s/calls/calls up at once/')"
}

url="http://127.0.0.1:$http_port/api/v1/auths/voice/preview/"
oha_summary() { python3 "$client" oha "$1"; } # $1 = label; oha's JSON on stdin

echo "== 1. renders through POST /api/v1/auths/voice/preview/ (voice np_rija, 6-digit code read twice)"
python3 "$client" cold "$((cold / 4))" 1 100000
python3 "$client" cold "$cold" 4 200000
body='{"message":"तपाईंको कोड {otp} हो","voice_input":"np_rija","otp":"987654","length_factor":1.0}'
curl -sf -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body" "$url"
for c in 1 16; do
  oha --no-tui --output-format json -z "${duration}s" -c "$c" -m POST -H "Authorization: Bearer $key" \
    -T application/json -d "$body" "$url" | oha_summary "cached, $c connection(s), ${duration}s"
done

echo "== 2. $ncalls voice OTPs at once to a sipp callee, route max_calls = $ncalls"
sink=$(free_port)
start_sipp "$ncalls" "$sink" calls
python3 "$client" calls "$ncalls" "$sink"
finish_sipp calls

echo "== 3. accept -> INVITE, one voice OTP per second, $nsends sends each"
for run in cold-render prerendered; do
  sink=$(free_port)
  start_sipp "$nsends" "$sink" "$run"
  python3 "$client" latency "$nsends" "$sink" "$work/$run.msg" "$run" $([ "$run" = prerendered ] && echo prerender)
  finish_sipp "$run"
  python3 "$client" latency-report "$work/$run.msg" "$run"
done
echo "== server peak resident memory: $(awk '/VmHWM/{printf "%.1f MiB", $2/1024}' /proc/$server/status)"
if grep -qE ' (ERROR|WARN) ' "$work/otpgate.out"; then
  echo "== the server logged warnings or errors:"; grep -E ' (ERROR|WARN) ' "$work/otpgate.out" | head -20
fi
echo "== done $(date -u +%FT%TZ); load average$(uptime | sed 's/.*load average//')"
