#!/usr/bin/env bash
# Fault 1: otpgate killed with SIGKILL three times under sustained load, with the
# node-smpp SMSC as the carrier.
#
# Load: FAULT_RATE sends/s (default 1000) for FAULT_SECONDS (default 30), each to
# its own number, spread over three accounts. At 20 %, 45 % and 70 % of the run
# the server is killed with `kill -9` and started again FAULT_DOWN seconds later
# (default 1). After the load, once the queue has drained:
#   PASS when every send answered 200 is in the store and reached the SMSC at
#   least once with its code, and every account's balance equals its top-ups
#   minus the credits of its accepted sends plus their refunds (ledger checked
#   too); duplicates (at-least-once redeliveries of jobs whose outcome died with
#   the process) are reported, not failed.
#
# Usage: faults/kill9.sh [sqlite|postgres]   (default sqlite; FAULT_STORE too)
# shellcheck source=faults/lib.sh
. "$(dirname "$0")/lib.sh"
store="${1:-${FAULT_STORE:-sqlite}}"
fault_init "kill9-$store"
seconds=${FAULT_SECONDS:-30}
down=${FAULT_DOWN:-1}
credits=10000000

case "$store" in
  sqlite) db="sqlite://$WORK/otpgate.db" ;;
  postgres) db=$(pg_database) ;;
  *) echo "usage: $0 [sqlite|postgres]" >&2; exit 2 ;;
esac
smsc_port=$(smsc smsc)
http=$(free_port)
config "$WORK/otpgate.toml" "$db" "$http" "$smsc_port"
keys=()
for a in a b c; do keys+=(--key "$(account "$WORK/otpgate.toml" "$a" "$credits")"); done
serve otpgate "$WORK/otpgate.toml"

log "load: $FAULT_RATE sends/s for $seconds s; kill -9 at 20/45/70 %"
load "$WORK/sends.jsonl" --target "http://127.0.0.1:$http" "${keys[@]}" \
  --rate "$FAULT_RATE" --duration "$seconds" > "$WORK/load.json" &
loader=$!
t0=$(date +%s.%N)
kills=0
for at in 0.20 0.45 0.70; do
  sleep "$(python3 -c "import time; print(max(0, $t0 + $seconds * $at - time.time()))")"
  stop otpgate KILL
  kills=$((kills + 1))
  log "killed otpgate ($kills), restarting in $down s"
  sleep "$down"
  serve otpgate "$WORK/otpgate.toml"
done
wait "$loader"
log "load done: $(tail -1 "$WORK/load.json")"

if python3 "$ROOT/faults/check.py" --db "$db" --sends "$WORK/sends.jsonl" --record "$WORK/smsc.rec" \
  --drain-seconds 180 --topup a=$credits --topup b=$credits --topup c=$credits > "$WORK/check.json"; then
  result=PASS
else
  result=FAIL
fi
figures=$(python3 - "$WORK/check.json" "$WORK/load.json" "$kills" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); l = json.loads(open(sys.argv[2]).read().splitlines()[-1])
print(f"kills={sys.argv[3]} sent={l['sent']} ok200={c['ok_200']} statuses={l['statuses']} "
      f"stored={c['otps_stored']} stored_without_200={c['stored_without_a_200_seen']} "
      f"missing_at_smsc={c['ok_missing_at_smsc']} duplicates={c['smsc_duplicates']} "
      f"drain_wait_s={c['drain_wait_s']} balances_exact={not any('account' in f for f in c['failures'])} "
      f"failures={c['failures']}")
PY
)
verdict "$result" "$figures"
