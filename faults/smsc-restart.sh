#!/usr/bin/env bash
# Fault 2: the SMSC killed (SIGKILL) for FAULT_SMSC_DOWN seconds (default 30) under
# load and started again on the same port.
#
# Load: FAULT_RATE sends/s (default 1000) for FAULT_SECONDS (default 45), SQLite
# store; the SMSC dies 5 s in. The queue depth (/metrics) and the route state
# (/readyz) are sampled every 0.5 s.
#   PASS when sends kept being accepted during the outage, otpgate bound again by
#   itself, the backlog drained (queue depth back to its level before the
#   outage within FAULT_DRAIN_LIMIT s, default 120, of the rebind), and every
#   send answered 200 reached the SMSC with its code, balances exact.
# Figures: rebind delay after the SMSC came back (reconnect backoff, capped by
# smpp.reconnect_max_seconds = 30), backlog at the rebind, drain time and the
# SMSC's receive rate while draining.
# shellcheck source=faults/lib.sh
. "$(dirname "$0")/lib.sh"
fault_init smsc-restart
seconds=${FAULT_SECONDS:-45}
outage=${FAULT_SMSC_DOWN:-30}
drain_limit=${FAULT_DRAIN_LIMIT:-120}
credits=10000000

db="sqlite://$WORK/otpgate.db"
smsc_port=$(smsc smsc)
http=$(free_port)
config "$WORK/otpgate.toml" "$db" "$http" "$smsc_port"
key=$(account "$WORK/otpgate.toml" a "$credits")
serve otpgate "$WORK/otpgate.toml"

# t, queue depth, readyz route statuses
sample() {
  while :; do
    depth=$(curl -s "http://127.0.0.1:$http/metrics" | awk '/^otpgate_queue_depth\{channel="text"\}/{print $2}')
    ready=$(curl -s "http://127.0.0.1:$http/readyz" | python3 -c 'import json,sys
try:
    d = json.load(sys.stdin); print(",".join(r.get("status","?") for r in d.get("routes", [])) or d.get("status"))
except Exception: print("?")')
    echo "$(date +%s.%N) ${depth:-?} $ready"
    sleep 0.5
  done
}
sample > "$WORK/samples.txt" &
echo $! > "$WORK/sampler.pid"

log "load: $FAULT_RATE sends/s for $seconds s; SMSC down from 5 s for $outage s"
load "$WORK/sends.jsonl" --target "http://127.0.0.1:$http" --key "$key" \
  --rate "$FAULT_RATE" --duration "$seconds" > "$WORK/load.json" &
loader=$!
sleep 5
stop smsc KILL
t_down=$(date +%s.%N)
log "SMSC killed"
sleep "$outage"
smsc smsc-2 --port "$smsc_port" > /dev/null
t_up=$(date +%s.%N)
log "SMSC back on port $smsc_port"
wait "$loader"
log "load done: $(tail -1 "$WORK/load.json")"

# Wait for the backlog to drain (bounded), then stop sampling.
deadline=$(( $(date +%s) + drain_limit + 40 ))
t_empty=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  d=$(curl -s "http://127.0.0.1:$http/metrics" | awk '/^otpgate_queue_depth\{channel="text"\}/{print $2}')
  [ "${d:-1}" = 0 ] && { t_empty=$(date +%s.%N); break; }
  sleep 0.2
done
stop sampler

if python3 "$ROOT/faults/check.py" --db "$db" --sends "$WORK/sends.jsonl" --record "$WORK/smsc.rec" \
  --drain-seconds 60 --topup a=$credits > "$WORK/check.json"; then
  checked=PASS
else
  checked=FAIL
fi
python3 - "$WORK" "$t_down" "$t_up" "$drain_limit" "$checked" "$t_empty" > "$WORK/verdict.txt" <<'PY'
import json, sys
work, t_down, t_up, drain_limit, checked = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
t_empty = float(sys.argv[6])
c = json.load(open(f"{work}/check.json"))
l = json.loads(open(f"{work}/load.json").read().splitlines()[-1])
samples = []
for line in open(f"{work}/samples.txt"):
    t, depth, ready = line.split()
    samples.append((float(t), int(float(depth)) if depth != "?" else None, ready))
before = [d for t, d, _ in samples if t < t_down and d is not None]
baseline = max(max(before, default=0), 100)
rebound = next((t for t, _, r in samples if t > t_up and r and all(s == "bound" for s in r.split(","))), None)
backlog = next((d for t, d, _ in samples if rebound and t >= rebound and d is not None), None)
drained = next((t for t, d, _ in samples if rebound and t > rebound and d is not None and d <= baseline),
               t_empty if rebound and t_empty > rebound else None)
ok_during = sum(1 for line in open(f"{work}/sends.jsonl")
                if (r := json.loads(line))["status"] == 200 and t_down < r["t"] < t_up)
rate = None
if rebound and drained:
    ats = [json.loads(line)["at"] / 1000 for line in open(f"{work}/smsc.rec")]
    n = sum(1 for a in ats if rebound <= a <= drained)
    rate = n / max(drained - rebound, 0.5)
problems = list(c["failures"])
if ok_during == 0:
    problems.append("no send was accepted while the SMSC was down")
if rebound is None:
    problems.append("otpgate did not bind again")
elif drained is None or drained - rebound > drain_limit:
    problems.append(f"the backlog did not drain within {drain_limit} s of the rebind")
verdict = "PASS" if not problems and checked == "PASS" else "FAIL"
fmt = lambda x: "n/a" if x is None else f"{x:.1f}"
print(verdict, f"sent={l['sent']} ok200={c['ok_200']} ok200_while_smsc_down={ok_during} "
      f"rebind_after_s={fmt(rebound - t_up if rebound else None)} backlog_at_rebind={backlog} "
      f"drain_s={fmt(drained - rebound if rebound and drained else None)} drain_rate_per_s={fmt(rate)} "
      f"missing_at_smsc={c['ok_missing_at_smsc']} duplicates={c['smsc_duplicates']} problems={problems}")
PY
read -r result figures < "$WORK/verdict.txt"
verdict "$result" "$figures"
