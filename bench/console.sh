#!/usr/bin/env bash
# How long each console page takes with a large store (issue 17: under 200 ms of
# server time with 1,000,000 OTPs).
#
# One otpgate (SQLite, the `log` driver), an account with real sends made through
# the API, then the store grown in bulk by SQL to N OTPs (bench/growth_seed.py,
# server stopped) and a day of per-minute conversion rows for the overview's
# charts (2 channels x 10 operator prefixes x 1,440 minutes). An account user and
# an operator (`users create --operator`) log in through the console's form; each
# page is fetched R times, one at a time on one keep-alive connection on loopback,
# and the time from request to the last byte of the page is reported (p50, p99,
# max): the server's time plus loopback, an upper bound on the server's own.
#
# Usage: bench/console.sh [--records N] [--repeat R]
# Needs: a release build (BENCH_BIN to use one), wrk (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

records=1000000
repeat=100
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p otpgate --locked
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/otpgate}"

work=$(mktemp -d "${BENCH_WORK:-/tmp}/otpgate-console.XXXXXX")
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null || true; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
free_gb=$(df --output=avail -BG "$work" | tail -1 | tr -dc 0-9)
if [ "$free_gb" -lt $(( records / 1000000 * 2 + 1 )) ]; then
  echo "not enough free disk in $work for $records OTPs ($free_gb GB free)" >&2; exit 1
fi

db="$work/otpgate.db"
cat > "$work/otpgate.toml" <<TOML
listen = "127.0.0.1:18083"
database_url = "sqlite://$db"
[log]
level = "warn"
[limits]
per_number_max = 0
per_number_cooldown_seconds = 0
per_account_rps = 0
per_key_rps = 0
[demo]
create_default_account = false
[delivery]
log_path = "$work/deliveries.jsonl"
TOML
key=$("$bin" accounts create bench --sms-credits 1000000000 --json --config "$work/otpgate.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
echo 'console-bench-password-1' | "$bin" users create bench user@bench.test --config "$work/otpgate.toml" > /dev/null
echo 'console-bench-password-2' | "$bin" users create bench ops@bench.test --operator --config "$work/otpgate.toml" > /dev/null

start_server() {
  "$bin" serve --config "$work/otpgate.toml" >> "$work/otpgate.out" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:18083/readyz 2>/dev/null | grep -q '"ready"' && return 0
    sleep 0.2
  done
  echo "otpgate did not become ready: $(tail -5 "$work/otpgate.out")" >&2; exit 1
}

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
start_server
# Real sends through the API (each with its events, ledger row and delivery).
cat > "$work/send.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
local counter = 0
function request()
  counter = counter + 1
  return wrk.format(nil, "/api/v1/auths/send/otp/", nil, string.format(
    '{"number":"98%08d","message":"Your code is {otp}","sms_send_options":"text"}', 41000000 + counter))
end
LUA
KEY=$key wrk -t 1 -c 8 -d 2s -s "$work/send.lua" http://127.0.0.1:18083 > /dev/null
sleep 2
kill "$server"; wait "$server" 2>/dev/null || true; server=
python3 bench/growth_seed.py "$db" "$records"
# A day of per-minute conversion rows (what the overview's charts read).
python3 - "$db" <<'PY'
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1])
cols = [r[1] for r in c.execute("pragma table_info(conversions)")]
now = int(time.time() // 60)
rows = []
for m in range(now - 1440, now + 1):
    for ch in ("text", "voice"):
        for p in range(10):
            r = dict(account_id=1, minute=m, channel=ch, route="log", country="+977",
                     prefix=f"+97798{p}", sent=20, submitted=20, delivered=19, failed=1,
                     verified=15, delivery_ms_sum=19 * 2500, verify_ms_sum=15 * 20000,
                     delivery_b1=19, verify_b4=15)
            rows.append([r.get(k, 0) for k in cols])
c.executemany(f"insert or replace into conversions ({', '.join(cols)}) values ({', '.join('?' * len(cols))})", rows)
c.commit()
print(f"   {len(rows)} conversion rows for the last day")
PY
start_server
echo "== $(sqlite3 "file:$db?mode=ro" 'select count(*) from otps') OTPs stored, db $(du -sh "$db" | cut -f1); load $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$repeat" "$db" <<'PY'
import http.client, re, sqlite3, sys, time
repeat, db = int(sys.argv[1]), sys.argv[2]
store = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
newest = store.execute("select max(id) from otps").fetchone()[0]
middle = store.execute("select id, phone_number, account_seq from otps where id = (select max(id) / 2 from otps)").fetchone()
real = store.execute("select min(id) from otps").fetchone()[0]  # one sent through the API

def login(email, password):
    conn = http.client.HTTPConnection("127.0.0.1", 18083)
    conn.request("GET", "/console/login")
    r = conn.getresponse(); html = r.read().decode()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    body = f"csrf={csrf}&email={email}&password={password}"
    conn.request("POST", "/console/login", body, {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse(); r.read()
    assert r.status == 303, f"login of {email}: {r.status}"
    session = [h for k, h in r.getheaders() if k.lower() == "set-cookie" and h.startswith("otpgate_console=")][0].split(";")[0]
    return conn, session

def time_page(conn, session, path):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": session})
        r = conn.getresponse(); body = r.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status == 200, f"{path}: {r.status} {body[:200]!r}"
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))], times[-1]

user = login("user@bench.test", "console-bench-password-1")
ops = login("ops@bench.test", "console-bench-password-2")
pages = [
    (user, "/console/"),
    (user, "/console/otps"),
    (user, f"/console/otps?before={middle[2]}"),
    (user, f"/console/otps?number={middle[1]}"),
    (user, "/console/otps?status=failed"),
    (user, f"/console/otps/{real}"),
    (user, "/console/keys"),
    (user, "/console/webhook"),
    (user, "/console/voice"),
    (ops, "/console/ops/accounts"),
    (ops, "/console/ops/accounts/1"),
    (ops, "/console/ops/routes"),
    (ops, "/console/ops/otps"),
    (ops, f"/console/ops/otps?before={middle[0]}"),
    (ops, f"/console/ops/otps?number={middle[1]}"),
    (ops, "/console/ops/otps?status=failed"),
    (ops, f"/console/ops/otps/{newest}"),
]
print(f"| page | p50 ms | p99 ms | max ms | under 200 ms |")
print("|---|---|---|---|---|")
for (conn, session), path in pages:
    p50, p99, mx = time_page(conn, session, path)
    print(f"| `{path}` | {p50:.1f} | {p99:.1f} | {mx:.1f} | {'yes' if mx < 200 else 'NO'} |", flush=True)
PY
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg); peak RSS $(awk '/VmHWM/{printf "%.1f MiB", $2/1024}' "/proc/$server/status")"
