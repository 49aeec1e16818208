#!/usr/bin/env bash
# Installs the SMSC peer's pinned dependencies (node-smpp) from package-lock.json.
# Needs Node.js 20+ and npm (Debian: apt-get install -y nodejs npm).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "peers/smsc: node and npm are required (apt-get install -y nodejs npm)" >&2
	exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
