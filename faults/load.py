#!/usr/bin/env python3
"""Open-loop send load for the fault suite, recording every reply.

Sends POST /api/v1/auths/send/otp/ at a steady rate (request i is due at
t0 + i/rate, whatever happened to earlier ones) over keep-alive HTTP/1.1
connections, to one or more otpgate nodes and accounts in turn, each send to
its own number (--first-number + i) unless --number fixes one. Every attempt,
answered or not, becomes one JSON line in --out:

  {"i", "t" (start, Unix seconds), "ms", "status" (0: no HTTP reply), "number",
   "account" (index into --key), "node" (index into --target), "id", "otp", "error"}

so a fault script knows exactly which sends got a 200 (and their ids and codes).
Connection failures (a killed server) are recorded and the connection is
reopened for the next send. With --window S a JSON line of figures per S seconds
goes to stdout (the soak's samples); a JSON summary always ends the output.
Only addresses on this machine are accepted as targets.
"""

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

PATH = "/api/v1/auths/send/otp/"


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Connection:
    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader = self.writer = None

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def post(self, key, body):
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        return await asyncio.wait_for(self._response(), self.timeout)

    async def _response(self):
        line = await self.reader.readline()
        if not line:
            raise ConnectionResetError("connection closed before a reply")
        status = int(line.split()[1])
        length, close = 0, False
        while True:
            h = await self.reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body


async def main(args):
    targets = []
    for t in args.target:
        u = urlsplit(t)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit(f"load.py: only loopback targets, not {u.hostname}")
        targets.append((u.hostname, u.port or 80))
    out = open(args.out, "w") if args.out else None
    t0 = time.time()
    end = t0 + args.duration
    state = {"next": 0, "window": [], "werr": 0, "wsent": 0}
    statuses = {}
    ok_ms = []

    def number_of(i):
        return args.number if args.number else str(args.first_number + i)

    async def worker(w):
        conns = [Connection(h, p, args.timeout) for h, p in targets]
        while True:
            i = state["next"]
            if args.count and i >= args.count:
                break
            due = t0 + i / args.rate
            if due >= end:
                break
            state["next"] = i + 1
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            node = i % len(targets)
            account = i % len(args.key)
            number = number_of(i)
            body = json.dumps(
                {"number": number, "message": args.message, "sms_send_options": "text"}
            ).encode()
            started = time.time()
            rec = {"i": i, "t": round(started, 4), "number": number, "account": account, "node": node}
            try:
                status, reply = await conns[node].post(args.key[account], body)
                rec["status"] = status
                try:
                    doc = json.loads(reply)
                except ValueError:
                    doc = {}
                if status == 200:
                    details = (doc.get("data") or {}).get("details") or {}
                    rec["id"] = details.get("id")
                    rec["otp"] = details.get("otp")
                else:
                    errors = doc.get("errors") or [{}]
                    rec["error"] = errors[0].get("code") or doc.get("message")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                rec["status"] = 0
                rec["error"] = type(e).__name__
                await conns[node].close()
                if isinstance(e, ConnectionRefusedError):
                    # The server is down: do not spin; the next due send tries again.
                    await asyncio.sleep(0.02)
            ms = (time.time() - started) * 1000
            rec["ms"] = round(ms, 3)
            statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
            state["wsent"] += 1
            if rec["status"] == 200:
                ok_ms.append(ms)
                state["window"].append(ms)
            else:
                state["werr"] += 1
            if out:
                out.write(json.dumps(rec) + "\n")
        for c in conns:
            await c.close()

    def emit_window():
        state["n"] = state.get("n", 0) + 1
        lat, state["window"] = state["window"], []
        sent, errors = state["wsent"], state["werr"]
        state["wsent"] = state["werr"] = 0
        print(json.dumps({
            "window": state["n"],
            "elapsed_s": round(time.time() - t0, 1),
            "sent": sent,
            "ok": len(lat),
            "errors": errors,
            "p50_ms": round(percentile(lat, 0.5) or 0, 2),
            "p99_ms": round(percentile(lat, 0.99) or 0, 2),
            "max_ms": round(max(lat) if lat else 0, 2),
        }), flush=True)

    async def windows():
        while True:
            await asyncio.sleep(args.window)
            emit_window()

    ticker = asyncio.create_task(windows()) if args.window else None
    await asyncio.gather(*(worker(w) for w in range(args.connections)))
    if ticker:
        ticker.cancel()
        if state["wsent"]:
            emit_window()
    if out:
        out.close()
    took = time.time() - t0
    sent = sum(statuses.values())
    print(json.dumps({
        "summary": True,
        "sent": sent,
        "seconds": round(took, 2),
        "rate": round(sent / took, 1) if took else 0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "ok_p50_ms": round(percentile(ok_ms, 0.5) or 0, 2),
        "ok_p99_ms": round(percentile(ok_ms, 0.99) or 0, 2),
    }), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", required=True, help="http://127.0.0.1:PORT (repeat for nodes)")
    p.add_argument("--key", action="append", required=True, help="API key (repeat for accounts)")
    p.add_argument("--rate", type=float, default=1000, help="sends per second")
    p.add_argument("--duration", type=float, default=30, help="seconds")
    p.add_argument("--count", type=int, default=0, help="stop after this many sends (0: duration only)")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--timeout", type=float, default=10, help="seconds per request")
    p.add_argument("--first-number", type=int, default=9840000000)
    p.add_argument("--number", default="", help="send every OTP to this one number")
    p.add_argument("--message", default="Your code is {otp}")
    p.add_argument("--out", default="", help="JSON line per attempt")
    p.add_argument("--window", type=float, default=0, help="print figures every this many seconds")
    asyncio.run(main(p.parse_args()))
