#!/usr/bin/env bash
# The hostile-input figures of issue 11, on a fresh SQLite otpgate on 127.0.0.1:
#   a. junk methods: N requests whose method is a random 15 KB token; the
#      server's resident memory before and after, and the size of /metrics;
#   b. slow connections: M connections from 127.0.0.1 (or from SLOW_SOURCES
#      addresses 127.0.0.10...) that send a login request's headers and then
#      one body byte every 10 s, while /healthz is asked every 0.2 s from
#      127.0.0.2 and from 127.0.0.1; /healthz p50/p99 and failures;
#   c. a noisy neighbour: one account with SEED sends (copied in SQLite)
#      running 32 concurrent filtered, deep list queries in a loop while a
#      second account sends; the second account's send latency p50/p99.
# Each stage prints one summary line starting with "a.", "b." or "c.".
#
# Usage: bench/hostile.sh [BINARY]   (default: target/release/otpgate of this tree)
# Knobs (environment): JUNK_REQUESTS (10000), JUNK_BYTES (15000),
#   SLOW_CONNECTIONS (4500), SLOW_SOURCES (1), SLOW_SECONDS (60),
#   SERVER_NOFILE (4096: the server's open-file limit, below SLOW_CONNECTIONS
#   so that a server without caps runs out of descriptors), SEED (500000),
#   LISTERS (32), NOISY_SECONDS (30), PORT (18090), STAGES ("a b c").
# Only the settings every otpgate knows are passed, so the script runs an
# older binary too; a newer one runs in development mode with no
# `admin_listen`, so /metrics is on the public listener.
# Every loop is bounded in count and in time; the server is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-${CARGO_TARGET_DIR:-target}/release/otpgate}"
[ -x "$bin" ] || { echo "no otpgate binary at $bin" >&2; exit 2; }
bin=$(realpath "$bin")
port=${PORT:-18090}
stages=${STAGES:-a b c}
server_nofile=${SERVER_NOFILE:-4096}
export JUNK_REQUESTS=${JUNK_REQUESTS:-10000} JUNK_BYTES=${JUNK_BYTES:-15000}
export SLOW_CONNECTIONS=${SLOW_CONNECTIONS:-4500} SLOW_SOURCES=${SLOW_SOURCES:-1}
export SLOW_SECONDS=${SLOW_SECONDS:-60} SEED=${SEED:-500000} LISTERS=${LISTERS:-32}
export NOISY_SECONDS=${NOISY_SECONDS:-30}

# The client holds every slow connection itself: raise its own limit (the
# server gets SERVER_NOFILE below).
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/hostile.XXXXXX)
server=
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

db="sqlite://$work/hostile.db"
new_account() {
  "$bin" accounts create "$1" --sms-credits 100000000 --phone-credits 0 --json --database-url "$db" 2>>"$work/cli.log" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])'
}
export NOISY_KEY QUIET_KEY
NOISY_KEY=$(new_account noisy)
QUIET_KEY=$(new_account quiet)

(
  ulimit -n "$server_nofile"
  OTPGATE_LIMITS__PER_NUMBER_MAX=0 OTPGATE_LIMITS__PER_NUMBER_COOLDOWN_SECONDS=0 \
  OTPGATE_LIMITS__PER_ACCOUNT_RPS=0 OTPGATE_LIMITS__PER_KEY_RPS=0 \
  OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT=false OTPGATE_LOG__LEVEL=warn \
  OTPGATE_DELIVERY__LOG_PATH="$work/deliveries.jsonl" OTPGATE_SECRETS__FILE="$work/secrets.toml" \
    exec "$bin" serve --listen "127.0.0.1:$port" --database-url "$db"
) > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
export SERVER_PID=$server PORT=$port DB_PATH="$work/hostile.db"

echo "== binary $bin ($("$bin" --version 2>/dev/null || echo unknown version)); $(nproc) cores," \
  "$(free -m | awk '/Mem:/{print $2}') MiB, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "server open-file limit $server_nofile, $(date -u +%FT%TZ)"

cat > "$work/hostile.py" <<'PY'
import http.client, os, random, socket, sqlite3, string, sys, threading, time

PORT = int(os.environ["PORT"])
PID = os.environ["SERVER_PID"]


def rss_mib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def request(method, path, body=None, headers=None, source="127.0.0.1", timeout=10):
    """One request on a new connection: (status or error name, seconds, body length)."""
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout, source_address=(source, 0))
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        n = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
        c.close()
        return r.status, time.monotonic() - t0, n
    except Exception as e:  # a refused, reset or timed-out request is a figure
        return type(e).__name__, time.monotonic() - t0, 0


def stage_a():
    total, size = int(os.environ["JUNK_REQUESTS"]), int(os.environ["JUNK_BYTES"])
    before = rss_mib()
    statuses, lock, deadline = {}, threading.Lock(), time.monotonic() + 600
    counter = iter(range(total))

    def worker():
        rnd = random.Random()
        while time.monotonic() < deadline:
            with lock:
                if next(counter, None) is None:
                    return
            method = "".join(rnd.choices(string.ascii_uppercase, k=size))
            st, _, _ = request(method, "/api/v1/auths/send/otp/", timeout=30)
            with lock:
                statuses[st] = statuses.get(st, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    after = rss_mib()
    st, secs, n = request("GET", "/metrics", timeout=300)
    print(f"a. {sum(statuses.values())} junk-method requests of {size} bytes in {took:.0f} s "
          f"(statuses {statuses}): RSS {before:.1f} -> {after:.1f} MiB; "
          f"/metrics {st}, {n / 1e6:.2f} MB ({n} bytes) in {secs:.2f} s; RSS after /metrics {rss_mib():.1f} MiB")


def stage_b():
    total, sources = int(os.environ["SLOW_CONNECTIONS"]), max(1, int(os.environ["SLOW_SOURCES"]))
    seconds = int(os.environ["SLOW_SECONDS"])
    head = (f"POST /api/v1/auths/login/ HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
            "Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n").encode()
    stop = time.monotonic() + seconds
    probes = {"127.0.0.2": [], "127.0.0.1": []}

    def probe(src):
        while time.monotonic() < stop:
            st, secs, _ = request("GET", "/healthz", source=src, timeout=5)
            probes[src].append((st, secs))
            time.sleep(0.2)

    # slot i: [socket or None, header bytes still to send, next body byte time]
    slots = [[None, b"", 0.0] for _ in range(total)]
    answers, opened, resets, peak = {}, 0, 0, 0
    probe_threads = [threading.Thread(target=probe, args=(s,)) for s in probes]
    for t in probe_threads:
        t.start()
    next_refill = 0.0
    while time.monotonic() < stop:
        now = time.monotonic()
        refill = now >= next_refill
        if refill:
            next_refill = now + 10
        held = 0
        for i, slot in enumerate(slots):
            if time.monotonic() >= stop:
                break
            s = slot[0]
            if s is None:
                if not refill:
                    continue
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.bind((f"127.0.0.{10 + i % sources}" if sources > 1 else "127.0.0.1", 0))
                    s.connect_ex(("127.0.0.1", PORT))
                except OSError:
                    s.close()
                    resets += 1
                    continue
                slot[:] = [s, head, now + 10]
                opened += 1
            try:
                data = s.recv(4096)
                if data:
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")
                    code = line.split(" ")[1] if line.startswith("HTTP/") else "garbage"
                    answers[code] = answers.get(code, 0) + 1
                s.close()
                slot[0] = None
                if not data:
                    resets += 1
                continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno not in (107,):  # ENOTCONN: still connecting
                    s.close()
                    slot[0] = None
                    resets += 1
                    continue
            try:
                if slot[1]:
                    sent = s.send(slot[1])
                    slot[1] = slot[1][sent:]
                elif now >= slot[2]:
                    s.send(b"{")
                    slot[2] = now + 10
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno not in (107, 11):
                    s.close()
                    slot[0] = None
                    resets += 1
                    continue
            held += 1
        peak = max(peak, held)
        time.sleep(0.5)
    for t in probe_threads:
        t.join()
    for slot in slots:
        if slot[0] is not None:
            slot[0].close()
    parts = []
    for src, label in (("127.0.0.2", "other address"), ("127.0.0.1", "same address")):
        xs = probes[src]
        ok = [secs for st, secs in xs if st == 200]
        bad = {}
        for st, _ in xs:
            if st != 200:
                bad[st] = bad.get(st, 0) + 1
        parts.append(f"/healthz from {label} ({src}): {len(ok)}/{len(xs)} answered 200, "
                     f"p50 {pct(ok, 50) * 1000:.1f} ms, p99 {pct(ok, 99) * 1000:.1f} ms, failures {bad or 0}")
    print(f"b. {total} slow login connections from {sources} address(es) for {seconds} s "
          f"({opened} opened, at most {peak} open on the client side, answers {answers}, closed or reset without an answer {resets}); "
          + "; ".join(parts) + f"; RSS {rss_mib():.1f} MiB")


def stage_c():
    seed, listers, seconds = int(os.environ["SEED"]), int(os.environ["LISTERS"]), int(os.environ["NOISY_SECONDS"])
    noisy = {"Authorization": f"Bearer {os.environ['NOISY_KEY']}", "Content-Type": "application/json"}
    quiet = {"Authorization": f"Bearer {os.environ['QUIET_KEY']}", "Content-Type": "application/json"}
    body = '{"number":"9851023212","message":"Your code is {otp}","sms_send_options":"text"}'
    st, _, _ = request("POST", "/api/v1/auths/send/otp/", body=body, headers=noisy)
    if st not in (200, 201):
        sys.exit(f"c. the seed send answered {st}")
    # Copies of that one send, numbered on from it, with the account's count
    # raised to match: the same rows the API would have written, minus deliveries.
    db = sqlite3.connect(os.environ["DB_PATH"], timeout=60)
    cols = [r[1] for r in db.execute("PRAGMA table_info(otps)") if r[1] not in ("id", "account_seq")]
    (acc, seq) = db.execute("SELECT a.id, MAX(o.account_seq) FROM accounts a JOIN otps o ON o.account_id = a.id "
                            "WHERE a.name = 'noisy' GROUP BY a.id").fetchone()
    t0 = time.monotonic()
    with db:
        db.execute(
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            f"INSERT INTO otps (account_seq, {', '.join(cols)}) "
            f"SELECT ? + n.i, {', '.join('o.' + c for c in cols)} FROM n, otps o "
            f"WHERE o.account_id = ? AND o.account_seq = ?", (seed, seq, acc, seq))
        db.execute("UPDATE accounts SET otp_count = otp_count + ? WHERE id = ?", (seed, acc))
    db.close()
    seeded = time.monotonic() - t0
    records = seed + seq
    path = f"/api/v1/auths/list/send-otps/?limit=20&phone_number=9851023212&offset={records - 20}"
    stop = time.monotonic() + seconds
    lists, sends, lock = {}, [], threading.Lock()
    list_times = []

    def lister():
        while time.monotonic() < stop:
            st, secs, _ = request("GET", path, headers=noisy, timeout=60)
            with lock:
                lists[st] = lists.get(st, 0) + 1
                if st == 200:
                    list_times.append(secs)

    def sender():
        while time.monotonic() < stop:
            st, secs, _ = request("POST", "/api/v1/auths/send/otp/", body=body, headers=quiet, timeout=60)
            with lock:
                sends.append((st, secs))
            time.sleep(0.05)

    # The quiet account's latency alone first, then with the neighbour.
    alone_stop = time.monotonic() + 5
    alone = []
    while time.monotonic() < alone_stop:
        st, secs, _ = request("POST", "/api/v1/auths/send/otp/", body=body, headers=quiet)
        alone.append(secs)
        time.sleep(0.05)
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=lister) for _ in range(listers)]
    threads += [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [secs for st, secs in sends if st in (200, 201)]
    bad = {}
    for st, _ in sends:
        if st not in (200, 201):
            bad[st] = bad.get(st, 0) + 1
    print(f"c. {records} sends of the noisy account (seeded in {seeded:.0f} s); quiet account's sends alone: "
          f"p50 {pct(alone, 50) * 1000:.1f} ms, p99 {pct(alone, 99) * 1000:.1f} ms; "
          f"with {listers} concurrent filtered deep lists for {seconds} s: {len(ok)}/{len(sends)} sends 2xx, "
          f"p50 {pct(ok, 50) * 1000:.1f} ms, p99 {pct(ok, 99) * 1000:.1f} ms, max {max(ok or [0]) * 1000:.1f} ms, "
          f"failures {bad or 0}; lists {lists}, list p50 {pct(list_times, 50) * 1000:.0f} ms")


{"a": stage_a, "b": stage_b, "c": stage_c}[sys.argv[1]]()
PY

for s in $stages; do
  python3 "$work/hostile.py" "$s"
  kill -0 "$server" 2>/dev/null || { echo "the server exited: $(tail -5 "$work/server.log")" >&2; exit 1; }
done
if grep -q panicked "$work/server.log"; then
  echo "the server panicked:" >&2
  grep -A5 panicked "$work/server.log" >&2
  exit 1
fi
