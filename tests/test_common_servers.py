"""PHP-FPM, Postfix, Squid, Tomcat and Unbound, the Debian packages `.ci/run`
installs, each with a small cap: analyze's ceiling read from the running server,
what the probe serves, and a plain client's count one at a time (the independent
count, written here without tcpceiling's code), all within 2 %; and doctor's verdict
while the plain client holds the server at its cap."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, run_cli
from tests.test_observe_live import established
from tests.test_patterns import still_open
from tests.test_servers import app_limit, assert_predicted, free_port, needs, running, settled
from tests.test_web_servers import assert_doctor_names, held_and_doctored, plain_holding, probed

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="the servers switch users: needs root")

PHP_FPM = next(iter(sorted(glob.glob("/usr/sbin/php-fpm*"))), "")
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
TOMCAT_HOME = Path("/usr/share/tomcat10")


@contextmanager
def shared_dir(prefix: str) -> Iterator[Path]:
    """A directory a server's own user can write (it drops root): pytest's tmp_path
    sits under a 0700 directory."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        os.chmod(d, 0o777)
        yield Path(d)


# -- PHP-FPM ------------------------------------------------------------------------------
FPM_CONF = """\
[global]
pid = {dir}/fpm.pid
error_log = {dir}/error.log
daemonize = no
[app]
listen = 127.0.0.1:{port}
listen.backlog = 64
pm = {pm}
pm.max_children = {children}
pm.start_servers = 1
pm.min_spare_servers = 1
pm.max_spare_servers = 1
ping.path = /ping
"""


def fcgi_record(kind: int, content: bytes) -> bytes:
    return struct.pack(">BBHHBB", 1, kind, 1, len(content), 0, 0) + content


def fcgi_pair(name: bytes, value: bytes) -> bytes:
    return bytes([len(name), len(value)]) + name + value


#: a plain FastCGI client's request: BEGIN_REQUEST (responder, keep the connection),
#: the ping's parameters, then the empty PARAMS and STDIN that end both streams
FCGI_PING = (
    fcgi_record(1, struct.pack(">HB5x", 1, 1))
    + fcgi_record(4, fcgi_pair(b"SCRIPT_FILENAME", b"/ping") + fcgi_pair(b"SCRIPT_NAME", b"/ping")
                  + fcgi_pair(b"REQUEST_METHOD", b"GET"))
    + fcgi_record(4, b"")
    + fcgi_record(5, b"")
)  # fmt: skip


def fcgi_answered(s: socket.socket) -> bool:
    """A FastCGI record of the answer (version 1; STDOUT, STDERR or END_REQUEST)."""
    try:
        data = s.recv(4096)
    except OSError:
        return False
    return len(data) >= 8 and data[0] == 1 and data[1] in (3, 6, 7)


@contextmanager
def php_fpm(d: Path, children: int, pm: str = "static") -> Iterator[tuple[int, int, Path]]:
    port = free_port()
    conf = d / "fpm.conf"
    conf.write_text(FPM_CONF.format(dir=d, port=port, pm=pm, children=children))
    with running([PHP_FPM, "-y", str(conf), "-R", "-F"], port) as pid:
        yield port, pid, conf


@needs(PHP_FPM or "php-fpm")
def test_php_fpm_serves_pm_max_children(tmp_path: Path) -> None:
    """A child per connection, kept (FCGI_KEEP_CONN) until the client closes it: 5
    at once, the sixth waits unanswered in the pool's listen queue."""
    with php_fpm(tmp_path, 5) as (port, _, _):
        limit = app_limit(port)
        r = probed(port, 20, check="fastcgi")
        code, doctor, plain = held_and_doctored(port, 8, 1.0, FCGI_PING, fcgi_answered)
    assert limit["ceiling"] == 5 == plain == r["served"], (limit, plain, r["outcomes"])
    assert limit["details"]["source"] == "server", limit
    assert r["stop"]["reason"] in ("server_silent", "server_timeout", "backlog"), r["stop"]
    assert r["stop"]["evidence"]["server"]["setting"] == "pm.max_children", r["stop"]
    assert_doctor_names(code, doctor, "php-fpm", "pm.max_children")


@needs(PHP_FPM or "php-fpm")
def test_php_fpm_ondemand_forks_up_to_max_children_and_says_so(tmp_path: Path) -> None:
    """An ondemand pool forks a child as connections wait, up to max_children, and
    then logs that it reached it: the probe serves 5 (a connection a child takes
    after the check's timeout is answered late, and served), a plain client holds 5,
    and analyze reads the cap from the file and quotes the log."""
    with php_fpm(tmp_path, 5, "ondemand") as (port, _, _):
        r = probed(port, 20, check="fastcgi")
        with plain_holding(port, 7, 2.0, FCGI_PING, fcgi_answered) as kept:
            held = len(kept)
            limit = app_limit(port)
    assert limit["capacity"] == 5 == held == r["served"], (limit, held, r["outcomes"])
    assert limit["details"]["source"] == "config", limit
    assert "reached max_children setting (5)" in limit["details"]["evidence"], limit


@needs(PHP_FPM or "php-fpm")
def test_php_fpm_running_children_win_over_an_edited_file(tmp_path: Path) -> None:
    """The file says 9, the static pool still runs the 4 it started with: analyze says
    4 from the running server until a reload (SIGUSR2) starts 9."""
    with php_fpm(tmp_path, 4) as (port, pid, conf):
        conf.write_text(conf.read_text().replace("pm.max_children = 4", "pm.max_children = 9"))
        before = app_limit(port)
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while len(owners(port)) != 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        after = app_limit(port)
    assert before["ceiling"] == 4 and before["details"]["source"] == "server", before
    assert after["ceiling"] == 9, after


def owners(port: int) -> set[str]:
    """The pids holding the listener, as ss -p shows them (not tcpceiling)."""
    out = subprocess.run(["ss", "-Hltnp", f"( sport = :{port} )"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return {w.split(",")[0] for w in out.split("pid=")[1:]}


# -- Postfix ------------------------------------------------------------------------------
POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
myhostname = tcpceiling.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
alias_maps =
alias_database =
"""


def postfix_master_cf(port: int, maxproc: int) -> str:
    """Debian's master.cf with its smtpd on our port and no chroot (the test's queue
    directory has no copy of the libraries a chroot needs)."""
    lines = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        f = line.split()
        if line[:1] in ("#", " ", "\t") or len(f) < 8:
            lines.append(line)
        elif f[:2] == ["smtp", "inet"]:
            lines.append(f"127.0.0.1:{port} inet n - n - {maxproc} smtpd")
        else:
            lines.append(" ".join([*f[:4], "n", *f[5:]]))
    return "\n".join(lines) + "\n"


def smtp_greeted(s: socket.socket) -> bool:
    try:
        return s.recv(4096).startswith(b"220 ")
    except OSError:
        return False


@needs(POSTFIX_MASTER)
def test_postfix_master_runs_maxproc_smtpd() -> None:
    """maxproc 10: ten smtpd processes greet ten clients; the master then stops
    watching the listener and the eleventh waits with no greeting."""
    port = free_port()
    with shared_dir("tcx-postfix-") as d:
        (d / "main.cf").write_text(POSTFIX_MAIN.format(dir=d))
        (d / "master.cf").write_text(postfix_master_cf(port, 10))
        (d / "data").mkdir()
        (d / "queue").mkdir()
        uid = pwd.getpwnam("postfix").pw_uid
        os.chown(d / "data", uid, -1)
        # `postfix check` makes the queue's directories with their owners
        subprocess.run(["postfix", "-c", str(d), "check"], capture_output=True, check=True)
        with running([POSTFIX_MASTER, "-c", str(d), "-d"], port):
            limit = app_limit(port)
            r = probed(port, 30, check=limit["details"]["check"])
            code, doctor, plain = held_and_doctored(port, 14, 1.0, b"", smtp_greeted)
    assert limit["ceiling"] == 10 == plain == r["served"], (limit, plain, r["outcomes"])
    assert limit["details"]["server"] == "postfix" and limit["details"]["value"] == 10
    assert r["stop"]["reason"] in ("server_silent", "server_timeout", "backlog"), r["stop"]
    assert_doctor_names(code, doctor, "postfix", "maxproc")


# -- Squid --------------------------------------------------------------------------------
SQUID_CONF = """\
http_port 127.0.0.1:{port}
max_filedescriptors {fds}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
access_log none
cache deny all
http_access allow localhost
http_access deny all
client_persistent_connections on
client_idle_pconn_timeout 300 seconds
shutdown_lifetime 1 second
coredump_dir {dir}
"""
SQUID_ICON = "/squid-internal-static/icons/SN.png"


def squid_mgr_in_use(port: int) -> int:
    """Squid's own count of its descriptors (the cache manager), less the asking one."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /squid-internal-mgr/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    line = next(ln for ln in data.decode().splitlines() if "Number of file desc" in ln)
    return int(line.split(":")[1]) - 1


@needs("squid")
def test_squid_keeps_clients_alive_up_to_its_descriptor_line() -> None:
    """max_filedescriptors 200, RESERVED_FD 50: replies keep their clients alive while
    at least 100 descriptors are free, so it holds 100 less its own; the clients past
    that line are answered with Connection: close."""
    port = free_port()
    with shared_dir("tcx-squid-") as d:
        (d / "squid.conf").write_text(SQUID_CONF.format(port=port, fds=200, dir=d))
        with running(["squid", "-N", "-f", str(d / "squid.conf")], port):
            # it opens its helpers' pipes and DNS sockets after it listens
            own = settled(lambda: squid_mgr_in_use(port), 0.5, 20)
            limit = app_limit(port)
            r = probed(port, 200, check=limit["details"]["check"])
            get = f"GET {SQUID_ICON} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            code, doctor, plain = held_and_doctored(port, 120, 2.0, get)
    assert limit["ceiling"] == 100 - own == plain, (limit, own, plain)
    assert_predicted(limit, r["served"])
    assert r["stop"]["reason"] in ("server_closed", "server_reply"), r["stop"]
    assert_doctor_names(code, doctor, "squid", "max_filedescriptors")


# -- Tomcat -------------------------------------------------------------------------------
TOMCAT_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="${{tcx.port}}" address="127.0.0.1" protocol="HTTP/1.1"
               maxConnections="{connections}" acceptCount="10" maxThreads="4"
               connectionTimeout="300000" keepAliveTimeout="300000"
               maxKeepAliveRequests="-1"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"""


@needs("java")
@pytest.mark.skipif(not TOMCAT_HOME.is_dir(), reason="needs tomcat10 (`.ci/run` installs it)")
def test_tomcat_holds_max_connections(tmp_path: Path) -> None:
    """maxConnections 20 counts idle keep-alive connections before accept(): 20 held,
    then acceptCount 10 wait unanswered. The port comes from a ${...} property."""
    port = free_port()
    base = tmp_path / "tomcat"
    for sub in ("conf", "logs", "work", "temp", "webapps/ROOT"):
        (base / sub).mkdir(parents=True)
    for name in ("web.xml", "logging.properties", "catalina.properties", "context.xml"):
        shutil.copy(f"/etc/tomcat10/{name}", base / "conf" / name)
    (base / "conf" / "server.xml").write_text(TOMCAT_XML.format(connections=20))
    (base / "webapps" / "ROOT" / "index.html").write_text("ok\n")
    jars = ":".join(str(TOMCAT_HOME / "bin" / j) for j in ("bootstrap.jar", "tomcat-juli.jar"))
    cmd = ["java", "-Xmx128m", f"-Dtcx.port={port}", f"-Dcatalina.home={TOMCAT_HOME}",
           f"-Dcatalina.base={base}", f"-Djava.io.tmpdir={base / 'temp'}", "-cp", jars,
           "org.apache.catalina.startup.Bootstrap", "start"]  # fmt: skip
    with running(cmd, port):
        limit = app_limit(port)
        r = probed(port, 40, check="http")
        code, doctor, plain = held_and_doctored(port, 24, 1.0)
    assert limit["ceiling"] == 20 == plain == r["served"], (limit, plain, r["outcomes"])
    assert limit["details"]["server"] == "tomcat" and limit["details"]["source"] == "config"
    assert r["stop"]["reason"] in ("backlog", "server_silent", "server_timeout"), r["stop"]
    assert_doctor_names(code, doctor, "tomcat", "maxConnections")


# -- Unbound ------------------------------------------------------------------------------
UNBOUND_CONF = """\
server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  num-threads: 1
  incoming-num-tcp: {tcp}
  tcp-idle-timeout: 120000
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
remote-control:
  control-enable: no
"""


def dns_query(ident: int) -> bytes:
    """localhost. A, which a resolver answers itself, with TCP's length prefix."""
    msg = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"\x09localhost\x00\x00\x01\x00\x01"
    return struct.pack(">H", len(msg)) + msg


def dns_answered(s: socket.socket) -> bool:
    try:
        data = s.recv(4096)
    except OSError:
        return False
    return len(data) > 4 and data[2:4] == b"\x00\x2a"


@contextmanager
def querying(kept: list[socket.socket], every: float) -> Iterator[None]:
    """Keep held DNS connections busy (a query on each every `every` s): Unbound
    closes idle ones within 200 ms once its handlers are over 80 % in use."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            for s in kept:
                try:
                    s.sendall(dns_query(42))
                    s.recv(4096)
                except OSError:
                    pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


@needs("unbound")
def test_unbound_serves_its_tcp_handlers_and_keeps_half_idle(tmp_path: Path) -> None:
    """incoming-num-tcp 10, one thread: ten served at once, the eleventh waits. A
    connection accepted with more than half the handlers in use gets a short idle
    timeout (setup_tcp_handler), so of ten idle ones five stay."""
    port = free_port()
    conf = tmp_path / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(port=port, dir=tmp_path, tcp=10))
    with running(["unbound", "-d", "-c", str(conf)], port):
        limit = app_limit(port)
        r = probed(port, 30, check="dns")
        deadline = time.monotonic() + 15
        while established(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        kept: list[socket.socket] = []
        with querying(kept, 0.05):  # busy from the first: none closed for being idle
            for _ in range(12):  # a plain client, one at a time
                s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                s.sendall(dns_query(42))
                (kept.append if dns_answered(s) else lambda s: s.close())(s)
            answered = len(kept)
            code, out, _ = run_cli("doctor", "--interval", "0.5", "--kmsg", "/dev/null",
                                   "--port", str(port), "--json")  # fmt: skip
        idle = still_open(kept, 1.5)
    assert limit["ceiling"] == 10 == answered == r["served"], (limit, answered, r["outcomes"])
    assert idle == 5, idle
    assert r["stop"]["reason"] == "server_evicted", r["stop"]
    assert_doctor_names(code, json.loads(out), "unbound", "incoming-num-tcp")
