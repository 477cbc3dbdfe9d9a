"""A reverse proxy toward one upstream port: one source address, then two. nginx
connects to its upstream for every client, so its ports toward (source, upstream
address, port) bound the clients it serves, not its own worker_connections: in the
tour's 10-port range, 10. Whether it can reach the same upstream port from several
source addresses: yes, with proxy_bind over split_clients (nginx binds each with
IP_BIND_ADDRESS_NO_PORT), and each brings its own 10: 20.

Everything runs in a namespace of the tour's own: an upstream that holds every
request open, nginx in front of it (Debian's, where installed), and the probe's
clients from four source addresses of their own, so the clients' ports (40) are not
what runs out first."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tcpceiling.analysis.analyze import analyze
from tcpceiling.analysis.model import Endpoint, build_scenarios
from tcpceiling.host import netns as netns_mod
from tcpceiling.host import sockets
from tcpceiling.probe.run.config import ProbeConfig
from tcpceiling.probe.run.coordinator import run as run_probe
from tcpceiling.probe.run.isolate import apply_sysctls
from tcpceiling.signals import unless_interrupted
from tcpceiling.tour.model import Measure, Step, Trial
from tcpceiling.tour.ports import HIGH, LOW, PORT_RANGE

LISTEN, UPSTREAM = ("127.0.0.1", 8000), ("127.0.0.2", 8080)
#: the clients' own addresses: their ports toward the proxy (the namespace's 10-port
#: range each) must outlast the proxy's toward its upstream, the refused attempts'
#: TIME_WAITs included, so the stop is the proxy's: 8 x 10 = 80 against 20 served and
#: the attempts refused before the stop (4 x 10 ran out first in one run of the suite)
CLIENTS = tuple(f"127.0.0.{i}" for i in range(5, 13))
SOURCES = ("127.0.0.3", "127.0.0.4")
#: An upstream holding every request open (headers and one chunk, then nothing), dying
#: with the tour (prctl(2) PR_SET_PDEATHSIG, SIGKILL).
HOLDING_UPSTREAM = """
import asyncio, ctypes, sys
ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
HEAD = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nheld\\n\\r\\n"
async def serve(r, w):
    try:
        await r.readuntil(b"\\r\\n\\r\\n")
        w.write(HEAD)
        while await r.read(4096):
            pass
    except Exception:
        pass
    w.close()
async def main():
    s = await asyncio.start_server(serve, sys.argv[1], int(sys.argv[2]), backlog=1024)
    await s.serve_forever()
asyncio.run(main())
"""
#: nginx, one worker, in the foreground; it too dies with the tour (PR_SET_PDEATHSIG
#: set before exec; its worker exits when the master's channel closes).
NGINX_EXEC = (
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 9, 0, 0, 0); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)
CONF = """worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  proxy_buffering off;
  {split}
  server {{ listen {listen}; location / {{ proxy_pass http://{upstream}; {bind} }} }}
}}
"""
SPLIT = 'split_clients "$remote_addr$remote_port" $tour_source {{ 50% {a}; * {b}; }}'
START_S = 10.0


def _conf(directory: Path, two: bool) -> Path:
    conf = directory / "nginx.conf"
    conf.write_text(CONF.format(
        dir=directory, listen="{}:{}".format(*LISTEN), upstream="{}:{}".format(*UPSTREAM),
        split=SPLIT.format(a=SOURCES[0], b=SOURCES[1]) if two else "",
        bind="proxy_bind $tour_source;" if two else "",
    ))  # fmt: skip
    return conf


def _started(netns: str, cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    """A process in the namespace, once something listens there on `port`."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline and proc.poll() is None:
        with netns_mod.inside(netns):
            if sockets.listeners(port):
                return proc
        time.sleep(0.05)
    _stop(proc)
    raise RuntimeError(f"{cmd[0]} did not listen on {port} in {netns}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _trial(name: str, netns: str, nginx: str, directory: Path, two: bool) -> Trial:
    conf = str(_conf(directory, two))
    cmd = [sys.executable, "-c", NGINX_EXEC, nginx, "-p", str(directory), "-c", conf,
           "-g", "daemon off;"]  # fmt: skip
    proc = _started(netns, cmd, LISTEN[1])
    try:
        scenarios = build_scenarios("server", listen=("{}:{}".format(*LISTEN),))
        s = analyze(scenarios, netns=netns).scenarios[0]
        cfg = ProbeConfig(target=None, netns=netns, isolate=False, connect=(Endpoint(*LISTEN),),
                          check="http", sources=CLIENTS, workers=1)  # fmt: skip
        r = run_probe(cfg)
        unless_interrupted(r.stop.reason)
    finally:
        _stop(proc)
    predicted = Measure(s.ceiling, "connections", s.binding, "analyze --listen, in the namespace")
    how = f"probe --check http from {len(CLIENTS)} client addresses: served"
    proven = Measure(r.served, "connections", r.stop.reason, how)
    return Trial(name, predicted, proven, _observed(r.stop.detail))


def _observed(detail: str) -> str:
    return (
        "nginx: connect() (99: Cannot assign requested address)"
        if "(99:" in detail
        else (detail[:80])
    )


def step(netns: str) -> Step:
    """The two trials in namespace `netns` (made and removed by the caller)."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    title = "A reverse proxy toward one upstream port: one source address, then two"
    lesson = (
        "A proxy is a client of its upstream: each client it serves holds a port toward "
        f"(source, upstream address, port), so {HIGH - LOW + 1} ports serve "
        f"{HIGH - LOW + 1} clients whatever its worker_connections; proxy_bind over two "
        "source addresses gives twice the ports."
    )
    if nginx is None:
        return Step("proxy", title, lesson, (), notes=(
            "nginx is not installed: install it (apt install nginx) and run the tour again "
            "to see this step proven; `tcpceiling analyze --role server --listen ADDR:PORT` "
            "on a proxy's host predicts it (docs/proxies.md)",
        ))  # fmt: skip
    netns_mod.add_addresses(netns, (*SOURCES, *CLIENTS))
    with netns_mod.inside(netns):
        apply_sysctls((PORT_RANGE,))
    upstream = _started(netns, [sys.executable, "-c", HOLDING_UPSTREAM, *map(str, UPSTREAM)],
                        UPSTREAM[1])  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="tcpceiling-tour-nginx-") as d:
            trials = (
                _trial("nginx -> one upstream port, one source", netns, nginx, Path(d), False),
                _trial("the same, proxy_bind over two sources", netns, nginx, Path(d), True),
            )
    finally:
        _stop(upstream)
    reads = (("ip_local_port_range (in the tour's namespace)", f"{LOW} {HIGH}"),)
    return Step("proxy", title, lesson, trials, reads=reads)
