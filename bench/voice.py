#!/usr/bin/env python3
"""The client side of bench/voice.sh (standard library only).

  voice.py cold N CONNECTIONS CODE_BASE
      N previews, each with a code not asked for before in this run (so the service's
      render cache cannot answer it and espeak-ng runs for every request), over
      CONNECTIONS keep-alive connections; prints renders/s and p50/p99.
  voice.py calls N SINK_PORT
      renders the N prompts through the preview (their expected audio, and it warms
      the cache so every call can start at once), sends N voice OTPs at the same moment,
      waits for their outcome, and checks every RTP stream that reached SINK_PORT:
      every packet there in order, timestamps +160, PCMU, 20 ms pacing, and the payload
      byte for byte the G.711 encoding of its own OTP's prompt.
  voice.py oha LABEL < oha-output.json
      one line from oha's JSON output.
  voice.py latency N SINK_PORT SIPP_MESSAGE_LOG LABEL [prerender]
      one voice OTP per second, then the time from its acceptance (the OTP's created_at,
      the clock otpgate_accept_to_submit_seconds uses for SMS) to its INVITE arriving at
      sipp (sipp's -trace_msg timestamp, same host clock).

Environment: VB_PORT (HTTP port), VB_KEY (API key), VB_DB (the SQLite file).
Every wait is bounded.
"""

import calendar
import http.client
import io
import json
import math
import os
import random
import re
import socket
import sqlite3
import struct
import sys
import threading
import time
import wave

HOST = "127.0.0.1"
PORT = int(os.environ["VB_PORT"])
KEY = os.environ["VB_KEY"]
DB = os.environ.get("VB_DB", "")
MESSAGE = "तपाईंको कोड {otp} हो"
VOICE = "np_rija"
PREVIEW = "/api/v1/auths/voice/preview/"
SEND = "/api/v1/auths/send/otp/"
# Codes are drawn without repetition from a range of 100,000 per run: cold 1 connection
# 1xxxxx, cold 4 connections 2xxxxx, calls 4xxxxx, latency prerendered 5xxxxx, latency
# cold-render 6xxxxx; bench/voice.sh's cached request uses 987654.
RNG = random.SystemRandom()


def codes(n, base):
    return [str(c) for c in RNG.sample(range(base, base + 100000), n)]


class Client:
    def __init__(self):
        self.conn = http.client.HTTPConnection(HOST, PORT, timeout=120)

    def request(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {KEY}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.getheader("content-type"), r.read()


def preview_body(code):
    return {"message": MESSAGE, "voice_input": VOICE, "otp": code, "length_factor": 1.0}


def pct(values, q):
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(q * len(v)) - 1))]


def wav_samples(data):
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000), "not 8 kHz mono 16-bit"
        raw = w.readframes(w.getnframes())
    return struct.unpack(f"<{len(raw) // 2}h", raw)


def ulaw(sample):
    """G.711 µ-law, as crates/sip/src/media.rs encodes it."""
    sign = 0x80 if sample < 0 else 0
    mag = min(abs(sample), 32635) + 0x84
    seg = mag.bit_length() - 8
    mant = (mag >> (seg + 3)) & 0x0F
    return ~(sign | (seg << 4) | mant) & 0xFF


ULAW = bytes(ulaw(s - 65536 if s >= 32768 else s) for s in range(65536))


def expected_payload(samples):
    """The PCMU bytes a call sends for these samples, the last packet padded with silence."""
    out = bytes(ULAW[s & 0xFFFF] for s in samples)
    return out + b"\xff" * (-len(out) % 160)


# ------------------------------------------------------------------ cold --
def cold(n, connections, base):
    todo = codes(n + connections, base)
    warm, todo = todo[:connections], todo[connections:]
    lock = threading.Lock()
    lat, statuses, prompt = [], {}, []

    def worker(first):
        c = Client()
        c.request("POST", PREVIEW, preview_body(first))  # connection up, espeak-ng in the page cache
        start.wait()
        while True:
            with lock:
                if not todo:
                    return
                code = todo.pop()
            t = time.perf_counter()
            status, ctype, body = c.request("POST", PREVIEW, preview_body(code))
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and not prompt:
                    prompt.append(len(wav_samples(body)) / 8000)

    start = threading.Event()
    threads = [threading.Thread(target=worker, args=(w,)) for w in warm]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    start.set()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t0
    print(f"   cold, {connections} connection(s), {len(lat)} distinct codes: {len(lat) / wall:.1f} renders/s, "
          f"p50 {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms, statuses {statuses}"
          f"{f'; a prompt is ~{prompt[0]:.1f} s of audio' if prompt else ''}")


# ------------------------------------------------------------- RTP sink --
class Sink:
    """Keeps every datagram that reaches the port, with its arrival time."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((HOST, port))
        self.sock.settimeout(0.2)
        self.packets = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(2048)
            except socket.timeout:
                continue
            self.packets.append((time.time(), data))

    def close(self):
        time.sleep(0.5)  # the last packets of a call
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()
        return self.packets


def streams(packets):
    """Per SSRC, in arrival order: (arrival, seq, ts, pt, marker, payload)."""
    out = {}
    for t, d in packets:
        if len(d) < 12 or d[0] >> 6 != 2:
            continue
        seq, ts, ssrc = struct.unpack("!HII", d[2:12])
        out.setdefault(ssrc, []).append((t, seq, ts, d[1] & 0x7F, d[1] >> 7, d[12:]))
    return out


def check_stream(pkts, expected):
    """(problems, matched code, max lateness in s) of one stream; expected: code -> PCMU bytes."""
    problems = []
    s0, ts0, t0 = pkts[0][1], pkts[0][2], pkts[0][0]
    rel = [(p[1] - s0) & 0xFFFF for p in pkts]
    if sorted(rel) != list(range(len(pkts))):
        problems.append(f"sequence not contiguous ({len(set(rel))} distinct of {max(rel) + 1} expected)")
    elif rel != list(range(len(pkts))):
        problems.append("reordered")
    ordered = [p for _, p in sorted(zip(rel, pkts), key=lambda x: x[0])]
    if any((p[2] - ts0) & 0xFFFFFFFF != r * 160 for r, p in zip(sorted(rel), ordered)):
        problems.append("timestamps do not advance by 160")
    if any(p[3] != 0 for p in pkts):
        problems.append("payload type not PCMU")
    if [p[4] for p in ordered] != [1] + [0] * (len(ordered) - 1):
        problems.append("marker bit not on the first packet only")
    if any(len(p[5]) != 160 for p in pkts):
        problems.append("payload not 160 bytes")
    audio = b"".join(p[5] for p in ordered)
    matched = [c for c, e in expected.items() if e == audio]
    if not matched:
        problems.append("audio is not the prompt of any OTP sent")
    lateness = max(p[0] - t0 - r * 0.020 for r, p in zip(rel, pkts))
    return problems, (matched[0] if matched else None), lateness


def check_audio(packets, expected, label):
    """Prints the audio check of every stream; returns (intact, streams, peak overlap)."""
    per = streams(packets)
    intact, seen, late, bad = 0, set(), [], []
    for ssrc, pkts in per.items():
        problems, code, lateness = check_stream(pkts, expected)
        late.append(lateness)
        if code in seen:
            problems.append(f"a second stream with the prompt of code {code}")
        seen.add(code)
        if problems:
            bad.append(f"ssrc {ssrc:08x} ({len(pkts)} packets): {', '.join(problems)}")
        else:
            intact += 1
    spans = [(p[0][0], p[-1][0]) for p in per.values()]
    peak = max((sum(1 for a, b in spans if a <= s <= b) for s, _ in spans), default=0)
    counts = sorted(len(p) for p in per.values())
    print(f"   {label}: {len(per)} RTP streams, {intact} with audio intact "
          f"(every packet, in order, PCMU, timestamps +160, marker on the first, payload byte-identical "
          f"to the preview of its own code, so packets = prompt / 20 ms exactly); packets per call {counts[0] if counts else 0}..{counts[-1] if counts else 0}; "
          f"worst packet lateness against a 20 ms clock from the call's first packet {max(late, default=0) * 1000:.1f} ms")
    for b in bad[:10]:
        print(f"     not intact: {b}")
    return intact, len(per), peak


# ---------------------------------------------------------------- sends --
def send_body(code, number):
    return {"number": number, "message": MESSAGE, "sms_send_options": "voice", "voice_input": VOICE,
            "otp_options": "personnel", "otp": code, "length_factor": 1.0}


def number(i):
    return f"98510{i:05d}"


def outcomes(ids, deadline_s):
    """Waits (bounded) until no OTP is queued; returns id -> (status, error, created_at, e164)."""
    deadline = time.time() + deadline_s
    while True:
        db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
        rows = db.execute(
            f"select id, status, error, created_at, e164 from otps where id in ({','.join('?' * len(ids))})",
            ids).fetchall()
        db.close()
        got = {r[0]: r[1:] for r in rows}
        if all(got.get(i, ("queued",))[0] != "queued" for i in ids) or time.time() > deadline:
            return got
        time.sleep(0.2)


def render_all(codes_, connections=4):
    """code -> expected PCMU bytes, through the preview (which also warms the cache)."""
    out, lock, todo = {}, threading.Lock(), list(codes_)

    def worker():
        c = Client()
        while True:
            with lock:
                if not todo:
                    return
                code = todo.pop()
            status, _, body = c.request("POST", PREVIEW, preview_body(code))
            assert status == 200, f"preview {status}: {body[:200]!r}"
            e = expected_payload(wav_samples(body))
            with lock:
                out[code] = e

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return out


def calls(n, sink_port):
    sink = Sink(sink_port)
    cs = codes(n, 400000)
    t = time.perf_counter()
    expected = render_all(cs)
    prompt_s = len(next(iter(expected.values()))) / 8000
    print(f"   rendered the {n} prompts first through the preview ({time.perf_counter() - t:.1f} s, "
          f"~{prompt_s:.2f} s of audio each = ~{round(prompt_s / 0.02)} packets)")
    # In-flight calls as the service reports them, every 100 ms.
    peak_inflight, stop_poll = [0], threading.Event()

    def poll():
        c = http.client.HTTPConnection(HOST, PORT, timeout=5)
        while not stop_poll.is_set():
            try:
                c.request("GET", "/readyz")
                r = json.loads(c.getresponse().read())
                peak_inflight[0] = max(peak_inflight[0], max(x.get("in_flight", 0) for x in r.get("routes", [{}])))
            except Exception:
                c = http.client.HTTPConnection(HOST, PORT, timeout=5)
            stop_poll.wait(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    barrier = threading.Barrier(n)
    ids, statuses, lock = [], {}, threading.Lock()

    def one(i):
        c = Client()
        barrier.wait(timeout=60)
        status, _, body = c.request("POST", SEND, send_body(cs[i], number(i)))
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                ids.append(json.loads(body)["data"]["details"]["id"])

    t0 = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    accepted = time.time() - t0
    got = outcomes(ids, 240)
    done = time.time() - t0
    stop_poll.set()
    poller.join(timeout=10)
    packets = sink.close()
    by_status = {}
    for s, err, *_ in got.values():
        by_status[s] = by_status.get(s, 0) + 1
    print(f"   {n} voice OTPs sent at once: HTTP statuses {statuses} (all replied in {accepted:.2f} s); "
          f"outcomes {by_status}, the last {done:.1f} s after the first send")
    for i, (s, err, *_) in got.items():
        if s != "sent":
            print(f"     OTP {i}: {s}: {err}")
    intact, nstreams, peak = check_audio(packets, expected, "audio")
    print(f"   calls up at once: peak {peak} (RTP streams overlapping at the sink), "
          f"peak in_flight in /readyz {peak_inflight[0]} (polled every 100 ms)")


# -------------------------------------------------------------- latency --
STAMP = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d)\.(\d+)\s*$")


def invites(log_path):
    """Request-URI user -> arrival (epoch s) of the first INVITE for it, from sipp's -trace_msg
    log (sipp runs with TZ=UTC)."""
    out, stamp, lines = {}, None, open(log_path, encoding="latin-1").read().splitlines()
    for i, line in enumerate(lines):
        m = STAMP.match(line)
        if m:
            stamp = calendar.timegm(time.strptime(f"{m[1]} {m[2]}", "%Y-%m-%d %H:%M:%S")) + float("0." + m[3])
            continue
        if line.startswith("INVITE sip:") and stamp is not None and "received" in lines[i - 2]:
            user = line.split("sip:", 1)[1].split("@", 1)[0]
            out.setdefault(user, stamp)
    return out


def latency(n, sink_port, log_path, label, prerender):
    sink = Sink(sink_port)
    base = 500000 if prerender else 600000
    cs = codes(n, base)
    if prerender:
        render_all(cs)
    c = Client()
    sent = []  # (id, code, number, reply received at)
    t0 = time.time() + 0.5
    for i in range(n):
        time.sleep(max(0.0, t0 + i - time.time()))
        num = number(i + (100 if prerender else 200))
        status, _, body = c.request("POST", SEND, send_body(cs[i], num))
        replied = time.time()
        assert status == 200, f"send {status}: {body[:300]!r}"
        sent.append((json.loads(body)["data"]["details"]["id"], cs[i], num, replied))
    got = outcomes([s[0] for s in sent], 240)
    packets = sink.close()
    with open(f"{log_path}.{label}.json", "w") as f:
        json.dump({"sent": sent, "got": {str(k): v for k, v in got.items()}}, f)
    expected = render_all(cs)  # cached by now: the audio each call should have played
    ok = sum(1 for v in got.values() if v[0] == "sent")
    intact, _, _ = check_audio(packets, expected, f"{label}, audio")
    print(f"   {label}: {ok}/{n} sent")
    return sent, got


def latency_report(log_path, label):
    d = json.load(open(f"{log_path}.{label}.json"))
    inv = invites(log_path)
    from_accept, from_reply, missing = [], [], 0
    for oid, code, num, replied in d["sent"]:
        status, err, created, e164 = d["got"][str(oid)]
        at = inv.get(e164.lstrip("+"))
        if at is None:
            missing += 1
            continue
        from_accept.append(at - created / 1e6)
        from_reply.append(at - replied)
    if not from_accept:
        print(f"   {label}: no INVITE found in sipp's log")
        return
    ms = lambda v: f"{v * 1000:.1f}"
    print(f"   {label}, {len(from_accept)} sends at 1/s: accept (created_at) -> INVITE at sipp: "
          f"p50 {ms(pct(from_accept, 0.5))} ms, p90 {ms(pct(from_accept, 0.9))} ms, "
          f"min {ms(min(from_accept))} ms, max {ms(max(from_accept))} ms"
          f"{f'; {missing} without an INVITE' if missing else ''}")
    print(f"   {label}: HTTP reply received -> INVITE at sipp: p50 {ms(pct(from_reply, 0.5))} ms, "
          f"max {ms(max(from_reply))} ms (negative: the INVITE left before the client read the reply)")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "cold":
        cold(int(args[0]), int(args[1]), int(args[2]))
    elif mode == "calls":
        calls(int(args[0]), int(args[1]))
    elif mode == "latency":
        latency(int(args[0]), int(args[1]), args[2], args[3], len(args) > 4 and args[4] == "prerender")
    elif mode == "oha":
        r = json.load(sys.stdin)
        s, p = r["summary"], r["latencyPercentiles"]
        print(f"   {args[0]}: {s['requestsPerSec']:.0f} renders/s, p50 {p['p50'] * 1000:.2f} ms, "
              f"p99 {p['p99'] * 1000:.2f} ms, statuses {r.get('statusCodeDistribution')}")
    elif mode == "latency-report":
        latency_report(args[0], args[1])
    else:
        sys.exit(f"unknown mode {mode}")
