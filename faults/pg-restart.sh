#!/usr/bin/env bash
# Fault 3: the PostgreSQL server stopped and started again under load.
#
# This stops the machine's PostgreSQL cluster (FAULT_PG_CLUSTER, default the first
# one pg_lsclusters lists) for FAULT_PG_DOWN seconds (default 3): every other
# client of that server sees the outage too. It therefore runs only with
# FAULT_PG_RESTART=1; without it the verdict is SKIP (exit 77).
#
# Load: FAULT_RATE sends/s (default 1000) for FAULT_SECONDS (default 30) to one
# node on a database of its own; the server is stopped (a CHECKPOINT, then
# `-m fast`) about 10 s in and kept down FAULT_PG_DOWN s after it has stopped.
#   PASS when, while it is down, /readyz answers 503 and sends are refused with
#   503 in the error envelope (no other 5xx and no dropped connection at any
#   time), sends are accepted again after it is back without restarting
#   otpgate, and every send answered 200 is in the store and reached the SMSC,
#   balances exact.
# shellcheck source=faults/lib.sh
. "$(dirname "$0")/lib.sh"
fault_init pg-restart
if [ "${FAULT_PG_RESTART:-0}" != 1 ]; then
  FAULT_VERDICT=SKIP # read by fault_cleanup
  echo "VERDICT $FAULT_NAME SKIP restarts the shared PostgreSQL server: run with FAULT_PG_RESTART=1"
  exit 77
fi
seconds=${FAULT_SECONDS:-30}
down=${FAULT_PG_DOWN:-3}
cluster=${FAULT_PG_CLUSTER:-$(pg_lsclusters -h | awk 'NR==1{print $1" "$2}')}
credits=10000000
read -r pg_version pg_cluster <<< "$cluster"
pgctl() { pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" "$@"; }
# Whatever happens to this script, the server is started again.
CLEANUPS=("pgctl start >/dev/null 2>&1" "${CLEANUPS[@]}")

db=$(pg_database)
smsc_port=$(smsc smsc)
http=$(free_port)
config "$WORK/otpgate.toml" "$db" "$http" "$smsc_port"
key=$(account "$WORK/otpgate.toml" a "$credits")
serve otpgate "$WORK/otpgate.toml"

log "load: $FAULT_RATE sends/s for $seconds s; PostgreSQL ($cluster) down at 10 s for $down s"
load "$WORK/sends.jsonl" --target "http://127.0.0.1:$http" --key "$key" \
  --rate "$FAULT_RATE" --duration "$seconds" > "$WORK/load.json" &
loader=$!
sleep 9
# A checkpoint first, while the server is up: the one at shutdown then has little
# to write, and the outage (for everyone using this server) stays short.
psql "$FAULT_PG_URL/postgres" -Xqc CHECKPOINT
t_stop=$(date +%s.%N)
pgctl stop -m fast
t_stopped=$(date +%s.%N)
log "PostgreSQL stopped at $(date -u +%T) UTC"
# One send of our own while it is down, its reply kept (in the background, so
# that the outage is not stretched by a slow answer).
curl -s --max-time 10 "http://127.0.0.1:$http/api/v1/auths/send/otp/" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d '{"number":"9841999999","message":"Your code is {otp}","sms_send_options":"text"}' \
  > "$WORK/down-reply.json" &
probe=$!
ready_down=""
deadline=$(python3 -c "print($t_stopped + $down)")
while python3 -c "import sys,time; sys.exit(0 if time.time() < $deadline else 1)"; do
  ready_down+="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$http/readyz") "
  sleep 0.3
done
pgctl start
t_start=$(date +%s.%N)
log "PostgreSQL started at $(date -u +%T) UTC; readyz while down: $ready_down"
t_ready=""
for _ in $(seq 1 300); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/readyz")" = 200 ]; then
    t_ready=$(date +%s.%N); break
  fi
  sleep 0.1
done
wait "$probe" || true
wait "$loader"
log "load done: $(tail -1 "$WORK/load.json")"

checked=PASS
python3 "$ROOT/faults/check.py" --db "$db" --sends "$WORK/sends.jsonl" --record "$WORK/smsc.rec" \
  --drain-seconds 120 --topup a=$credits > "$WORK/check.json" || checked=FAIL
python3 - "$WORK" "$checked" "$t_stop" "$t_stopped" "$t_start" "${t_ready:-0}" "$ready_down" > "$WORK/verdict.txt" <<'PY'
import collections, json, sys
work, checked = sys.argv[1:3]
t_stop, t_stopped, t_start, t_ready = map(float, sys.argv[3:7])
ready_down = sys.argv[7].split()
c = json.load(open(f"{work}/check.json"))
sends = [json.loads(x) for x in open(f"{work}/sends.jsonl")]
statuses = collections.Counter(r["status"] for r in sends)
during = collections.Counter((r["status"], r.get("error")) for r in sends if t_stopped <= r["t"] <= t_start)
after_ok = sum(1 for r in sends if r["t"] > (t_ready or t_start) and r["status"] == 200)
reply = open(f"{work}/down-reply.json").read().strip()
problems = list(c["failures"])
if "503" not in ready_down:
    problems.append(f"/readyz never answered 503 while PostgreSQL was down: {ready_down}")
if not any(s == 503 for s, _ in during) and '"status":503' not in reply.replace(" ", ""):
    problems.append("no send was refused with 503 while PostgreSQL was down")
other = {s: n for s, n in statuses.items() if s not in (200, 503)}
if other:
    problems.append(f"replies other than 200 and 503: {other}")
if not t_ready:
    problems.append("/readyz did not come back")
if after_ok == 0:
    problems.append("no send was accepted after PostgreSQL came back")
print("PASS" if not problems and checked == "PASS" else "FAIL",
      f"sent={len(sends)} statuses={dict(sorted(statuses.items()))} outage_s={t_start - t_stop:.1f} "
      f"readyz_while_down={'/'.join(sorted(set(ready_down)))} replies_while_down={dict((f'{s}:{e}', n) for (s, e), n in during.items())} "
      f"ready_again_after_start_s={(t_ready - t_start) if t_ready else float('nan'):.2f} ok200_after={after_ok} "
      f"missing_at_smsc={c['ok_missing_at_smsc']} duplicates={c['smsc_duplicates']} reply_while_down={reply[:160]} problems={problems}")
PY
read -r result figures < "$WORK/verdict.txt"
verdict "$result" "$figures"
