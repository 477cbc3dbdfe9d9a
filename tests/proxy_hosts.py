"""Two test hosts for a reverse proxy: a client namespace and a proxy namespace joined by
veth in the benchmarking range (198.18.0.0/15), so the client's own ports never bind.
The proxy's upstream (tests/servers/upstream.py, which holds every request open)
listens on loopback addresses inside the proxy's namespace; nginx or HAProxy runs
there too, started by the test and stopped by pid."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.test_servers import running

HERE = Path(__file__).parent
ROOT = HERE.parent
UPSTREAM = HERE / "servers" / "upstream.py"
CLIENT_IP, PROXY_IP = "198.18.8.2", "198.18.8.1"
LISTEN_PORT = 8000


@dataclass(frozen=True)
class Hosts:
    client: str
    proxy: str


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def two_hosts() -> Iterator[Hosts]:
    """The client and proxy namespaces, deleted afterwards."""
    tag = uuid.uuid4().hex[:6]
    h = Hosts(f"tcx-c{tag}", f"tcx-p{tag}")
    try:
        for ns in (h.client, h.proxy):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", f"c{tag}", "netns", h.client, "type", "veth",
           "peer", "name", f"p{tag}", "netns", h.proxy)  # fmt: skip
        for ns, dev, addr in ((h.client, f"c{tag}", CLIENT_IP), (h.proxy, f"p{tag}", PROXY_IP)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        yield h
    finally:
        for ns in (h.client, h.proxy):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], check=True)


@dataclass
class Upstream:
    """The holding upstream's process and its own count of requests held."""

    proc: subprocess.Popen[str]
    holding: int = 0
    most: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("holding "):
                with self._lock:
                    self.holding = int(line.split()[1])
                    self.most = max(self.most, self.holding)


@contextlib.contextmanager
def upstream(ns: str, *addresses: tuple[str, int], whole: bool = False) -> Iterator[Upstream]:
    """The upstream in `ns`: holding each request open, or (`whole`) answering each
    one whole and keeping the connection, so the proxy closes first."""
    args = ["--answer"] * whole + [str(a) for pair in addresses for a in pair]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, str(UPSTREAM), *args],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        up = Upstream(proc)
        threading.Thread(target=up.follow, daemon=True).start()
        yield up
    finally:
        proc.terminate()
        proc.wait(10)


def listening(ns: str, port: int) -> bool:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{port}"],
                         capture_output=True, text=True).stdout  # fmt: skip
    return bool(out.strip())


@contextlib.contextmanager
def server(ns: str, cmd: list[str], port: int = LISTEN_PORT) -> Iterator[int]:
    """A server started in `ns` (in the foreground), once it listens there on `port`;
    its pid (that of `ip netns exec`, which execs it). Stopped by pid."""
    inside = ["ip", "netns", "exec", ns, *cmd]
    with running(inside, port, listens=lambda p: listening(ns, p)) as pid:
        yield pid


NGINX_PROXY = """
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  proxy_buffering off;
  {http}
  server {{
    listen {listen}:{port};
    location / {{ {location} }}
  }}
}}
"""


def nginx_conf(
    directory: Path,
    connections: int,
    location: str,
    http: str = "",
    listen: str = PROXY_IP,
    port: int = LISTEN_PORT,
) -> list[str]:
    """An nginx proxy's configuration written to `directory`; the command that runs it."""
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_PROXY.format(
        dir=directory, connections=connections, location=location, http=http,
        listen=listen, port=port,
    ))  # fmt: skip
    return ["nginx", "-p", str(directory), "-c", str(conf), "-g", "daemon off;"]


def ss_count(ns: str, dst: str, state: str = "established", src: str | None = None) -> int:
    """Sockets in `ns` toward `dst` (HOST:PORT) in `state` (from `src`): ss(8)'s count."""
    where = f"dst {dst}" + (f" and src {src}" if src else "")
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-Htn", "state", state, where],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return len(out.splitlines())


def hold_plain(ns: str, host: str, port: int, n: int, seconds: float = 1.0) -> int:
    """A plain client in `ns` (tests.test_patterns.plain_http): n HTTP requests one at
    a time, each read whole and held; how many were still open after `seconds` (the
    independent count of served)."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from tests.test_patterns import plain_http; "
            f"print(plain_http({port}, {n}, {seconds}, {host!r}))")  # fmt: skip
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return int(done.stdout.split()[-1])


def error_lines(log: Path, words: str) -> int:
    return len(re.findall(re.escape(words), log.read_text())) if log.exists() else 0
