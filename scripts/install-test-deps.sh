#!/usr/bin/env bash
# Installs what otpgate's test suite needs on a fresh Debian machine, and starts
# PostgreSQL if it is installed but not running. Safe to run again: it only
# installs what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: command -> package.
declare -A needed=(
  [espeak-ng]=espeak-ng      # speech for voice OTPs (crates/tts)
  [sox]=sox                  # audio checks in the speech tests
  [baresip]=baresip-core     # the SIP callee that records what it hears
  [sipp]=sip-tester          # scripted SIP responses (401/407/486/no answer)
  [node]=nodejs              # the node-smpp SMSC peer
  [npm]=npm
  [psql]=postgresql-client
  [pg_ctlcluster]=postgresql
)
missing=()
for cmd in "${!needed[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needed[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Net::SMPP SMSC peer (peers/netsmpp/smsc.pl, crates/otpgate/tests/api/smsc_peers.rs).
if ! perl -MNet::SMPP -e 1 >/dev/null 2>&1; then
  echo "installing: libnet-smpp-perl"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libnet-smpp-perl >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432: start the local cluster if it is not answering.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# The SMSC peer's npm dependencies (pinned by package-lock.json).
if [ ! -d peers/smsc/node_modules/smpp ]; then
  (cd peers/smsc && npm ci --no-audit --no-fund --silent)
fi

# cargo-nextest runs the suite; fall back to installing it from crates.io.
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
