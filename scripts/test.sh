#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, checks
# formatting and lints, then runs every test (each API test against SQLite and
# PostgreSQL; the SMPP, speech and SIP tests against their real peers).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

export OTPGATE_TEST_PG_URL="${OTPGATE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Databases left by earlier runs (each test makes its own); a failure to drop one
# (still in use) is no reason to stop.
psql "$OTPGATE_TEST_PG_URL" -Atqc \
  "SELECT 'DROP DATABASE IF EXISTS ' || datname || ' WITH (FORCE);' FROM pg_database WHERE datname LIKE 'otpgate_t_%'" \
  | psql "$OTPGATE_TEST_PG_URL" -q >/dev/null 2>&1 || true

cargo fmt --all -- --check
# No circles between modules, no worker depending on the API (issue 14).
python3 scripts/check-import-cycles.py --self-test
python3 scripts/check-import-cycles.py
cargo clippy --workspace --all-targets --locked -- -D warnings
# The previous release's binary for the rolling-upgrade test (cached in
# target/old-release/), built before the tests so no test waits minutes for it.
scripts/build-old-release.sh >/dev/null
cargo nextest run --workspace --locked --no-fail-fast
