"""Drives the real PyPI `tingting` 1.0.1 client against a live otpgate and
prints what the client handed back as one JSON line. The conformance tests
(crates/otpgate/tests/api/pypi_client.rs) run it with the virtualenv that
scripts/install-test-deps.sh makes (/opt/otpgate-tingting-1.0.1).

    python driver.py BASE_URL TOKEN get_user
    python driver.py BASE_URL TOKEN post_data ENDPOINT JSON_BODY
    python driver.py BASE_URL TOKEN get_data ENDPOINT [JSON_PARAMS]

BASE_URL is what the client takes: the host alone (http://127.0.0.1:PORT); the
client writes `{base}/{endpoint}` and its endpoints start with `api/v1/`.

Prints {"ok": true, "reply": ...} with the client's return value (a `User`
as its `json()`), or, when the client raised (it calls `raise_for_status`),
{"ok": false, "error": CLASS, "status": HTTP_STATUS, "body": DECODED_BODY}.
"""

import json
import sys

import requests
from tingting.client import TingTingClient


def main(argv):
    if len(argv) < 4:
        sys.exit("usage: driver.py BASE_URL TOKEN get_user|post_data|get_data [ARGS]")
    base, token, call = argv[1], argv[2], argv[3]
    client = TingTingClient(base, token or None)
    try:
        if call == "get_user":
            reply = client.get_user().json()
        elif call == "post_data":
            reply = client.post_data(argv[4], json.loads(argv[5]))
        elif call == "get_data":
            params = json.loads(argv[5]) if len(argv) > 5 else None
            reply = client.get_data(argv[4], params)
        else:
            sys.exit(f"unknown call {call}")
        out = {"ok": True, "reply": reply}
    except requests.HTTPError as e:
        try:
            body = e.response.json()
        except ValueError:
            body = None
        out = {
            "ok": False,
            "error": type(e).__name__,
            "status": e.response.status_code,
            "body": body,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
