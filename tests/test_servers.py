"""probe --connect against real servers: whose limit stopped it, and was it served?
nginx and redis-server are the Debian packages `.ci/run` installs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.analysis.model import Endpoint, resolve
from tcpceiling.host import sockets
from tcpceiling.servers.model import AppLimit
from tests.conftest import cli_json, constraint, netns_sysctl, probe, run_cli

HERE = Path(__file__).parent
ECHO_SERVER = HERE / "servers" / "echo_server.py"
NGINX_CONF = """
worker_processes {workers};
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  server {{ listen 127.0.0.1:{port}{listen}; location / {{ return 200 "ok\\n"; }} }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def needs(binary: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(binary) is None, reason=f"needs {binary} (`.ci/run` installs it)"
    )


@contextmanager
def running(
    cmd: list[str],
    port: int,
    ready_line: bool = False,
    listens: Callable[[int], bool] = lambda port: bool(sockets.listeners(port)),
    own_group: bool = False,
) -> Iterator[int]:
    """Start a server, wait until it listens on port (`listens`: here, or where the
    caller looks), yield its pid; stop it by pid. `own_group`: in a session of its own,
    for a server that signals its whole process group when it stops (Apache httpd's
    prefork MPM, ap_unixd_killpg).
    Its stderr goes to a file: a server logging every failed accept() would fill a
    pipe nobody reads and freeze (asyncio logs each EMFILE with a traceback)."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=own_group
        )
        try:
            deadline = time.monotonic() + 15
            if ready_line:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            while not ready_line and not listens(port):
                assert proc.poll() is None, log.seek(0) or log.read()
                assert time.monotonic() < deadline, f"{cmd[0]} did not listen on {port}"
                time.sleep(0.05)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def app_limit(port: int) -> dict[str, Any]:
    """analyze's `app_limit` for the server on 127.0.0.1:PORT (the first limit reached,
    which it must be with these small caps)."""
    scenario = cli_json("analyze", "--role", "server", "--listen", f"127.0.0.1:{port}")[
        "scenarios"
    ][0]
    assert scenario["binding"] == "app_limit", scenario["summary"]
    return constraint(scenario, "app_limit")


def assert_predicted(limit: dict[str, Any], served: int) -> None:
    """analyze's ceiling within 2 % of what the probe served."""
    assert abs(limit["ceiling"] - served) <= max(1, 0.02 * served), (limit["ceiling"], served)


def settled(count: Callable[[], int], every: float = 0.2, tries: int = 25) -> int:
    """A count once two readings `every` s apart agree (bounded: `tries` readings)."""
    last = count()
    for _ in range(tries):
        time.sleep(every)
        now = count()
        if now == last:
            return now
        last = now
    return last


def steady_fds(pid: int) -> int:
    """The process's open fds once two counts 0.2 s apart agree (bounded: 5 s)."""
    return settled(lambda: fd_count(pid))


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@needs("nginx")
@pytest.mark.parametrize("workers", [1, 2])
def test_nginx_worker_connections_is_the_served_ceiling(tmp_path: Path, workers: int) -> None:
    """worker_connections 256. A worker spends one connection on its listener and one
    on the channel to the master; and when fewer than worker_connections/16 are free,
    nginx closes idle keep-alive connections to make room (ngx_drain_connections in
    src/core/ngx_connection.c). So each worker holds 256 - 1 - 1 - 16 = 238 idle
    clients at once, and then evicts: 238 with one worker, 476 with two. Two workers
    listen with `reuseport`: on one shared socket the kernel wakes the same worker
    again and again, which fills and evicts while the other idles (the probe then
    stopped at 429); with a socket each, the kernel spreads connections by hash.
    Flooded, each worker drains min(32, 238/8) = 29 idle connections whenever it runs
    short, on its own: both are at their top at once only by chance, so with two the
    most served at once lies between 476 - 29 and 476 (462 to 474 in runs here)."""
    port, connections = free_port(), 256
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=tmp_path,
            port=port,
            connections=connections,
            workers=workers,
            listen=" reuseport" if workers > 1 else "",
        )
    )
    cmd = ["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"]
    with running(cmd, port):
        limit = app_limit(port)
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "http", "--target", "1000")
    allowed = workers * (connections - 1 - 1 - connections // 16)
    assert limit["ceiling"] == allowed and limit["details"]["source"] == "server"
    assert code == 1 and r["mode"] == "server" and r["check"] == "http"
    if workers == 1:
        assert_predicted(limit, r["served"])
    else:  # one worker's drain wave below the cap at most (see above)
        assert allowed - (connections - 2 - connections // 16) // 8 <= r["served"] <= allowed + 1
    assert r["side"] == "server" and r["stop"]["side"] == "server"
    assert r["stop"]["reason"] == "server_evicted"
    assert r["outcomes"]["evicted"] >= 16
    # the explanation is nginx's because the registry recognised nginx
    assert r["stop"]["evidence"]["server"]["setting"] == "worker_connections"
    assert "worker_connections are not enough" in r["stop"]["detail"]
    assert any(p["name"] == "nginx" for p in r["stop"]["evidence"]["processes"])


@needs("redis-server")
@pytest.mark.parametrize("running_value", [None, 60])
def test_redis_maxclients_is_named_by_its_reply(running_value: int | None) -> None:
    """maxclients 100 on the command line; with CONFIG SET after start, the running
    value is the cap, and analyze reads that one (CONFIG GET)."""
    port = free_port()
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--maxclients",
        "100",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    with running(cmd, port):
        if running_value is not None:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(f"CONFIG SET maxclients {running_value}\r\n".encode())
                assert s.recv(64) == b"+OK\r\n"
        limit = app_limit(port)
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "redis", "--target", "300")
    cap = running_value or 100
    assert limit["details"]["value"] == cap and limit["details"]["source"] == "server"
    assert_predicted(limit, r["served"])
    assert code == 1 and r["side"] == "server"
    assert cap - 2 <= r["served"] <= cap + 2
    assert r["stop"]["reason"] == "server_reply"
    assert "max number of clients reached" in r["stop"]["detail"]
    assert "max number of clients reached" in r["stop"]["evidence"]["reply"]


def test_an_unknown_server_is_named_with_the_probe_that_proves_it() -> None:
    """A listener no module of the registry knows: named (its comm and pid), its
    limit not guessed (no ceiling), the probe line to prove it."""
    port = free_port()
    with running([sys.executable, str(ECHO_SERVER), str(port), "16"], port, True) as pid:
        scenario = cli_json("analyze", "--role", "server", "--listen", f"127.0.0.1:{port}")[
            "scenarios"
        ][0]
    limit = constraint(scenario, "app_limit")
    assert limit["ceiling"] is None and scenario["binding"] != "app_limit"
    assert limit["details"]["known"] is False and limit["details"]["pid"] == pid
    assert f"tcpceiling probe --connect 127.0.0.1:{port}" in limit["note"]


def test_echo_server_fd_limit_established_but_not_served() -> None:
    """A server at its RLIMIT_NOFILE stops accepting; the kernel still completes
    handshakes into its accept queue, so ESTABLISHED exceeds served."""
    port, limit = free_port(), 300
    cmd = ["prlimit", f"--nofile={limit}:{limit}", sys.executable, str(ECHO_SERVER)]
    with running([*cmd, str(port), "64"], port, ready_line=True) as pid:
        allowed = limit - fd_count(pid)  # each served connection takes one fd
        code, r = probe(
            "--connect", f"127.0.0.1:{port}", "--check", "echo", "--target", "1000",
            "--connect-timeout", "2", "--server-pid", str(pid),
        )  # fmt: skip
    assert code == 1 and r["side"] == "server", (r["outcomes"], r["notes"], r["sink_endpoints"])
    assert abs(r["served"] - allowed) <= 0.02 * allowed, (r["served"], allowed)
    assert r["established"] > r["served"]
    assert r["outcomes"]["silent_at_end"] >= 1
    assert r["stop"]["reason"] == "server_nofile"
    proc = next(p for p in r["stop"]["evidence"]["processes"] if p["pid"] == pid)
    assert proc["at_fd_limit"] and proc["nofile_soft"] == limit


def test_listener_that_never_accepts_fills_its_backlog() -> None:
    """Linux queues backlog + 1 completed handshakes (sk_acceptq_is_full is '>'),
    then drops SYNs and counts ListenOverflows."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        code, r = probe(
            "--connect", f"127.0.0.1:{port}", "--target", "100", "--connect-timeout", "1"
        )
    assert code == 1 and r["side"] == "server"
    assert r["established"] == 16 + 1
    assert r["served"] is None  # no check: established is all that is known
    assert any("established' is all that is known" in n for n in r["notes"])
    assert r["stop"]["reason"] == "backlog"
    ev = r["stop"]["evidence"]
    assert ev["deltas"]["ListenOverflows"] > 0
    assert ev["listeners"][0]["backlog"] == 16 and ev["listeners"][0]["full"]


def test_client_side_limit_still_named_client(netns: str) -> None:
    """The server has room; the namespace's 50 ephemeral ports run out first."""
    netns_sysctl(netns, "net.ipv4.ip_local_port_range", "60000 60049")
    # a fixed port below the range, free in a fresh namespace: a port picked on the
    # host could fall inside 60000-60049 and hold one of the 50 (a listener's port is
    # not handed out by connect())
    port = 7000
    cmd = ["ip", "netns", "exec", netns, sys.executable, str(ECHO_SERVER), str(port), "512"]
    with running(cmd, port, ready_line=True):
        code, r = probe(
            "--connect", f"127.0.0.1:{port}", "--check", "echo", "--target", "200",
            "--netns", netns,
        )  # fmt: skip
    assert code == 1
    assert r["side"] == "client" and r["stop"]["side"] == "client"
    assert r["stop"]["reason"] == "ports" and r["stop"]["errno"] == "EADDRNOTAVAIL"
    assert r["established"] == 50 and r["served"] == 50, (r["stop"], r["predicted"], r["notes"])
    assert r["predicted"]["ceiling"] == 50 and r["predicted"]["binding"] == "ports"


@needs("redis-server")
@pytest.mark.parametrize("every", [None, "0.25"])
def test_check_every_keeps_watching_held_connections(every: str | None) -> None:
    """redis `timeout 1` closes clients idle for more than a second, counted in whole
    seconds and visited once a second by its clientsCron: within 4 s at worst. Held
    5 s without re-checks they are closed by the server; re-checked, they stay served."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--timeout", "1"]
    extra = ["--check-every", every] if every else []
    with running([*cmd, "--save", "", "--appendonly", "no"], port):
        code, r = probe(
            "--connect", f"127.0.0.1:{port}", "--check", "redis", "--target", "50",
            "--hold", "5", *extra,
        )  # fmt: skip
    assert code == 0 and r["served"] == 50
    assert len(r["timeline"]) >= 3
    if every:
        assert r["outcomes"]["rechecked_ok"] >= 50 and r["outcomes"].get("evicted", 0) == 0
    else:
        assert r["outcomes"]["evicted"] == 50 and "rechecked_ok" not in r["outcomes"]


def test_ipv6_listener_and_hostnames() -> None:
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        code, r = probe("--connect", f"[::1]:{port}", "--target", "50", "--connect-timeout", "1")
    assert code == 1 and r["established"] == 4 + 1 and r["stop"]["reason"] == "backlog"
    assert r["sink_endpoints"] == [f"[::1]:{port}"]
    assert resolve(Endpoint("localhost", 80)).host in ("127.0.0.1", "::1")


def assert_server_limit(r: dict[str, Any], served: int, reasons: tuple[str, ...]) -> None:
    """The probe stopped on the server's side, with `served` at once, for a reason
    among `reasons`."""
    assert r["side"] == "server" and r["served"] == served, (r["served"], r["stop"])
    assert r["stop"]["reason"] in reasons, r["stop"]


def test_websocket_server_with_a_connection_limit() -> None:
    """A WebSocket server of ours that completes the RFC 6455 handshake for 40
    clients at once and answers 503 past them: 40 served, the 503 is the stop."""
    port = free_port()
    cmd = [sys.executable, str(HERE / "servers" / "ws_server.py"), str(port), "40"]
    with running(cmd, port, ready_line=True):
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "websocket", "--target", "100")
    assert code == 1
    assert_server_limit(r, 40, ("server_reply",))
    assert "503 Service Unavailable" in r["stop"]["evidence"]["reply"]


WS_SERVER = HERE / "servers" / "ws_server.py"


def test_websocket_close_frame_past_the_limit() -> None:
    """Past 40 clients this server upgrades, then closes at once with 1013 Try Again
    Later (RFC 6455 §7.4.1): the close frame is the server's words, not a 41st
    served connection."""
    port = free_port()
    cmd = [sys.executable, str(WS_SERVER), str(port), "40", "--past", "close"]
    with running(cmd, port, ready_line=True):
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "websocket", "--target", "100")
    assert code == 1
    assert_server_limit(r, 40, ("server_reply",))
    assert r["stop"]["evidence"]["reply"] == "websocket close 1013 Try Again Later"


def test_websocket_pings_both_ways() -> None:
    """The server pings every 0.5 s and closes (1002) a client that did not pong since
    its last ping: held 3 s, every connection stays only if the probe answers the
    server's pings; --check-every pings the server and counts its pongs."""
    port = free_port()
    cmd = [sys.executable, str(WS_SERVER), str(port), "1000", "--ping", "0.5"]
    with running(cmd, port, ready_line=True):
        code, r = probe(
            "--connect", f"127.0.0.1:{port}", "--check", "websocket:/feed", "--target", "50",
            "--hold", "3", "--check-every", "0.5",
        )  # fmt: skip
    assert code == 0 and r["served"] == 50 and r["check"] == "websocket:/feed"
    assert r["outcomes"]["rechecked_ok"] >= 50 and r["outcomes"].get("evicted", 0) == 0


@needs("mosquitto")
@pytest.mark.parametrize("every", [None, "0.5"])
def test_mqtt_keep_alive_keeps_held_connections(tmp_path: Path, every: str | None) -> None:
    """With keep-alive 2 s mosquitto drops a client silent for 1.5 x 2 = 3 s (MQTT
    3.1.1 §3.1.2.10). Held 5 s, the 50 stay served only because the probe sends a
    PINGREQ on each every second; --check-every also counts the PINGRESPs."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
    )
    extra = ["--check-every", every] if every else []
    with running(["mosquitto", "-c", str(conf)], port):
        code, r = probe(
            "--connect", f"127.0.0.1:{port}", "--check", "mqtt:2", "--target", "50",
            "--hold", "5", *extra,
        )  # fmt: skip
    assert code == 0 and r["served"] == 50, r["outcomes"]
    assert r["outcomes"]["pings"] >= 50 * 3 and r["outcomes"].get("evicted", 0) == 0
    assert (r["outcomes"].get("rechecked_ok", 0) > 0) == bool(every)


def redis_info(port: int, key: str) -> int:
    """A field of redis's INFO, read over a plain socket (the server's own count)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO\r\n")
        data = s.recv(65536)  # a bulk reply: $LENGTH, then LENGTH bytes
        head, _, data = data.partition(b"\r\n")
        while len(data) < int(head[1:]):
            data += s.recv(65536)
    line = next(x for x in data.decode().splitlines() if x.startswith(key + ":"))
    return int(line.split(":")[1])


@needs("redis-server")
def test_generic_check_on_redis_matches_its_own_counters() -> None:
    """send/expect/refuse on redis with maxclients 60: the refusals the probe counted
    are redis's own rejected_connections."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--maxclients", "60"]
    spec = r"send:PING\r\n,expect:^\+PONG,refuse:^-"
    with running([*cmd, "--save", "", "--appendonly", "no"], port):
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", spec, "--target", "200")
        rejected = redis_info(port, "rejected_connections")
    assert code == 1
    assert_server_limit(r, 60, ("server_reply",))
    assert r["stop"]["evidence"]["reply"] == "-ERR max number of clients reached"
    assert r["outcomes"]["error_reply"] == rejected


def test_generic_check_on_a_banner() -> None:
    """A server that speaks first (an SMTP-like banner): nothing is sent, `expect`
    matches the 220, `refuse` the 421 past its 25 clients."""
    port = free_port()
    cmd = [sys.executable, str(HERE / "servers" / "banner_server.py"), str(port), "25"]
    spec = "expect:^220 ,refuse:^4[0-9][0-9] "
    with running(cmd, port, ready_line=True):
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", spec, "--target", "60")
    assert code == 1
    assert_server_limit(r, 25, ("server_reply",))
    assert r["stop"]["evidence"]["reply"].startswith("421 4.7.0")


HAPROXY_CONF = """
global
  maxconn 2000
  stats socket {dir}/stats.sock mode 600 level user
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout queue 1h
frontend fe
  bind 127.0.0.1:{port}
  maxconn {frontend}
  default_backend be
backend be
  server redis 127.0.0.1:{redis} maxconn {server}
"""


def haproxy_stats(sock: Path) -> dict[tuple[str, str], dict[str, str]]:
    """`show stat` on HAProxy's stats socket: its own counters, by (proxy, server)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, *rows = data.decode().lstrip("# ").splitlines()
    names = head.split(",")
    table = [dict(zip(names, row.split(","), strict=False)) for row in rows if row]
    return {(r["pxname"], r["svname"]): r for r in table}


@needs("haproxy")
@needs("redis-server")
@pytest.mark.parametrize(
    ("frontend", "server", "served", "reasons"),
    [(40, 1000, 40, ("backlog", "server_silent")), (1000, 30, 30, ("server_queued",))],
)
def test_haproxy_maxconn(
    tmp_path: Path, frontend: int, server: int, served: int, reasons: tuple[str, ...]
) -> None:
    """HAProxy in front of redis, in TCP mode. A frontend's maxconn: past it HAProxy
    stops accepting (its listener paused), and its listener's backlog (the frontend's
    maxconn by default) takes the next ones unanswered: 40 served, then `server_silent`
    (the probe's window of checks in flight is smaller than the backlog, so the queue
    does not overflow; opened all at once, it did: `backlog`). A server's maxconn:
    HAProxy accepts every connection but forwards 30; the rest wait in the backend's
    queue, accepted and silent: `server_queued`. HAProxy's own counters (its stats
    socket) agree: the most sessions at once at the server (smax) is what was served,
    the most in the backend's queue (qmax) is the silent. (The probe stops opening after a streak of
    16 silent, its window of checks in flight already open: so fewer than 150.)"""
    port, redis_port = free_port(), free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(
        HAPROXY_CONF.format(
            dir=tmp_path, port=port, redis=redis_port, frontend=frontend, server=server
        )
    )
    redis = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"]
    with (
        running([*redis, "--save", "", "--appendonly", "no"], redis_port),
        running(["haproxy", "-db", "-f", str(conf)], port),
    ):
        limit = app_limit(port)
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "redis", "--target", "150")
        stats = haproxy_stats(tmp_path / "stats.sock")
    assert code == 1
    assert_server_limit(r, served, reasons)
    assert_predicted(limit, r["served"])
    assert limit["details"]["source"] == "server"  # its stats socket answered
    assert int(stats[("fe", "FRONTEND")]["smax"]) == min(frontend, r["established"])
    assert int(stats[("be", "redis")]["smax"]) == served
    if reasons == ("server_queued",):  # every one opened past the 30 waits in HAProxy's queue
        queued = r["established"] - served
        assert int(stats[("be", "BACKEND")]["qmax"]) == r["stop"]["evidence"]["silent"] == queued


def postgres_bin() -> Path | None:
    """Debian keeps initdb and postgres off PATH, in /usr/lib/postgresql/VERSION/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.mark.skipif(postgres_bin() is None, reason="needs postgresql (`.ci/run` installs it)")
def test_postgres_max_connections() -> None:
    """A throw-away cluster with max_connections 10 and trust authentication. The
    probe connects as the superuser, who may use the superuser-reserved slots too,
    so all 10 are served; the 11th hears 'FATAL: sorry, too many clients already'.
    (initdb refuses root: the cluster is the postgres user's, in a directory under
    /tmp that user can reach.)"""
    with tempfile.TemporaryDirectory(prefix="tcx-pg-") as tmp:
        Path(tmp).chmod(0o777)
        _postgres_served(Path(tmp))


AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]


@contextmanager
def postgres(tmp_path: Path, max_connections: int) -> Iterator[tuple[int, int, Path]]:
    """A throw-away cluster (trust) in tmp_path: (its port, its pid, its data dir)."""
    data, port, pg = tmp_path / "pg", free_port(), postgres_bin()
    assert pg is not None
    subprocess.run(
        [*AS_POSTGRES, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    cmd = [
        *AS_POSTGRES, str(pg / "postgres"), "-D", str(data), "-p", str(port),
        "-k", str(tmp_path), "-c", "listen_addresses=127.0.0.1",
        "-c", f"max_connections={max_connections}",
    ]  # fmt: skip
    with running(cmd, port) as pid:
        yield port, pid, data


def _postgres_served(tmp_path: Path) -> None:
    with postgres(tmp_path, 10) as (port, pid, data):
        # ALTER SYSTEM's file and a reload: max_connections waits for a restart, so the
        # running 10 is still the cap (SHOW says so; the file says 20)
        (data / "postgresql.auto.conf").write_text("max_connections = 20\n")
        os.kill(pid, signal.SIGHUP)
        limit = app_limit(port)
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "postgres", "--target", "40")
    assert code == 1
    assert_server_limit(r, 10, ("server_reply",))
    # analyze: 7 for an ordinary role; the probe, a superuser, also takes the 3 reserved
    assert limit["details"]["value"] == 10 and limit["details"]["source"] == "server"
    assert limit["ceiling"] == 7 and "superuser" in limit["details"]["arithmetic"]
    assert "too many clients already" in r["stop"]["evidence"]["reply"]
    assert any("authentication request counts as served" in n for n in r["notes"])


PGBOUNCER_INI = """[databases]
postgres = host=127.0.0.1 port={pg} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
auth_type = trust
auth_file = {dir}/users.txt
max_client_conn = 20
default_pool_size = 20
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
unix_socket_dir =
"""


@needs("pgbouncer")
@pytest.mark.skipif(postgres_bin() is None, reason="needs postgresql (`.ci/run` installs it)")
def test_pgbouncer_max_client_conn() -> None:
    """PgBouncer with max_client_conn 20 in front of PostgreSQL (max_connections 40,
    pool 20): 20 clients served, the 21st refused in PgBouncer's own words before any
    backend is asked. (PgBouncer refuses root: it runs as the postgres user.)"""
    with tempfile.TemporaryDirectory(prefix="tcx-pgb-") as tmp:
        Path(tmp).chmod(0o777)
        with postgres(Path(tmp), 40) as (pg, _pid, _data):
            port = free_port()
            ini = Path(tmp) / "pgbouncer.ini"
            ini.write_text(PGBOUNCER_INI.format(pg=pg, port=port, dir=tmp))
            (Path(tmp) / "users.txt").write_text('"postgres" ""\n')
            with running([*AS_POSTGRES, "pgbouncer", str(ini)], port):
                limit = app_limit(port)
                code, r = probe(
                    "--connect", f"127.0.0.1:{port}", "--check", "postgres", "--target", "60"
                )
    assert code == 1
    assert_server_limit(r, 20, ("server_reply",))
    assert "max_client_conn" in r["stop"]["evidence"]["reply"]
    assert_predicted(limit, r["served"])
    assert limit["details"]["source"] == "config"


@needs("mosquitto")
def test_mosquitto_max_connections(tmp_path: Path) -> None:
    """mosquitto with max_connections 50: 50 CONNACKs; past them the broker closes
    each new socket at once, before any CONNACK (its accept loop checks the count
    of connected sockets against max_connections). A close() with our CONNECT
    still unread in the socket sends an RST instead of a FIN (tcp_close,
    net/ipv4/tcp.c), so the client sees the server close or reset: either is the
    server's limit."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections 50\n"
        "persistence false\nlog_dest none\n"
    )
    with running(["mosquitto", "-c", str(conf)], port):
        limit = app_limit(port)
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "mqtt", "--target", "100")
    assert code == 1
    assert_server_limit(r, 50, ("server_closed", "server_reset"))
    assert_predicted(limit, r["served"])
    assert limit["details"]["source"] == "config"


@needs("redis-server")
def test_tune_gives_the_servers_setting_for_a_target() -> None:
    """A target past redis's maxclients: tune names the setting that serves it and
    the fds it then needs (maxclients + 32 of its own), and writes nothing."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--maxclients", "100",
           "--save", "", "--appendonly", "no"]  # fmt: skip
    with running(cmd, port):
        _code, out, err = run_cli(
            "tune", "--role", "server", "--listen", f"127.0.0.1:{port}", "--target", "5000"
        )
    text = " ".join((out + err).split())
    assert "app_limit: redis" in text and "need maxclients 5,500" in text, text
    assert "RLIMIT_NOFILE >= 5,532" in text


@pytest.mark.parametrize(("workers", "listeners", "goal"), [(1, 1, 238), (2, 1, 5500), (4, 3, 10)])
def test_nginx_setting_for_a_goal_is_the_least_that_serves_it(
    workers: int, listeners: int, goal: int
) -> None:
    """The inverse of nginx's arithmetic: the setting found serves the goal, one less
    does not."""
    limit = AppLimit(
        "nginx", 1, "", "worker_connections", 0, "config", "", 0, 0, "", "", "", "",
        per_setting=workers, offset=-workers * (listeners + 1), kept_free_share=16,
    )  # fmt: skip

    def serves(wc: int) -> int:
        return workers * (wc - listeners - 1 - wc // 16)

    wc = limit.setting_for(goal)
    assert serves(wc) >= goal and serves(wc - 1) < goal


@needs("memcached")
@pytest.mark.parametrize("threads", [2, 8])
def test_memcached_conn_limit_counts_its_own_fds(threads: int) -> None:
    """memcached -c 100 bounds fd numbers at 99: it serves 99 less the fds it holds
    for itself (more threads, more of them), refusing with its own words."""
    port = free_port()
    cmd = ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
           "-c", "100", "-t", str(threads)]  # fmt: skip
    with running(cmd, port) as pid:
        idle = steady_fds(pid)  # its threads open their pipes after the listener
        limit = app_limit(port)
        code, r = probe("--connect", f"127.0.0.1:{port}", "--check", "memcached", "--target", "200")
    assert code == 1 and r["stop"]["reason"] == "server_reply", r["stop"]
    assert "Too many open connections" in r["stop"]["detail"]
    assert r["served"] == 100 - 1 - idle
    assert_predicted(limit, r["served"])
    assert limit["details"]["source"] == "server"


SSHD_CONFIG = """Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/key
MaxStartups {startups}
LoginGraceTime 60
PidFile {dir}/sshd.pid
UsePAM no
"""


@contextmanager
def privsep_dir() -> Iterator[None]:
    """/run/sshd, which sshd needs (Debian's unit makes it at boot): made only when
    missing, and then removed again."""
    path = Path("/run/sshd")
    made = not path.exists()
    if made:
        path.mkdir(mode=0o755)
    try:
        yield
    finally:
        if made:
            path.rmdir()


@needs("sshd")
def test_sshd_max_startups(tmp_path: Path) -> None:
    """sshd with MaxStartups 10 (start = full = 10): 10 connections get the SSH banner,
    the 11th hears "Exceeded MaxStartups"; analyze reads 10:30:10 from `sshd -T` of the
    running binary with its own -f (its title holds the -f: sshd rewrites argv)."""
    port, sshd = free_port(), shutil.which("sshd")
    assert sshd is not None
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-f", str(tmp_path / "key"), "-N", ""], check=True
    )
    conf = tmp_path / "sshd_config"
    conf.write_text(SSHD_CONFIG.format(port=port, dir=tmp_path, startups=10))
    with privsep_dir(), running([sshd, "-D", "-e", "-f", str(conf)], port):
        limit = app_limit(port)
        code, r = probe(
            "--connect", f"127.0.0.1:{port}", "--check", "expect:^SSH-", "--target", "40"
        )
    assert code == 1
    assert_server_limit(r, 10, ("server_reply",))
    assert "Exceeded MaxStartups" in r["stop"]["evidence"]["reply"]
    assert_predicted(limit, r["served"])
    assert (
        limit["details"]["source"] == "server" and "10:30:10" in limit["details"]["source_detail"]
    )


@needs("mariadbd")
def test_mariadb_max_connections_as_it_runs() -> None:
    """MariaDB started with max_connections 10, then SET GLOBAL max_connections = 12:
    analyze reads 12 from the running server (its client, as root on its socket). The
    server hands out 12 + 1 handshakes (one kept for CONNECTION ADMIN; the probe does
    not log in), then "Too many connections"."""
    with tempfile.TemporaryDirectory(prefix="tcx-mdb-") as tmp:
        Path(tmp).chmod(0o777)
        data, sock, port = Path(tmp) / "data", Path(tmp) / "sock", free_port()
        subprocess.run(
            ["mariadb-install-db", f"--datadir={data}", "--user=mysql", "--skip-test-db",
             "--auth-root-authentication-method=socket"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        cmd = [
            "setpriv", "--reuid=mysql", "--regid=mysql", "--init-groups", "mariadbd",
            "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
            f"--socket={sock}", f"--pid-file={tmp}/pid", "--max-connections=10", "--skip-log-bin",
        ]  # fmt: skip
        with running(cmd, port):
            subprocess.run(
                ["mariadb", "-uroot", "-S", str(sock), "-e", "SET GLOBAL max_connections = 12"],
                check=True, timeout=30,
            )  # fmt: skip
            limit = app_limit(port)
            check = ("--check", "expect:MariaDB,refuse:Too many connections")
            code, r = probe("--connect", f"127.0.0.1:{port}", *check, "--target", "40")
    assert code == 1
    assert_server_limit(r, 13, ("server_reply",))
    assert "Too many connections" in r["stop"]["evidence"]["reply"]
    assert limit["details"]["value"] == 12 and limit["details"]["source"] == "server"
    assert limit["ceiling"] == 12 and "CONNECTION ADMIN" in limit["details"]["arithmetic"]
