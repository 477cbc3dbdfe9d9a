"""Apache httpd (prefork, worker, event), gunicorn (gthread) and uvicorn
(--limit-concurrency), the Debian packages `.ci/run` installs, each with a small cap:
analyze's ceiling from the running server, the probe's count and a plain client's,
one at a time (the independent count), all equal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IS_ROOT, probe, run_cli
from tests.test_observe_live import established
from tests.test_patterns import still_open
from tests.test_servers import app_limit, free_port, needs, running

APPS = Path(__file__).parent / "servers"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's gunicorn and uvicorn live in its dist-packages
MODULES = "/usr/lib/apache2/modules"
APACHE_CONF = """\
ServerRoot {dir}
ServerName localhost
DefaultRuntimeDir {dir}
PidFile {dir}/httpd.pid
ErrorLog {dir}/error.log
LogLevel info
User www-data
Group www-data
Listen 127.0.0.1:{port}
LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule authz_core_module {modules}/mod_authz_core.so
DocumentRoot {dir}/www
DirectoryIndex index.html
<Directory />
Require all granted
</Directory>
KeepAlive On
KeepAliveTimeout 300
MaxKeepAliveRequests 0
Timeout 300
<IfModule mpm_{mpm}_module>
{settings}
</IfModule>
"""
#: (the MPM, its settings, the cap in its arithmetic: apache.py)
MPMS = {
    # event: 1 process x 10 threads x (1 + AsyncRequestWorkerFactor 2)
    "event": ("ServerLimit 1\nStartServers 1\nThreadLimit 10\nThreadsPerChild 10\n"
              "MaxRequestWorkers 10\nMinSpareThreads 1\nMaxSpareThreads 10\n"
              "AsyncRequestWorkerFactor 2", 30),
    # worker: a thread per connection, 2 processes x 5
    "worker": ("ServerLimit 2\nStartServers 2\nThreadLimit 5\nThreadsPerChild 5\n"
               "MaxRequestWorkers 10\nMinSpareThreads 5\nMaxSpareThreads 10", 10),
    # prefork: a process per connection, all started
    "prefork": ("ServerLimit 12\nStartServers 12\nMinSpareServers 12\nMaxSpareServers 12\n"
                "MaxRequestWorkers 12", 12),
}  # fmt: skip

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="apache switches to www-data: needs root")


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@contextmanager
def plain_holding(
    port: int,
    n: int,
    timeout: float,
    request: bytes = GET,
    answered: Callable[[socket.socket], bool] | None = None,
) -> Iterator[list[socket.socket]]:
    """A plain client: n requests one at a time, each kept if its answer came within
    `timeout` (by default an HTTP GET whose response has a status below 500, its
    Content-Length body read); the kept ones held open until the block ends."""
    kept: list[socket.socket] = []
    judge = answered or _answered
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            s.sendall(request)
            if judge(s):
                kept.append(s)
            else:
                s.close()
        yield kept
    finally:
        for s in kept:
            s.close()


def closing(port: int) -> int:
    """The server's sockets on `port` still closing (FIN sent or received, not yet
    TIME_WAIT), counted by ss: Apache event counts its lingering closes against its
    connections until they end."""
    states = ("fin-wait-1", "fin-wait-2", "close-wait", "last-ack", "closing")
    args = [a for st in states for a in ("state", st)]
    out = subprocess.run(["ss", "-Htn", *args, f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return len(out.splitlines())


def held_and_doctored(
    port: int,
    n: int,
    timeout: float,
    request: bytes = GET,
    answered: Callable[[socket.socket], bool] | None = None,
) -> tuple[int, dict[str, Any], int]:
    """Hold the server at its cap with the plain client: doctor's verdict meanwhile,
    and how many of the plain client's the server still held after a second (the
    independent count)."""
    deadline = time.monotonic() + 15  # the probe's connections closed and gone first,
    # the server's side of each too (a lingering close holds a slot until it ends)
    while (established(port) or closing(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    # and noticed by the server: a worker drops a closed keep-alive connection from
    # its count at its next poll (gunicorn's gthread, Apache event's lingering closes)
    time.sleep(2.0)
    with plain_holding(port, n, timeout, request, answered) as kept:
        code, out, err = run_cli(
            "doctor", "--interval", "0.5", "--kmsg", "/dev/null", "--port", str(port), "--json"
        )
        assert out, err
        return code, json.loads(out), still_open(kept, 1.0)


def assert_doctor_names(code: int, d: dict[str, Any], server: str, setting: str) -> None:
    """Held at its cap: doctor exits 2 on the server's own setting."""
    assert code == 2 and d["status"] == "critical", d
    cause = d["cause"]
    assert cause["limit"] == "app_limit" and server in cause["subject"], cause
    assert setting in cause["subject"], cause


def _answered(s: socket.socket) -> bool:
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := s.recv(4096)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next((int(ln.split(b":")[1]) for ln in lines
                       if ln.lower().startswith(b"content-length:")), 0)  # fmt: skip
        while len(body) < length and (chunk := s.recv(4096)):
            body += chunk
    except (OSError, ValueError):
        return False
    status = lines[0].split()
    return len(status) > 1 and status[1].isdigit() and int(status[1]) < 500


@contextmanager
def apache(mpm: str, settings: str) -> Iterator[int]:
    """httpd in the foreground with the MPM and settings given; its files in a
    directory www-data can read."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tcx-apache-") as d:
        os.chmod(d, 0o755)
        www = Path(d) / "www"
        www.mkdir(mode=0o755)
        (www / "index.html").write_text("ok\n")
        (www / "index.html").chmod(0o644)
        conf = Path(d) / "httpd.conf"
        conf.write_text(APACHE_CONF.format(
            dir=d, port=port, mpm=mpm.split("-")[0], modules=MODULES, settings=settings
        ))  # fmt: skip
        with running(["apache2", "-f", str(conf), "-DFOREGROUND"], port, own_group=True):
            yield port


def probed(port: int, target: int, *extra: str, check: str = "http") -> dict[str, Any]:
    code, r = probe("--connect", f"127.0.0.1:{port}", "--check", check,
                    "--target", str(target), *extra)  # fmt: skip
    assert code == 1, r["stop"]
    return r


@needs("apache2")
@pytest.mark.parametrize("mpm", list(MPMS))
def test_apache_holds_what_its_mpm_allows(mpm: str) -> None:
    """event holds ThreadsPerChild x (1 + AsyncRequestWorkerFactor) idle keep-alive
    connections per process, worker and prefork one per thread or process; past the
    cap no process accepts, and the connections wait unanswered in the listen queue."""
    settings, cap = MPMS[mpm]
    with apache(mpm, settings) as port:
        limit = app_limit(port)
        r = probed(port, cap + 20, "--check-timeout", "2")
        code, doctor, plain = held_and_doctored(port, cap + 3, timeout=1.0)
    assert_doctor_names(code, doctor, "apache", "MaxRequestWorkers")
    assert limit["details"]["server"] == "apache" and limit["details"]["source"] == "config"
    assert limit["ceiling"] == cap, limit
    if mpm == "event":
        # Known short, for any client: a request in flight keeps one of event's workers
        # busy, and a listener check then stops accepting at TPC + (TPC - 1) x factor =
        # cap - factor, resuming only below it (listeners_disabled() in
        # connections_above_limit, event.c). The probe's checks are often in flight
        # there; the plain client's one request was, once, in a fresh clone's run (28).
        assert cap - 2 <= plain <= cap, (limit, plain)
        assert cap - 2 <= r["served"] <= cap, (r["served"], r["outcomes"], r["stop"])
    else:
        assert plain == cap, (limit, plain)
        assert r["served"] == cap, (r["served"], r["outcomes"], r["stop"])
    assert r["stop"]["reason"] in ("server_silent", "backlog", "server_timeout"), r["stop"]
    assert r["stop"]["evidence"]["server"]["setting"] == "MaxRequestWorkers"


def gunicorn_cmd(port: int, *args: str) -> list[str]:
    return [SYSTEM_PYTHON, "/usr/bin/gunicorn", "--chdir", str(APPS), "-b",
            f"127.0.0.1:{port}", *args, "web_apps:wsgi"]  # fmt: skip


@needs("gunicorn")
def test_gunicorn_gthread_keeps_alive_worker_connections_less_threads() -> None:
    """2 workers x 2 threads, --worker-connections 52, keep-alive 300 s: each worker
    keeps (52 - 2) idle connections alive (max_keepalived, workers/gthread.py) and
    answers the next with Connection: close: 100 at once. A thread checks the kept
    count (handle_request) before the main thread's callback appends the connection
    it answered (finish_request): the response is already written, so the next
    connection, even a plain client's opened once it was answered, can find the
    count one short and be kept too: up to threads - 1 more per worker, 102 (a
    fresh clone's plain client held 101). The probe may hold as many. The body
    comes in a write of its own, never a refusal."""
    port = free_port()
    cmd = gunicorn_cmd(port, "-k", "gthread", "-w", "2", "--threads", "2",
                       "--worker-connections", "52", "--keep-alive", "300")  # fmt: skip
    with running(cmd, port):
        limit = app_limit(port)
        r = probed(port, 200)
        code, doctor, plain = held_and_doctored(port, 200, timeout=2.0)
    assert_doctor_names(code, doctor, "gunicorn", "worker_connections")
    assert limit["ceiling"] == 100 and limit["details"]["server"] == "gunicorn", limit
    assert 100 <= plain <= 102, plain  # 2 workers x (2 threads - 1)
    assert 100 <= r["served"] <= 102, (r["served"], r["outcomes"], r["stop"])
    assert r["stop"]["reason"] == "server_closed", r["stop"]
    assert "ok" not in r["replies"]


@pytest.mark.skipif(
    not Path("/usr/lib/python3/dist-packages/uvicorn").is_dir(),
    reason="needs python3-uvicorn (`.ci/run` installs it)",
)
def test_uvicorn_holds_limit_concurrency_less_one() -> None:
    """--limit-concurrency 20 counts idle connections, the refused one's own among
    them: 19 at once, the next answered 503 (uvicorn/protocols/http)."""
    port = free_port()
    cmd = [SYSTEM_PYTHON, "-m", "uvicorn", "--app-dir", str(APPS), "--port", str(port),
           "--limit-concurrency", "20", "--timeout-keep-alive", "300", "web_apps:asgi"]  # fmt: skip
    with running(cmd, port):
        limit = app_limit(port)
        r = probed(port, 60)
        code, doctor, plain = held_and_doctored(port, 40, timeout=2.0)
    assert_doctor_names(code, doctor, "uvicorn", "limit_concurrency")
    assert limit["ceiling"] == 19 and limit["details"]["server"] == "uvicorn", limit
    assert r["served"] == plain == 19, (r["served"], plain, r["outcomes"], r["stop"])
    assert r["stop"]["reason"] == "server_reply", r["stop"]
    assert r["stop"]["evidence"]["reply"].startswith("HTTP/1.1 503"), r["stop"]
