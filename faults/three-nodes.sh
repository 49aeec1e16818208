#!/usr/bin/env bash
# Fault 6: three otpgate nodes on one PostgreSQL database under load, one SMSC.
#
# Load: FAULT_RATE sends/s in all (default 1000) for FAULT_SECONDS (default 30),
# round-robin over the three nodes and two accounts, each send to its own number.
# Then 10 sends to one number at once, spread over the three nodes, with the
# default per-number limit (limits.per_number_max = 5; the cooldown is set to 0
# so that only the count decides).
#   PASS when no OTP reached the SMSC twice (each node claims from the shared
#   outbox; a copy would mean two nodes delivered one job), exactly 5 of the 10
#   sends to one number were accepted and 5 refused with 429, every send
#   answered 200 reached the SMSC, and balances are exact.
# shellcheck source=faults/lib.sh
. "$(dirname "$0")/lib.sh"
fault_init three-nodes
seconds=${FAULT_SECONDS:-30}
# Each send waits for its node's batch commit under the accounts' row locks,
# which the three nodes take in turn: more connections keep the rate up.
FAULT_CONNECTIONS=${FAULT_CONNECTIONS:-192}
credits=10000000

db=$(pg_database)
smsc_port=$(smsc smsc)
targets=()
for n in 1 2 3; do
  port=$(free_port)
  LIMIT_MAX=5 LIMIT_COOLDOWN=0 LEASE_SECONDS=60 config "$WORK/node$n.toml" "$db" "$port" "$smsc_port"
  targets+=(--target "http://127.0.0.1:$port")
done
key_a=$(account "$WORK/node1.toml" a "$credits")
key_b=$(account "$WORK/node1.toml" b "$credits")
for n in 1 2 3; do serve "node$n" "$WORK/node$n.toml"; done

log "load: $FAULT_RATE sends/s over three nodes for $seconds s"
load "$WORK/sends.jsonl" "${targets[@]}" --key "$key_a" --key "$key_b" --rate "$FAULT_RATE" --duration "$seconds" > "$WORK/load.json"
log "load done: $(tail -1 "$WORK/load.json")"
log "10 sends to one number at once over the three nodes"
load "$WORK/limit.jsonl" "${targets[@]}" --key "$key_a" --number 9841234567 --count 10 \
  --connections 10 --rate 100000 --duration 10 > "$WORK/limit.json"
log "limit: $(tail -1 "$WORK/limit.json")"

checked=PASS
python3 "$ROOT/faults/check.py" --db "$db" --sends "$WORK/sends.jsonl" "$WORK/limit.jsonl" \
  --record "$WORK/smsc.rec" --drain-seconds 180 --topup a=$credits --topup b=$credits > "$WORK/check.json" || checked=FAIL
python3 - "$WORK" "$checked" > "$WORK/verdict.txt" <<'PY'
import collections, json, sys
work, checked = sys.argv[1:3]
c = json.load(open(f"{work}/check.json"))
l = json.loads(open(f"{work}/load.json").read().splitlines()[-1])
limit = [json.loads(x) for x in open(f"{work}/limit.jsonl")]
by_status = collections.Counter(r["status"] for r in limit)
nodes = collections.Counter(r["node"] for r in limit if r["status"] == 200)
problems = list(c["failures"])
if c["smsc_duplicates"]:
    problems.append(f"{c['smsc_duplicates']} OTPs reached the SMSC more than once")
if by_status.get(200) != 5 or by_status.get(429) != 5:
    problems.append(f"10 sends to one number: {dict(by_status)}, want 5 x 200 and 5 x 429")
per_node = collections.Counter(r["node"] for x in [open(f"{work}/sends.jsonl")] for r in map(json.loads, x) if r["status"] == 200)
print("PASS" if not problems and checked == "PASS" else "FAIL",
      f"sent={l['sent']} ok200={c['ok_200']} per_node={dict(sorted(per_node.items()))} statuses={l['statuses']} "
      f"one_number_x10={dict(sorted(by_status.items()))} accepted_on_nodes={dict(sorted(nodes.items()))} "
      f"smsc_submit_sm={c['smsc_submit_sm']} duplicates={c['smsc_duplicates']} missing_at_smsc={c['ok_missing_at_smsc']} "
      f"balances={[(a['account'], a['balance'], a['expected']) for a in c['accounts']]} problems={problems}")
PY
read -r result figures < "$WORK/verdict.txt"
verdict "$result" "$figures"
