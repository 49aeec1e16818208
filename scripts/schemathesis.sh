#!/usr/bin/env bash
# A generated API test: schemathesis (from PyPI) reads /openapi.json from a real
# otpgate and sends thousands of generated requests to every documented
# operation, checking that none gets a 5xx, that every status is one the
# document lists for the operation, and that every reply matches the documented
# schema for its status.
#
# The server runs on 127.0.0.1 with a fresh SQLite database in a temporary
# directory (removed afterwards), the log driver, per-number and per-second
# limits off (so generated sends reach validation and the store rather than
# 429), and one account with a million credits of each kind whose key
# schemathesis sends.
#
# Usage: scripts/schemathesis.sh [max-examples-per-operation]   (default 500)
#   PROFILE=release builds and runs the release binary (default: debug).
#   Extra schemathesis options go in ST_ARGS, e.g. ST_ARGS="--include-path-regex send".
# Needs python3 with venv; schemathesis is installed into .venv-schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-500}"
profile="${PROFILE:-debug}"

venv=.venv-schemathesis
if [ ! -x "$venv/bin/st" ]; then
	python3 -m venv "$venv"
	"$venv/bin/pip" install -q "schemathesis==4.*"
fi
"$venv/bin/st" --version

if [ "$profile" = release ]; then
	cargo build -q --release -p otpgate --bin otpgate
else
	cargo build -q -p otpgate --bin otpgate
fi
bin="${CARGO_TARGET_DIR:-target}/$profile/otpgate"

tmp=$(mktemp -d)
server_pid=
stop() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap stop EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export OTPGATE_LISTEN="127.0.0.1:$port"
export OTPGATE_DATABASE_URL="sqlite://$tmp/otpgate.db"
export OTPGATE_DEMO__CREATE_DEFAULT_ACCOUNT=false
export OTPGATE_DELIVERY__LOG_PATH="$tmp/deliveries.jsonl"
export OTPGATE_DELIVERY__VOICE_DIR="$tmp/voice"
export OTPGATE_SECRETS__FILE="$tmp/secrets.toml"
export OTPGATE_LIMITS__PER_NUMBER_MAX=0
export OTPGATE_LIMITS__PER_NUMBER_COOLDOWN_SECONDS=0
export OTPGATE_LIMITS__PER_ACCOUNT_RPS=0
export OTPGATE_LIMITS__PER_KEY_RPS=0
export OTPGATE_LOG__LEVEL=warn

key=$("$bin" accounts create schemathesis --sms-credits 1000000 --phone-credits 1000000 --json |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')

"$bin" serve >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
	curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
	kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
	sleep 0.1
done

status=0
# shellcheck disable=SC2086 # ST_ARGS is a list of options
"$venv/bin/st" --no-color run "http://127.0.0.1:$port/openapi.json" \
	--checks not_a_server_error,status_code_conformance,response_schema_conformance \
	--max-examples "$examples" \
	--header "Authorization: Bearer $key" \
	--continue-on-failure \
	${ST_ARGS:-} || status=$?

if grep -q "panicked" "$tmp/server.log"; then
	echo "the server panicked:" >&2
	grep -A5 "panicked" "$tmp/server.log" >&2
	status=1
fi
exit "$status"
