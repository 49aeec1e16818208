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
  [stunnel]=stunnel4         # TLS in front of the SMSC peer (SMPP over TLS tests)
  [openssl]=openssl          # certificates for the SMPP over TLS tests
  [npm]=npm
  [psql]=postgresql-client
  [pg_ctlcluster]=postgresql
  [adduser]=adduser          # a Depends of the .deb the package test installs
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

# promtool checks and unit-tests deploy/prometheus/otpgate-alerts.yml
# (crates/otpgate/tests/api/observability.rs). The Prometheus server the package
# brings is not needed: under systemd, the service it enables is stopped again.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing: prometheus (for promtool)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -d /run/systemd/system ]; then as_root systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi

# The Net::SMPP SMSC peer (peers/netsmpp/smsc.pl, crates/otpgate/tests/api/smsc_peers.rs).
if ! perl -MNet::SMPP -e 1 >/dev/null 2>&1; then
  echo "installing: libnet-smpp-perl"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libnet-smpp-perl >/dev/null
fi

# PHP and Guzzle, for the requests of the Laravel package tingting/laravel
# (peers/clients/php/driver.php, crates/otpgate/tests/api/php_client.rs).
if ! command -v php >/dev/null 2>&1 || [ ! -f /usr/share/php/GuzzleHttp/autoload.php ]; then
  echo "installing: php-cli php-guzzlehttp-guzzle"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends php-cli php-guzzlehttp-guzzle >/dev/null
fi

# Jasmin's SMPP server, an SMSC peer (peers/jasmin/start.py): PyPI jasmin 0.11.1 in a
# virtualenv of its own, the AMQP spec it loads from the sdist's misc/config/resource,
# and upstream bug #1236 fixed (on current Twisted a submit_sm_resp crashes its
# listener: `_pdu.response` must read `r.response` in jasmin/managers/listeners.py).
# It uses the machine's RabbitMQ (5672) and Redis (6379).
JASMIN=/opt/otpgate-jasmin-0.11.1
if [ ! -f "$JASMIN/.installed" ]; then
  echo "installing: jasmin 0.11.1 into $JASMIN"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! command -v rabbitmqctl >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv rabbitmq-server redis-server >/dev/null
  fi
  as_root rm -rf "$JASMIN"
  as_root python3 -m venv "$JASMIN"
  as_root "$JASMIN/bin/pip" install -q jasmin==0.11.1
  sdist=$(mktemp -d)
  as_root "$JASMIN/bin/pip" download -q --no-deps --no-binary :all: -d "$sdist" jasmin==0.11.1
  tar xzf "$sdist/jasmin-0.11.1.tar.gz" -C "$sdist"
  as_root mkdir -p "$JASMIN/etc"
  as_root cp -r "$sdist/jasmin-0.11.1/misc/config/resource" "$JASMIN/etc/"
  rm -rf "$sdist"
  listeners=$(echo "$JASMIN"/lib/python3*/site-packages/jasmin/managers/listeners.py)
  as_root sed -i 's/_pdu\.response/r.response/g' "$listeners"
  if grep -q '_pdu\.response' "$listeners"; then echo "patching $listeners failed" >&2; exit 1; fi
  as_root touch "$JASMIN/.installed"
fi
# The PyPI tingting client (1.0.1, by TingTing's maker), driven by the
# compatibility tests (crates/otpgate/tests/api/tingting_compat.rs, and
# pypi_client.rs through peers/clients/pypi/driver.py).
TINGTING=/opt/otpgate-tingting-1.0.1
if ! "$TINGTING/bin/python" -c "import importlib.metadata as m; assert m.version('tingting') == '1.0.1'" 2>/dev/null; then
  echo "installing: the tingting 1.0.1 client into $TINGTING"
  as_root python3 -m venv "$TINGTING"
  as_root "$TINGTING/bin/pip" install -q tingting==1.0.1
fi

# RabbitMQ and Redis, for Jasmin: started as on the CI machine if they are not answering.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "starting RabbitMQ"
  as_root rabbitmq-server -detached
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "starting Redis"
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
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

# cargo-deb builds the Debian package in the package test
# (crates/otpgate/tests/package.rs) and in scripts/release.sh. Pinned: the test
# packages the dev build, which 3.8.0 accepts with a warning.
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
  cargo install cargo-deb --locked --version 3.8.0
fi
