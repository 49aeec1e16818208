#!/usr/bin/env bash
# Fault 4: the disk under the SQLite store fills up while sends arrive, and space
# comes back without a restart.
#
# The database lives on a FAULT_TMPFS (default 8m) tmpfs mounted here (needs
# root). With the server running, a filler file takes all but FAULT_HEADROOM_KB
# (default 512) of it; then FAULT_RATE sends/s (default 500) for FAULT_SECONDS
# (default 15) fill the rest. The filler is deleted and 5 s more of load follow.
#   PASS when, once full, every refused send got 503 or 507 in the error envelope
#   (never a 500, never a dropped connection), every 200 is in the store, sends
#   succeed again after the filler is gone with the same process, every 200
#   reached the SMSC, balances are exact, and `PRAGMA integrity_check` says ok
#   after the server stopped.
# shellcheck source=faults/lib.sh
. "$(dirname "$0")/lib.sh"
fault_init disk-full
seconds=${FAULT_SECONDS:-15}
rate=${FAULT_RATE_FULL:-500}
credits=10000000

mnt="$WORK/mnt"
mkdir -p "$mnt"
mount -t tmpfs -o "size=${FAULT_TMPFS:-8m}" tmpfs "$mnt"
CLEANUPS+=("sleep 0.3; umount '$mnt' 2>/dev/null || umount -l '$mnt'")
db="sqlite://$mnt/otpgate.db"
smsc_port=$(smsc smsc)
http=$(free_port)
config "$WORK/otpgate.toml" "$db" "$http" "$smsc_port"
key=$(account "$WORK/otpgate.toml" a "$credits")
serve otpgate "$WORK/otpgate.toml"
pid=$(cat "$WORK/otpgate.pid")

avail=$(df --output=avail -B1 "$mnt" | tail -1)
fill=$(( avail - ${FAULT_HEADROOM_KB:-512} * 1024 ))
head -c "$fill" /dev/zero > "$mnt/filler" || true
log "filesystem: $(df -h --output=size,used,avail "$mnt" | tail -1)"

log "load until full: $rate sends/s for $seconds s"
load "$WORK/full.jsonl" --target "http://127.0.0.1:$http" --key "$key" --rate "$rate" \
  --duration "$seconds" > "$WORK/full.json"
log "while full: $(tail -1 "$WORK/full.json")"
ready_full=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http/readyz")
curl -s "http://127.0.0.1:$http/api/v1/auths/send/otp/" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d '{"number":"9841999999","message":"Your code is {otp}","sms_send_options":"text"}' \
  > "$WORK/full-reply.json" || true
log "a send while full: $(cat "$WORK/full-reply.json")"

rm -f "$mnt/filler"
t_free=$(date +%s.%N)
log "filler deleted; load again for 5 s"
load "$WORK/after.jsonl" --target "http://127.0.0.1:$http" --key "$key" --rate "$rate" \
  --duration 5 --first-number 9845000000 > "$WORK/after.json"
log "after: $(tail -1 "$WORK/after.json")"
same_process=$(kill -0 "$pid" 2>/dev/null && echo yes || echo no)

checked=PASS
python3 "$ROOT/faults/check.py" --db "$db" --sends "$WORK/full.jsonl" "$WORK/after.jsonl" \
  --record "$WORK/smsc.rec" --drain-seconds 120 --topup a=$credits > "$WORK/check.json" || checked=FAIL
stop otpgate TERM
integrity=$(sqlite3 "$mnt/otpgate.db" 'PRAGMA integrity_check' 2>&1 | head -3 | tr '\n' ' ')

python3 - "$WORK" "$t_free" "$checked" "$ready_full" "$same_process" "$integrity" > "$WORK/verdict.txt" <<'PY'
import collections, json, sys
work, t_free, checked, ready_full, same, integrity = sys.argv[1:7]
t_free = float(t_free)
c = json.load(open(f"{work}/check.json"))
full = [json.loads(l) for l in open(f"{work}/full.jsonl")]
after = [json.loads(l) for l in open(f"{work}/after.jsonl")]
refused = [r for r in full + after if r["status"] != 200]
kinds = collections.Counter((r["status"], r.get("error")) for r in refused)
problems = list(c["failures"])
if not any(r["status"] in (503, 507) for r in full):
    problems.append("the store never refused a send: the disk did not fill")
bad = [r for r in refused if r["status"] not in (503, 507) or not r.get("error")]
if bad:
    problems.append(f"{len(bad)} refusals were not a 503/507 envelope: {collections.Counter(r['status'] for r in bad)}")
first_ok = next((r["t"] for r in after if r["status"] == 200), None)
tail = after[len(after) // 2:]
if not tail or any(r["status"] != 200 for r in tail):
    problems.append("sends did not succeed again after space came back")
if same != "yes":
    problems.append("the server did not survive")
if integrity.strip() != "ok":
    problems.append(f"integrity_check: {integrity}")
reply = open(f"{work}/full-reply.json").read().strip()
verdict = "PASS" if not problems and checked == "PASS" else "FAIL"
print(verdict, f"ok200_before_full={sum(1 for r in full if r['status'] == 200)} refusals={dict((f'{s}:{e}', n) for (s, e), n in kinds.items())} "
      f"readyz_while_full={ready_full} first_200_after_space_s={'n/a' if first_ok is None else round(first_ok - t_free, 2)} "
      f"ok200_after={sum(1 for r in after if r['status'] == 200)}/{len(after)} same_process={same} integrity_check={integrity.strip()} "
      f"missing_at_smsc={c['ok_missing_at_smsc']} reply_while_full={reply[:160]} problems={problems}")
PY
read -r result figures < "$WORK/verdict.txt"
verdict "$result" "$figures"
