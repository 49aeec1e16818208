#!/usr/bin/env bash
# Fault 5: an SMSC that answers submit_sm too late, and one that never answers.
#
# Two phases, each with its own SMSC, store and server: `slow` (every
# submit_sm_resp delayed FAULT_RESP_DELAY_MS, default 15000, beyond otpgate's
# smpp.response_timeout_ms of 10000) and `silent` (submit_sm never answered;
# enquire_link still is, so the binds stay up). FAULT_RATE sends/s (default 1000)
# for FAULT_SECONDS (default 20), otpgate's resident memory sampled every second;
# then the SMSC is told to behave (SIGUSR1, same connections) and the backlog
# drains.
#   PASS when, in both phases, otpgate's RSS stayed under FAULT_RSS_LIMIT_MIB
#   (default 200), submits timed out and were retried (the metrics say so), and
#   after the SMSC behaved every send answered 200 reached it, balances exact.
# Duplicates (a late answer after otpgate gave up and resubmitted) are reported.
# shellcheck source=faults/lib.sh
. "$(dirname "$0")/lib.sh"
fault_init slow-smsc
seconds=${FAULT_SECONDS:-20}
rss_limit=${FAULT_RSS_LIMIT_MIB:-200}
credits=10000000

metric() { # sum of a metric's series whose labels contain $2
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" -v f="$3" 'index($0, m) == 1 && index($0, f) {s += $NF} END {print s + 0}'
}

phase() { # NAME smsc.js flags...
  local name="$1" http smsc_port db pid key t0
  shift
  db="sqlite://$WORK/$name.db"
  smsc_port=$(smsc "$name" "$@")
  http=$(free_port)
  config "$WORK/$name.toml" "$db" "$http" "$smsc_port"
  key=$(account "$WORK/$name.toml" a "$credits")
  serve "otpgate-$name" "$WORK/$name.toml"
  pid=$(cat "$WORK/otpgate-$name.pid")
  (while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s) $(rss_mib "$pid")"; sleep 1; done) > "$WORK/$name.rss" &
  log "$name: load $FAULT_RATE sends/s for $seconds s"
  load "$WORK/$name.jsonl" --target "http://127.0.0.1:$http" --key "$key" \
    --rate "$FAULT_RATE" --duration "$seconds" > "$WORK/$name.load.json"
  log "$name: $(tail -1 "$WORK/$name.load.json")"
  local timeouts retries depth
  timeouts=$(metric "$http" 'otpgate_smpp_total{' 'event="submit_error"')
  retries=$(metric "$http" 'otpgate_deliveries_total{' 'outcome="retry"')
  depth=$(metric "$http" 'otpgate_queue_depth{' 'text')
  kill -USR1 "$(cat "$WORK/$name.pid")"
  t0=$(date +%s)
  log "$name: SMSC behaves again; backlog $depth"
  local checked=PASS
  python3 "$ROOT/faults/check.py" --db "$db" --sends "$WORK/$name.jsonl" --record "$WORK/$name.rec" \
    --drain-seconds 180 --topup a=$credits > "$WORK/$name.check.json" || checked=FAIL
  echo "$name $checked $timeouts $retries $depth $(( $(date +%s) - t0 ))" >> "$WORK/phases.txt"
  stop "otpgate-$name" TERM
  stop "$name" TERM
}

phase slow --resp-delay-ms "${FAULT_RESP_DELAY_MS:-15000}"
phase silent --no-resp

python3 - "$WORK" "$rss_limit" > "$WORK/verdict.txt" <<'PY'
import json, sys
work, limit = sys.argv[1], float(sys.argv[2])
problems, parts = [], []
for line in open(f"{work}/phases.txt"):
    name, checked, timeouts, retries, depth, drain = line.split()
    c = json.load(open(f"{work}/{name}.check.json"))
    l = json.loads(open(f"{work}/{name}.load.json").read().splitlines()[-1])
    rss = [float(x.split()[1]) for x in open(f"{work}/{name}.rss") if len(x.split()) == 2]
    peak = max(rss) if rss else float("nan")
    if checked != "PASS":
        problems += [f"{name}: {f}" for f in c["failures"]]
    if not peak < limit:
        problems.append(f"{name}: RSS peaked at {peak} MiB (limit {limit})")
    if float(timeouts) == 0 or float(retries) == 0:
        problems.append(f"{name}: no timeout or retry was seen")
    parts.append(f"{name}: sent={l['sent']} ok200={c['ok_200']} rss_mib={min(rss, default=0):.0f}-{peak:.0f} "
                 f"submit_errors={float(timeouts):.0f} retries={float(retries):.0f} backlog={float(depth):.0f} "
                 f"drain_s={drain} missing_at_smsc={c['ok_missing_at_smsc']} duplicates={c['smsc_duplicates']}")
print("PASS" if not problems else "FAIL", "; ".join(parts), f"problems={problems}")
PY
read -r result figures < "$WORK/verdict.txt"
verdict "$result" "$figures"
