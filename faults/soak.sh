#!/usr/bin/env bash
# Soak: a steady FAULT_RATE OTPs/s (default 1000) through SMPP for FAULT_SECONDS
# (default 600), SQLite store, the node-smpp SMSC sending delivery receipts.
# Every 10 s: sends, errors, send latency p50/p99 of that window (load.py) and
# otpgate's resident memory. At the end:
#   memory flat:  mean RSS of the last three samples within FAULT_SOAK_RSS_GROWTH
#                 (default 1.25x) of the mean over the second minute (after warm-up);
#   latency flat: the median of the windows' p99 over the last third of the run
#                 within FAULT_SOAK_P99_GROWTH (default 2x) of that of the first
#                 third (first window left out) or under 20 ms;
#   no error:     every send answered 200, the rate held (>= 95 % of the target),
#                 every OTP reached the SMSC, balances exact.
# shellcheck source=faults/lib.sh
. "$(dirname "$0")/lib.sh"
fault_init soak
seconds=${FAULT_SECONDS:-600}
credits=100000000

db="sqlite://$WORK/otpgate.db"
smsc_port=$(smsc smsc)
http=$(free_port)
config "$WORK/otpgate.toml" "$db" "$http" "$smsc_port"
key=$(account "$WORK/otpgate.toml" a "$credits")
serve otpgate "$WORK/otpgate.toml"
pid=$(cat "$WORK/otpgate.pid")
(while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s.%N) $(rss_mib "$pid")"; sleep 10; done) > "$WORK/rss.txt" &

log "soak: $FAULT_RATE sends/s for $seconds s (samples every 10 s)"
load "$WORK/sends.jsonl" --target "http://127.0.0.1:$http" --key "$key" --rate "$FAULT_RATE" \
  --duration "$seconds" --window 10 --connections 64 | tee "$WORK/windows.jsonl" >&2
checked=PASS
python3 "$ROOT/faults/check.py" --db "$db" --sends "$WORK/sends.jsonl" --record "$WORK/smsc.rec" \
  --drain-seconds 120 --topup a=$credits > "$WORK/check.json" || checked=FAIL
cpu=$(awk '{printf "%.0f", ($14 + $15) / 100}' "/proc/$pid/stat")
hwm=$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$pid/status")

python3 - "$WORK" "$checked" "$FAULT_RATE" "$cpu" "$hwm" \
  "${FAULT_SOAK_RSS_GROWTH:-1.25}" "${FAULT_SOAK_P99_GROWTH:-2}" > "$WORK/verdict.txt" <<'PY'
import json, statistics, sys
work, checked, rate, cpu, hwm, rss_growth, p99_growth = sys.argv[1:8]
rate, rss_growth, p99_growth = float(rate), float(rss_growth), float(p99_growth)
lines = [json.loads(x) for x in open(f"{work}/windows.jsonl")]
windows = [w for w in lines if "window" in w]
summary = next(w for w in lines if w.get("summary"))
rss = [(float(a), float(b)) for a, b in (x.split() for x in open(f"{work}/rss.txt") if len(x.split()) == 2)]
t0 = rss[0][0]
# RSS: the second minute against the last three samples.
warm = [m for t, m in rss if 60 <= t - t0 < 120] or [m for _, m in rss[:3]]
last = [m for _, m in rss[-3:]]
rss_ratio = statistics.mean(last) / statistics.mean(warm)
third = max(1, len(windows) // 3)
first_p99 = statistics.median(w["p99_ms"] for w in windows[1:third + 1] or windows)
last_p99 = statistics.median(w["p99_ms"] for w in windows[-third:])
c = json.load(open(f"{work}/check.json"))
errors = sum(w["errors"] for w in windows) + sum(v for k, v in summary["statuses"].items() if k != "200")
problems = list(c["failures"])
mem_flat = rss_ratio <= rss_growth
lat_flat = last_p99 <= max(first_p99 * p99_growth, 20)
if not mem_flat:
    problems.append(f"RSS grew {rss_ratio:.2f}x")
if not lat_flat:
    problems.append(f"p99 went from {first_p99} to {last_p99} ms")
if errors:
    problems.append(f"{errors} sends not answered 200")
if summary["rate"] < 0.95 * rate:
    problems.append(f"the load reached {summary['rate']}/s of {rate}/s")
print("PASS" if not problems and checked == "PASS" else "FAIL",
      f"seconds={summary['seconds']} sent={summary['sent']} rate={summary['rate']}/s errors={errors} "
      f"memory_flat={mem_flat} rss_mib_warm={statistics.mean(warm):.1f} rss_mib_end={statistics.mean(last):.1f} "
      f"rss_mib_min_max={min(m for _, m in rss):.1f}-{max(m for _, m in rss):.1f} peak_hwm_mib={hwm} "
      f"latency_flat={lat_flat} p99_ms_first_third={first_p99} p99_ms_last_third={last_p99} "
      f"p50_ms_overall={summary['ok_p50_ms']} p99_ms_overall={summary['ok_p99_ms']} "
      f"otpgate_cpu_s={cpu} missing_at_smsc={c['ok_missing_at_smsc']} duplicates={c['smsc_duplicates']} "
      f"statuses={c['otp_statuses']} problems={problems}")
PY
read -r result figures < "$WORK/verdict.txt"
verdict "$result" "$figures"
