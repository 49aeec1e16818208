#!/usr/bin/env python3
"""Grows an otpgate SQLite store to a given number of OTPs, in bulk, by SQL.

Used by bench/growth.sh while the server is stopped. Each new OTP copies a real
delivered (or, with the `log` driver, sent) OTP of the store (the newest one, written by the server itself) with
every row that hangs off it (ledger debit, status events, carrier message ids,
delivery job), so the tables and indexes grow as they would under real traffic:

- a new id and the account's next `account_seq`, a phone number of its own
  (98 followed by eight digits from the id, spread over 100,000,000 numbers);
- created over the last 30 days (inside the default 90-day retention), oldest
  first, delivered two seconds later, the code long expired and purged;
- carrier message ids of its own (`g<id>`), so the receipt lookup indexes grow.

Usage: growth_seed.py DB TARGET_OTPS
Inserts in transactions of 500,000 OTPs and keeps `accounts.otp_count` in step.
"""
import sqlite3
import sys
import time

CHUNK = 500_000
SPAN = 30 * 86400 * 1_000_000  # micros: the seeded OTPs' creation times span 30 days


def columns(c, table):
    return [r[1] for r in c.execute(f"pragma table_info({table})")]


def main():
    db, target = sys.argv[1], int(sys.argv[2])
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("pragma busy_timeout = 10000")
    have = c.execute("select count(*) from otps").fetchone()[0]
    if have >= target:
        print(f"   store holds {have} OTPs, nothing to seed")
        return
    row = c.execute(
        "select id, account_id from otps where status in ('delivered', 'sent') order by id desc limit 1"
    ).fetchone()
    if row is None:
        sys.exit("growth_seed: the store has no delivered (or sent) OTP to copy")
    template, account = row
    now = int(time.time() * 1_000_000)
    total = target - have
    otp_cols = columns(c, "otps")
    # What a seeded OTP changes from its template; every other column is copied.
    # :first is the first new id, :seq0 the account_seq before the chunk; i counts
    # the chunk's OTPs from 1, g (the OTP's place among all seeded) orders the times.
    override = {
        "id": ":first + i - 1",
        "account_seq": ":seq0 + i",
        "phone_number": "printf('98%08d', (:first + i) % 100000000)",
        "e164": "printf('+97798%08d', (:first + i) % 100000000)",
        "status": "'delivered'",
        "created_at": ":now - :span + (:done + i) * :step",
        "status_at": ":now - :span + (:done + i) * :step + 2000000",
        "delivered_at": ":now - :span + (:done + i) * :step + 2000000",
        "expires_at": ":now - :span + (:done + i) * :step + 600000000",
        "provider_message_id": "'g' || (:first + i - 1)",
        "code_salt": "NULL",
        "otp_hash": "NULL",
        "otp_cipher": "NULL",
        "key_id": "NULL",
        "verified_at": "NULL",
        "resend_of": "NULL",
        "error": "NULL",
        "error_code": "NULL",
        "refunded": "0",
        "verify_attempts": "0",
    }
    select = ", ".join(override.get(col, f"t.{col}") for col in otp_cols)
    # Child rows: copied from the template OTP's, pointed at the new OTP.
    children = []
    for table, fixed in [
        ("ledger", {"otp_id": "o.id", "created_at": "o.created_at"}),
        ("otp_events", {"otp_id": "o.id", "at": "o.status_at"}),
        (
            "provider_messages",
            {
                "otp_id": "o.id",
                "message_id": "'g' || o.id || '.' || x.part",
                "id_text": "'g' || o.id || '.' || x.part",
                "id_hex_decimal": "NULL",
                "id_decimal_hex": "NULL",
            },
        ),
        ("delivery_jobs", {"otp_id": "o.id", "updated_at": "o.status_at", "next_attempt_at": "o.created_at"}),
    ]:
        cols = [col for col in columns(c, table) if col != "id"]
        if not cols:
            continue
        n = c.execute(f"select count(*) from {table} where otp_id = ?", (template,)).fetchone()[0]
        if n == 0:
            continue
        sel = ", ".join(fixed.get(col, f"x.{col}") for col in cols)
        children.append(
            (table, f"INSERT INTO {table} ({', '.join(cols)}) SELECT {sel} FROM otps o "
             f"JOIN {table} x ON x.otp_id = :template WHERE o.id >= :first AND o.id < :first + :n")
        )
    print(f"   seeding {total} OTPs (copies of OTP {template} and its "
          f"{', '.join(t for t, _ in children)} rows) ...", flush=True)
    t0 = time.time()
    done = 0
    while done < total:
        n = min(CHUNK, total - done)
        first = c.execute("select coalesce(max(id), 0) + 1 from otps").fetchone()[0]
        seq0 = c.execute("select otp_count from accounts where id = ?", (account,)).fetchone()[0]
        p = {
            "first": first, "seq0": seq0, "n": n, "now": now, "span": SPAN,
            "done": done, "step": SPAN // max(total, 1), "template": template,
        }
        c.execute("begin")
        c.execute(
            f"INSERT INTO otps ({', '.join(otp_cols)}) "
            f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
            f"SELECT {select} FROM otps t, s WHERE t.id = :template",
            p,
        )
        for _, sql in children:
            c.execute(sql, p)
        c.execute("update accounts set otp_count = otp_count + :n where id = :a", {"n": n, "a": account})
        c.execute("commit")
        c.execute("pragma wal_checkpoint(TRUNCATE)")
        done += n
        print(f"   {have + done} OTPs ({(have + done) / 1e6:.1f}M), {time.time() - t0:.0f} s", flush=True)
    print(f"   seeded {total} OTPs in {time.time() - t0:.0f} s ({total / (time.time() - t0):.0f}/s)")


if __name__ == "__main__":
    main()
