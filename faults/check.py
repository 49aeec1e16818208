#!/usr/bin/env python3
"""The fault suite's accounting: what the clients were told against what the
SMSC received and what the store holds.

  check.py --db URL --sends FILE... --record FILE... [--drain-seconds N]

1. Waits (up to --drain-seconds) until no delivery job is queued.
2. Every send that got a 200 (in the --sends files written by load.py) has its OTP
   in the store, and reached the SMSC (a line in a --record file of smsc.js) at
   least once, with its own code in the text; extra copies (same number, same
   text) are counted as duplicates (delivery is at least once).
3. Every account's balance equals its top-ups minus the credits of its accepted
   sends plus their refunds, the ledger sums to the balance, every OTP has one
   debit, and every refunded OTP exactly one refund.

Prints one JSON object of figures; exits 0 when every check holds, else 1.
"""

import argparse
import collections
import json
import sqlite3
import subprocess
import sys
import time


class Db:
    def __init__(self, url):
        self.url = url
        if url.startswith("sqlite://"):
            path = url[len("sqlite://"):]
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        else:
            self.conn = None

    def rows(self, sql):
        if self.conn is not None:
            return [tuple(r) for r in self.conn.execute(sql).fetchall()]
        out = subprocess.run(
            ["psql", self.url, "-X", "-At", "-F", "\t", "-c", sql],
            check=True, capture_output=True, text=True,
        ).stdout
        rows = []
        for line in out.splitlines():
            rows.append(tuple(None if v == "" else v for v in line.split("\t")))
        return rows

    def value(self, sql):
        return self.rows(sql)[0][0]


def national(number):
    """The last ten digits: '+9779840000001' and '9840000001' meet here."""
    digits = "".join(c for c in str(number) if c.isdigit())
    return digits[-10:]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True)
    p.add_argument("--sends", nargs="+", required=True)
    p.add_argument("--record", nargs="+", required=True)
    p.add_argument("--drain-seconds", type=float, default=120)
    p.add_argument("--topup", action="append", default=[], metavar="ACCOUNT=CREDITS",
                   help="the credits the script gave this account: its ledger top-ups must match")
    args = p.parse_args()
    db = Db(args.db)
    failures = []
    figures = {}

    # 1. The queue drains.
    started = time.time()
    while True:
        queued = int(db.value("SELECT COUNT(*) FROM delivery_jobs WHERE state = 'queued'"))
        if queued == 0 or time.time() - started > args.drain_seconds:
            break
        time.sleep(0.5)
    figures["drain_wait_s"] = round(time.time() - started, 1)
    figures["queued_left"] = queued
    if queued:
        failures.append(f"{queued} delivery jobs still queued after {args.drain_seconds} s")

    # 2. Every 200 reached the SMSC, with its code.
    ok = {}
    attempts = collections.Counter()
    for path in args.sends:
        for line in open(path):
            r = json.loads(line)
            attempts[r["status"]] += 1
            if r["status"] == 200:
                ok[r["id"]] = r
    figures["attempts"] = {str(k): v for k, v in sorted(attempts.items())}
    figures["ok_200"] = len(ok)
    received = collections.defaultdict(list)
    submits = 0
    for path in args.record:
        for line in open(path):
            e = json.loads(line)
            submits += 1
            received[national(e["destination"])].append(e.get("text") or "")
    figures["smsc_submit_sm"] = submits
    missing, wrong_code = [], []
    for r in ok.values():
        texts = received.get(national(r["number"]), [])
        if not texts:
            missing.append(r["id"])
        elif r.get("otp") and not any(r["otp"] in t for t in texts):
            wrong_code.append(r["id"])
    figures["ok_missing_at_smsc"] = len(missing)
    figures["ok_with_wrong_code_at_smsc"] = len(wrong_code)
    if missing:
        failures.append(f"{len(missing)} OTPs answered 200 never reached the SMSC (ids {sorted(missing)[:10]} ...)")
    if wrong_code:
        failures.append(f"{len(wrong_code)} OTPs reached the SMSC without their code (ids {sorted(wrong_code)[:10]})")
    # One OTP's copies share number and text (its code); two OTPs to one number do not.
    copies = collections.Counter((n, t) for n, texts in received.items() for t in texts)
    figures["smsc_duplicates"] = sum(c - 1 for c in copies.values())
    figures["otps_received_twice_or_more"] = sum(1 for c in copies.values() if c > 1)

    # 3. The store: every 200 is there, statuses, money.
    stored = {int(r[0]) for r in db.rows("SELECT id FROM otps")}
    not_stored = [i for i in ok if int(i) not in stored]
    figures["otps_stored"] = len(stored)
    figures["stored_without_a_200_seen"] = len(stored) - (len(ok) - len(not_stored))
    if not_stored:
        failures.append(f"{len(not_stored)} OTPs answered 200 are not in the store")
    figures["otp_statuses"] = {s: int(n) for s, n in db.rows("SELECT status, COUNT(*) FROM otps GROUP BY status ORDER BY status")}
    accounts = db.rows("SELECT id, name, sms_credits FROM accounts ORDER BY id")
    money = []
    for acc_id, name, balance in accounts:
        acc_id, balance = int(acc_id), int(balance)
        topups = int(db.value(f"SELECT COALESCE(SUM(sms_delta), 0) FROM ledger WHERE account_id = {acc_id} AND kind = 'topup'"))
        debits = int(db.value(f"SELECT COALESCE(SUM(sms_delta), 0) FROM ledger WHERE account_id = {acc_id} AND kind = 'debit'"))
        refunds = int(db.value(f"SELECT COALESCE(SUM(sms_delta), 0) FROM ledger WHERE account_id = {acc_id} AND kind = 'refund'"))
        ledger = int(db.value(f"SELECT COALESCE(SUM(sms_delta), 0) FROM ledger WHERE account_id = {acc_id}"))
        used = int(db.value(f"SELECT COALESCE(SUM(credits_used), 0) FROM otps WHERE account_id = {acc_id} AND channel = 'text'"))
        refunded = int(db.value(f"SELECT COALESCE(SUM(credits_used), 0) FROM otps WHERE account_id = {acc_id} AND channel = 'text' AND refunded <> 0"))
        per_otp = (
            "SELECT otp_id, SUM(CASE WHEN kind = 'debit' THEN 1 ELSE 0 END) AS debits, "
            "SUM(CASE WHEN kind = 'refund' THEN 1 ELSE 0 END) AS refunds "
            f"FROM ledger WHERE account_id = {acc_id} AND otp_id IS NOT NULL GROUP BY otp_id")
        otps_without_one_debit, refunds_not_once = (int(v or 0) for v in db.rows(
            "SELECT SUM(CASE WHEN COALESCE(l.debits, 0) <> 1 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN COALESCE(l.refunds, 0) <> (CASE WHEN o.refunded <> 0 THEN 1 ELSE 0 END) THEN 1 ELSE 0 END) "
            f"FROM otps o LEFT JOIN ({per_otp}) l ON l.otp_id = o.id WHERE o.account_id = {acc_id}")[0])
        row = {"account": name, "balance": balance, "topups": topups, "credits_of_accepted_sends": used,
               "refunds": refunded, "expected": topups - used + refunded}
        money.append(row)
        if balance != topups - used + refunded:
            failures.append(f"account {name}: balance {balance} != top-ups {topups} - sends {used} + refunds {refunded}")
        if ledger != balance:
            failures.append(f"account {name}: ledger sums to {ledger}, balance is {balance}")
        if -debits != used or refunds != refunded:
            failures.append(f"account {name}: ledger debits {-debits} / refunds {refunds} vs OTPs {used} / {refunded}")
        if otps_without_one_debit or refunds_not_once:
            failures.append(f"account {name}: {otps_without_one_debit} OTPs without exactly one debit, "
                            f"{refunds_not_once} with a wrong number of refunds")
    figures["accounts"] = money
    for spec in args.topup:
        name, _, credits = spec.partition("=")
        got = [m["topups"] for m in money if m["account"] == name]
        if got != [int(credits)]:
            failures.append(f"account {name}: ledger top-ups {got} != the {credits} given")
    figures["failures"] = failures
    print(json.dumps(figures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
