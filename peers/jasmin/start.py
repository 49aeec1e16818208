"""Starts Jasmin's SMPP server (PyPI jasmin 0.11.1) as an SMSC peer for otpgate's tests.

Run it with the interpreter of Jasmin's virtualenv (scripts/install-test-deps.sh makes
/opt/otpgate-jasmin-0.11.1):

    /opt/otpgate-jasmin-0.11.1/bin/python peers/jasmin/start.py --connector-port 40123

It writes a jasmin.cfg into a fresh directory (every port of its own, on 127.0.0.1, below
the kernel's ephemeral range; started again on new ports if another process took one), gives
Jasmin a RabbitMQ virtual host and a Redis database of its own on the machine's shared
servers (emptied first, unless --keep-state), starts jasmind.py, and over jCli adds the SMPP
user `otpgate`/`secret`, a connector `smsc` to the SMSC on --connector-port (node-smpp in the
tests) and a default MT route to it. Then it prints `{"event":"listening","port":N}` with the
SMPP server's port, and waits. Jasmin dies with this process (PR_SET_PDEATHSIG), so a SIGKILL
of this process is a SIGKILL of the SMSC; `--port N --keep-state` starts it again where its
clients expect it. jasmind runs once per machine (its /tmp/jasmind lock): callers serialize.
"""

import argparse
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
import telnetlib  # noqa: E402  deprecated, still in Python 3.11 (Jasmin's virtualenv)
import tempfile
import time

VENV = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
ETC = os.path.join(VENV, "etc")
# Jasmin's own RabbitMQ virtual host and Redis database on the machine's shared servers.
VHOST = "otpgate-jasmin-test"
REDIS_DB = 11


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(taken):
    """A port free now, below the kernel's ephemeral range: a port 0 bind would
    pick one an outgoing connection (the gateway's, RabbitMQ's, Redis's) may
    take as its local port before jasmind listens on it."""
    high = max(ephemeral_low(), 20001)
    while True:
        port = random.randrange(20000, high)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port


def event(name, **fields):
    print(json.dumps({"event": name, **fields}), flush=True)


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, stdout=subprocess.DEVNULL)


def config(args, ports, log_dir):
    local = "bind = 127.0.0.1\n"
    log = lambda name: f"log_file = {log_dir}/{name}.log\nlog_level = INFO\n"  # noqa: E731
    return f"""[smpp-server]
id = smpps_01
{local}port = {ports['smpp']}
billing_feature = False
{log('smpp-server')}
[smpp-server-pb]
{local}port = {ports['smpp_pb']}
{log('smpp-server-pb')}
[client-management]
{local}port = {ports['cm']}
{log('smppclient-manager')}
[service-smppclient]
{log('service-smppclients')}
[sm-listener]
{log('messages')}
# A started connector takes its first queued message before its bind is done
# and holds it (prefetch 1: the whole queue waits) this long before retrying;
# the default, 30 s, stalls a restart with messages queued for that long.
submit_retrial_delay_smppc_not_ready = 1
[dlr]
{log('dlr')}
[amqp-broker]
host = 127.0.0.1
port = 5672
vhost = {VHOST}
spec = {ETC}/resource/amqp0-9-1.xml
{log('amqp-client')}
[http-api]
{local}port = {ports['http']}
{log('http-api')}
[router]
{local}port = {ports['router']}
{log('router')}
[deliversm-thrower]
{log('deliversm-thrower')}
[dlr-thrower]
{log('dlr-thrower')}
[redis-client]
host = 127.0.0.1
port = 6379
dbid = {REDIS_DB}
{log('redis-client')}
[jcli]
{local}port = {ports['jcli']}
authentication = False
{log('jcli')}
"""


class Jcli:
    """jCli over its telnet port: one command a line, answered up to the next prompt."""

    def __init__(self, port):
        deadline = time.monotonic() + 60
        while True:
            try:
                self.telnet = telnetlib.Telnet("127.0.0.1", port, timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # jCli greets with its banner and "Session ref: N" but draws no prompt
        # until it reads a line: waiting for "jcli : " here cost 30 s a start.
        if self.telnet.expect([rb"Session ref: \d+\r*\n"], timeout=30)[0] < 0:
            raise RuntimeError("jCli did not greet")

    def run(self, *lines):
        for line in lines:
            self.telnet.write(line.encode() + b"\r\n")
            answer = self.telnet.expect([rb"jcli : $", rb"> $"], timeout=30)[2].decode(errors="replace")
            if any(w in answer for w in ("Unknown", "Error", "error", "Invalid", "not found")):
                raise RuntimeError(f"jCli refused {line!r}: {answer!r}")


def launch(args):
    """Writes a config with fresh ports and starts jasmind on it."""
    # jasmind runs once per machine (it holds /tmp/jasmind.lock; the tests take a lock
    # of their own around each Jasmin), so a lock left by a killed jasmind is stale.
    for stale in ("/tmp/jasmind.lock",):
        if os.path.exists(stale):
            os.unlink(stale)
    taken = {args.port} if args.port else set()
    ports = {k: free_port(taken) for k in ("smpp_pb", "cm", "http", "router", "jcli")}
    ports["smpp"] = args.port or free_port(taken)
    root = tempfile.mkdtemp(prefix="otpgate-jasmin-")
    conf_dir = os.path.join(root, "etc")
    log_dir = os.path.join(root, "log")
    os.makedirs(os.path.join(conf_dir, "store"))
    os.makedirs(log_dir)
    os.symlink(os.path.join(ETC, "resource"), os.path.join(conf_dir, "resource"))
    cfg = os.path.join(conf_dir, "jasmin.cfg")
    with open(cfg, "w") as f:
        f.write(config(args, ports, log_dir))

    env = dict(os.environ, ROOT_PATH=root, CONFIG_PATH=conf_dir + "/", LOG_PATH=log_dir)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    die_with_parent = lambda: libc.prctl(1, signal.SIGKILL)  # noqa: E731  PR_SET_PDEATHSIG
    with open(os.path.join(log_dir, "jasmind.out"), "w") as out:
        jasmind = subprocess.Popen(
            [os.path.join(VENV, "bin", "jasmind.py"), "-c", cfg, "--disable-http-api",
             "--enable-dlr-lookup", "--enable-dlr-thrower"],
            env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )
    return jasmind, ports, log_dir


def started(jasmind, log_dir):
    """Waits for jasmind's start-up report: true when every part started
    (jCli, the last, says so), false when one could not or jasmind died."""
    out = os.path.join(log_dir, "jasmind.out")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and jasmind.poll() is None:
        with open(out, errors="replace") as f:
            report = f.read()
        if "Cannot start" in report:
            return False
        if "jCli Started." in report:
            return True
        time.sleep(0.1)
    return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0, help="the SMPP server's port (0: a free one)")
    p.add_argument("--connector-port", type=int, required=True, help="the SMSC Jasmin routes to")
    p.add_argument("--smpps-throughput", type=int, default=0,
                   help="most submit_sm per second of the user, over it ESME_RTHROTTLED (0: no limit)")
    p.add_argument("--keep-state", action="store_true",
                   help="a restart: keep the RabbitMQ queues and the Redis database")
    args = p.parse_args()

    if not args.keep_state:
        # Nothing queued or remembered by an earlier run.
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rabbitmqctl("add_vhost", VHOST)
        rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
        import redis  # from Jasmin's virtualenv

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()

    # Each start gets fresh ports; one another process took first (jasmind then
    # logs "Cannot start ...: Couldn't listen" and runs on without that part)
    # means another start.
    for attempt in range(1, 6):
        jasmind, ports, log_dir = launch(args)
        if started(jasmind, log_dir):
            break
        jasmind.kill()
        jasmind.wait()
        print(f"Jasmin start {attempt} failed (see {log_dir}); trying again",
              file=sys.stderr, flush=True)
    else:
        sys.exit("Jasmin did not start in five tries")

    def stop(*_):
        jasmind.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    jcli = Jcli(ports["jcli"])
    # The SMPP server listens before this runs, and a restarted Jasmin's clients
    # bind again as soon as their user exists: the connector and the route come
    # first, so nothing they submit finds Jasmin without a way out.
    jcli.run("smppccm -a", "cid smsc", "host 127.0.0.1", f"port {args.connector_port}",
             "username otpgate", "password secret", "submit_throughput 1000",
             "requeue_delay 1", "ok", "smppccm -1 smsc")
    jcli.run("mtrouter -a", "type defaultroute", "connector smppc(smsc)", "rate 0.00", "ok")
    user = ["user -a", "username otpgate", "password secret", "gid otp", "uid otp"]
    if args.smpps_throughput:
        user.append(f"mt_messaging_cred quota smpps_throughput {args.smpps_throughput}")
    jcli.run("group -a", "gid otp", "ok", *user, "ok")

    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", ports["smpp"]), timeout=1).close()
            break
        except OSError:
            if jasmind.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"Jasmin did not start: see {log_dir}")
            time.sleep(0.2)
    event("listening", port=ports["smpp"], logs=log_dir)
    sys.exit(jasmind.wait())


if __name__ == "__main__":
    main()
